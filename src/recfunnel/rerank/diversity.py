"""MMR and DPP diversity selectors, batched over queries on padded (queries x window) arrays.

Both pick `k` positions greedily from a query's window:

- MMR (Carbonell & Goldstein 1998): argmax  lambda * rel_i - (1 - lambda) * max_{j chosen} sim_ij.
- DPP (Chen, Zhang & Zhou 2018, "Fast Greedy MAP Inference for Determinantal Point
  Process"): kernel L = diag(q) S diag(q) with quality q_i = exp(alpha * rel_i); the greedy
  step picks argmax log det(L_{Y+i}) using the incremental Cholesky update, O(k) vector
  operations per step instead of a determinant per candidate.

Queries are the batch axis, so one numpy call serves 2,048 offline queries or the one
online query; a step is a handful of (queries x window) operations.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recfunnel.rerank.catalog import Catalog

DENSE_BUDGET = 1 << 23  # queries x window x used categories below which similarity is dense
JITTER = 1e-4  # added to S_ii: duplicates (identical category sets) stay selectable, last


def category_similarity(items: np.ndarray, categories: sp.csr_matrix) -> np.ndarray:
    """Jaccard similarity of category sets, (Q, W, W) for a padded (Q, W) item matrix.

    Items without categories have similarity 0 to everything but themselves. When the
    categories the window actually uses fit a small dense block (genres; one online query)
    it is a dense product over those columns; otherwise (thousands of queries over many
    attribute ids) a block-diagonal sparse product, so only pairs inside one query form.
    """
    q_n, w = items.shape
    out = np.zeros((q_n, w, w), dtype=np.float32)
    valid = (items >= 0) & (items < categories.shape[0])
    if not valid.any():
        return out
    cats = categories.tocsr().astype(np.float32)
    sizes_all = np.diff(cats.indptr).astype(np.float32)
    safe = np.where(valid, items, 0)
    sizes = np.where(valid, sizes_all[safe], 0.0).astype(np.float32)
    n_cat = cats.shape[1]
    rows = cats[safe[valid]]
    used = np.unique(rows.indices)
    if q_n * w * max(len(used), 1) <= DENSE_BUDGET:
        dense = np.zeros((q_n, w, len(used)), dtype=np.float32)
        dense[valid] = rows[:, used].toarray()
        inter = np.einsum("qic,qjc->qij", dense, dense)
    else:
        qi, ii = np.nonzero(valid)
        sub = cats[items[qi, ii]]
        shifted = sp.csr_matrix(
            (sub.data, sub.indices + np.repeat(qi, np.diff(sub.indptr)) * n_cat, sub.indptr),
            shape=(len(qi), q_n * n_cat),
        )
        prod = (shifted @ shifted.T).tocoo()
        inter = np.zeros((q_n, w, w), dtype=np.float32)
        inter[qi[prod.row], ii[prod.row], ii[prod.col]] = prod.data
    union = sizes[:, :, None] + sizes[:, None, :] - inter
    np.divide(inter, union, out=out, where=union > 0)
    return out


def embedding_similarity(items: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of (L2-normalised) item embeddings, (Q, W, W); padding rows are 0."""
    valid = (items >= 0) & (items < embeddings.shape[0])
    e = embeddings[np.where(valid, items, 0)] * valid[..., None]
    return np.einsum("qid,qjd->qij", e, e).astype(np.float32)


def similarity(items: np.ndarray, catalog: Catalog, kind: str = "categories") -> np.ndarray:
    """Pairwise item similarity inside each query's window, diagonal 1 on valid items."""
    if kind == "embeddings" and catalog.embeddings is not None:
        sim = embedding_similarity(items, catalog.embeddings)
    else:
        sim = category_similarity(items, catalog.categories)
    valid = items >= 0
    idx = np.arange(items.shape[1])
    sim[:, idx, idx] = valid.astype(np.float32)
    return sim


def relevance(scores: np.ndarray, valid: np.ndarray, kind: str = "minmax") -> np.ndarray:
    """Per-query relevance in [0, 1] from padded scores (best first).

    "minmax" scales the window's scores linearly; "rank" is 1 - position / window;
    "softmax" is exp(score - best score), the item's click odds relative to the top item
    when scores are log-odds (LambdaRank, logistic models): near-ties stay near 1 and a
    clearly worse item drops towards 0 whatever the window's score range.
    """
    if kind == "softmax":
        top = np.where(valid, scores, -np.inf).max(axis=1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        return np.where(valid, np.exp(np.minimum(scores - top, 0.0)), 0.0).astype(np.float32)
    if kind == "rank":
        w = scores.shape[1]
        return np.where(valid, 1.0 - np.arange(w) / max(w, 1), 0.0).astype(np.float32)
    hi = np.where(valid, scores, -np.inf).max(axis=1, keepdims=True)
    lo = np.where(valid, scores, np.inf).min(axis=1, keepdims=True)
    span = hi - lo
    ok = np.isfinite(span) & (span > 0)
    rel = np.where(ok, (scores - np.where(np.isfinite(lo), lo, 0)) / np.where(ok, span, 1.0), 1.0)
    return np.where(valid, rel, 0.0).astype(np.float32)


def _pinned(open_: np.ndarray, s: int, keep_top: int) -> np.ndarray | None:
    """Step s < keep_top takes the s-th valid column as it is (the ranker's head stays)."""
    if s >= keep_top:
        return None
    return np.where(open_.any(axis=1), open_.argmax(axis=1), 0)


def mmr(
    rel: np.ndarray,
    sim: np.ndarray,
    valid: np.ndarray,
    lam: float,
    k: int,
    keep_top: int = 0,
    aggregate: str = "max",
    discount: bool = False,
) -> np.ndarray:
    """Greedy MMR: (Q, k) chosen columns, -1 once a query runs out of candidates.

    `aggregate="max"` is classic MMR (similarity to the closest chosen item); "mean" uses
    the mean similarity to the chosen items, i.e. greedy max-sum diversification, whose
    objective is the intra-list diversity (ILD) itself. `discount` weighs relevance at
    step s by the DCG discount 1 / log2(s + 2): the top slots follow the ranker, the
    lower ones (which NDCG weighs less) buy the diversity.

    The first `keep_top` picks are the ranker's first items (they still count as chosen
    for the similarity term), so the positions NDCG weighs most stay the ranker's.
    """
    q_n, w = rel.shape
    k = min(k, w)
    picks = np.full((q_n, k), -1, dtype=np.int64)
    maxsim = np.zeros((q_n, w), dtype=np.float32)
    sumsim = np.zeros((q_n, w), dtype=np.float32)
    open_ = valid.copy()
    rows = np.arange(q_n)
    for s in range(k):
        penalty = maxsim if aggregate == "max" else sumsim / max(s, 1)
        weight = 1.0 / np.log2(s + 2.0) if discount else 1.0
        val = lam * weight * rel - (1.0 - lam) * penalty
        val = np.where(open_, val, -np.inf)
        pin = _pinned(open_, s, keep_top)
        j = val.argmax(axis=1) if pin is None else pin
        ok = open_[rows, j]
        if not ok.any():
            break
        picks[ok, s] = j[ok]
        open_[rows[ok], j[ok]] = False
        if aggregate == "max":
            maxsim[ok] = np.maximum(maxsim[ok], sim[rows[ok], j[ok]])
        else:
            sumsim[ok] += sim[rows[ok], j[ok]]
    return picks


def dpp_alpha(theta: float) -> float:
    """Chen et al.'s relevance weight: quality q = exp(alpha * rel), alpha = theta / (2 (1 - theta))."""
    return theta / (2.0 * (1.0 - theta))


def dpp_greedy(
    rel: np.ndarray, sim: np.ndarray, valid: np.ndarray, theta: float, k: int, keep_top: int = 0
) -> np.ndarray:
    """Fast greedy DPP MAP: (Q, k) chosen columns, -1 once a query runs out of candidates.

    Kernel L_ij = q_i (S_ij + jitter [i == j]) q_j. Per step, with j the last pick:
    e_i = (L_ji - <c_j, c_i>) / d_j,  c_i <- [c_i, e_i],  d_i^2 <- d_i^2 - e_i^2,
    and the next pick is argmax d_i^2 (= the largest gain in log det). The first
    `keep_top` picks are the ranker's first items, conditioned on like any other pick.
    """
    q_n, w = rel.shape
    k = min(k, w)
    picks = np.full((q_n, k), -1, dtype=np.int64)
    q = np.exp(dpp_alpha(theta) * rel.astype(np.float64)) * valid
    diag = np.einsum("qii->qi", sim).astype(np.float64) + JITTER
    d2 = np.where(valid, q * q * diag, -np.inf)
    c = np.zeros((q_n, k, w), dtype=np.float64)
    rows = np.arange(q_n)
    open_ = valid.copy()
    for s in range(k):
        cand = np.where(open_, d2, -np.inf)
        pin = _pinned(open_, s, keep_top)
        j = cand.argmax(axis=1) if pin is None else pin
        ok = open_[rows, j] & (cand[rows, j] > 0)
        if not ok.any():
            break
        picks[ok, s] = j[ok]
        open_[rows[ok], j[ok]] = False
        if s == k - 1:
            break
        dj = np.sqrt(np.where(ok, d2[rows, j], 1.0))
        lj = q[rows, j][:, None] * sim[rows, j].astype(np.float64) * q  # L_j.
        lj[rows, j] += q[rows, j] ** 2 * JITTER
        cj = c[rows, :s, j]  # (Q, s)
        e = (lj - np.einsum("qs,qsw->qw", cj, c[:, :s, :])) / dj[:, None]
        e = np.where(ok[:, None], e, 0.0)
        c[:, s, :] = e
        d2 = d2 - e * e
    return picks


def apply_picks(order: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """New padded order: the picked columns first, then the rest in their old order."""
    q_n, w = order.shape
    key = np.arange(w, dtype=np.int64)[None, :].repeat(q_n, axis=0) + w
    rows, steps = np.nonzero(picks >= 0)
    key[rows, picks[rows, steps]] = steps
    key[order < 0] = 3 * w  # padding stays at the end
    perm = np.argsort(key, axis=1, kind="stable")
    return np.take_along_axis(order, perm, axis=1)
