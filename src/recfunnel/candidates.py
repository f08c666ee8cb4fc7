"""Columnar candidate batches: what flows between funnel stages.

One row per (query, item). Rows of one query are contiguous and ordered best first, so
`indptr` slices a query's list. Stages add columns to `features` (channel scores and
ranks, hydrated features, stage scores) instead of building per-item objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp


@dataclass
class Candidates:
    query: np.ndarray  # int32 row of the query in its batch; non-decreasing
    item: np.ndarray  # int32 item index
    score: np.ndarray  # float32 the producing stage's score, best first within a query
    n_queries: int
    features: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.item)

    @property
    def indptr(self) -> np.ndarray:
        counts = np.bincount(self.query, minlength=self.n_queries)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def items_of(self, q: int) -> np.ndarray:
        ptr = self.indptr
        return self.item[ptr[q] : ptr[q + 1]]

    def take(self, rows: np.ndarray) -> "Candidates":
        """A subset of rows (kept in the order given)."""
        return Candidates(
            query=self.query[rows],
            item=self.item[rows],
            score=self.score[rows],
            n_queries=self.n_queries,
            features={k: v[rows] for k, v in self.features.items()},
        )

    def reorder(self, score: np.ndarray) -> "Candidates":
        """Sort rows by (query, -score) with `score` as the new stage score."""
        order = np.lexsort((-score, self.query))
        out = self.take(order)
        out.score = score[order].astype(np.float32)
        return out

    def head(self, k: int) -> "Candidates":
        """At most the first k rows of every query."""
        ptr = self.indptr
        rank = np.arange(len(self)) - np.repeat(ptr[:-1], np.diff(ptr))
        return self.take(np.flatnonzero(rank < k))

    def rank_in_query(self) -> np.ndarray:
        """0-based position of each row inside its query's list."""
        ptr = self.indptr
        return (np.arange(len(self)) - np.repeat(ptr[:-1], np.diff(ptr))).astype(np.int32)

    def padded(self, k: int, fill: int = -1) -> np.ndarray:
        """n_queries x k matrix of items (best first), padded with `fill`."""
        out = np.full((self.n_queries, k), fill, dtype=np.int32)
        rank = self.rank_in_query()
        keep = rank < k
        out[self.query[keep], rank[keep]] = self.item[keep]
        return out

    @classmethod
    def empty(cls, n_queries: int) -> "Candidates":
        return cls(
            query=np.empty(0, dtype=np.int32),
            item=np.empty(0, dtype=np.int32),
            score=np.empty(0, dtype=np.float32),
            n_queries=n_queries,
        )

    @classmethod
    def concat(cls, parts: list["Candidates"], n_queries: int) -> "Candidates":
        """Concatenate and re-sort by (query, -score); feature columns must match."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(n_queries)
        keys = parts[0].features.keys()
        merged = cls(
            query=np.concatenate([p.query for p in parts]),
            item=np.concatenate([p.item for p in parts]),
            score=np.concatenate([p.score for p in parts]),
            n_queries=n_queries,
            features={k: np.concatenate([p.features[k] for p in parts]) for k in keys},
        )
        return merged.reorder(merged.score)


def smallest_k(cost: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns of the k smallest float32 costs per row, ascending, ties by lower column.

    Each cost becomes a unique int64 key (order-preserving float bits, then the column),
    because `argpartition` on floats degrades badly on real score rows — many tied zeros
    next to +inf masks (ItemKNN, popularity) made it 10x slower than on random scores.
    Unique keys also make the tie-break deterministic.
    """
    n = cost.shape[1]
    bits = cost.view(np.int32)
    ordered = bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))  # float order as signed ints
    shift = max(int(n - 1).bit_length(), 1)
    key = (ordered.astype(np.int64) << shift) | np.arange(n, dtype=np.int64)
    if k < n:
        key = np.take_along_axis(key, np.argpartition(key, k - 1, axis=1)[:, :k], axis=1)
    key.sort(axis=1)
    cols = (key & ((1 << shift) - 1)).astype(np.int32)
    return cols, np.take_along_axis(cost, cols, axis=1)


def top_k(
    scores: np.ndarray | sp.spmatrix,
    k: int,
    exclude: sp.csr_matrix | None = None,
    row_offset: int = 0,
    n_queries: int | None = None,
) -> Candidates:
    """Best k items per row of a queries x items score matrix.

    Only strictly positive scores count as found (a channel that has nothing to say about
    an item gives it 0). `exclude` (same shape) masks items such as the user's history.
    Rows are numbered from `row_offset` so chunks of a batch can be concatenated.
    """
    if sp.issparse(scores):
        scores = scores.toarray()
    n_rows, n_items = np.shape(scores)
    k = min(k, n_items)
    if k <= 0 or n_rows == 0:
        return Candidates.empty(n_queries or n_rows + row_offset)
    if n_rows == 1:
        return _top_k_one(np.asarray(scores).reshape(-1), k, exclude, row_offset, n_queries)
    cost = np.negative(scores, dtype=np.float32)  # a copy: the model's arrays stay intact
    cost[~(cost < 0)] = np.inf  # only positive scores count as found (NaN too is not found)
    if exclude is not None and exclude.nnz:
        ex = exclude.tocoo()
        cost[ex.row, ex.col] = np.inf
    items, vals = smallest_k(cost, k)
    keep = vals < np.inf
    rows = np.repeat(np.arange(n_rows), keep.sum(axis=1)) + row_offset
    return Candidates(
        query=rows.astype(np.int32),
        item=items[keep].astype(np.int32),
        score=(-vals[keep]).astype(np.float32),
        n_queries=n_queries or n_rows + row_offset,
    )


def _top_k_one(
    row: np.ndarray, k: int, exclude: sp.csr_matrix | None, row_offset: int, n_queries: int | None
) -> Candidates:
    """`top_k` for one row: only the found (positive, not excluded) items are ranked.

    Same order as the batch path — by (-score, item), via the same unique keys — at a
    fraction of its cost when a channel finds few of many items (the serving case).
    """
    valid = row > 0  # NaN is not > 0: not found
    if exclude is not None and exclude.nnz:
        valid[exclude.indices] = False
    found = np.flatnonzero(valid)
    if len(found) == 0:
        return Candidates.empty(n_queries or 1 + row_offset)
    cost = np.negative(row[found], dtype=np.float32)
    cols = smallest_k_row(cost, min(k, len(found)))
    return Candidates(
        query=np.full(len(cols), row_offset, dtype=np.int32),
        item=found[cols].astype(np.int32),
        score=(-cost[cols]).astype(np.float32),
        n_queries=n_queries or 1 + row_offset,
    )


def smallest_k_row(cost: np.ndarray, k: int) -> np.ndarray:
    """`smallest_k` for one row: positions of the k smallest costs, ascending, ties to the
    lower position.

    With many more values than k, a threshold from an evenly spaced sample first keeps
    only the values that can make the cut (a compare is far cheaper than partitioning
    thousands of keys); if fewer than k pass, every value is ranked. Exact either way.
    """
    n = len(cost)
    pos = None
    if n > 8 * k and n > 1024:
        sample = cost[:: n // 256]
        q = min(len(sample) - 1, 2 * (k * len(sample)) // n + 2)
        cut = np.partition(sample, q)[q]
        keep = np.flatnonzero(cost <= cut)
        if len(keep) >= k:
            pos, cost = keep, cost[keep]
    m = len(cost)
    bits = cost.view(np.int32)
    ordered = bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))
    shift = max(int(n - 1).bit_length(), 1)
    key = (ordered.astype(np.int64) << shift) | (np.arange(m, dtype=np.int64) if pos is None else pos)
    if k < m:
        key = key[np.argpartition(key, k - 1)[:k]]
    key.sort()
    return key & ((1 << shift) - 1)
