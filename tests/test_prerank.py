"""The pre-ranker: cuts the pool to the ranker's input without losing what the ranker finds."""

from __future__ import annotations

import numpy as np
import pytest

from recfunnel.config import FunnelConfig
from recfunnel.funnel import Funnel
from recfunnel.query import QueryBatch, history_queries

KEEP = 50  # of a 150-candidate pool


def prerank_config(model: str = "trees") -> FunnelConfig:
    cfg = FunnelConfig()
    cfg.merge.pool_size = 150
    cfg.rank.negatives_per_query = 60
    cfg.rank.lightgbm.n_estimators = 120
    cfg.rank.prerank.enabled = True
    cfg.rank.prerank.keep = KEEP
    cfg.rank.prerank.model = model
    return cfg


@pytest.fixture(scope="module", params=["trees", "mlp"])
def fitted(request, planted_split):
    split, _ = planted_split
    return Funnel(prerank_config(request.param)).fit(split.fit, progress=False)


@pytest.fixture(scope="module")
def batch(planted_split):
    split, _ = planted_split
    return QueryBatch(history_queries(split.fit, split.users, split.ts), split.fit.n_items)


def _hits(cands, targets: np.ndarray, k: int) -> np.ndarray:
    return (cands.padded(k) == targets[:, None]).any(axis=1)


def test_cut_keeps_what_the_ranker_finds(planted_split, fitted, batch):
    split, _ = planted_split
    on = fitted.run(batch, keep_stages=True)
    assert np.all(np.bincount(on.ranked.query, minlength=len(batch)) <= KEEP)
    assert on.trace.counts["prerank"] == len(on.ranked) and on.trace.ms["prerank"] > 0
    fitted.config.rank.prerank.enabled = False  # the same ranker on the whole pool
    try:
        full = fitted.run(batch, keep_stages=True)
    finally:
        fitted.config.rank.prerank.enabled = True
    assert "prerank" not in full.trace.counts
    found = _hits(full.ranked, split.items, 10)  # targets the ranker puts in its top 10
    kept = _hits(on.ranked, split.items, KEEP)  # targets that survive the cut
    assert found.sum() >= 30, found.sum()
    share = (found & kept).sum() / found.sum()
    assert share >= 0.95, share
    # and it cuts better than the merge order does
    merge_kept = _hits(on.pool, split.items, KEEP)
    assert kept.sum() >= merge_kept.sum(), (kept.sum(), merge_kept.sum())


def test_save_load_recommend_identical(planted_split, fitted, batch, tmp_path):
    fitted.save(tmp_path / "f")
    weights = "model.txt" if fitted.config.rank.prerank.model == "trees" else "mlp/model.safetensors"
    assert (tmp_path / "f" / "prerank" / weights).is_file()
    assert not list((tmp_path / "f").rglob("*.pkl"))
    loaded = Funnel.load(tmp_path / "f")
    a, b = fitted.run(batch).final, loaded.run(batch).final
    np.testing.assert_array_equal(a.query, b.query)
    np.testing.assert_array_equal(a.item, b.item)
    np.testing.assert_allclose(a.score, b.score, rtol=1e-6)
    for q in batch.queries[:5]:  # the serving path: a batch of one
        x, y = fitted.recommend(q), loaded.recommend(q)
        np.testing.assert_array_equal(x.final.item, y.final.item)
        assert y.trace.counts["prerank"] <= KEEP
