"""Side information as integer codes for the neural towers.

User attributes (MovieLens gender/age/occupation, a synthetic age group, ...) become one
categorical code per field: strings keep their most frequent values, numbers with many
distinct values are cut into quantile bins, code 0 means unknown. The codes of the fit
users are stored as an array; a request from a user the model has never seen is encoded
from `Query.attributes`, so the user tower also answers for new users with a profile.
Item categories become a padded token matrix (token 0 = none) that a tower mean-pools.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from recfunnel.data.dataset import Dataset
from recfunnel.query import QueryBatch


class UserFeatures:
    """Categorical codes of the Dataset's user attribute columns (0 = unknown)."""

    def __init__(self, fields: list[dict[str, Any]] | None = None, codes: np.ndarray | None = None) -> None:
        self.fields = fields or []  # [{"name", "kind": "values"|"bins", "values" | "edges"}]
        self.codes = codes if codes is not None else np.zeros((0, 0), dtype=np.int64)

    @classmethod
    def fit(cls, ds: Dataset, max_values: int = 50, min_count: int = 3, n_bins: int = 8) -> "UserFeatures":
        fields: list[dict[str, Any]] = []
        columns: list[np.ndarray] = []
        for name in ds.users.columns:
            if name == "user":
                continue
            col = ds.users[name]
            if col.dtype.is_numeric() and col.n_unique() > max_values:
                x = col.cast(pl.Float64).to_numpy()
                ok = x[np.isfinite(x)]
                if len(ok) == 0:
                    continue
                edges = np.unique(np.quantile(ok, np.linspace(0, 1, n_bins + 1)[1:-1]))
                fields.append({"name": name, "kind": "bins", "edges": edges.tolist()})
            else:
                values = col.cast(pl.Utf8).drop_nulls().value_counts(sort=True)
                keep = values.filter(pl.col("count") >= min_count).head(max_values)[name].to_list()
                if len(keep) < 2:  # a constant or all-unique column says nothing
                    continue
                fields.append({"name": name, "kind": "values", "values": keep})
            columns.append(_encode(fields[-1], col.to_list()))
        codes = np.stack(columns, axis=1) if columns else np.zeros((ds.n_users, 0), dtype=np.int64)
        return cls(fields, codes.astype(np.int64))

    @property
    def sizes(self) -> list[int]:
        """Codes per field, unknown included."""
        return [len(f["values"]) + 1 if f["kind"] == "values" else len(f["edges"]) + 2 for f in self.fields]

    def lookup(self, batch: QueryBatch, rows: slice) -> np.ndarray:
        """(len(rows), n_fields) codes: the stored row for known users, else `Query.attributes`."""
        users = batch.users[rows]
        out = np.zeros((len(users), len(self.fields)), dtype=np.int64)
        if not self.fields:
            return out
        known = (users >= 0) & (users < len(self.codes))
        out[known] = self.codes[users[known]]
        for r in np.flatnonzero(~known):
            attrs = batch.queries[rows.start + r].attributes or {}
            for j, f in enumerate(self.fields):
                if f["name"] in attrs:
                    out[r, j] = _encode(f, [attrs[f["name"]]])[0]
        return out

    def to_json(self) -> list[dict[str, Any]]:
        return self.fields


def _encode(field: dict[str, Any], raw: list[Any]) -> np.ndarray:
    if field["kind"] == "bins":
        x = np.array([_as_float(v) for v in raw], dtype=np.float64)
        codes = np.searchsorted(np.asarray(field["edges"], dtype=np.float64), x, side="right") + 1
        return np.where(np.isfinite(x), codes, 0).astype(np.int64)
    index = {v: k + 1 for k, v in enumerate(field["values"])}
    return np.array([index.get(None if v is None else str(v), 0) for v in raw], dtype=np.int64)


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def item_category_tokens(ds: Dataset, max_per_item: int = 16) -> np.ndarray:
    """(n_items + 1, m) category tokens (category c -> c + 1, 0 = padding); row 0 = padding item."""
    m = ds.item_categories
    counts = np.diff(m.indptr)
    width = int(max(1, min(max_per_item, counts.max(initial=0))))
    out = np.zeros((ds.n_items + 1, width), dtype=np.int64)
    for i in np.flatnonzero(counts):
        cats = m.indices[m.indptr[i] : m.indptr[i + 1]][:width]
        out[i + 1, : len(cats)] = cats + 1
    return out


class FieldEmbeddings(nn.Module):
    """One embedding table per categorical field, outputs concatenated (B, n_fields * dim)."""

    def __init__(self, sizes: list[int], dim: int) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(s, dim) for s in sizes)
        self.out_dim = dim * len(sizes)
        for t in self.tables:
            nn.init.normal_(t.weight, std=0.05)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        if not self.tables:
            return codes.new_zeros((codes.shape[0], 0), dtype=torch.float32)
        return torch.cat([t(codes[:, j]) for j, t in enumerate(self.tables)], dim=1)


def mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    """Linear layers with ReLU and dropout between them (none after the last)."""
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if k < len(sizes) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of (B, L, d) where mask (B, L) is true; zeros for empty rows."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)
