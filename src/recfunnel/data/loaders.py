"""One entry point for every supported layout: `load_dataset(dir)`.

The format is recognised from the file names alone (no parsing), so a wrong guess is
cheap to see and `fmt=` overrides it.
"""

from __future__ import annotations

from pathlib import Path

from recfunnel.data.dataset import Dataset
from recfunnel.data.movielens import load_movielens_100k, load_movielens_latest
from recfunnel.data.s3rec import load_s3rec, s3rec_name
from recfunnel.data.tabular import (
    ColumnMapping,
    ItemsMapping,
    UsersMapping,
    default_mapping,
    load_table,
)
from recfunnel.data.textio import locate
from recfunnel.data.validation import DataError

FORMATS = ("movielens-100k", "movielens-latest", "s3rec", "table")


def detect_format(path: str | Path) -> str:
    """"movielens-100k", "movielens-latest", "s3rec" or "table" from the files present.

    A file path is a table; a folder that matches nothing else is a table too (its
    loader then says which files it expected).
    """
    root = Path(path)
    if not root.exists():
        raise DataError(f"data path does not exist: {root}")
    if root.is_file():
        return "table"
    if locate(root, "u.data") is not None and locate(root, "u.item") is not None:
        return "movielens-100k"
    if locate(root, "ratings.csv") is not None and locate(root, "movies.csv") is not None:
        return "movielens-latest"
    if s3rec_name(root) is not None:
        return "s3rec"
    return "table"


def load_dataset(path: str | Path, fmt: str | None = None, mapping: ColumnMapping | None = None) -> Dataset:
    """Load any supported layout; `fmt` overrides detection, a `mapping` implies "table".

    A table without a mapping loads when its events file uses the default column names
    (`user`, `item`, `timestamp`; see `default_mapping`).
    """
    if mapping is not None and fmt is None:
        fmt = "table"
    fmt = fmt or detect_format(path)
    if fmt == "movielens-100k":
        return load_movielens_100k(path)
    if fmt == "movielens-latest":
        return load_movielens_latest(path)
    if fmt == "s3rec":
        return load_s3rec(path)
    if fmt == "table":
        return load_table(path, mapping or default_mapping(path))
    raise DataError(f"unknown data format {fmt!r}; expected one of {', '.join(FORMATS)}")


__all__ = [
    "FORMATS",
    "ColumnMapping",
    "ItemsMapping",
    "UsersMapping",
    "default_mapping",
    "detect_format",
    "load_dataset",
    "load_movielens_100k",
    "load_movielens_latest",
    "load_s3rec",
    "load_table",
]
