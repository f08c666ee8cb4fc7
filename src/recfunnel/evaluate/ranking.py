"""Full ranking (PROTOCOL.md): every fit-data item is a candidate, minus what the user saw.

No sampled negatives: a model scores the whole catalog for each test user, and the top K
is cut with `argpartition` chunk by chunk so memory stays at chunk x n_items.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse as sp

from recfunnel.candidates import smallest_k

ScoreFn = Callable[[np.ndarray], np.ndarray]


def candidate_mask(candidate_items: np.ndarray | None, n_items: int) -> np.ndarray:
    """Boolean mask over items from a mask or an index array (None: every item)."""
    if candidate_items is None:
        return np.ones(n_items, dtype=bool)
    cand = np.asarray(candidate_items)
    if cand.dtype == bool:
        if cand.shape != (n_items,):
            raise ValueError(f"candidate mask has shape {cand.shape}, expected ({n_items},)")
        return cand
    mask = np.zeros(n_items, dtype=bool)
    mask[cand.astype(np.int64)] = True
    return mask


def full_ranking_topk(
    score_fn: ScoreFn,
    users: np.ndarray,
    seen: sp.spmatrix,
    k: int,
    candidate_items: np.ndarray | None = None,
    chunk: int = 1024,
) -> np.ndarray:
    """(len(users), k) best items per user, best first, padded with -1.

    `score_fn(user_chunk)` returns dense (len(chunk), n_items) scores (higher is better);
    `seen` is the users x items matrix of the fit data, indexed by user id. Items outside
    `candidate_items` (a boolean mask or index array; default all) and items a user has seen
    never appear; neither do items scored NaN or -inf. Users with fewer than k candidates
    get -1 padding. Scores are compared as float32; equal scores rank the lower item index
    first.
    """
    users = np.asarray(users, dtype=np.int64)
    seen = sp.csr_matrix(seen)
    n_items = seen.shape[1]
    blocked = ~candidate_mask(candidate_items, n_items)
    k = int(k)
    out = np.full((len(users), max(k, 0)), -1, dtype=np.int32)
    if k <= 0 or len(users) == 0:
        return out
    kk = min(k, n_items)
    for lo in range(0, len(users), chunk):
        batch = users[lo : lo + chunk]
        raw = np.asarray(score_fn(batch))
        if raw.shape != (len(batch), n_items):
            raise ValueError(f"score_fn returned {raw.shape}, expected ({len(batch)}, {n_items})")
        # A negated float32 copy (smallest first); +inf marks "not a candidate". Being a
        # copy, it never writes into the model's own arrays; `+ 0.0` turns -0.0 into 0.0.
        cost = np.negative(raw, dtype=np.float32)
        cost += np.float32(0.0)
        cost[np.isnan(cost)] = np.inf
        cost[:, blocked] = np.inf
        rows = seen[batch]
        cost[np.repeat(np.arange(len(batch)), np.diff(rows.indptr)), rows.indices] = np.inf
        top, top_cost = smallest_k(cost, kk)
        out[lo : lo + len(batch), :kk] = np.where(top_cost < np.inf, top, -1)
    return out
