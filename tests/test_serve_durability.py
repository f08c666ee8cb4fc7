"""Nothing lost: every event that got a 200 survives `kill -9` of the server.

A real uvicorn process, several client threads posting 10,000 events (single events and
small batches) over HTTP, then SIGKILL (no shutdown handler runs) and a restart on the
same state: every acknowledged event id is in the store and in the users' histories.
A second round kills the server while clients are still posting.
"""

from __future__ import annotations

import random
import threading
import time

import httpx
import pytest

from recfunnel.features.store import open_store

from serve_support import API_KEY, ServerProcess, small_artifacts
from test_store import REDIS_URL, redis_or_skip

KEY = {"X-API-Key": API_KEY}
CLIENTS = 8


def post_events(url: str, items: list[str], n_events: int, tag: str, stop: threading.Event | None = None):
    """CLIENTS threads post `n_events` in all; returns (acked event ids, user of each id, item of each id)."""
    acked: list[str] = []
    owner: dict[str, tuple[str, str]] = {}
    lock = threading.Lock()
    per_client = n_events // CLIENTS

    def client(k: int) -> None:
        rng = random.Random(k)
        sent = 0
        with httpx.Client(base_url=url, headers=KEY, timeout=30.0) as http:
            while sent < per_client and not (stop and stop.is_set()):
                size = min(rng.choice([1, 1, 1, 5, 10]), per_client - sent)
                batch = []
                for j in range(size):
                    eid = f"{tag}-{k}-{sent + j}"
                    user = f"{tag}-user-{k}-{(sent + j) % 25}"
                    batch.append({"user": user, "item": rng.choice(items), "event_id": eid})
                sent += size
                try:
                    r = http.post("/events", json=batch[0] if size == 1 else {"events": batch})
                except httpx.HTTPError:
                    continue  # the server is gone: not acknowledged
                if r.status_code == 200:
                    with lock:
                        for e in batch:
                            acked.append(e["event_id"])
                            owner[e["event_id"]] = (e["user"], e["item"])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return acked, owner


def check_all_there(url: str, store, acked: list[str], owner: dict[str, tuple[str, str]], exact: bool) -> None:
    """Every acknowledged event is in the log and in its user's history (exact: and nothing else)."""
    assert all(store.has_events(acked)), "an acknowledged event is missing from the log"
    per_user: dict[str, list[str]] = {}
    for eid in acked:
        user, item = owner[eid]
        per_user.setdefault(user, []).append(item)
    with httpx.Client(base_url=url, timeout=30.0) as http:
        for user, items in per_user.items():
            hist = http.get(f"/users/{user}/history", params={"limit": 200}).json()["history"]
            got = [h["item"] for h in hist]
            if exact:
                assert sorted(got) == sorted(items), user
            for it in set(items):  # unacknowledged events may have been stored too
                assert got.count(it) >= items.count(it), (user, it)


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_acknowledged_events_survive_kill_9(backend, tmp_path):
    settings = {"artifacts": small_artifacts(tmp_path / "art"), "state_dir": tmp_path / "state", "store": backend}
    n_events = 10_000
    if backend == "redis":
        probe = redis_or_skip()
        settings.update(redis_url=REDIS_URL, redis_prefix=probe.prefix)
        n_events = 2_000  # the Redis server is not killed: this checks the API side only
    log = tmp_path / "server.log"
    server = ServerProcess(settings, log=log).start()
    try:
        items = server_items(server.url)
        t = time.perf_counter()
        acked, owner = post_events(server.url, items, n_events, "a")
        elapsed = time.perf_counter() - t
        assert len(acked) == n_events, "every event should be acknowledged while the server runs"
        print(f"{backend}: {n_events} events acknowledged in {elapsed:.1f}s ({n_events / elapsed:.0f}/s)")
        server.kill()  # kill -9 right after the last acknowledgement
        server = ServerProcess(settings, log=log).start()
        store = open_store(backend, state_dir=tmp_path / "state", redis_url=REDIS_URL,
                           **({"prefix": probe.prefix} if backend == "redis" else {}))
        check_all_there(server.url, store, acked, owner, exact=True)
        assert store.count_events() == n_events

        # round two: kill while clients are still posting
        stop = threading.Event()
        result: dict = {}
        poster = threading.Thread(target=lambda: result.update(zip(("acked", "owner"), post_events(server.url, items, 4_000, "b", stop))))
        poster.start()
        time.sleep(1.5)
        server.kill()
        stop.set()
        poster.join()
        server = ServerProcess(settings, log=log).start()
        assert result["acked"], "some events should have been acknowledged before the kill"
        check_all_there(server.url, store, result["acked"], result["owner"], exact=False)
    finally:
        server.stop()
        if backend == "redis":
            probe.clear()


def server_items(url: str) -> list[str]:
    """Some item ids of the served catalog."""
    body = httpx.get(url + "/recommend/anyone", params={"n": 50}).json()
    return [x["id"] for x in body["items"]]
