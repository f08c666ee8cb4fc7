"""S3-Rec / ICLRec sequence files: `<Name>.txt[.gz]` + optional `<Name>_item2attributes.json`.

A line is one user: `user_id item item ...`, oldest first, with no clock time. So the
dataset has `ordinal_time=True`, `ts` = the position in the user's sequence and `pos` =
a running index over all items of the file. A line is the unit of validation: a bad id
anywhere on it drops the line (its user), because a sequence with a hole would teach a
sequential model transitions that never happened.
"""

from __future__ import annotations

import json
import re
from itertools import chain
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from recfunnel.data.assemble import assemble
from recfunnel.data.dataset import Dataset
from recfunnel.data.textio import ROW_FIELD, display_name, locate, read_bytes, read_lines, require
from recfunnel.data.validation import DataError, LoadReport

ATTR_SUFFIX = "_item2attributes.json"
_SEQ_NAME = re.compile(r"^(?P<name>.+)\.txt(\.gz)?$")
_NOT_SEQUENCES = ("readme", "license")


def s3rec_name(root: Path) -> str | None:
    """The `<Name>` of the S3-Rec files in `root`, or None when there is none.

    The attribute file names it when present; otherwise the one `*.txt[.gz]` file that is
    not a README or a `*_sample.txt` (sampled negatives, which the protocol never uses).
    """
    for path in sorted(root.glob(f"*{ATTR_SUFFIX}")):
        name = path.name[: -len(ATTR_SUFFIX)]
        if locate(root, f"{name}.txt") is not None:
            return name
    names = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        m = _SEQ_NAME.match(path.name)
        if m and not m["name"].lower().startswith(_NOT_SEQUENCES) and not m["name"].endswith("_sample"):
            names.append(m["name"])
    return names[0] if len(set(names)) == 1 else None


def load_s3rec(path: str | Path, name: str | None = None) -> Dataset:
    """Load `<name>.txt[.gz]` (+ attributes) from folder `path`; name found when omitted."""
    root = Path(path)
    name = name or s3rec_name(root)
    if name is None:
        raise DataError(f"{root}: no S3-Rec sequence file (<Name>.txt[.gz]) found")
    report = LoadReport()
    events = _sequences(root, name, report)
    items = _attributes(root, name, report)
    # Ids are numbered by first appearance in these files; numeric order keeps index = id - 1.
    if items is not None:
        items = items.sort(pl.col("item").cast(pl.Int64))
    return assemble(name, events, items, None, report, ordinal_time=True)


def _sequences(root: Path, name: str, report: LoadReport) -> pl.DataFrame:
    path = require(root, f"{name}.txt")
    file = display_name(root, path)
    lines = read_lines(read_bytes(path), file, report, columns=("row",))
    tokens = lines.text.str.strip_chars().str.replace_all(r"\s+", " ").str.split(" ")
    frame = pl.DataFrame({"tok": tokens, "line": lines.line, "row": lines.row})
    frame = frame.with_columns(n=pl.col("tok").list.len())
    # pos: running index over every item token of the file, in file order.
    frame = frame.with_columns(first_pos=(pl.col("n") - 1).clip(0).cum_sum() - (pl.col("n") - 1).clip(0))
    short = frame.filter(pl.col("n") < 2)
    for line in short["line"].to_list():
        report.drop(file, line, ROW_FIELD, "expected a user id and at least one item")
    frame = frame.filter(pl.col("n") >= 2)
    long = (
        frame.with_columns(
            user_raw=pl.col("tok").list.first(),
            item_raw=pl.col("tok").list.slice(1),
            ts=pl.int_ranges(0, pl.col("n") - 1),
        )
        .select("line", "first_pos", "user_raw", "item_raw", "ts")
        .explode("item_raw", "ts")
        .with_columns(
            user=pl.col("user_raw").cast(pl.Int64, strict=False),
            item=pl.col("item_raw").cast(pl.Int64, strict=False),
        )
    )
    bad = long.filter(pl.col("user").is_null() | pl.col("item").is_null())
    if bad.height:
        _report_bad_lines(bad, file, report)
        long = long.filter(~pl.col("line").is_in(bad["line"].unique().implode()))
    report.kept(file, long["line"].n_unique())
    report.require_rows(file)
    return long.select(
        user=pl.col("user").cast(pl.Utf8),
        item=pl.col("item").cast(pl.Utf8),
        ts=pl.col("ts").cast(pl.Int64),
        event=pl.lit("review"),
        value=pl.lit(1.0),
        pos=pl.col("first_pos") + pl.col("ts"),
    )


def _report_bad_lines(bad: pl.DataFrame, file: str, report: LoadReport) -> None:
    """One report per bad line, at its first bad field (the user id, else the first item)."""
    first = bad.group_by("line", maintain_order=True).first()
    for row in first.iter_rows(named=True):
        if row["user"] is None:
            report.drop(file, row["line"], "user", f"id is not an integer: {row['user_raw']!r}")
        else:
            report.drop(
                file, row["line"], "item",
                f"id is not an integer: {row['item_raw']!r} (item {row['ts'] + 1} of the line)",
            )


def _attributes(root: Path, name: str, report: LoadReport) -> pl.DataFrame | None:
    """Item -> attribute ids; each item is one row (a JSON key), reported at line 1."""
    path = locate(root, f"{name}{ATTR_SUFFIX}")
    if path is None:
        return None
    file = display_name(root, path)
    try:
        mapping = json.loads(read_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{file}: not a readable JSON object ({exc})") from exc
    if not isinstance(mapping, dict):
        raise DataError(f"{file}: expected a JSON object {{item: [attribute ids]}}")
    keys = list(mapping)
    values = list(mapping.values())
    bad = [k for k, v in zip(keys, values) if _attribute_problem(k, v)]
    for key in bad:
        field, reason = _attribute_problem(key, mapping[key]) or ("", "")
        report.drop(file, 1, field, reason)
    if bad:
        skip = set(bad)
        keys = [k for k in keys if k not in skip]
        values = [mapping[k] for k in keys]
    report.read(file, len(mapping))
    report.kept(file, len(keys))
    report.require_rows(file)
    return pl.DataFrame({"item": _int_strings(keys), "categories": _lists_of_str(values)})


def _int_strings(keys: list[str]) -> pl.Series:
    return pl.Series("item", keys, dtype=pl.Utf8).str.strip_chars().cast(pl.Int64).cast(pl.Utf8)


def _lists_of_str(values: list[list[int]]) -> pl.Series:
    """list[list[int]] -> List(Utf8) through Arrow offsets: no per-item Python objects."""
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    flat = np.fromiter(chain.from_iterable(values), dtype=np.int64, count=int(offsets[-1]))
    arr = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.astype(str)))
    # A few items list an attribute twice (Beauty: 5 of 45,037 pairs); categories are a set.
    return pl.Series("categories", arr).cast(pl.List(pl.Utf8)).list.unique(maintain_order=True)


def _attribute_problem(key: str, attrs: object) -> tuple[str, str] | None:
    if not key.strip().lstrip("-").isdigit():
        return (str(key), f"item id is not an integer: {key!r}")
    if not isinstance(attrs, list) or not all(type(a) is int for a in attrs):
        return (str(key), "attributes must be a list of integer ids")
    return None

