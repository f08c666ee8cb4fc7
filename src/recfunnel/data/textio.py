"""Shared reading machinery for every loader: files, lines, fields, typed columns.

The loaders all follow one shape, so that a bad row is found the same way everywhere:

1. `locate`/`require` find `X` or `X.gz` (gzip is transparent) and name the file relative
   to the dataset folder, as a person would look for it;
2. `read_lines` decodes the bytes. The whole file is decoded at once (the fast path); only
   when that fails is it decoded line by line, so undecodable lines are reported with
   their line and field and the rest still loads;
3. `split_fields` cuts lines into string columns with polars (or the csv module when the
   file uses quotes) and drops rows with the wrong field count;
4. `check_fields` parses typed columns vectorised (`cast(strict=False)`), and only the few
   rows that failed are visited in Python, to report the first bad field of each.

Every frame carries `_line`, the 1-based line number of its row in the file as a person
opens it (the header counts), and `_row`, the 0-based position among the data rows.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import polars as pl

from recfunnel.data.validation import DataError, LoadReport

LINE = "_line"
ROW = "_row"
ROW_FIELD = "row"  # the field named for problems of a whole row (field count)


# ---- files ------------------------------------------------------------------------------
def locate(root: Path, name: str) -> Path | None:
    """`root/name`, else `root/name.gz`, else None."""
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def require(root: Path, name: str) -> Path:
    """Like `locate`, but a missing file is a `DataError` that names the path looked for."""
    path = locate(root, name)
    if path is None:
        raise DataError(f"required file missing: {root / name} (or {name}.gz)")
    return path


def display_name(root: Path, path: Path) -> str:
    """The name used in reports: relative to the dataset folder when inside it."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return path.name


def read_bytes(path: Path) -> bytes:
    """File content, gunzipped when the name ends in .gz; unreadable -> DataError."""
    try:
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    return data


# ---- lines ------------------------------------------------------------------------------
@dataclass
class Lines:
    """The non-blank data lines of one file, decoded, with their 1-based line numbers."""

    file: str
    header: list[str] | None
    text: pl.Series  # Utf8, "\r" of CRLF files removed
    line: np.ndarray  # int64, one per entry of `text`
    row: np.ndarray  # int64, 0-based position among the file's non-blank data rows


def read_lines(
    data: bytes,
    file: str,
    report: LoadReport,
    *,
    encoding: str = "utf-8",
    header: bool = False,
    sep: str | None = None,
    columns: Sequence[str] = (),
) -> Lines:
    """Decode `data` into lines; undecodable lines are dropped and reported.

    `sep` and `columns` only serve to name the field holding the bad bytes. Every
    non-blank data line counts as read, including the undecodable ones.
    """
    try:
        raw: list[str | None] = data.decode(encoding).split("\n")
        raw_bytes: list[bytes] | None = None
    except UnicodeDecodeError:
        raw_bytes = data.split(b"\n")
        raw = [_try_decode(b, encoding) for b in raw_bytes]

    start = 0
    head: list[str] | None = None
    if header:
        head = _parse_header(raw[0] if raw else None, file, encoding, sep)
        if not columns:
            columns = head
        start = 1

    undecodable = np.zeros(len(raw), dtype=bool)
    if raw_bytes is not None:
        for i in range(start, len(raw)):
            if raw[i] is None:
                undecodable[i] = True
                field = _bad_bytes_field(raw_bytes[i], encoding, sep, columns)
                report.drop(file, i + 1, field, f"invalid {encoding} bytes")
    # Vectorised from here on: no Python loop over the lines of a good file.
    series = pl.Series("l", raw, dtype=pl.Utf8).str.strip_suffix("\r")
    blank = (series.str.strip_chars() == "").fill_null(False).to_numpy()
    data_row = np.arange(len(raw)) >= start
    counted = data_row & (~blank | undecodable)  # rows read: non-blank, decodable or not
    good = data_row & ~blank & ~undecodable
    row_of = np.cumsum(counted) - 1
    report.read(file, int(counted.sum()))
    idx = np.flatnonzero(good)
    return Lines(
        file=file,
        header=head,
        text=series.gather(idx) if len(idx) < len(raw) else series,
        line=(idx + 1).astype(np.int64),
        row=row_of[idx].astype(np.int64),
    )


def _parse_header(first: str | None, file: str, encoding: str, sep: str | None) -> list[str]:
    if first is None:
        raise DataError(f"{file}: line 1 (the header) is not valid {encoding}")
    first = first.lstrip("\ufeff").rstrip("\r")
    head = next(csv.reader([first], delimiter=sep or ","), []) if first.strip() else []
    if not head:
        raise DataError(f"{file}: line 1 should be a header, found an empty line")
    return [h.strip() for h in head]


def _try_decode(b: bytes, encoding: str) -> str | None:
    try:
        return b.decode(encoding)
    except UnicodeDecodeError:
        return None


def _bad_bytes_field(line: bytes, encoding: str, sep: str | None, columns: Sequence[str]) -> str:
    if sep is None:
        return columns[0] if len(columns) == 1 else ROW_FIELD
    for k, part in enumerate(line.split(sep.encode())):
        if _try_decode(part, encoding) is None:
            return columns[k] if k < len(columns) else ROW_FIELD
    return ROW_FIELD


def load_delimited(
    path: Path,
    root: Path,
    report: LoadReport,
    *,
    sep: str,
    columns: Sequence[str] | None = None,
    header: bool = False,
    encoding: str = "utf-8",
    quoted: bool = False,
    required: Sequence[str] = (),
) -> tuple[pl.DataFrame, str]:
    """Read one delimited file into string columns (named by `columns` or its header).

    Returns the frame (with `_line`/`_row`) and the file's display name. A header that
    lacks a `required` column is a DataError: no row of such a file can be used.
    """
    file = display_name(root, path)
    lines = read_lines(
        read_bytes(path), file, report, encoding=encoding, header=header, sep=sep, columns=columns or ()
    )
    names = list(columns) if columns else list(lines.header or [])
    if len(set(names)) != len(names):
        raise DataError(f"{file}: duplicate column names in header {names}")
    missing = [c for c in required if c not in names]
    if missing:
        raise DataError(f"{file}: header lacks column(s) {missing} (found {names})")
    return split_fields(lines, report, names, sep, quoted=quoted), file


# ---- fields -----------------------------------------------------------------------------
def split_fields(
    lines: Lines,
    report: LoadReport,
    columns: Sequence[str],
    sep: str,
    *,
    quoted: bool = False,
    n_fields: int | None = None,
) -> pl.DataFrame:
    """String columns named `columns` plus `_line`/`_row`; wrong field counts dropped.

    `n_fields` is the count a row must have (default: len(columns)); the first
    len(columns) fields are kept. With `quoted`, the csv module parses lines that contain
    a quote character; other files take the vectorised polars path.
    """
    want = len(columns) if n_fields is None else n_fields
    if quoted and lines.text.str.contains('"', literal=True).any():
        return _split_csv(lines, report, columns, sep, want)
    parts = lines.text.str.split(sep)
    counts = parts.list.len().to_numpy()
    bad = np.flatnonzero(counts != want)
    for i in bad:
        report.drop(lines.file, int(lines.line[i]), ROW_FIELD, f"expected {want} fields, found {counts[i]}")
    frame = pl.DataFrame(
        {c: parts.list.get(k, null_on_oob=True) for k, c in enumerate(columns)}
        | {LINE: lines.line, ROW: lines.row}
    )
    if len(bad):
        keep = np.ones(len(counts), dtype=bool)
        keep[bad] = False
        frame = frame.filter(pl.Series(keep))
    return frame


def _split_csv(lines: Lines, report: LoadReport, columns: Sequence[str], sep: str, want: int) -> pl.DataFrame:
    """csv-module path for quoted fields; every record is one physical line.

    A stray quote would otherwise swallow the following lines into one field, silently.
    So a record that spans lines is parsed again line by line: each line stands or falls
    on its own and is reported at its own number (multi-line fields are not supported).
    """
    text = lines.text.to_list()
    reader = csv.reader(text, delimiter=sep, strict=False)
    values: list[list[str]] = [[] for _ in columns]
    numbers: list[int] = []
    rows: list[int] = []

    def take(record: list[str], k: int) -> None:
        if len(record) != want:
            report.drop(lines.file, int(lines.line[k]), ROW_FIELD, f"expected {want} fields, found {len(record)}")
            return
        for c in range(len(columns)):
            values[c].append(record[c])
        numbers.append(int(lines.line[k]))
        rows.append(int(lines.row[k]))

    consumed = 0
    for record in reader:
        first, consumed = consumed, reader.line_num
        if consumed - first == 1:
            take(record, first)
        else:
            for k in range(first, consumed):
                take(next(csv.reader([text[k]], delimiter=sep, strict=False), []), k)
    return pl.DataFrame(
        {c: pl.Series(c, v, dtype=pl.Utf8) for c, v in zip(columns, values)}
        | {LINE: np.asarray(numbers, dtype=np.int64), ROW: np.asarray(rows, dtype=np.int64)}
    )


# ---- typed columns ----------------------------------------------------------------------
Parser = Callable[[pl.Expr], pl.Expr]
Explainer = Callable[[str | None], str]


@dataclass(frozen=True)
class Field:
    """A column to parse: `parse` maps the string expression to a typed one, null = bad.

    `explain(raw)` says why a raw value failed; it runs only for bad rows. With
    `optional`, an empty or missing value is kept as null instead of dropping the row.
    """

    name: str
    parse: Parser
    explain: Explainer
    optional: bool = False


def check_fields(frame: pl.DataFrame, file: str, report: LoadReport, fields: Sequence[Field]) -> pl.DataFrame:
    """Parse `fields` in place; drop each row at its first bad field and report it."""
    if frame.height == 0:
        return frame
    parsed = frame.select([f.parse(pl.col(f.name)).alias(f.name) for f in fields])
    dropped = np.zeros(frame.height, dtype=bool)
    lines = frame[LINE].to_numpy()
    for f in fields:
        bad = parsed[f.name].is_null().to_numpy()
        if f.optional:
            raw = frame[f.name].str.strip_chars()
            bad &= ~(raw.is_null() | (raw == "")).to_numpy()
        bad &= ~dropped
        idx = np.flatnonzero(bad)
        if len(idx):
            raws = frame[f.name].gather(idx).to_list()
            for i, raw_value in zip(idx, raws):
                report.drop(file, int(lines[i]), f.name, f.explain(raw_value))
        dropped |= bad
    out = frame.with_columns(parsed)
    return out.filter(pl.Series(~dropped)) if dropped.any() else out


def _shown(raw: str | None) -> str:
    return "empty" if raw is None or not raw.strip() else repr(raw if len(raw) <= 40 else raw[:40] + "...")


def int_field(name: str, optional: bool = False) -> Field:
    """An integer (ids in MovieLens/S3-Rec files, ages)."""
    return Field(
        name,
        lambda e: e.str.strip_chars().cast(pl.Int64, strict=False),
        lambda raw: f"not an integer: {_shown(raw)}",
        optional,
    )


def float_field(name: str, optional: bool = False) -> Field:
    """A finite number (ratings, values, prices)."""

    def parse(e: pl.Expr) -> pl.Expr:
        x = e.str.strip_chars().cast(pl.Float64, strict=False)
        return pl.when(x.is_finite()).then(x)

    return Field(name, parse, lambda raw: f"not a finite number: {_shown(raw)}", optional)


def id_field(name: str) -> Field:
    """A non-empty string id, kept as written (surrounding spaces trimmed)."""

    def parse(e: pl.Expr) -> pl.Expr:
        x = e.str.strip_chars()
        return pl.when(x != "").then(x)

    return Field(name, parse, lambda raw: "empty id")


def int_id_field(name: str) -> Field:
    """An integer id, normalised to its canonical string ("007" and "7" are one id)."""

    def parse(e: pl.Expr) -> pl.Expr:
        return e.str.strip_chars().cast(pl.Int64, strict=False).cast(pl.Utf8)

    return Field(name, parse, lambda raw: f"id is not an integer: {_shown(raw)}")


ISO_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)


def time_expr(e: pl.Expr, fmt: str, allow_negative: bool = False) -> pl.Expr:
    """Unix seconds (Int64) from a string column; null when unparseable (or negative).

    Event times must not be negative (a negative time is a broken export); dates such as
    a film's release may be (1926 is before 1970), hence `allow_negative`.

    `fmt`: "unix" (seconds, decimals allowed), "unix_ms", "iso" (ISO 8601, with or without
    zone; naive times are UTC), or a strftime pattern (polars/chrono syntax).
    """
    s = e.str.strip_chars()
    if fmt in ("unix", "unix_ms"):
        x = s.cast(pl.Float64, strict=False)
        x = pl.when(x.is_finite()).then(x)
        if fmt == "unix_ms":
            x = x / 1000.0
        secs = x.floor().cast(pl.Int64, strict=False)
    elif fmt == "iso":
        s = s.str.replace(r"[Zz]$", "+00:00")
        secs = pl.coalesce([_strptime(s, f) for f in ISO_FORMATS])
    else:
        secs = _strptime(s, fmt)
    return secs if allow_negative else pl.when(secs >= 0).then(secs)


def _strptime(s: pl.Expr, fmt: str) -> pl.Expr:
    has_zone = "%z" in fmt or "%Z" in fmt or "%:z" in fmt
    has_time = any(t in fmt for t in ("%H", "%M", "%S", "%T", "%s"))
    if not has_time:
        return s.str.strptime(pl.Date, fmt, strict=False).cast(pl.Datetime("us")).dt.epoch("s")
    dtype = pl.Datetime("us", "UTC") if has_zone else pl.Datetime("us")
    return s.str.strptime(dtype, fmt, strict=False).dt.epoch("s")


def time_field(name: str, fmt: str = "unix", optional: bool = False) -> Field:
    """A timestamp in `fmt` (see `time_expr`), converted to unix seconds."""

    def explain(raw: str | None) -> str:
        if raw is not None:
            try:
                if float(raw) < 0:
                    return f"negative time: {_shown(raw)}"
            except ValueError:
                pass
        return f"unparseable time ({fmt}): {_shown(raw)}"

    return Field(name, lambda e: time_expr(e, fmt), explain, optional)
