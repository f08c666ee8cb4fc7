"""implicit baselines on the protocol: co-occurrence models must beat popularity."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recfunnel.data.dataset import Dataset
from recfunnel.data.idmap import IdMap
from recfunnel.data.split import leave_last_out

pytest.importorskip("implicit")

from recfunnel.evaluate.baselines import run_implicit  # noqa: E402

N_USERS, N_BLOCKS, BLOCK = 300, 10, 20


def _block_dataset(seed: int = 0) -> Dataset:
    """Users each live in one block of items; 10% of events are uniform noise."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(N_USERS):
        block = u % N_BLOCKS
        picks = rng.choice(BLOCK, size=10, replace=False) + block * BLOCK
        noise = rng.random(10) < 0.1
        picks[noise] = rng.integers(0, N_BLOCKS * BLOCK, noise.sum())
        users += [u] * 10
        items += picks.tolist()
    n_items = N_BLOCKS * BLOCK
    events = pl.DataFrame({"user": users, "item": items, "ts": np.arange(len(users))})
    catalog = pl.DataFrame(
        {"item": np.arange(n_items), "categories": [[f"b{i // BLOCK}"] for i in range(n_items)]}
    )
    return Dataset.build(
        "blocks", events, catalog, None, IdMap(range(N_USERS)), IdMap(range(n_items))
    )


def test_cooccurrence_models_beat_popularity() -> None:
    split = leave_last_out(_block_dataset())
    fast = {"als": {"factors": 16, "iterations": 5}, "bpr": {"factors": 16, "iterations": 30}}
    out = {m: run_implicit(split, m, seed=0, params=fast.get(m)) for m in
           ("popularity", "itemknn_bm25", "als", "bpr")}
    for m, res in out.items():
        assert res["model"] == m
        assert res["fit_seconds"] >= 0 and res["predict_seconds"] >= 0
        assert set(res["metrics"]) >= {"HR@10", "HR@50", "HR@100", "NDCG@10", "MRR@10",
                                       "coverage@10", "ILD@10", "novelty@10"}
        # 200 items: every candidate fits in the top 500, the rest is -1 padding
        assert res["metrics"]["HR@500"] == res["metrics"]["HR@200"]
    pop = out["popularity"]["metrics"]["HR@10"]
    assert out["itemknn_bm25"]["metrics"]["HR@10"] > pop + 0.2
    assert out["als"]["metrics"]["HR@10"] > pop + 0.2
    # popularity recommends one list to everyone: low coverage
    assert out["popularity"]["metrics"]["coverage@10"] < out["itemknn_bm25"]["metrics"]["coverage@10"]


def test_unknown_model() -> None:
    split = leave_last_out(_block_dataset())
    with pytest.raises(ValueError):
        run_implicit(split, "svd")
