"""Merge keeps provenance, dedupes, and cuts the pool by relative rank."""

from __future__ import annotations

import numpy as np

from recfunnel.candidates import Candidates
from recfunnel.recall.merge import merge


def _c(query, item, score, n=2):
    return Candidates(np.array(query, np.int32), np.array(item, np.int32), np.array(score, np.float32), n)


def test_union_with_bitmask_scores_and_ranks():
    a = _c([0, 0, 1], [5, 6, 5], [0.9, 0.8, 0.7])
    b = _c([0, 0], [6, 7], [3.0, 2.0])
    pool = merge({"a": a, "b": b}, {"a": 2, "b": 2}, pool_size=10, n_queries=2)
    assert pool.items_of(0).tolist() == [6, 5, 7]  # 6: rank 0 in b and found twice
    assert pool.items_of(1).tolist() == [5]
    rows = {(int(q), int(i)): r for r, (q, i) in enumerate(zip(pool.query, pool.item))}
    six = rows[(0, 6)]
    assert pool.features["channels"][six] == 0b11
    assert pool.features["n_channels"][six] == 2
    assert pool.features["score_a"][six] == np.float32(0.8)
    assert pool.features["rank_a"][six] == 1 and pool.features["rank_b"][six] == 0
    seven = rows[(0, 7)]
    assert np.isnan(pool.features["score_a"][seven]) and pool.features["channels"][seven] == 0b10


def test_pool_cut_keeps_each_channels_head():
    a = _c([0] * 4, [1, 2, 3, 4], [4, 3, 2, 1], n=1)
    b = _c([0] * 2, [9, 8], [2, 1], n=1)
    pool = merge({"a": a, "b": b}, {"a": 4, "b": 2}, pool_size=3, n_queries=1)
    # relative ranks: a -> 0, .25, .5, .75; b -> 0, .5
    assert set(pool.items_of(0).tolist()) == {1, 9, 2}


def test_empty_channels_give_empty_pool_with_feature_columns():
    pool = merge({"a": Candidates.empty(3)}, {"a": 5}, pool_size=5, n_queries=3)
    assert len(pool) == 0 and "score_a" in pool.features and pool.n_queries == 3
