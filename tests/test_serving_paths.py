"""Serving answers one query at a time through NumPy fast paths; they must equal the batch path.

Offline evaluation scores thousands of queries with sparse products; a request is a batch
of one and skips the sparse matrices (see `weighted_row_sum`, `_top_k_one`). If the two
drifted apart, what is measured would not be what is served.
"""

from __future__ import annotations

import numpy as np
import pytest

from recfunnel.candidates import top_k
from recfunnel.funnel import Funnel
from recfunnel.query import Query, QueryBatch, history_queries
from recfunnel.recall.cooccurrence import CooccurrenceSource
from recfunnel.recall.itemcf import ItemCFSource
from recfunnel.recall.popular import CategoryHotSource, HotSource, PopularSource
from recfunnel.recall.usercf import UserCFSource

from test_funnel import small_config

N_QUERIES = 60


@pytest.fixture(scope="module")
def queries(planted_split):
    split, _ = planted_split
    qs = history_queries(split.fit, split.users[:N_QUERIES], split.ts[:N_QUERIES])
    qs.append(Query(user=-1, history=np.empty(0, np.int32), history_ts=np.empty(0, np.int64)))
    return qs


@pytest.mark.parametrize(
    "cls", [PopularSource, HotSource, CategoryHotSource, ItemCFSource, UserCFSource, CooccurrenceSource]
)
def test_single_query_recall_equals_batch(planted_split, queries, cls):
    split, _ = planted_split
    src = cls().fit(split.fit)
    n = split.fit.n_items
    batch = src.retrieve(QueryBatch(queries, n))
    for q, query in enumerate(queries):
        one = src.retrieve(QueryBatch([query], n))
        want_items = batch.items_of(q)
        want_scores = batch.score[batch.query == q]
        np.testing.assert_allclose(one.score, want_scores, rtol=1e-4, atol=1e-6, err_msg=cls.name)
        _same_ranking(one.item, one.score, want_items, want_scores, cls.name)


def _same_ranking(items, scores, want_items, want_scores, name: str) -> None:
    """Equal lists, except that items whose scores differ only by float summation order
    may swap places (or trade the last place)."""
    differ = np.flatnonzero(items != want_items)
    if len(differ) == 0:
        return
    want = dict(zip(want_items.tolist(), want_scores.tolist()))
    got = dict(zip(items.tolist(), scores.tolist()))
    assert len(set(got) ^ set(want)) <= 2, name
    for i in differ:
        item = int(items[i])
        if item in want:
            assert abs(want[item] - got[item]) <= 1e-5 * max(abs(got[item]), 1.0), (name, item)
        # the item that took another's place scores within rounding of it
        assert abs(scores[i] - want_scores[i]) <= 1e-5 * max(abs(scores[i]), 1.0), (name, i)


def test_single_query_top_k_equals_batch():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(1, 500)).astype(np.float32)  # many ties and zeros
    scores[0, 7] = np.nan
    one = top_k(scores, 50)
    two = top_k(np.vstack([scores, scores]), 50)
    np.testing.assert_array_equal(one.item, two.items_of(0))
    np.testing.assert_array_equal(one.score, two.score[two.query == 0])


@pytest.fixture(scope="module")
def funnel(planted_split):
    split, _ = planted_split
    cfg = small_config()
    cfg.rank.model = "lightgbm"  # the native (compiled trees) path is LightGBM's
    cfg.rank.lightgbm.threads = 1
    return Funnel(cfg).fit(split.fit, progress=False)


def test_single_query_features_and_funnel_equal_batch(planted_split, queries, funnel):
    split, _ = planted_split
    n = split.fit.n_items
    batch = QueryBatch(queries, n)
    pool = funnel.run(batch, keep_stages=True).pool
    funnel.features.hydrate(batch, pool)
    for q in (0, 5, 17, len(queries) - 1):
        one_batch = QueryBatch([queries[q]], n)
        one_pool = funnel.run(one_batch, keep_stages=True).pool
        rows = np.flatnonzero(pool.query == q)
        np.testing.assert_array_equal(np.sort(one_pool.item), np.sort(pool.item[rows]))
        funnel.features.hydrate(one_batch, one_pool)
        a = np.argsort(one_pool.item)
        b = rows[np.argsort(pool.item[rows])]
        for name in funnel.features.names:
            np.testing.assert_allclose(
                one_pool.features[name][a], pool.features[name][b], rtol=1e-4, atol=1e-6, err_msg=name
            )


def test_native_ranker_scores_like_lightgbm(planted_split, queries, funnel, tmp_path):
    from recfunnel.rank.compiled import available
    from recfunnel.rank.lightgbm_ranker import LightGBMRanker

    if not available():
        pytest.skip("lleaves not installed")
    split, _ = planted_split
    funnel.ranker.save(tmp_path / "rank")
    ranker = LightGBMRanker.load(tmp_path / "rank")
    batch = QueryBatch(queries[:1], split.fit.n_items)
    pool = funnel.run(batch, keep_stages=True).pool
    funnel.features.hydrate(batch, pool)
    want = ranker.score(pool)
    assert ranker.compile_native()
    np.testing.assert_allclose(ranker.score(pool), want, rtol=1e-5, atol=1e-6)
