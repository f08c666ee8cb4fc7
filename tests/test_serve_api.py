"""The HTTP API in-process (FastAPI TestClient) on a small published artifact set.

Covers every endpoint, that an accepted event changes the very next answer, 4xx with the
field named for bad input, the API key, and degradation: a failing channel, ranker or
store gives a 200 whose `skipped` says what was left out.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from recfunnel.features.store import StoreError
from recfunnel.query import Query, QueryBatch
from recfunnel.serve.app import create_app
from recfunnel.serve.settings import ServeSettings

from serve_support import API_KEY, publish_copy, small_artifacts
from test_store import REDIS_URL, redis_or_skip

KEY = {"X-API-Key": API_KEY}


def _settings(tmp, store: str = "sqlite", **kw) -> ServeSettings:
    return ServeSettings(
        artifacts=small_artifacts(tmp / "art"), state_dir=tmp / "state", store=store, api_key=API_KEY,
        watch_s=0, redis_url=REDIS_URL, compile_ranker=False, **kw,
    )


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = create_app(_settings(tmp_path_factory.mktemp("api")))
    with TestClient(app) as c:
        yield c


@pytest.fixture(params=["sqlite", "redis"])
def any_store_client(request, tmp_path):
    kw = {}
    if request.param == "redis":
        probe = redis_or_skip()
        kw["redis_prefix"] = probe.prefix
    app = create_app(_settings(tmp_path, request.param, **kw))
    with TestClient(app) as c:
        yield c
    if request.param == "redis":
        probe.clear()


def engine(c: TestClient):
    return c.app.state.engine


def ids(resp) -> list[str]:
    return [x["id"] for x in resp.json()["items"]]


def known_user(c: TestClient, k: int = 0) -> str:
    return engine(c).current().user_ids.raw(k)


# ---- reads ---------------------------------------------------------------------------
def test_recommend_known_user(client):
    user = known_user(client, 1)
    r = client.get(f"/recommend/{user}", params={"n": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 7 and not body["cold_start"]
    seen = {x["item"] for x in client.get(f"/users/{user}/history", params={"limit": 200}).json()["history"]}
    assert not seen & set(ids(r))
    assert all(x["channels"] for x in body["items"])
    assert body["version"] == engine(client).current().version


def test_explain_gives_channels_scores_rules_and_stage_ms(client):
    r = client.get(f"/recommend/{known_user(client, 2)}", params={"explain": "true"})
    body = r.json()
    trace = body["trace"]
    stages = set(trace["ms"])
    assert {"store", "merge", "hydrate", "rank", "rerank"} <= stages
    assert any(s.startswith("recall:") for s in stages)
    assert trace["counts"]["merge"] > 0 and trace["total_ms"] > 0
    item = body["items"][0]
    assert item["channels"] and set(item["channel_scores"]) == set(item["channels"])
    assert {"merge", "rank"} <= set(item["scores"])
    assert isinstance(item["rules"], list) and "rank_before_rerank" in item
    assert body["history_source"] in {"artifact", "store"}


def test_unknown_user_gets_the_cold_start_path(client):
    r = client.get("/recommend/somebody-new", params={"n": 5})
    assert r.status_code == 200
    assert r.json()["cold_start"] and len(r.json()["items"]) == 5


def test_pages_do_not_repeat(client):
    user = known_user(client, 3)
    p0 = ids(client.get(f"/recommend/{user}", params={"n": 5, "page": 0}))
    p1 = ids(client.get(f"/recommend/{user}", params={"n": 5, "page": 1}))
    assert len(p1) == 5 and not set(p0) & set(p1)


def test_similar_items_and_item_and_history(client):
    item = engine(client).current().item_ids.raw(5)
    r = client.get(f"/similar/{item}", params={"n": 4})
    assert r.status_code == 200 and len(r.json()["items"]) == 4 and item not in ids(r)
    assert r.json()["source"] in {"itemcf", "cooccur", "category-popular"}
    assert client.get("/similar/no-such-item").status_code == 404
    r = client.get(f"/items/{item}")
    assert r.status_code == 200 and r.json()["id"] == item and "live_hot" in r.json()
    assert client.get("/items/no-such-item").status_code == 404
    h = client.get(f"/users/{known_user(client, 4)}/history", params={"limit": 3}).json()
    assert h["known"] and h["source"] == "artifact" and len(h["history"]) == 3
    h = client.get("/users/never-seen/history").json()
    assert not h["known"] and h["history"] == [] and h["source"] == "none"


# ---- events --------------------------------------------------------------------------
def test_an_event_changes_the_very_next_answer(any_store_client):
    c = any_store_client
    user = known_user(c, 6)
    before = ids(c.get(f"/recommend/{user}"))
    r = c.post("/events", json={"user": user, "item": before[0], "event_id": "e-next-1"}, headers=KEY)
    assert r.status_code == 200 and r.json() == {"accepted": 1, "duplicates": 0, "version": engine(c).current().version}
    after = ids(c.get(f"/recommend/{user}"))
    assert before[0] not in after and after != before  # the seen filter and the history changed
    h = c.get(f"/users/{user}/history", params={"limit": 200}).json()
    assert h["source"] == "store" and h["history"][-1]["item"] == before[0]
    # the artifact history was seeded before the new event
    assert len(h["history"]) > 1
    # a retry with the same event_id is stored once
    r = c.post("/events", json={"user": user, "item": before[0], "event_id": "e-next-1"}, headers=KEY)
    assert r.json()["duplicates"] == 1
    assert len(c.get(f"/users/{user}/history", params={"limit": 200}).json()["history"]) == len(h["history"])


def test_a_new_user_becomes_personal_after_events(any_store_client):
    c = any_store_client
    snap = engine(c).current()
    taste = snap.user_ids.raw(7)
    items = [x["item"] for x in c.get(f"/users/{taste}/history", params={"limit": 200}).json()["history"]][-5:]
    cold = ids(c.get("/recommend/fresh-online-user"))
    r = c.post("/events", json={"events": [{"user": "fresh-online-user", "item": i} for i in items]}, headers=KEY)
    assert r.status_code == 200 and r.json()["accepted"] == len(items)
    body = c.get("/recommend/fresh-online-user", params={"explain": "true"}).json()
    assert not body["cold_start"] and body["history_source"] == "store"
    assert ids_of(body) != cold
    assert not set(items) & set(ids_of(body))
    assert any({"itemcf", "cooccur", "usercf"} & set(x["channels"]) for x in body["items"])


def ids_of(body: dict) -> list[str]:
    return [x["id"] for x in body["items"]]


def test_a_burst_of_events_makes_an_item_hot_at_once(client):
    snap = engine(client).current()
    order = snap.popular_order
    target = snap.item_ids.raw(int(order[-1]))  # the least popular item
    events = [{"user": f"burst-{k}", "item": target} for k in range(60)]
    assert client.post("/events", json={"events": events}, headers=KEY).status_code == 200
    assert client.get(f"/items/{target}").json()["live_hot"]["hot_604800s"] > 50
    client.get("/recommend/anyone-cold")  # a request syncs the live counts
    hot = snap.funnel.sources["hot"]
    q = Query(user=-1, history=np.empty(0, np.int32), history_ts=np.empty(0, np.int64))
    top = hot.retrieve(QueryBatch([q], snap.n_items))
    assert snap.item_ids.raw(int(top.item[0])) == target


# ---- validation and security ---------------------------------------------------------
@pytest.mark.parametrize(
    "params, field",
    [({"n": 0}, "n"), ({"n": 101}, "n"), ({"page": -1}, "page"), ({"page": 99}, "page"),
     ({"surface": "bad surface!"}, "surface"), ({"explain": "maybe"}, "explain")],
)
def test_bad_query_parameters_are_422_naming_the_field(client, params, field):
    r = client.get("/recommend/u1", params=params)
    assert r.status_code == 422
    assert any(e["loc"][-1] == field for e in r.json()["detail"]), r.json()


def test_bad_ids_are_rejected(client):
    r = client.get("/recommend/" + "x" * 129)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "user_id"]
    assert client.get("/recommend/%20lead").status_code == 422


@pytest.mark.parametrize(
    "event, field",
    [
        ({"user": "u1", "item": "i1", "ts": 123}, "ts"),
        ({"user": "u1", "item": "i1", "ts": int(time.time()) + 3600}, "ts"),
        ({"user": "u1", "item": "i1", "value": 1e9}, "value"),
        ({"user": "", "item": "i1"}, "user"),
        ({"user": "u1", "item": "i1", "colour": "red"}, "colour"),
        ({"user": "u1", "item": "no-such-item"}, "item"),
        ({"user": "u1", "item": "i1", "event": "has space"}, "event"),
    ],
)
def test_bad_events_are_422_naming_the_field(client, event, field):
    r = client.post("/events", json=event, headers=KEY)
    assert r.status_code == 422
    assert any(field in [str(x) for x in e["loc"]] for e in r.json()["detail"]), r.json()


def test_batches_are_bounded(client):
    r = client.post("/events", json={"events": []}, headers=KEY)
    assert r.status_code == 422
    big = {"events": [{"user": "u1", "item": "i1"}] * 1001}
    assert client.post("/events", json=big, headers=KEY).status_code == 422
    huge = b'{"events": [' + b",".join([b'{"user": "u1", "item": "i1"}'] * 80_000) + b"]}"
    r = client.post("/events", content=huge, headers={**KEY, "Content-Type": "application/json"})
    assert r.status_code == 413


def test_writes_and_admin_need_the_key(client):
    ev = {"user": "u1", "item": "i1"}
    assert client.post("/events", json=ev).status_code == 401
    assert client.post("/events", json=ev, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/blacklist", json={"add": ["i1"]}).status_code == 401


# ---- degradation ---------------------------------------------------------------------
def test_a_failing_channel_is_skipped_not_a_5xx(client, monkeypatch):
    src = engine(client).current().funnel.sources["itemcf"]

    def boom(*a, **k):
        raise RuntimeError("index corrupt")

    monkeypatch.setattr(src, "retrieve", boom)
    r = client.get(f"/recommend/{known_user(client, 8)}", params={"explain": "true"})
    assert r.status_code == 200 and len(r.json()["items"]) == 10
    assert "index corrupt" in r.json()["skipped"]["recall:itemcf"]
    assert all("itemcf" not in x["channels"] for x in r.json()["items"])
    assert "recall:itemcf" in r.json()["trace"]["skipped"]


def test_a_failing_ranker_keeps_the_merge_order(client, monkeypatch):
    ranker = engine(client).current().funnel.ranker
    monkeypatch.setattr(ranker, "score", lambda *a, **k: (_ for _ in ()).throw(ValueError("model file gone")))
    r = client.get(f"/recommend/{known_user(client, 9)}")
    assert r.status_code == 200 and len(r.json()["items"]) == 10
    assert "model file gone" in r.json()["skipped"]["rank"]


def test_a_slow_channel_uses_up_the_recall_budget(client, monkeypatch):
    snap = engine(client).current()
    first = next(iter(snap.funnel.sources.values()))
    real = first.retrieve

    def slow(batch, k=None):
        time.sleep(0.05)
        return real(batch, k)

    monkeypatch.setattr(first, "retrieve", slow)
    monkeypatch.setattr(engine(client), "recall_budget_ms", 20.0)
    r = client.get(f"/recommend/{known_user(client, 10)}")
    assert r.status_code == 200 and r.json()["items"]
    skipped = r.json()["skipped"]
    later = [f"recall:{n}" for n in list(snap.funnel.sources)[1:]]
    assert all(s in skipped and skipped[s].startswith("budget") for s in later), skipped


def test_everything_failing_falls_back_to_popular(client, monkeypatch):
    snap = engine(client).current()
    monkeypatch.setattr(snap.funnel, "run", lambda *a, **k: (_ for _ in ()).throw(MemoryError("no memory")))
    r = client.get(f"/recommend/{known_user(client, 11)}", params={"n": 5})
    assert r.status_code == 200 and r.json()["fallback"] == "popular" and len(r.json()["items"]) == 5
    assert "funnel" in r.json()["skipped"]


def test_a_failing_store_read_falls_back_to_the_artifact(client, monkeypatch):
    def down(*a, **k):
        raise StoreError("redis timeout")

    monkeypatch.setattr(engine(client).store, "read_user", down)
    r = client.get(f"/recommend/{known_user(client, 12)}", params={"explain": "true"})
    assert r.status_code == 200 and len(r.json()["items"]) == 10
    assert "redis timeout" in r.json()["skipped"]["store"] and r.json()["history_source"] == "artifact"
    h = client.get(f"/users/{known_user(client, 12)}/history")
    assert h.status_code == 200 and h.json()["source"] == "artifact"
    assert client.get(f"/ui/users/{known_user(client, 12)}").status_code == 200


# ---- admin and operations ------------------------------------------------------------
def test_blacklist_applies_to_the_next_answer(client):
    user = known_user(client, 13)
    top = ids(client.get(f"/recommend/{user}"))[0]
    r = client.post("/admin/blacklist", json={"add": [top]}, headers=KEY)
    assert r.status_code == 200 and top in r.json()["blacklist"] and r.json()["known"] >= 1
    assert top not in ids(client.get(f"/recommend/{user}"))
    assert top not in ids(client.get(f"/recommend/{user}", params={"n": 20}))
    r = client.post("/admin/blacklist", json={"remove": [top]}, headers=KEY)
    assert top not in r.json()["blacklist"]
    assert top in ids(client.get(f"/recommend/{user}"))


def test_reload_swaps_versions_and_refuses_a_broken_one(tmp_path):
    settings = _settings(tmp_path)
    with TestClient(create_app(settings)) as c:
        old = c.get("/recommend/u1").json()["version"]
        name = publish_copy(settings.artifacts, "2")
        r = c.post("/admin/reload", headers=KEY)
        assert r.status_code == 200 and r.json() == {"version": name, "previous": old, "changed": True}
        assert c.get("/recommend/u1").json()["version"] == name
        broken = publish_copy(settings.artifacts, "3", break_it=True)
        r = c.post("/admin/reload", headers=KEY)
        assert r.status_code == 409 and broken in r.json()["detail"]
        assert c.get("/recommend/u1").json()["version"] == name  # still the good one
        assert broken in c.get("/readyz").json()["refused"]
        r = c.post("/admin/reload", json={"version": old}, headers=KEY)
        assert r.status_code == 200 and r.json()["version"] == old
        r = c.post("/admin/reload", json={"version": "v-does-not-exist"}, headers=KEY)
        assert r.status_code == 404
        r = c.post("/admin/reload", json={"version": "../../etc"}, headers=KEY)
        assert r.status_code == 422


def test_health_readiness_and_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["ready"] and ready["store"] == "sqlite"
    client.get(f"/recommend/{known_user(client, 14)}")
    client.get("/recommend/u1", params={"n": 0})
    text = client.get("/metrics").text
    assert 'recfunnel_http_requests_total{method="GET",route="/recommend/{user_id}",status="200"}' in text
    assert 'route="/recommend/{user_id}",status="422"' in text
    assert 'recfunnel_http_request_seconds_bucket{le="0.05",route="/recommend/{user_id}"}' in text
    assert 'recfunnel_stage_seconds_count{stage="rank"}' in text
    assert 'recfunnel_stage_seconds_count{stage="recall:itemcf"}' in text
    assert "recfunnel_artifact_info{version=" in text


def test_openapi_docs_are_served(client):
    spec = client.get("/openapi.json").json()
    assert {"/recommend/{user_id}", "/similar/{item_id}", "/events", "/admin/reload", "/metrics"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


# ---- web pages (rendering; the browser test is test_web.py) --------------------------
def test_web_pages_render(client):
    user = known_user(client, 15)
    home = client.get("/", params={"user": user})
    assert home.status_code == 200 and "For you" in home.text and 'class="row"' in home.text
    item = engine(client).current().item_ids.raw(3)
    page = client.get(f"/ui/items/{item}")
    assert page.status_code == 200 and "Similar items" in page.text
    page = client.get(f"/ui/users/{user}")
    assert page.status_code == 200 and "Stage timings" in page.text and 'data-token="' in page.text
    r = client.post("/ui/click", json={"user": user, "item": item, "token": "0" * 32})
    assert r.status_code == 403


def test_serve_command_refuses_bad_arguments(tmp_path):
    from typer.testing import CliRunner

    from recfunnel.cli import app as cli

    r = CliRunner().invoke(cli, ["serve", "--artifacts", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "recfunnel build" in r.output
    r = CliRunner().invoke(cli, ["serve", "--artifacts", str(tmp_path), "--store", "mongo"])
    assert r.exit_code == 2 and "unknown store 'mongo'" in r.output
