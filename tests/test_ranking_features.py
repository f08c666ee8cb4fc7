"""Ranking features: point in time (the future changes nothing), one code path for
training rows and requests."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recfunnel.candidates import Candidates
from recfunnel.data.split import hold_out_steps
from recfunnel.features.candidates import CandidateFeatures
from recfunnel.features.pointintime import PointInTimeFeatures
from recfunnel.features.specs import FeatureSpecs
from recfunnel.query import Query, QueryBatch, step_queries


def _rows(ds, n_queries=60, per_query=12, seed=0):
    """Training-style queries (each user's last step, history before it) and candidates:
    the target, the user's previous item, and random items."""
    val = hold_out_steps(ds, 1)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(val.users), n_queries, replace=False))
    queries = step_queries(ds, val.users[pick], val.positions[pick])
    items = []
    for j, p in enumerate(val.positions[pick]):
        items.append(np.r_[val.items[pick][j], ds.item[p - 1], rng.integers(0, ds.n_items, per_query - 2)])
    q = np.repeat(np.arange(n_queries), per_query).astype(np.int32)
    cands = Candidates(q, np.concatenate(items).astype(np.int32), np.zeros(len(q), np.float32), n_queries)
    return val, pick, queries, cands


def _copy(c: Candidates) -> Candidates:
    return Candidates(c.query.copy(), c.item.copy(), c.score.copy(), c.n_queries)


def _with_future(ds, queries, cands):
    """The dataset plus events at and after the latest query's time, on the candidates (by
    other users and by the asking user), so counts and like-rates would move if read."""
    rows = []
    t = max(int(q.time) for q in queries)
    for r in range(len(queries)):
        for it in cands.item[cands.query == r][:3]:
            for u, dt in ((queries[r].user, 5), ((queries[r].user + 1) % ds.n_users, 0), (0, 86400)):
                rows.append({"user": u, "item": int(it), "ts": t + dt, "event": "rating", "value": 5.0, "pos": 10**9 + len(rows)})
    extra = pl.DataFrame(rows).select([pl.col(c).cast(ds.events.schema[c]) for c in ds.events.columns])
    return ds.with_events(pl.concat([ds.events, extra]).sort(["user", "ts", "pos"]))


def test_a_planted_future_event_changes_no_feature(planted):
    ds, _ = planted
    _, _, queries, cands = _rows(ds)
    future = _with_future(ds, queries, cands)
    assert future.n_events > ds.n_events
    out = []
    for d in (ds, future):
        c = _copy(cands)
        PointInTimeFeatures().fit(d).hydrate(QueryBatch(queries, ds.n_items), c)
        out.append(c.features)
    specs = PointInTimeFeatures().fit(ds).specs()
    assert set(out[0]) == set(specs.names)
    for name in specs.names:
        np.testing.assert_array_equal(out[0][name], out[1][name], err_msg=name)
    # and the features do read the past: counts are not all zero and move with it
    assert (out[0]["pit_item_count"] > 0).mean() > 0.5
    assert np.nanstd(out[0]["pit_item_like_rate"]) > 0


def test_counts_are_strictly_before_the_request_time(planted):
    ds, _ = planted
    pit = PointInTimeFeatures().fit(ds)
    it = ds.item[:50].astype(np.int64)
    t = ds.ts[:50]
    before, _ = pit.counts.before(it, t)
    after, _ = pit.counts.before(it, t + 1)  # now the event at t itself counts
    exact = np.array([np.sum((ds.item == i) & (ds.ts < tt)) for i, tt in zip(it, t)])
    np.testing.assert_array_equal(before, exact)
    assert np.all(after >= before + 1)


@pytest.mark.parametrize("hydrator", [PointInTimeFeatures, CandidateFeatures])
def test_serving_features_equal_training_features(planted, hydrator):
    """A batch of many training rows and requests of one (built from raw history the way
    the server builds them) give the same features for the same (user, item, t)."""
    ds, _ = planted
    val, pick, queries, cands = _rows(ds, n_queries=40)
    h = hydrator().fit(val.fit)
    train = _copy(cands)
    h.hydrate(QueryBatch(queries, ds.n_items), train)
    for r in range(0, 40, 7):
        u = int(val.users[pick][r])
        t = int(val.ts[pick][r])
        items, ts = ds.history(u)
        keep = np.arange(len(items)) < val.positions[pick][r] - ds.user_indptr[u]  # the log before the request
        q = Query(user=u, history=items[keep], history_ts=ts[keep], time=t)
        rows = np.flatnonzero(cands.query == r)
        one = Candidates(np.zeros(len(rows), np.int32), cands.item[rows], np.zeros(len(rows), np.float32), 1)
        h.hydrate(QueryBatch([q], ds.n_items), one)
        for name, col in one.features.items():
            np.testing.assert_allclose(col, train.features[name][rows], rtol=1e-5, atol=1e-6, err_msg=name)


def test_specs_round_trip_and_encode(planted):
    ds, _ = planted
    pit = PointInTimeFeatures().fit(ds)
    specs = pit.specs().with_dense(["extra"])
    assert FeatureSpecs.from_json(specs.to_json()) == specs
    assert specs.dense[0] == "extra" and {s.name for s in specs.sequence} == {"hist_items", "hist_cats"}
    _, _, queries, cands = _rows(ds, n_queries=10)
    pit.hydrate(QueryBatch(queries, ds.n_items), cands)
    cands.features["extra"] = np.ones(len(cands), np.float32)
    x = specs.encode(cands)
    assert x["sparse"].shape == (len(cands), len(specs.sparse))
    assert x["dense"].shape == (len(cands), len(specs.dense))
    assert x["hist_items"].shape == (len(cands), pit.config.sequence_length)
    # the most recent history item comes first
    assert x["hist_items"][0, 0] == queries[0].history[-1] + 1
