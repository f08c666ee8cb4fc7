"""One interface over faiss for maximum-inner-product search of item vectors.

`flat` is exact (small catalogs, and the reference other indexes are measured against);
`hnsw` is a graph index with high recall at low latency; `ivfpq` compresses vectors for
large catalogs. `auto` picks flat below `auto_flat_below` items and HNSW above. Indexes are
built offline and saved with faiss's own writer; loading one runs no Python code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import faiss
import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from recfunnel.persist import read_json, write_json


class IndexConfig(BaseModel):
    """ANN index that serves this channel's item vectors."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["auto", "flat", "hnsw", "ivfpq"] = Field(
        "auto", description="flat = exact; hnsw = graph ANN; ivfpq = compressed; auto = flat for small catalogs"
    )
    auto_flat_below: int = Field(50_000, ge=1, description="auto: catalogs smaller than this use exact search")
    hnsw_m: int = Field(32, ge=4, description="HNSW: links per node")
    hnsw_ef_construction: int = Field(200, ge=8, description="HNSW: build-time beam width")
    hnsw_ef_search: int = Field(256, ge=8, description="HNSW: query-time beam width (recall vs latency)")
    ivf_lists: int = Field(0, ge=0, description="IVF: coarse cells (0 = 4 * sqrt(n))")
    ivf_nprobe: int = Field(32, ge=1, description="IVF: cells visited per query")
    pq_bytes: int = Field(16, ge=1, description="PQ: bytes per vector (must divide the dimension)")


class VectorIndex:
    def __init__(self, config: IndexConfig | None = None) -> None:
        self.config = config or IndexConfig()
        self.index: faiss.Index | None = None
        self.kind = ""

    def build(self, vectors: np.ndarray) -> "VectorIndex":
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = x.shape
        c = self.config
        kind = c.kind
        if kind == "auto":
            kind = "flat" if n < c.auto_flat_below else "hnsw"
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, c.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = c.hnsw_ef_construction
        else:
            nlist = c.ivf_lists or max(1, int(4 * np.sqrt(n)))
            nlist = min(nlist, max(1, n // 39))  # faiss wants ~39 training points per cell
            m = c.pq_bytes if d % c.pq_bytes == 0 else _largest_divisor(d, c.pq_bytes)
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFPQ(quantizer, d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
            index.train(x)
        index.add(x)
        self.index, self.kind = index, kind
        self._tune()
        return self

    def _tune(self) -> None:
        if self.kind == "hnsw":
            self.index.hnsw.efSearch = self.config.hnsw_ef_search
        elif self.kind == "ivfpq":
            self.index.nprobe = self.config.ivf_nprobe

    @property
    def n(self) -> int:
        return 0 if self.index is None else self.index.ntotal

    def search(
        self, queries: np.ndarray, k: int, exclude: sp.csr_matrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores), each (len(queries), k), best first; -1 / -inf where fewer found.

        Rows of `exclude` (queries x items) name items a query must not get back (its
        history); the search asks for enough extra neighbours to fill k after removing them.
        """
        assert self.index is not None, "index not built"
        q = np.ascontiguousarray(queries, dtype=np.float32)
        extra = 0 if exclude is None else int(np.diff(exclude.indptr).max(initial=0))
        kk = min(k + extra, self.n)
        if kk == 0 or len(q) == 0:
            return np.full((len(q), k), -1, np.int64), np.full((len(q), k), -np.inf, np.float32)
        scores, ids = self.index.search(q, kk)
        if exclude is not None and exclude.nnz:
            ex = exclude.tocsr()
            for r in np.flatnonzero(np.diff(ex.indptr)):
                bad = np.isin(ids[r], ex.indices[ex.indptr[r] : ex.indptr[r + 1]])
                ids[r, bad] = -1
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        ids = np.take_along_axis(ids, order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        if ids.shape[1] < k:
            pad = k - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        return ids, scores

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, os.fspath(d / "index.faiss"))
        write_json(d / "index.json", {"kind": self.kind, **self.config.model_dump()})

    @classmethod
    def load(cls, directory: str | Path) -> "VectorIndex":
        d = Path(directory)
        meta = read_json(d / "index.json")
        kind = meta.pop("kind")
        vi = cls(IndexConfig.model_validate(meta))
        vi.index = faiss.read_index(os.fspath(d / "index.faiss"))
        vi.kind = kind
        vi._tune()
        return vi


def recall_against_exact(vectors: np.ndarray, queries: np.ndarray, index: VectorIndex, k: int = 100) -> float:
    """Share of the exact top-k that the index returns (the ANN quality number)."""
    exact = VectorIndex(IndexConfig(kind="flat")).build(vectors)
    truth, _ = exact.search(queries, k)
    got, _ = index.search(queries, k)
    hits = [len(np.intersect1d(a[a >= 0], b[b >= 0])) for a, b in zip(truth, got)]
    return float(np.sum(hits) / max(np.sum(truth >= 0), 1))


def _largest_divisor(d: int, at_most: int) -> int:
    return max(m for m in range(1, at_most + 1) if d % m == 0)
