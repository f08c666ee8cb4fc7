"""The whole funnel on planted data: the ranker earns its place; artifacts round-trip."""

from __future__ import annotations

import numpy as np
import pytest

from recfunnel.artifacts import ArtifactError, list_versions, read_manifest, resolve
from recfunnel.build import build
from recfunnel.config import FunnelConfig
from recfunnel.evaluate.metrics import ndcg, target_ranks
from recfunnel.evaluate.protocol import evaluate_fitted
from recfunnel.funnel import Funnel
from recfunnel.query import QueryBatch, history_queries
from recfunnel.runtime import Recommender


def small_config(**rank) -> FunnelConfig:
    cfg = FunnelConfig()
    cfg.merge.pool_size = 150
    cfg.rank.negatives_per_query = 60
    cfg.rank.lightgbm.n_estimators = 120
    for k, v in rank.items():
        setattr(cfg.rank, k, v)
    return cfg


@pytest.fixture(scope="module")
def fitted(planted_split):
    split, _ = planted_split
    return Funnel(small_config()).fit(split.fit, progress=False)


def test_ranker_beats_its_input_order(planted_split, fitted):
    split, _ = planted_split
    ev = evaluate_fitted(fitted, split, progress=False)
    batch = QueryBatch(history_queries(split.fit, split.users, split.ts), split.fit.n_items)
    out = fitted.run(batch, keep_stages=True)
    pool_ndcg = ndcg(target_ranks(out.pool.padded(150), split.items), 10)
    ranked_ndcg = ndcg(target_ranks(out.ranked.padded(150), split.items), 10)
    assert ranked_ndcg > pool_ndcg * 1.1, (ranked_ndcg, pool_ndcg)
    assert ev.result["final"]["NDCG@10"] > pool_ndcg
    # the per-stage shares can only shrink down the funnel
    shares = [s for _, s in ev.funnel_shares]
    assert shares == sorted(shares, reverse=True)


def test_evaluation_result_has_the_documented_shape(planted_split, fitted):
    split, _ = planted_split
    r = evaluate_fitted(fitted, split, progress=False).result
    assert set(r["final"]) == {"HR@10", "NDCG@10", "MRR@10", "coverage@10", "ILD@10", "novelty@10"}
    assert set(r["pool"]) >= {"size", "HR"}
    assert set(r["channels"]) == set(fitted.sources)
    assert all(set(v) == {"quota", "HR"} for v in r["channels"].values())
    assert r["timings"]["fit:rank"] > 0


def test_final_lists_respect_rules(planted_split, fitted):
    split, _ = planted_split
    batch = QueryBatch(history_queries(split.fit, split.users, split.ts), split.fit.n_items)
    final = fitted.run(batch).final
    assert np.all(np.bincount(final.query, minlength=len(batch)) == 10)
    assert not np.asarray(batch.seen[final.query, final.item]).ravel().any()


def test_build_load_recommend_round_trip(planted, tmp_path):
    ds, _ = planted
    cfg = small_config()
    cfg.rerank.blacklist = [ds.item_ids.raw(0)]
    d = build(ds, cfg, tmp_path / "art", metrics={"final": {"NDCG@10": 0.1}}, progress=False)
    assert resolve(tmp_path / "art") == d.resolve()
    assert read_manifest(tmp_path / "art")["metrics"]["final"]["NDCG@10"] == 0.1
    assert not list(d.rglob("*.pkl")) and not list(d.rglob("*.pickle"))
    rec = Recommender(tmp_path / "art")
    user = ds.user_ids.raw(3)
    first = rec.recommend(user, n=10)
    assert len(first) == 10
    seen = set(ds.item_ids.raws(ds.history(3)[0]))
    assert not seen & {r.item for r in first}
    assert ds.item_ids.raw(0) not in {r.item for r in first}
    assert all(r.channels for r in first)
    # a second load answers identically
    again = Recommender(tmp_path / "art").recommend(user, n=10)
    assert [r.item for r in again] == [r.item for r in first]
    # an unknown user is the cold-start path, not an error
    cold = rec.recommend("nobody-knows-me", n=5)
    assert len(cold) == 5
    # a second build becomes current; the first stays listed
    d2 = build(ds, cfg, tmp_path / "art", progress=False)
    assert resolve(tmp_path / "art") == d2.resolve()
    assert len(list_versions(tmp_path / "art")) == 2


def test_incomplete_version_is_never_current(tmp_path):
    (tmp_path / "art" / "v-broken").mkdir(parents=True)
    with pytest.raises(ArtifactError):
        resolve(tmp_path / "art")


def test_config_round_trips_through_toml(tmp_path):
    cfg = small_config()
    cfg.recall.usercf.enabled = False
    p = tmp_path / "f.toml"
    p.write_text(cfg.to_toml())
    assert FunnelConfig.from_toml(p) == cfg
    p.write_text("[recall.itemcf]\nneighbours = 3\n")
    with pytest.raises(ValueError, match="neighbours"):
        FunnelConfig.from_toml(p)


def test_packaged_default_config_is_the_code_default():
    from recfunnel.config import default_config_path, load_config

    assert load_config(None) == FunnelConfig()
    # the commented manual is generated: regenerate it with
    # python -c "from recfunnel.config import *; default_config_path().write_text(FunnelConfig().to_commented_toml())"
    assert default_config_path().read_text() == FunnelConfig().to_commented_toml()
    assert "# candidates this channel sends to merge" in default_config_path().read_text()
