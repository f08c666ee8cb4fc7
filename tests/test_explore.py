"""Explorers: propensities that sum to 1, learning, state round trip, the slot share cap."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recfunnel.candidates import Candidates
from recfunnel.query import Query, QueryBatch
from recfunnel.rerank.catalog import Catalog
from recfunnel.rerank.config import RerankConfig
from recfunnel.rerank.explore import LinUCBExplorer, ThompsonExplorer, load_explorer, place, save_explorer
from recfunnel.rerank.notes import rules_of
from recfunnel.rerank.reranker import Reranker


def test_thompson_propensities_sum_to_one_and_match_choices():
    ts = ThompsonExplorer(4, prior_alpha=1, prior_beta=1, draws=2000)
    arms_seen = np.repeat([0, 1, 2, 3], 30)
    rewards = np.concatenate([np.arange(30) < 20, np.zeros(30), np.arange(30) < 9, np.arange(30) < 9]).astype(float)
    ts.update(arms_seen, rewards)
    rng = np.random.default_rng(0)
    arms = np.array([0, 1, 2, 3])
    p = ts.probs(arms, rng)
    assert p.sum() == pytest.approx(1.0) and np.all(p >= 0)
    assert p[0] > 0.9 and p[1] < 0.01  # the best arm wins nearly always, a bad one almost never
    picks = np.array([ts.choose(arms, rng)[0] for _ in range(600)])
    freq = np.bincount(picks, minlength=4) / len(picks)
    assert np.abs(freq - p).max() < 0.08  # the logged propensity is the choice's probability
    batch = ts.probs_batch(5, rng)
    assert batch.shape == (5, 4) and np.allclose(batch.sum(axis=1), 1.0)
    ts.ensure(6)
    assert ts.alpha.shape == (6,) and ts.alpha[5] == 1


def test_linucb_propensities_floor_learning_and_exact_update():
    lin = LinUCBExplorer(3, dim=2, alpha=0.1, epsilon=0.3)
    x = np.array([[1.0, 0.5]] * 3)
    p = lin.probs(np.arange(3), None, x)
    assert p.sum() == pytest.approx(1.0) and p.min() >= 0.1 - 1e-12
    lin.update(np.array([0] * 20 + [1] * 20), np.array([1.0] * 20 + [0.0] * 20), np.tile([1.0, 0.5], (40, 1)))
    p = lin.probs(np.arange(3), None, x)
    assert p.argmax() == 0 and p[0] == pytest.approx(0.7 + 0.1)
    xs = np.tile([1.0, 0.5], (20, 1))
    assert np.allclose(lin.a_inv[0], np.linalg.inv(np.eye(2) + xs.T @ xs))


def test_explorer_state_round_trip(tmp_path):
    ts = ThompsonExplorer(3)
    ts.update(np.array([1, 1, 2]), np.array([1, 0, 1]))
    ts.record_served(np.array([1, 2, 2]))
    save_explorer(ts, tmp_path / "ex")
    back = load_explorer(ThompsonExplorer(0), tmp_path / "ex")
    assert back.alpha.tolist() == ts.alpha.tolist() and back.exposures.tolist() == [0, 1, 2]


def test_place_inserts_at_slots_and_keeps_exploit_order():
    order = [10, 11, 12, 13, 14, 15]
    new, props = place(order, [14, 15], [1, 3], 4, lambda offered: (len(offered) - 1, 0.5))
    assert new[:4] == [10, 15, 11, 14] and props == {15: 0.5, 14: 0.5}
    assert place(order, [], [1], 4, lambda o: (0, 1.0)) == (order, {})


def _explore_setup(max_share: float, method: str = "thompson"):
    n_items = 40
    cats = sp.csr_matrix(np.eye(n_items, 5, dtype=np.float32))
    cfg = RerankConfig(scatter_max_run=0, diversity={"method": "off"})
    cfg.explore.enabled = True
    cfg.explore.method = method  # type: ignore[assignment]
    cfg.explore.max_share = max_share
    cfg.explore.slots = [2, 4, 6, 8, 10]
    cfg.explore.min_exposures = 5
    rr = Reranker(cfg, Catalog(cats), seed=3)
    queries = [Query(u, [], []) for u in range(30)]
    items = np.tile(np.arange(n_items, dtype=np.int32), 30)
    q = np.repeat(np.arange(30, dtype=np.int32), n_items)
    score = np.tile(-np.arange(n_items, dtype=np.float32), 30)
    return rr, Candidates(q, items, score, 30), QueryBatch(queries, n_items)


@pytest.mark.parametrize("method", ["thompson", "linucb"])
@pytest.mark.parametrize("max_share", [0.0, 0.1, 0.3])
def test_explorer_share_cap_and_logged_propensities(method, max_share):
    rr, cands, batch = _explore_setup(max_share, method)
    rr.get_explorer().record_served(np.arange(0, 20).repeat(5))  # items 0..19 are well known
    out, log = rr(cands, batch, 10)
    explored = np.array([bool(x) and "explore" in rules_of(x) for x in out.features["rerank_notes"]])
    prop = out.features["propensity"]
    per_query = np.bincount(out.query[prop < 1.0], minlength=30)
    assert per_query.max() <= int(np.floor(max_share * 10))
    assert log.get("explore_slots", 0) == int((prop < 1.0).sum())
    assert np.all(prop[~explored] == 1.0) and np.all((prop > 0) & (prop <= 1.0))
    if max_share >= 0.1:
        assert per_query.min() >= 1  # eligible items exist outside the top 10
        assert np.all(out.item[prop < 1.0] >= 20)  # only low-exposure items are explored
    for qq in range(30):
        its = out.item[out.query == qq]
        assert len(its) == 10 and len(set(its.tolist())) == 10
    # serving counts exposures: explored items become known
    assert rr.explorer.exposures.sum() == 100 + 300


def test_logged_propensity_is_the_explorers_probability_of_that_choice():
    """LinUCB's distribution is exact: the logged propensity must be its value for the pick."""
    rr, cands, batch = _explore_setup(0.1, "linucb")
    rr.config.explore.slots = [10]
    rr.config.explore.epsilon = 0.05
    out, _ = rr(cands, batch, 10)
    m = out.features["propensity"] < 1.0
    assert m.sum() == 30  # one explored slot per query, the 10th
    assert np.all(out.rank_in_query()[m] == 9)
    # no data yet: the bonus alpha * |x| favours the most relevant offered item (item 10)
    offered = 30
    best, other = 0.95 + 0.05 / offered, 0.05 / offered
    want = np.where(out.item[m] == 10, best, other)
    assert np.allclose(out.features["propensity"][m], want)
    assert best + (offered - 1) * other == pytest.approx(1.0)


def test_explorer_state_travels_with_the_funnel(tmp_path):
    from recfunnel.rerank.reranker import Reranker as R

    rr, cands, batch = _explore_setup(0.2)
    rr(cands, batch, 10)
    rr.save_state(tmp_path / "rerank")
    again = R(rr.config, rr.catalog)
    again.load_state(tmp_path / "rerank")
    assert again.explorer is not None and again.explorer.exposures.tolist() == rr.explorer.exposures.tolist()
