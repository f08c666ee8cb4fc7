"""Sparse helpers shared by the neighbourhood channels."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def top_k_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the k largest entries of every row (ties: lowest column first)."""
    m = sp.csr_matrix(m)
    m.sum_duplicates()
    counts = np.diff(m.indptr)
    if counts.max(initial=0) <= k:
        return m
    rows = np.repeat(np.arange(m.shape[0]), counts)
    # sort by (row, -value, column) and keep each row's first k
    order = np.lexsort((m.indices, -m.data, rows))
    rank = np.arange(len(order)) - np.repeat(m.indptr[:-1], counts)
    keep = order[rank < k]
    keep.sort()  # restore CSR order
    return sp.csr_matrix(
        (m.data[keep], (rows[keep], m.indices[keep])), shape=m.shape, dtype=m.dtype
    )


def row_chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def weighted_row_sum(m: sp.csr_matrix, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Dense sum over k of weights[k] * m[rows[k]] (1-D float32, length m.shape[1]).

    The single-query serving path: the same product as `(hist_row @ m).toarray()`
    without building sparse matrices per request (scipy's per-call overhead is larger
    than the arithmetic for one query).
    """
    rows = np.asarray(rows, dtype=np.int64)
    starts, ends = m.indptr[rows], m.indptr[rows + 1]
    lens = ends - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(m.shape[1], dtype=np.float32)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    pos = np.arange(total, dtype=np.int64) + offsets
    w = m.data[pos].astype(np.float64) * np.repeat(np.asarray(weights, dtype=np.float64), lens)
    return np.bincount(m.indices[pos], weights=w, minlength=m.shape[1]).astype(np.float32)


def gather_rows(m: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(owner position, column, value) of every stored entry of m[rows], in row order."""
    rows = np.asarray(rows, dtype=np.int64)
    starts, ends = m.indptr[rows], m.indptr[rows + 1]
    lens = ends - starts
    total = int(lens.sum())
    owner = np.repeat(np.arange(len(rows), dtype=np.int64), lens)
    if total == 0:
        return owner, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    pos = np.arange(total, dtype=np.int64) + offsets
    return owner, m.indices[pos].astype(np.int64), m.data[pos]
