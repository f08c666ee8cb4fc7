"""torch-rechub rankers (bench/rechub_rank_adapter.py) on a tiny planted funnel: they train on
the funnel's own rows, score finite probabilities, beat random, serve in the funnel, and
save -> load scores identically."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch_rechub")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from rechub_rank_adapter import RechubRanker  # noqa: E402
from rank_tune import fit_with_rows, install_ranker  # noqa: E402
from rechub_rankers import MODELS, train_rechub  # noqa: E402

from recfunnel.config import FunnelConfig  # noqa: E402
from recfunnel.nn.training import TrainConfig  # noqa: E402
from recfunnel.query import QueryBatch, history_queries  # noqa: E402
from recfunnel.rank.metrics import gauc  # noqa: E402
from recfunnel.rank.neural import DeepFMConfig  # noqa: E402

SMALL = {"epochs": 4, "embed_dim": 8, "hidden": [32, 16], "batch_size": 256, "learning_rate": 3e-3}


@pytest.fixture(scope="module")
def fitted(planted_split):
    split, _ = planted_split
    cfg = FunnelConfig()
    cfg.merge.pool_size = 100
    cfg.rank.max_train_queries = 400
    cfg.rank.negatives_per_query = 30
    cfg.rank.random_negatives_per_query = 10
    train = TrainConfig(epochs=2, batch_size=256, learning_rate=3e-3, eval_every=1, patience=1, refit=False, progress=False)
    cfg.rank.deepfm = DeepFMConfig(embed_dim=8, hidden=[32, 16], train=train)
    cfg.rerank.preset = "none"
    funnel, rows = fit_with_rows(cfg, split)
    return split, funnel, rows


@pytest.fixture(scope="module")
def trained(fitted):
    _, _, rows = fitted
    return {name: train_rechub(rows, name, **SMALL)[0] for name in MODELS}


def test_rows_are_the_funnels_ranker_rows(fitted):
    _, funnel, rows = fitted
    assert len(rows.labels) == funnel.ranker_report["train_rows"]
    assert {"hist_items", "item_id", "user_id"} <= set(rows.train.features)
    assert rows.like is not None and len(rows.like) == len(rows.labels)


@pytest.mark.parametrize("name", MODELS)
def test_rechub_ranker_scores_probabilities_and_beats_random(fitted, trained, name):
    _, _, rows = fitted
    r = trained[name]
    held = np.flatnonzero(r._held_out(rows.train, np.random.default_rng(r.config.seed)))
    test = rows.train.take(held)
    p = r.head_probabilities(test)
    assert p.shape == (len(held), 2 if name == "rechub_mmoe" else 1)
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    s = r.score(test)
    got = gauc(rows.labels[held], s, test.query)
    rand = gauc(rows.labels[held], np.random.default_rng(1).random(len(held)), test.query)
    assert got > rand + 0.1, (name, got, rand)
    assert r.report["holdout_auc"] > 0.6
    assert 1 <= r.report["best_epoch"] <= r.report["epochs_run"] <= SMALL["epochs"]


def test_serves_in_the_funnel_and_round_trips(fitted, trained, tmp_path):
    split, funnel, _ = fitted
    r = trained["rechub_din"]
    install_ranker(funnel, split, funnel.config, r)
    batch = QueryBatch(history_queries(split.fit, split.users[:30], split.ts[:30]), split.fit.n_items)
    out = funnel.run(batch, keep_stages=True)
    assert len(out.final) and np.isfinite(out.ranked.score).all()
    np.testing.assert_allclose(out.ranked.score, r.score(out.ranked), rtol=1e-6)
    r.save(tmp_path / "din")
    again = RechubRanker.load(tmp_path / "din")
    np.testing.assert_array_equal(again.score(out.ranked), r.score(out.ranked))
