"""What the re-ranker knows about items (and, for audience rules, users), as arrays.

Built once in `Funnel.fit` from `ds.items` / `ds.users` and saved with the funnel as
.npy/.npz plus a small JSON (no pickle). Every column is optional: a rule whose column is
missing is a no-op, so the same config runs on MovieLens (genres, dates) and on a shop
(prices, availability windows, SKU groups, audiences).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from recfunnel.persist import load_state, read_json, save_state, write_json

OPTIONAL = ("price", "available_from", "available_until", "created", "group", "embeddings", "popularity", "exposure")
NEVER = np.iinfo(np.int64).min  # "no start" / "unknown creation time"
FOREVER = np.iinfo(np.int64).max  # "no end"


@dataclass
class Audience:
    """One (item column, user column) pair: codes in a shared vocabulary.

    item code -1 = for everyone; user code -1 = unknown (filters nothing).
    """

    item_column: str
    user_column: str
    vocab: list[str]
    item_code: np.ndarray  # int32 per item
    user_code: np.ndarray  # int32 per user index

    def code(self, value: object) -> int:
        """Code of a raw user value (from `Query.attributes`); unseen values match no audience."""
        if value is None or value == "":
            return -1
        try:
            return self.vocab.index(str(value))
        except ValueError:
            return -2


@dataclass
class Catalog:
    categories: sp.csr_matrix  # items x categories, binary
    price: np.ndarray | None = None  # float64, NaN = unknown
    available_from: np.ndarray | None = None  # int64 seconds, NEVER = no start
    available_until: np.ndarray | None = None  # int64 seconds, FOREVER = no end
    created: np.ndarray | None = None  # int64 seconds, NEVER = unknown
    group: np.ndarray | None = None  # int64 group code, -1 = no group
    embeddings: np.ndarray | None = None  # float32, rows L2-normalised
    popularity: np.ndarray | None = None  # float32 in [0, 1]: log1p(fit-data users) / max
    exposure: np.ndarray | None = None  # float32 in [0, 1]: log1p(expected top-n appearances) / max
    audiences: list[Audience] = field(default_factory=list)

    @property
    def n_items(self) -> int:
        return self.categories.shape[0]

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_dataset(
        cls,
        ds: Any,
        group_column: str = "",
        audience_pairs: list[tuple[str, str]] | None = None,
        embedding_column: str = "embedding",
    ) -> "Catalog":
        items: pl.DataFrame = ds.items
        cat = cls(categories=ds.item_categories.tocsr())
        counts = np.log1p(np.asarray(ds.item_user_count, dtype=np.float64))
        cat.popularity = (counts / max(float(counts.max(initial=0.0)), 1e-12)).astype(np.float32)
        if "price" in items.columns and items["price"].null_count() < items.height:
            cat.price = items["price"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        if "created" in items.columns and items["created"].null_count() < items.height:
            cat.created = _seconds(items["created"], NEVER)
        if "available_from" in items.columns:
            cat.available_from = _seconds(items["available_from"], NEVER)
        if "available_until" in items.columns:
            cat.available_until = _seconds(items["available_until"], FOREVER)
        if group_column and group_column in items.columns:
            cat.group = _codes(items[group_column])[0].astype(np.int64)
        if embedding_column in items.columns:
            emb = items[embedding_column]
            if emb.null_count() == 0 and isinstance(emb.dtype, (pl.List, pl.Array)):
                cat.set_embeddings(np.asarray(emb.to_list(), dtype=np.float32))
        users: pl.DataFrame = ds.users
        for item_col, user_col in audience_pairs or []:
            if item_col not in items.columns:
                continue
            item_code, vocab = _codes(items[item_col])
            if user_col in users.columns:
                lookup = {v: k for k, v in enumerate(vocab)}
                raw = users[user_col].cast(pl.Utf8).to_list()
                user_code = np.array(
                    [-1 if v is None or v == "" else lookup.get(v, -2) for v in raw], dtype=np.int32
                )
            else:
                user_code = np.full(users.height, -1, dtype=np.int32)
            cat.audiences.append(Audience(item_col, user_col, vocab, item_code, user_code))
        return cat

    def set_embeddings(self, emb: np.ndarray) -> None:
        """Item embeddings for similarity (rows are L2-normalised here)."""
        emb = np.asarray(emb, dtype=np.float32)
        if emb.shape[0] != self.n_items:
            raise ValueError(f"{emb.shape[0]} embedding rows for {self.n_items} items")
        norm = np.linalg.norm(emb, axis=1, keepdims=True)
        self.embeddings = emb / np.maximum(norm, 1e-12)

    def set_exposure(self, counts: np.ndarray) -> None:
        """Expected exposure from top-n appearance counts (log-scaled to [0, 1])."""
        c = np.log1p(np.asarray(counts, dtype=np.float64))
        self.exposure = (c / max(float(c.max(initial=0.0)), 1e-12)).astype(np.float32)

    # ---- persistence --------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        state: dict[str, Any] = {"item_categories": self.categories}
        for name in OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                state[name] = value
        meta = []
        for k, a in enumerate(self.audiences):
            state[f"audience{k}_item"] = a.item_code
            state[f"audience{k}_user"] = a.user_code
            meta.append({"item_column": a.item_column, "user_column": a.user_column, "vocab": a.vocab})
        save_state(d, state)
        write_json(d / "catalog.json", {"audiences": meta})

    @classmethod
    def load(cls, directory: str | Path) -> "Catalog":
        d = Path(directory)
        s = load_state(d)
        cat = cls(categories=s["item_categories"])
        for name in OPTIONAL:
            setattr(cat, name, s.get(name))
        meta = read_json(d / "catalog.json") if (d / "catalog.json").exists() else {"audiences": []}
        for k, m in enumerate(meta["audiences"]):
            cat.audiences.append(
                Audience(m["item_column"], m["user_column"], list(m["vocab"]), s[f"audience{k}_item"], s[f"audience{k}_user"])
            )
        return cat


def _seconds(col: pl.Series, missing: int) -> np.ndarray:
    """Datetimes/dates/integers -> int64 seconds; nulls -> `missing`."""
    if col.dtype == pl.Datetime or isinstance(col.dtype, pl.Datetime):
        col = col.dt.epoch("s")
    elif col.dtype == pl.Date:
        col = col.cast(pl.Datetime("ms")).dt.epoch("s")
    elif col.dtype == pl.Null:
        return np.full(len(col), missing, dtype=np.int64)
    elif not col.dtype.is_numeric():
        raise ValueError(f"item column '{col.name}' must hold times (datetime or integer seconds), found {col.dtype}")
    return col.cast(pl.Int64).fill_null(missing).to_numpy().astype(np.int64)


def _codes(col: pl.Series) -> tuple[np.ndarray, list[str]]:
    """Dense codes of a column's string values; null or '' -> -1."""
    raw = col.cast(pl.Utf8).to_list()
    vocab: dict[str, int] = {}
    out = np.empty(len(raw), dtype=np.int32)
    for i, v in enumerate(raw):
        if v is None or v == "":
            out[i] = -1
        else:
            out[i] = vocab.setdefault(v, len(vocab))
    return out, list(vocab)
