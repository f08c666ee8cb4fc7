"""Generic event tables (CSV/TSV/Parquet, gzip transparent) described by a `ColumnMapping`.

This is how a team brings its own data: an events file with user, item and time columns,
optionally an item catalog and user profiles. Every column is read as text and validated
the same way as the built-in formats, so a Parquet export and a CSV export of the same
table load to the same Dataset and report bad rows alike (Parquet "lines" are 1-based
row numbers).
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import polars as pl
from pydantic import BaseModel, ConfigDict

from recfunnel.data.assemble import assemble
from recfunnel.data.dataset import Dataset
from recfunnel.data.textio import (
    LINE,
    ROW,
    Field,
    check_fields,
    display_name,
    float_field,
    id_field,
    load_delimited,
    locate,
    read_bytes,
    time_field,
)
from recfunnel.data.validation import DataError, LoadReport

EVENT_FILES = ("events.csv", "events.tsv", "events.parquet")
ITEM_FILES = ("items.csv", "items.tsv", "items.parquet")
USER_FILES = ("users.csv", "users.tsv", "users.parquet")


class ItemsMapping(BaseModel):
    """The item catalog file: id column plus optional attribute columns.

    Columns not named here are kept as extra item columns (integers and numbers typed,
    the rest text).
    """

    model_config = ConfigDict(extra="forbid")
    file: str
    id: str = "item"
    title: str | None = None
    categories: str | None = None
    category_sep: str = "|"
    price: str | None = None
    created: str | None = None
    created_format: str = "unix"
    delimiter: str | None = None  # None: tab for .tsv files, else comma


class UsersMapping(BaseModel):
    """The user profile file: id column plus attribute columns (all others when None)."""

    model_config = ConfigDict(extra="forbid")
    file: str
    id: str = "user"
    columns: list[str] | None = None
    delimiter: str | None = None


class ColumnMapping(BaseModel):
    """How to read a team's own tables. Paths are relative to the dataset folder.

    timestamp_format: "unix" (seconds), "unix_ms", "iso" (ISO 8601) or a strftime
    pattern such as "%Y-%m-%d %H:%M:%S". Without `event`/`value` columns every row is a
    `default_event` with value 1.0.
    """

    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    events: str | None = None  # None: the file given to load_table, else events.csv/.tsv/.parquet
    user: str = "user"
    item: str = "item"
    timestamp: str = "timestamp"
    timestamp_format: str = "unix"
    event: str | None = None
    value: str | None = None
    default_event: str = "interaction"
    delimiter: str | None = None  # None: tab for .tsv files, else comma
    items: ItemsMapping | None = None
    users: UsersMapping | None = None


# ---- reading any table as text -----------------------------------------------------------
def _delimiter(path: Path, explicit: str | None) -> str:
    if explicit is not None:
        return explicit
    return "\t" if path.name.endswith((".tsv", ".tsv.gz", ".tab", ".tab.gz")) else ","


def _read_text_table(
    path: Path, root: Path, report: LoadReport, sep: str | None, required: list[str]
) -> tuple[pl.DataFrame, str, set[str]]:
    """Every column as Utf8 plus `_line`/`_row`, from CSV/TSV or Parquet.

    Also returns the columns that held native datetimes (now unix seconds as text).
    """
    if _is_parquet(path):
        return _read_parquet_as_text(path, root, report, required)
    sep = _delimiter(path, sep)
    frame, file = load_delimited(path, root, report, sep=sep, header=True, quoted=True, required=required)
    return frame, file, set()


def _is_parquet(path: Path) -> bool:
    return path.name.endswith((".parquet", ".parquet.gz", ".pq"))


def _read_parquet_as_text(
    path: Path, root: Path, report: LoadReport, required: list[str]
) -> tuple[pl.DataFrame, str, set[str]]:
    file = display_name(root, path)
    try:
        source = BytesIO(read_bytes(path)) if path.name.endswith(".gz") else path
        frame = pl.read_parquet(source)
    except DataError:
        raise
    except Exception as exc:  # polars raises several error types for a broken file
        raise DataError(f"{file}: not a readable Parquet file ({exc})") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{file}: lacks column(s) {missing} (found {frame.columns})")
    report.read(file, frame.height)
    dated = {c for c, t in frame.schema.items() if isinstance(t, (pl.Datetime, pl.Date))}
    text = frame.select([_as_text(c, t) for c, t in frame.schema.items()])
    idx = pl.int_range(0, pl.len(), dtype=pl.Int64)
    return text.with_columns((idx + 1).alias(LINE), idx.alias(ROW)), file, dated


def _as_text(name: str, dtype: pl.DataType) -> pl.Expr:
    """Parquet column -> text; datetimes become unix seconds, lists "|"-joined."""
    col = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        col = col.dt.epoch("s")
    elif isinstance(dtype, pl.Date):
        col = col.cast(pl.Datetime("us")).dt.epoch("s")
    elif isinstance(dtype, pl.List):
        col = col.cast(pl.List(pl.Utf8)).list.join("|")
    return col.cast(pl.Utf8)


def _find(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        path = locate(root, name)
        if path is not None:
            return path
    return None


def _require_path(root: Path, name: str) -> Path:
    path = Path(name) if Path(name).is_absolute() else root / name
    found = locate(path.parent, path.name)
    if found is None:
        raise DataError(f"required file missing: {path} (or {path.name}.gz)")
    return found


def _infer(frame: pl.DataFrame, columns: list[str]) -> list[pl.Series]:
    """Text columns typed when every non-empty value is an integer (else a number).

    Profiles arrive as text in CSV; an age column should still be a number.
    """
    out = []
    for c in columns:
        s = frame[c].str.strip_chars()
        present = s.is_not_null() & (s != "")
        typed = frame[c]
        for dtype in (pl.Int64, pl.Float64):
            cast = s.cast(dtype, strict=False)
            if present.any() and (cast.is_not_null() | ~present).all():
                typed = cast
                break
        out.append(typed.alias(c))
    return out


# ---- the three tables ---------------------------------------------------------------------
def load_table(path: str | Path, mapping: ColumnMapping | None = None) -> Dataset:
    """Load events (+ items, users) described by `mapping` from a folder or an events file.

    With a file path, the folder is its parent and the file is the events table. Without
    a mapping, `default_mapping` reads the header of the events file.
    """
    path = Path(path)
    root = path.parent if path.is_file() else path
    if mapping is None:
        mapping = default_mapping(path)
    if path.is_file():
        events_path = path
    elif mapping.events:
        events_path = _require_path(root, mapping.events)
    else:
        found = _find(root, EVENT_FILES)
        if found is None:
            raise DataError(f"required file missing: {root / EVENT_FILES[0]} (or .tsv/.parquet, optionally .gz)")
        events_path = found
    report = LoadReport()
    events = _events(events_path, root, mapping, report)
    items = _items(root, mapping, report) if mapping.items else None
    users = _users(root, mapping, report) if mapping.users else None
    return assemble(mapping.name or root.resolve().name, events, items, users, report)


def _events(path: Path, root: Path, m: ColumnMapping, report: LoadReport) -> pl.DataFrame:
    required = [m.user, m.item, m.timestamp] + [c for c in (m.event, m.value) if c]
    frame, file, dated = _read_text_table(path, root, report, m.delimiter, required)
    fmt = "unix" if m.timestamp in dated else m.timestamp_format
    fields: list[Field] = [id_field(m.user), id_field(m.item), time_field(m.timestamp, fmt)]
    if m.value:
        fields.append(float_field(m.value))
    frame = check_fields(frame, file, report, fields)
    report.kept(file, frame.height)
    report.require_rows(file)
    event = pl.lit(m.default_event)
    if m.event:
        raw = pl.col(m.event).str.strip_chars()
        event = pl.when(raw.is_null() | (raw == "")).then(event).otherwise(raw)
    return frame.select(
        user=pl.col(m.user),
        item=pl.col(m.item),
        ts=pl.col(m.timestamp),
        event=event,
        value=pl.col(m.value) if m.value else pl.lit(1.0),
        pos=pl.col(ROW),
    )


def _items(root: Path, m: ColumnMapping, report: LoadReport) -> pl.DataFrame:
    im = m.items
    assert im is not None
    named = [c for c in (im.title, im.categories, im.price, im.created) if c]
    frame, file, dated = _read_text_table(
        _require_path(root, im.file), root, report, im.delimiter, [im.id, *named]
    )
    fields: list[Field] = [id_field(im.id)]
    if im.price:
        fields.append(float_field(im.price, optional=True))
    if im.created:
        fmt = "unix" if im.created in dated else im.created_format
        fields.append(time_field(im.created, fmt, optional=True))
    frame = check_fields(frame, file, report, fields)
    report.kept(file, frame.height)
    report.require_rows(file)
    cols: dict[str, pl.Expr] = {"item": pl.col(im.id)}
    if im.title:
        cols["title"] = pl.col(im.title)
    if im.categories:
        cats = pl.col(im.categories).fill_null("").str.split(im.category_sep)
        cols["categories"] = cats.list.eval(pl.element().str.strip_chars().filter(pl.element() != ""))
    if im.price:
        cols["price"] = pl.col(im.price)
    if im.created:
        cols["created"] = pl.col(im.created)
    extra = [c for c in frame.columns if c not in (im.id, *named, LINE, ROW)]
    return frame.select(**cols).with_columns(_infer(frame, extra))


def _users(root: Path, m: ColumnMapping, report: LoadReport) -> pl.DataFrame:
    um = m.users
    assert um is not None
    frame, file, _ = _read_text_table(
        _require_path(root, um.file), root, report, um.delimiter, [um.id, *(um.columns or [])]
    )
    frame = check_fields(frame, file, report, [id_field(um.id)])
    report.kept(file, frame.height)
    report.require_rows(file)
    attrs = um.columns if um.columns is not None else [c for c in frame.columns if c not in (um.id, LINE, ROW)]
    return frame.select(user=pl.col(um.id)).with_columns(_infer(frame, attrs))


# ---- defaults -----------------------------------------------------------------------------
def read_columns(path: Path) -> list[str]:
    """Column names of a CSV/TSV (its header) or Parquet file, without loading it."""
    if _is_parquet(path) and not path.name.endswith(".gz"):
        return list(pl.read_parquet_schema(path))
    if _is_parquet(path):
        return list(pl.read_parquet(BytesIO(read_bytes(path)), n_rows=0).columns)
    head = read_bytes(path)[:65536].split(b"\n", 1)[0].decode("utf-8", errors="replace")
    sep = _delimiter(path, None)
    return [c.strip().strip('"') for c in head.lstrip("\ufeff").rstrip("\r").split(sep)]


def default_mapping(path: str | Path) -> ColumnMapping:
    """The mapping for files that already use the standard names.

    events: `user`, `item`, `timestamp` (unix seconds), and `event`/`value` when present;
    items.csv (`item`, and title/categories/price/created when present) and users.csv
    (`user` + attributes) beside it are picked up. This is the layout
    `write_synthetic_files` writes.
    """
    path = Path(path)
    root = path.parent if path.is_file() else path
    events = path if path.is_file() else _find(root, EVENT_FILES)
    if events is None:
        raise DataError(
            f"{root}: no events.csv/events.parquet here; pass a ColumnMapping to load your own tables"
        )
    cols = read_columns(events)
    missing = [c for c in ("user", "item", "timestamp") if c not in cols]
    if missing:
        raise DataError(
            f"{display_name(root, events)}: lacks column(s) {missing} for the default mapping; "
            "pass a ColumnMapping naming your columns"
        )
    mapping = ColumnMapping(
        events=events.name,
        event="event" if "event" in cols else None,
        value="value" if "value" in cols else None,
    )
    items = _find(root, ITEM_FILES)
    if items is not None and "item" in (icols := read_columns(items)):
        mapping.items = ItemsMapping(
            file=items.name,
            **{k: k for k in ("title", "categories", "price", "created") if k in icols},
        )
    users = _find(root, USER_FILES)
    if users is not None and "user" in read_columns(users):
        mapping.users = UsersMapping(file=users.name)
    return mapping
