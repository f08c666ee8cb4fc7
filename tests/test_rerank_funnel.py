"""The re-rank stage inside the Funnel: catalog round trip, presets, explanations, runtime blacklist."""

from __future__ import annotations

import numpy as np
import pytest

from recfunnel.config import FunnelConfig
from recfunnel.funnel import Funnel
from recfunnel.query import Query, QueryBatch, history_queries
from recfunnel.rerank.notes import explain, rules_of


@pytest.fixture(scope="module")
def funnel(planted_split):
    split, _ = planted_split
    cfg = FunnelConfig()
    cfg.rank.model = "none"  # recall order: fast, and the re-ranker does not care
    cfg.rerank.diversity.exposure_penalty = 0.2
    return Funnel(cfg).fit(split.fit, progress=False)


def _batch(split, k=60):
    return QueryBatch(history_queries(split.fit, split.users[:k], split.ts[:k]), split.fit.n_items)


def test_catalog_comes_from_the_items_table(funnel):
    cat = funnel.catalog
    assert cat.price is not None and cat.created is not None  # the synthetic catalog has both
    assert cat.exposure is not None and 0 <= cat.exposure.min() and cat.exposure.max() == pytest.approx(1.0)
    assert cat.categories.shape[0] == funnel.n_items


@pytest.mark.parametrize("preset", ["none", "default", "mmr", "dpp"])
def test_every_preset_serves_n_unseen_items_with_explanations(planted_split, funnel, preset):
    split, _ = planted_split
    funnel.config.rerank.preset = preset
    try:
        b = _batch(split)
        out = funnel.run(b)
    finally:
        funnel.config.rerank.preset = "default"
    f = out.final
    assert np.all(np.bincount(f.query, minlength=len(b)) == 10)
    assert not np.asarray(b.seen[f.query, f.item]).ravel().any()
    assert {"rank_before_rerank", "rerank_notes", "propensity"} <= set(f.features)
    if preset == "none":
        assert not f.features["rerank_notes"].any() and out.trace.rules == {}
    else:
        assert f.features["rerank_notes"].any()
        assert out.trace.rules.get(f"{'mmr' if preset == 'default' else preset}_moved", 0) > 0
        row = int(np.flatnonzero(f.features["rerank_notes"])[0])
        lines = explain(int(f.features["rerank_notes"][row]), int(f.features["rank_before_rerank"][row]),
                        int(f.rank_in_query()[row]))
        assert lines and any(r in lines[-1] for r in rules_of(int(f.features["rerank_notes"][row])))
    assert "rerank" in out.trace.ms


def test_save_load_keeps_the_catalog_and_the_answers(planted_split, funnel, tmp_path):
    split, _ = planted_split
    funnel.save(tmp_path / "f")
    back = Funnel.load(tmp_path / "f")
    for name in ("price", "created", "exposure", "popularity"):
        assert np.array_equal(getattr(back.catalog, name), getattr(funnel.catalog, name))
    b = _batch(split, 20)
    assert back.run(b).final.item.tolist() == funnel.run(b).final.item.tolist()


def test_runtime_blacklist_through_the_funnel(planted_split, funnel):
    split, _ = planted_split
    q = history_queries(split.fit, split.users[:1], split.ts[:1])[0]
    first = funnel.recommend(q).final.item
    raw = funnel.item_ids.raw(int(first[0]))
    assert funnel.update_blacklist(add=[raw]) == 1
    try:
        out = funnel.recommend(q)
        assert int(first[0]) not in out.final.item.tolist() and out.trace.rules["blacklist"] == 1
    finally:
        funnel.update_blacklist(remove=[raw])
    assert funnel.recommend(q).final.item[0] == first[0]


def test_query_attributes_default_and_cold_user(funnel):
    q = Query(user=-1, history=[], history_ts=[])
    assert q.attributes == {}
    out = funnel.recommend(q)
    assert len(out.final) == 10
