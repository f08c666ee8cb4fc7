"""Every metric against hand-computed numbers; full ranking against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from recfunnel.evaluate.metrics import (
    coverage,
    hit_rate,
    ild,
    mrr,
    ndcg,
    novelty,
    summarize,
    target_ranks,
)
from recfunnel.evaluate.ranking import full_ranking_topk

# 3 users, K = 3, padded with -1; targets at rank 1, absent, rank 0.
TOPK = np.array([[5, 3, 1], [2, 4, -1], [0, 1, 2]])
TARGETS = np.array([3, 7, 0])
# items 0..5 x categories 0..2: {0}, {0,1}, {1}, {}, {}, {0,1,2}
CATS = sp.csr_matrix(
    np.array(
        [[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0], [1, 1, 1]], dtype=np.float32
    )
)
COUNTS = np.array([8, 4, 2, 1, 0, 16])  # -log2(c/16): 1, 2, 3, 4, 4 (0 -> 1), 0


def test_target_ranks() -> None:
    assert target_ranks(TOPK, TARGETS).tolist() == [1, -1, 0]
    # -1 padding never matches, even a target of -1 (unknown item)
    assert target_ranks(np.array([[1, -1]]), np.array([-1])).tolist() == [-1]
    assert target_ranks(np.zeros((2, 0), dtype=int), np.array([1, 2])).tolist() == [-1, -1]


def test_accuracy_metrics() -> None:
    ranks = target_ranks(TOPK, TARGETS)
    assert hit_rate(ranks, 1) == pytest.approx(1 / 3)
    assert hit_rate(ranks, 3) == pytest.approx(2 / 3)
    assert ndcg(ranks, 3) == pytest.approx((1 / math.log2(3) + 0 + 1) / 3)
    assert ndcg(ranks, 1) == pytest.approx(1 / 3)
    assert mrr(ranks, 3) == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert mrr(ranks, 1) == pytest.approx(1 / 3)
    assert hit_rate(np.array([], dtype=int), 10) == 0.0


def test_coverage_ignores_padding() -> None:
    assert coverage(TOPK, n_items=10, k=3) == pytest.approx(6 / 10)  # {0,1,2,3,4,5}
    assert coverage(TOPK, n_items=10, k=1) == pytest.approx(3 / 10)  # {5,2,0}
    assert coverage(np.full((2, 3), -1), n_items=10, k=3) == 0.0


def test_ild_jaccard() -> None:
    # user 0 [5,3,1]: d(5,3)=1 (one empty), d(5,1)=1-2/3, d(3,1)=1  -> 7/9
    # user 1 [2,4]:   d(2,4)=1                                        -> 1
    # user 2 [0,1,2]: d(0,1)=1/2, d(0,2)=1, d(1,2)=1/2                -> 2/3
    assert ild(TOPK, CATS, k=3) == pytest.approx((7 / 9 + 1 + 2 / 3) / 3)
    # two items without categories are at distance 0; a one-item list is skipped
    topk = np.array([[3, 4, -1], [5, -1, -1], [0, 2, -1]])
    assert ild(topk, CATS, k=3) == pytest.approx((0 + 1) / 2)
    # identical category sets: distance 0; chunking does not change the answer
    same = np.array([[1, 1], [0, 5]] * 5)
    expected = (0 + (1 - 1 / 3)) / 2
    assert ild(same, CATS, k=2, chunk=3) == pytest.approx(expected)
    assert ild(np.array([[1], [2]]), CATS, k=10) == 0.0


def test_novelty_logs() -> None:
    # user 0: (0 + 4 + 2)/3 = 2; user 1: (3 + 4)/2 = 3.5; user 2: (1 + 2 + 3)/3 = 2
    assert novelty(TOPK, COUNTS, n_users=16, k=3) == pytest.approx((2 + 3.5 + 2) / 3)
    assert novelty(TOPK, COUNTS, n_users=16, k=1) == pytest.approx((0 + 3 + 1) / 3)


def test_summarize_keys_and_values() -> None:
    out = summarize(TOPK, TARGETS, CATS, COUNTS, n_users=16, n_items=10, ks=(1, 3, 10))
    assert list(out) == ["HR@1", "HR@3", "NDCG@10", "MRR@10", "coverage@10", "ILD@10", "novelty@10"]
    assert out["HR@3"] == pytest.approx(2 / 3)
    assert out["NDCG@10"] == pytest.approx((1 / math.log2(3) + 1) / 3)
    assert out["MRR@10"] == pytest.approx(0.5)
    assert out["coverage@10"] == pytest.approx(0.6)
    assert out["ILD@10"] == pytest.approx((7 / 9 + 1 + 2 / 3) / 3)
    assert out["novelty@10"] == pytest.approx(2.5)
    wide = np.pad(TOPK, ((0, 0), (0, 497)), constant_values=-1)
    keys = summarize(wide, TARGETS, CATS, COUNTS, 16, 10)
    assert [k for k in keys if k.startswith("HR@")] == ["HR@10", "HR@50", "HR@100", "HR@200", "HR@500"]


def _brute_force(scores, users, seen, cand, k):
    out = np.full((len(users), k), -1)
    for r, u in enumerate(users):
        allowed = cand.copy()
        allowed[seen[u].indices] = False
        idx = np.flatnonzero(allowed)
        best = idx[np.argsort(-scores[u, idx], kind="stable")][:k]
        out[r, : len(best)] = best
    return out


@pytest.mark.parametrize("k", [1, 5, 30])
def test_full_ranking_matches_brute_force(k: int) -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 30
    scores = rng.normal(size=(n_users, n_items))
    before = scores.copy()
    seen = sp.random(n_users, n_items, density=0.2, random_state=1, format="csr")
    seen.data[:] = 1
    cand = rng.random(n_items) < 0.8
    users = rng.permutation(n_users)[:25]
    got = full_ranking_topk(lambda us: scores[us], users, seen, k, candidate_items=cand, chunk=7)
    np.testing.assert_array_equal(got, _brute_force(scores, users, seen, cand, k))
    np.testing.assert_array_equal(scores, before)  # the model's array is not written into
    assert not np.isin(got[got >= 0], np.flatnonzero(~cand)).any()
    for r, u in enumerate(users):
        assert not np.isin(got[r], seen[u].indices).any()
    # an index array of candidates is the same as the mask
    by_index = full_ranking_topk(lambda us: scores[us], users, seen, k, np.flatnonzero(cand), 7)
    np.testing.assert_array_equal(by_index, got)


def test_full_ranking_pads_when_few_candidates() -> None:
    scores = np.arange(12, dtype=np.float64).reshape(2, 6)
    seen = sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]]))
    cand = np.array([True, True, False, True, True, True])
    got = full_ranking_topk(lambda us: scores[us], np.array([0, 1]), seen, 6, cand)
    assert got.tolist() == [[4, 3, 1, -1, -1, -1], [5, 4, 3, 1, 0, -1]]


def test_full_ranking_ties_break_by_item_index() -> None:
    # popularity-like integer scores: many ties, next to masked (+inf cost) items
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 4, size=50)
    seen = sp.random(30, 50, density=0.3, random_state=4, format="csr")
    cand = rng.random(50) < 0.9
    users = np.arange(30)
    got = full_ranking_topk(
        lambda us: np.broadcast_to(counts, (len(us), 50)), users, seen, 20, cand, chunk=8
    )
    np.testing.assert_array_equal(got, _brute_force(np.tile(counts, (30, 1)), users, seen, cand, 20))
    # -0.0 and 0.0 are the same score
    zeros = np.array([[0.0, -0.0, 0.0, -0.0]])
    out = full_ranking_topk(lambda us: zeros, np.array([0]), sp.csr_matrix((1, 4)), 4)
    assert out.tolist() == [[0, 1, 2, 3]]
