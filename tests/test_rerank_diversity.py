"""MMR and fast greedy DPP against brute-force references on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recfunnel.rerank import diversity as div
from recfunnel.rerank.catalog import Catalog


def random_case(seed: int, q_n: int = 3, w: int = 7, n_cat: int = 5):
    rng = np.random.default_rng(seed)
    m = (rng.random((20, n_cat)) < 0.35).astype(np.float32)
    cats = sp.csr_matrix(m)
    items = rng.choice(20, size=(q_n, w), replace=True)
    items[0, -2:] = -1  # a padded query
    valid = items >= 0
    scores = np.sort(rng.normal(size=(q_n, w)), axis=1)[:, ::-1].astype(np.float32)
    return items, valid, scores, cats


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = float(np.minimum(a, b).sum())
    union = float(np.maximum(a, b).sum())
    return inter / union if union else 0.0


def brute_mmr(rel, sim, valid, lam, k, keep_top=0, aggregate="max"):
    picks = []
    chosen: list[int] = []
    open_ = [j for j in range(len(rel)) if valid[j]]
    for s in range(min(k, len(rel))):
        if not open_:
            picks.append(-1)
            continue
        if s < keep_top:
            best = open_[0]
        else:
            def val(j):
                if not chosen:
                    pen = 0.0
                elif aggregate == "max":
                    pen = max(sim[j, c] for c in chosen)
                else:
                    pen = sum(sim[j, c] for c in chosen) / len(chosen)
                return lam * rel[j] - (1 - lam) * pen
            best = max(open_, key=lambda j: (val(j), -j))
        picks.append(best)
        chosen.append(best)
        open_.remove(best)
    return picks


def brute_dpp(rel, sim, valid, theta, k, keep_top=0):
    """Greedy argmax log det(L_Y) with determinants computed from scratch."""
    q = np.exp(div.dpp_alpha(theta) * rel.astype(np.float64))
    L = q[:, None] * sim.astype(np.float64) * q[None, :] + np.diag(q * q * div.JITTER)
    chosen: list[int] = []
    open_ = [j for j in range(len(rel)) if valid[j]]
    picks = []
    for s in range(min(k, len(rel))):
        if not open_:
            picks.append(-1)
            continue
        if s < keep_top:
            best = open_[0]
        else:
            def gain(j):
                idx = chosen + [j]
                sign, logdet = np.linalg.slogdet(L[np.ix_(idx, idx)])
                return logdet if sign > 0 else -np.inf
            best = max(open_, key=lambda j: (gain(j), -j))
        picks.append(best)
        chosen.append(best)
        open_.remove(best)
    return picks


def test_category_similarity_is_jaccard_dense_and_sparse(monkeypatch):
    items, valid, _, cats = random_case(0)
    got = div.category_similarity(items, cats)
    monkeypatch.setattr(div, "DENSE_BUDGET", 0)  # force the block-diagonal sparse path
    got_sparse = div.category_similarity(items, cats)
    dense = cats.toarray()
    for q in range(items.shape[0]):
        for i in range(items.shape[1]):
            for j in range(items.shape[1]):
                want = jaccard(dense[items[q, i]], dense[items[q, j]]) if valid[q, i] and valid[q, j] else 0.0
                assert got[q, i, j] == pytest.approx(want, abs=1e-6)
                assert got_sparse[q, i, j] == pytest.approx(want, abs=1e-6)


def test_similarity_from_embeddings_is_cosine():
    cat = Catalog(sp.csr_matrix((3, 1)))
    cat.set_embeddings(np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
    s = div.similarity(np.array([[0, 1, 2, -1]]), cat, "embeddings")
    assert s[0, 0, 1] == pytest.approx(0.0) and s[0, 0, 2] == pytest.approx(np.sqrt(0.5))
    assert s[0, 3].tolist() == [0.0] * 4 and s[0, 2, 2] == 1.0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("lam", [1.0, 0.7, 0.3])
@pytest.mark.parametrize("aggregate", ["max", "mean"])
def test_mmr_matches_brute_force(seed, lam, aggregate):
    items, valid, scores, cats = random_case(seed)
    rel = div.relevance(scores, valid)
    sim = div.similarity(items, Catalog(cats))
    keep = seed % 3
    got = div.mmr(rel, sim, valid, lam, 5, keep_top=keep, aggregate=aggregate)
    for q in range(items.shape[0]):
        assert got[q].tolist() == brute_mmr(rel[q], sim[q], valid[q], lam, 5, keep, aggregate)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("theta", [0.9, 0.6, 0.2])
def test_fast_greedy_dpp_matches_log_det_brute_force(seed, theta):
    items, valid, scores, cats = random_case(seed)
    rel = div.relevance(scores, valid)
    sim = div.similarity(items, Catalog(cats))
    keep = seed % 2
    got = div.dpp_greedy(rel, sim, valid, theta, 6, keep_top=keep)
    for q in range(items.shape[0]):
        assert got[q].tolist() == brute_dpp(rel[q], sim[q], valid[q], theta, 6, keep)


def test_mmr_lambda_one_is_the_ranker_order_and_zero_spreads_categories():
    cats = sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32))
    items = np.array([[0, 1, 2, 3]])
    valid = items >= 0
    rel = div.relevance(np.array([[4.0, 3.0, 2.0, 1.0]]), valid)
    sim = div.similarity(items, Catalog(cats))
    assert div.mmr(rel, sim, valid, 1.0, 4).tolist() == [[0, 1, 2, 3]]
    assert div.mmr(rel, sim, valid, 0.5, 4).tolist() == [[0, 2, 1, 3]]
    assert div.dpp_greedy(rel, sim, valid, 0.5, 4).tolist() == [[0, 2, 1, 3]]


def test_relevance_scales_and_apply_picks():
    scores = np.array([[3.0, 2.0, 1.0, 0.0], [5.0, 5.0, 0.0, 0.0]])
    valid = np.array([[True, True, True, False], [True, True, False, False]])
    mm = div.relevance(scores, valid)
    assert mm[0].tolist() == [1.0, 0.5, 0.0, 0.0] and mm[1].tolist() == [1.0, 1.0, 0.0, 0.0]
    sm = div.relevance(scores, valid, "softmax")
    assert sm[0, 0] == 1.0 and sm[0, 1] == pytest.approx(np.exp(-1.0))
    rk = div.relevance(scores, valid, "rank")
    assert rk[0, :3].tolist() == [1.0, 0.75, 0.5]
    order = np.array([[10, 11, 12, 13, -1]])
    assert div.apply_picks(order, np.array([[2, 0, -1]])).tolist() == [[12, 10, 11, 13, -1]]


def test_empty_and_single_candidate():
    items = np.full((2, 3), -1)
    items[1, 0] = 0
    valid = items >= 0
    rel = div.relevance(np.zeros((2, 3)), valid)
    sim = div.similarity(items, Catalog(sp.csr_matrix(np.ones((1, 1)))))
    assert div.mmr(rel, sim, valid, 0.5, 3).tolist() == [[-1, -1, -1], [0, -1, -1]]
    assert div.dpp_greedy(rel, sim, valid, 0.5, 3).tolist() == [[-1, -1, -1], [0, -1, -1]]
