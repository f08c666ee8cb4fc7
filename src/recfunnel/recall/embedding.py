"""Embedding channels: item vectors learned offline, served from an ANN index.

The user side is computed at request time from the query's current history (by default
a recency-weighted mean of the history's item vectors; neural user towers override
`user_vectors`), so a new event changes the very next answer without a rebuild.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from pydantic import Field

from recfunnel.candidates import Candidates
from recfunnel.data.dataset import Dataset
from recfunnel.index.ann import IndexConfig, VectorIndex
from recfunnel.query import QueryBatch
from recfunnel.recall.base import Source, SourceConfig, concat_sorted, recency_weights

CHUNK = 2048


class EmbeddingConfig(SourceConfig):
    dim: int = Field(64, ge=2, description="embedding size")
    history_decay: float = Field(0.8, gt=0, le=1, description="user vector: weight of the n-th last item is decay**n")
    history_last_n: int = Field(20, ge=1, description="user vector: recent items averaged")
    normalize: bool = Field(True, description="L2-normalise item vectors (cosine instead of inner product)")
    index: IndexConfig = IndexConfig()
    seed: int = Field(0, description="seed for initialisation and sampling")


class EmbeddingSource(Source):
    """Base for channels whose state is an item-vector matrix."""

    Config: ClassVar[type[EmbeddingConfig]]

    @abstractmethod
    def learn_item_vectors(self, ds: Dataset) -> np.ndarray:
        """(n_items, dim) vectors; rows of items never seen may be zero."""

    def fit(self, ds: Dataset) -> Self:
        self.n_items = ds.n_items
        vecs = np.asarray(self.learn_item_vectors(ds), dtype=np.float32)
        if self.config.normalize:
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            vecs = np.divide(vecs, norms, out=np.zeros_like(vecs), where=norms > 0)
        self.item_vectors = vecs
        self.index = VectorIndex(self.config.index).build(vecs)
        return self

    def user_vectors(self, batch: QueryBatch, rows: slice) -> np.ndarray:
        """Recency-weighted mean of the history's item vectors (zeros for no history)."""
        c = self.config
        hist = batch.history_matrix(recency_weights(batch, c.history_decay, c.history_last_n))[rows]
        u = np.asarray(hist @ self.item_vectors, dtype=np.float32)
        total = np.asarray(hist.sum(axis=1)).ravel()
        return u / np.maximum(total, 1e-9)[:, None]

    def score(self, batch: QueryBatch, rows: slice) -> np.ndarray:
        """Exact scores against every item (used by evaluation of the channel's quality)."""
        return self.user_vectors(batch, rows) @ self.item_vectors.T

    def retrieve(self, batch: QueryBatch, k: int | None = None) -> Candidates:
        k = k or self.config.quota
        parts = []
        for start in range(0, len(batch), CHUNK):
            rows = slice(start, min(start + CHUNK, len(batch)))
            users = self.user_vectors(batch, rows)
            has = np.linalg.norm(users, axis=1) > 0  # no history, nothing to say
            ids, scores = self.index.search(users, k, exclude=batch.seen[rows])
            ids[~has] = -1
            keep = ids >= 0
            q = np.repeat(np.arange(rows.start, rows.stop), keep.sum(axis=1))
            parts.append(
                Candidates(
                    query=q.astype(np.int32),
                    item=ids[keep].astype(np.int32),
                    score=scores[keep].astype(np.float32),
                    n_queries=len(batch),
                )
            )
        return concat_sorted(parts, len(batch))

    # ---- persistence: vectors as .npy, the index in faiss's own format ----------------
    def state(self) -> dict[str, Any]:
        return {**super().state(), "item_vectors": self.item_vectors}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.item_vectors = state["item_vectors"]

    def save(self, directory: str | Path) -> None:
        super().save(directory)
        self.index.save(Path(directory) / "index")

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        src = super().load(directory)
        src.index = VectorIndex.load(Path(directory) / "index")
        return src


def sequences(ds: Dataset) -> list[list[str]]:
    """Each user's time-ordered items as string tokens (the corpus for skip-gram models)."""
    ptr = ds.user_indptr
    tokens = ds.item.astype(str)
    return [tokens[ptr[u] : ptr[u + 1]].tolist() for u in range(ds.n_users) if ptr[u + 1] > ptr[u]]


def vectors_from_keyed(wv: Any, n_items: int, dim: int) -> np.ndarray:
    """gensim KeyedVectors (keys = item index strings) -> dense (n_items, dim)."""
    out = np.zeros((n_items, dim), dtype=np.float32)
    keys = np.array([int(k) for k in wv.index_to_key], dtype=np.int64)
    out[keys] = wv.vectors
    return out

