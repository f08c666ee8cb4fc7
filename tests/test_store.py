"""The online feature store: one contract, run on both backends (SQLite and a real Redis).

Redis tests skip locally when no server answers on 127.0.0.1:6379, and fail in CI
(CI=true), where .ci/run starts one.
"""

from __future__ import annotations

import math
import os
import threading
import uuid

import pytest

from recfunnel.features.store import Event, Served, StoreError, Window, decay_add, decay_to, open_store

DAY = 86400.0
REDIS_URL = os.environ.get("RECFUNNEL_TEST_REDIS", "redis://127.0.0.1:6379/15")


def redis_or_skip(url: str = REDIS_URL):
    """A RedisStore under a fresh prefix; skip locally / fail in CI when Redis is down."""
    from recfunnel.features.store_redis import RedisStore

    store = RedisStore(url, prefix=f"test-{uuid.uuid4().hex[:8]}:", timeout_s=2.0)
    try:
        store.ping()
    except StoreError as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Redis is required in CI and did not answer: {e}")
        pytest.skip(f"no Redis at {url}: {e}")
    return store


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = open_store("sqlite", state_dir=tmp_path)
        yield s
        s.close()
    else:
        s = redis_or_skip()
        yield s
        s.clear()
        s.close()


def ev(user: str, item: str, ts: int, event_id: str = "") -> Event:
    return Event(user=user, item=item, ts=ts, event_id=event_id)


def test_unknown_user_has_no_history(store):
    assert store.history("nobody") is None


def test_first_event_lands_after_the_seeded_history(store):
    seeds = {"u1": [("a", 1), ("b", 2)]}
    assert store.append([ev("u1", "c", 10)], seeds) == [True]
    assert store.history("u1") == [("a", 1), ("b", 2), ("c", 10)]
    # a known user is never seeded again (the store is the source of truth now)
    store.append([ev("u1", "d", 11)], {"u1": [("zzz", 0)]})
    assert store.history("u1") == [("a", 1), ("b", 2), ("c", 10), ("d", 11)]
    assert store.history("u1", limit=2) == [("c", 10), ("d", 11)]


def test_new_user_without_seed(store):
    store.append([ev("new", "x", 5), ev("new", "y", 6)])
    assert store.history("new") == [("x", 5), ("y", 6)]


def test_history_is_capped_to_the_most_recent(store):
    store.history_cap = 5
    store.append([ev("u", f"i{k}", k) for k in range(8)], {"u": [("s", 0)] * 3})
    assert [i for i, _ in store.history("u")] == ["i3", "i4", "i5", "i6", "i7"]


def test_retried_event_ids_are_stored_once(store):
    assert store.append([ev("u", "a", 1, "e1"), ev("u", "b", 2, "e2")]) == [True, True]
    assert store.append([ev("u", "a", 1, "e1"), ev("u", "c", 3, "e3")]) == [False, True]
    assert store.history("u") == [("a", 1), ("b", 2), ("c", 3)]
    assert store.has_events(["e1", "e2", "e3", "nope"]) == [True, True, True, False]
    assert store.count_events() == 3


def test_decayed_counters_follow_the_half_life(store):
    w = Window("hot", 7 * DAY)
    t0 = 1_700_000_000
    v0, _ = store.counts(w, t0)
    store.append([ev("u1", "a", t0), ev("u2", "a", t0 + int(7 * DAY)), ev("u3", "b", t0)], windows=[w])
    version, counts = store.counts(w, t0 + 7 * DAY)
    assert version > v0
    assert math.isclose(counts["a"], 1.5, rel_tol=1e-9)  # one at full weight, one halved
    assert math.isclose(counts["b"], 0.5, rel_tol=1e-9)
    # incremental read: only items changed after `version`
    store.append([ev("u4", "c", t0)], windows=[w])
    v2, changed = store.counts(w, t0, since=version)
    assert v2 > version and set(changed) == {"c"}
    # an event older than the counter's reference time is decayed into it
    store.append([ev("u5", "a", t0 - int(7 * DAY))], windows=[w])
    _, counts = store.counts(w, t0 + 7 * DAY)
    assert math.isclose(counts["a"], 1.75, rel_tol=1e-9)


def test_decay_helpers_agree_with_a_direct_sum():
    h = 3600.0
    value, t = 0.0, 0.0
    times = [0, 100, 5000, 2000, 9000]
    for ts in times:
        value, t = decay_add(value, t, ts, 1.0, h) if value else (1.0, float(ts))
    direct = sum(2 ** (-(10_000 - ts) / h) for ts in times)
    assert math.isclose(decay_to(value, t, 10_000, h), direct, rel_tol=1e-9)


def test_served_log_newest_first_and_capped(store):
    store.served_cap = 3
    store.log_served([Served("u", [f"i{k}"], float(k), "home", "v1") for k in range(5)])
    got = store.served("u", limit=10)
    assert [s.items for s in got] == [["i4"], ["i3"], ["i2"]]
    assert got[0].version == "v1" and got[0].surface == "home"
    assert store.served("other") == []


def test_features_merge(store):
    store.put_features("item", "a", {"price": 9.5, "tags": ["x"]})
    store.put_features("item", "a", {"available": False})
    assert store.get_features("item", "a") == {"price": 9.5, "tags": ["x"], "available": False}
    assert store.get_features("user", "a") == {}


def test_blacklist_versions(store):
    v0 = store.versions()["blacklist"]
    assert store.update_blacklist(add=["b", "a"]) == ["a", "b"]
    assert store.update_blacklist(remove=["a"]) == ["b"]
    assert store.blacklist() == ["b"]
    assert store.versions()["blacklist"] >= v0 + 2


def test_concurrent_appends_lose_nothing(store):
    def client(k: int) -> None:
        for j in range(25):
            store.append([ev(f"user{k}", f"i{j}", j, f"{k}-{j}")])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count_events() == 100
    for k in range(4):
        assert [i for i, _ in store.history(f"user{k}")] == [f"i{j}" for j in range(25)]


def test_sqlite_survives_reopening(tmp_path):
    s = open_store("sqlite", state_dir=tmp_path)
    s.append([ev("u", "a", 1, "e1")], {"u": [("s", 0)]})
    s.close()
    again = open_store("sqlite", state_dir=tmp_path)
    assert again.history("u") == [("s", 0), ("a", 1)]
    assert again.has_events(["e1"]) == [True]


def test_unreachable_redis_is_a_store_error():
    from recfunnel.features.store_redis import RedisStore

    s = RedisStore("redis://127.0.0.1:1/0", timeout_s=0.2)
    with pytest.raises(StoreError):
        s.ping()
    with pytest.raises(StoreError):
        s.history("u")
