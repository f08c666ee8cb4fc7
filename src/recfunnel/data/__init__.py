"""Data: validated tables with integer ids, loaders for every supported layout, splits,
and a synthetic generator with planted structure."""

from recfunnel.data.dataset import Dataset
from recfunnel.data.idmap import IdMap
from recfunnel.data.loaders import (
    ColumnMapping,
    ItemsMapping,
    UsersMapping,
    detect_format,
    load_dataset,
    load_movielens_100k,
    load_movielens_latest,
    load_s3rec,
    load_table,
)
from recfunnel.data.split import Split, leave_last_out
from recfunnel.data.synthetic import (
    SyntheticConfig,
    SyntheticTruth,
    generate,
    generate_with_truth,
    write_synthetic_files,
)
from recfunnel.data.validation import DataError, LoadReport

__all__ = [
    "ColumnMapping",
    "DataError",
    "Dataset",
    "IdMap",
    "ItemsMapping",
    "LoadReport",
    "Split",
    "SyntheticConfig",
    "SyntheticTruth",
    "UsersMapping",
    "detect_format",
    "generate",
    "generate_with_truth",
    "leave_last_out",
    "load_dataset",
    "load_movielens_100k",
    "load_movielens_latest",
    "load_s3rec",
    "load_table",
    "write_synthetic_files",
]
