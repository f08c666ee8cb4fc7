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
