"""Top-K metrics of PROTOCOL.md, vectorised over users.

Every function takes `topk`, an (n_users, K) int matrix of item indices best first, padded
with -1 where a user got fewer than K items. Accuracy metrics work on `ranks` (the 0-based
position of each user's single held-out target, -1 when absent) so that one pass over the
lists serves HR, NDCG and MRR at every cut-off.

Means are over users; a metric of an empty set of users is 0.0 (a float that stays valid
JSON, unlike NaN).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

DEFAULT_KS: tuple[int, ...] = (10, 50, 100, 200, 500)


def target_ranks(topk: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each user's target in its list, -1 when it is not there."""
    topk = np.asarray(topk)
    targets = np.asarray(targets).reshape(-1, 1)
    if topk.ndim != 2 or topk.shape[0] != targets.shape[0]:
        raise ValueError(f"topk {topk.shape} and targets {targets.shape[0]} do not align")
    if topk.shape[1] == 0:
        return np.full(topk.shape[0], -1, dtype=np.int64)
    match = (topk == targets) & (topk >= 0)
    found = match.any(axis=1)
    return np.where(found, match.argmax(axis=1), -1).astype(np.int64)


def _hits(ranks: np.ndarray, k: int) -> np.ndarray:
    ranks = np.asarray(ranks)
    return (ranks >= 0) & (ranks < k)


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else 0.0


def hit_rate(ranks: np.ndarray, k: int) -> float:
    """Share of users whose target is in their top k (= Recall@k with one target)."""
    return _mean(_hits(ranks, k).astype(np.float64))


def ndcg(ranks: np.ndarray, k: int) -> float:
    """NDCG@k with one relevant item: the ideal DCG is 1, so it is 1/log2(rank + 2)."""
    ranks = np.asarray(ranks)
    hit = _hits(ranks, k)
    gain = np.zeros(ranks.shape, dtype=np.float64)
    gain[hit] = 1.0 / np.log2(ranks[hit] + 2.0)
    return _mean(gain)


def mrr(ranks: np.ndarray, k: int) -> float:
    """Mean reciprocal rank, 0 for targets outside the top k."""
    ranks = np.asarray(ranks)
    hit = _hits(ranks, k)
    rr = np.zeros(ranks.shape, dtype=np.float64)
    rr[hit] = 1.0 / (ranks[hit] + 1.0)
    return _mean(rr)


def coverage(topk: np.ndarray, n_items: int, k: int = 10) -> float:
    """Distinct items over all users' top k, divided by the catalog size."""
    top = np.asarray(topk)[:, :k]
    if n_items <= 0:
        return 0.0
    return float(np.unique(top[top >= 0]).size / n_items)


def ild(
    topk: np.ndarray, item_categories: sp.spmatrix, k: int = 10, chunk: int = 4096
) -> float:
    """Intra-list diversity: mean pairwise 1 - Jaccard(category sets) inside a top k.

    Two items that both have no category are at distance 0 (nothing says they differ); an
    item without categories is at distance 1 from one that has some. Users with fewer than
    two items in their list have no pairs and are skipped.

    Intersections are counted for all k(k-1)/2 pairs of a chunk of users at once by
    gathering both items' category rows and multiplying them elementwise (sparse), so the
    cost follows the number of (item, category) entries, not the category count.
    """
    top = np.asarray(topk)[:, :k]
    n, width = top.shape
    if n == 0 or width < 2:
        return 0.0
    cats = sp.csr_matrix(item_categories, dtype=np.float32)
    cats.sum_duplicates()
    cats.data[:] = 1.0
    sizes = np.diff(cats.indptr).astype(np.float64)
    a, b = np.triu_indices(width, 1)
    per_user = np.zeros(n, dtype=np.float64)
    n_pairs = np.zeros(n, dtype=np.int64)
    for lo in range(0, n, chunk):
        block = top[lo : lo + chunk]
        ia, ib = block[:, a], block[:, b]  # (c, P)
        valid = (ia >= 0) & (ib >= 0)
        ia, ib = ia[valid], ib[valid]
        inter = np.asarray(cats[ia].multiply(cats[ib]).sum(axis=1)).ravel()
        union = sizes[ia] + sizes[ib] - inter
        dist = np.where(union > 0, 1.0 - inter / np.maximum(union, 1.0), 0.0)
        rows = np.nonzero(valid)[0]
        per_user[lo : lo + len(block)] = np.bincount(rows, weights=dist, minlength=len(block))
        n_pairs[lo : lo + len(block)] = valid.sum(axis=1)
    keep = n_pairs > 0
    return _mean(per_user[keep] / n_pairs[keep])


def novelty(
    topk: np.ndarray, item_user_count: np.ndarray, n_users: int, k: int = 10
) -> float:
    """Mean self-information -log2(count / n_users) of the recommended items.

    An item with a fit-data count of 0 is treated as seen by one user (finite, maximal).
    The mean is per user over its list, then over users with a non-empty list.
    """
    top = np.asarray(topk)[:, :k]
    if top.size == 0 or n_users <= 0:
        return 0.0
    counts = np.maximum(np.asarray(item_user_count, dtype=np.float64), 1.0)
    info = -np.log2(counts / float(n_users))
    valid = top >= 0
    vals = np.where(valid, info[np.where(valid, top, 0)], 0.0)
    m = valid.sum(axis=1)
    keep = m > 0
    return _mean(vals.sum(axis=1)[keep] / m[keep])


def summarize(
    topk: np.ndarray,
    targets: np.ndarray,
    item_categories: sp.spmatrix,
    item_user_count: np.ndarray,
    n_users: int,
    n_items: int,
    ks: tuple[int, ...] = DEFAULT_KS,
) -> dict[str, float]:
    """All protocol metrics of one top-K matrix; HR@K only for K the lists are long enough for."""
    ranks = target_ranks(topk, targets)
    width = np.asarray(topk).shape[1]
    out: dict[str, float] = {f"HR@{k}": hit_rate(ranks, k) for k in ks if k <= width}
    out["NDCG@10"] = ndcg(ranks, 10)
    out["MRR@10"] = mrr(ranks, 10)
    out["coverage@10"] = coverage(topk, n_items, 10)
    out["ILD@10"] = ild(topk, item_categories, 10)
    out["novelty@10"] = novelty(topk, item_user_count, n_users, 10)
    return out
