"""Filters: remove candidates a user must not see. Vectorised over the whole batch.

Each returns the kept candidates and how many rows it removed (the Trace count).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recfunnel.candidates import Candidates
from recfunnel.rerank.catalog import Catalog
from recfunnel.rerank.served_log import ServedLog


def _drop(cands: Candidates, hit: np.ndarray) -> tuple[Candidates, int]:
    n = int(hit.sum())
    return (cands.take(np.flatnonzero(~hit)), n) if n else (cands, 0)


def filter_items(cands: Candidates, banned: sp.csr_matrix) -> tuple[Candidates, int]:
    """Drop rows whose (query, item) is set in `banned` (queries x items), e.g. the history."""
    if banned.nnz == 0 or len(cands) == 0:
        return cands, 0
    inside = cands.item < banned.shape[1]
    hit = np.zeros(len(cands), dtype=bool)
    hit[inside] = np.asarray(banned[cands.query[inside], cands.item[inside]]).ravel() > 0
    return _drop(cands, hit)


def filter_item_set(cands: Candidates, items: np.ndarray) -> tuple[Candidates, int]:
    """Drop every row whose item is in `items` (a blacklist as indices)."""
    if len(items) == 0 or len(cands) == 0:
        return cands, 0
    return _drop(cands, np.isin(cands.item, items))


def filter_mask(cands: Candidates, blocked: np.ndarray) -> tuple[Candidates, int]:
    """Drop rows whose item is flagged in `blocked` (bool per item; items beyond it pass)."""
    if len(cands) == 0 or not blocked.any():
        return cands, 0
    inside = cands.item < len(blocked)
    hit = np.zeros(len(cands), dtype=bool)
    hit[inside] = blocked[cands.item[inside]]
    return _drop(cands, hit)


def filter_served(
    cands: Candidates, log: ServedLog, users: np.ndarray, since: np.ndarray
) -> tuple[Candidates, int]:
    """Drop items the served log says each (known) user was shown at or after `since`."""
    if len(cands) == 0:
        return cands, 0
    rows, cols = [], []
    for q, u in enumerate(users):
        if u < 0:
            continue
        items = log.recent(int(u), int(since[q]))
        rows.append(np.full(len(items), q, dtype=np.int64))
        cols.append(np.asarray(items, dtype=np.int64))
    if not rows or sum(len(c) for c in cols) == 0:
        return cands, 0
    r, c = np.concatenate(rows), np.concatenate(cols)
    width = int(max(c.max() + 1, cands.item.max() + 1))
    banned = sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(cands.n_queries, width))
    return filter_items(cands, banned)


def filter_unavailable(cands: Candidates, catalog: Catalog, now: np.ndarray) -> tuple[Candidates, int]:
    """Drop items not yet available or already expired at each query's request time."""
    if len(cands) == 0 or (catalog.available_from is None and catalog.available_until is None):
        return cands, 0
    t = now[cands.query]
    inside = cands.item < catalog.n_items
    items = np.where(inside, cands.item, 0)
    hit = np.zeros(len(cands), dtype=bool)
    if catalog.available_from is not None:
        hit |= inside & (catalog.available_from[items] > t)
    if catalog.available_until is not None:
        hit |= inside & (catalog.available_until[items] <= t)
    return _drop(cands, hit)


def filter_audience(
    cands: Candidates, catalog: Catalog, user_codes: list[np.ndarray]
) -> tuple[Candidates, int]:
    """Drop items whose audience code differs from the user's (per audience pair).

    `user_codes[k]` holds the user's code for `catalog.audiences[k]`, one per query.
    """
    if len(cands) == 0 or not catalog.audiences:
        return cands, 0
    inside = cands.item < catalog.n_items
    items = np.where(inside, cands.item, 0)
    hit = np.zeros(len(cands), dtype=bool)
    for aud, codes in zip(catalog.audiences, user_codes):
        item_code = aud.item_code[items]
        user_code = codes[cands.query]
        hit |= inside & (item_code >= 0) & (user_code != -1) & (item_code != user_code)
    return _drop(cands, hit)


def dedupe_groups(cands: Candidates, group: np.ndarray | None, max_per_group: int = 1) -> tuple[Candidates, int]:
    """Keep at most `max_per_group` rows per (query, group key), the first (best) ones.

    Rows are ordered best first within a query, so the first rows of a group are its
    best-scored members. Items without a group (-1) are never deduplicated.
    """
    if group is None or len(cands) == 0:
        return cands, 0
    inside = cands.item < len(group)
    g = np.where(inside, group[np.where(inside, cands.item, 0)], -1)
    grouped = np.flatnonzero(g >= 0)
    if len(grouped) == 0:
        return cands, 0
    # rank of each grouped row within its (query, group), in list order
    order = np.lexsort((grouped, g[grouped], cands.query[grouped]))
    rows = grouped[order]
    key_q, key_g = cands.query[rows], g[rows]
    new = np.ones(len(rows), dtype=bool)
    new[1:] = (key_q[1:] != key_q[:-1]) | (key_g[1:] != key_g[:-1])
    start = np.maximum.accumulate(np.where(new, np.arange(len(rows)), 0))
    rank = np.arange(len(rows)) - start
    hit = np.zeros(len(cands), dtype=bool)
    hit[rows[rank >= max_per_group]] = True
    return _drop(cands, hit)
