"""Hot reload under load: zero failed requests while artifact versions swap; and the
funnel worker processes (crash, shared state).

A real server (one HTTP process, two funnel worker processes) answers clients that never stop asking
while new versions are published and loaded: by `POST /admin/reload`, by the watcher
polling the root, and one broken version that must be refused while the good one keeps
serving.
"""

from __future__ import annotations

import threading
import time

import httpx

from recfunnel.config import FunnelConfig

from serve_support import API_KEY, ServerProcess, publish_copy, small_artifacts
from test_store import REDIS_URL, redis_or_skip

KEY = {"X-API-Key": API_KEY}


def test_zero_failed_requests_while_versions_swap(tmp_path):
    root = small_artifacts(tmp_path / "art")
    settings = {"artifacts": root, "state_dir": tmp_path / "state", "watch_s": 0.5}
    with ServerProcess(settings, workers=2, log=tmp_path / "server.log") as server:
        stop = threading.Event()
        lock = threading.Lock()
        results: list[tuple[int, str]] = []
        failures: list[str] = []

        def client(k: int) -> None:
            users = [f"u{j}" for j in range(1, 60)] + ["cold-user"]
            with httpx.Client(base_url=server.url, timeout=10.0) as http:
                j = k
                while not stop.is_set():
                    try:
                        r = http.get(f"/recommend/{users[j % len(users)]}", params={"n": 10})
                        ok = r.status_code == 200 and len(r.json()["items"]) == 10
                        with lock:
                            results.append((r.status_code, r.json().get("version", "")))
                            if not ok:
                                failures.append(f"{r.status_code}: {r.text[:200]}")
                    except httpx.HTTPError as e:
                        with lock:
                            failures.append(repr(e))
                    j += 7

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        published = []
        try:
            time.sleep(1.0)
            with httpx.Client(base_url=server.url, headers=KEY, timeout=60.0) as admin:
                for k in range(2, 5):
                    published.append(publish_copy(root, str(k)))
                    r = admin.post("/admin/reload")  # this worker now; the other by watching
                    assert r.status_code == 200, r.text
                    assert r.json()["version"] == published[-1]
                    time.sleep(1.5)
                broken = publish_copy(root, "5", break_it=True)
                r = admin.post("/admin/reload")
                assert r.status_code == 409 and broken in r.text
                time.sleep(1.5)
                published.append(publish_copy(root, "6", source=published[-1]))  # the watcher alone picks this one up
                # settled = every answer for 2 s (4 watcher polls: both workers) is the new version;
                # 20 new answers in a row can come from one worker while the other still loads
                deadline, settled_since = time.time() + 20, None
                while time.time() < deadline:
                    with lock:
                        last = [v for _, v in results[-20:]]
                    if last and all(v == published[-1] for v in last):
                        settled_since = settled_since or time.time()
                        if time.time() - settled_since > 2.0:
                            break
                    else:
                        settled_since = None
                    time.sleep(0.2)
        finally:
            stop.set()
            for t in threads:
                t.join()
        served_versions = {v for _, v in results}
        print(f"{len(results)} requests, versions served: {sorted(served_versions)}")
        assert not failures, failures[:5]
        assert len(results) > 100
        assert set(published) <= served_versions, (published, served_versions)
        assert broken not in served_versions
        assert results[-1][1] == published[-1]


def test_a_killed_funnel_worker_is_replaced_without_failed_requests(tmp_path):
    import os
    import signal

    settings = {"artifacts": small_artifacts(tmp_path / "art"), "state_dir": tmp_path / "state"}
    with ServerProcess(settings, workers=2, log=tmp_path / "server.log") as server:
        with httpx.Client(base_url=server.url, headers=KEY, timeout=30.0) as http:
            check_workers_see_writes_at_once(http)  # SQLite shared by the processes
            ready = http.get("/readyz").json()
            pids = [w["pid"] for w in ready["workers"]]
            assert len(set(pids)) == 2
            assert ready["ranker"] == FunnelConfig().rank.model  # the workers' ranker, named as it is
            stop = threading.Event()
            codes: list[int] = []

            def client() -> None:
                with httpx.Client(base_url=server.url, timeout=30.0) as c:
                    k = 0
                    while not stop.is_set():
                        codes.append(c.get(f"/recommend/u{k % 50 + 1}").status_code)
                        k += 1

            threads = [threading.Thread(target=client) for _ in range(3)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            os.kill(pids[0], signal.SIGKILL)
            deadline = time.time() + 60
            while time.time() < deadline:
                r = http.get("/readyz")
                if r.status_code == 200 and pids[0] not in [w["pid"] for w in r.json()["workers"]]:
                    break
                time.sleep(0.2)
            time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join()
            assert r.status_code == 200, r.text
            assert codes and set(codes) == {200}, sorted(set(codes))


def check_workers_see_writes_at_once(http: httpx.Client) -> None:
    """Events and the blacklist are taken by the HTTP process and answered about by the
    worker processes: the store is what they share, so the very next answer shows them."""
    for k in range(1, 6):
        user = f"u{k}"
        before = [x["id"] for x in http.get(f"/recommend/{user}").json()["items"]]
        assert http.post("/events", json={"user": user, "item": before[0]}).status_code == 200
        for _ in range(2):  # both workers answer in turn
            assert before[0] not in [x["id"] for x in http.get(f"/recommend/{user}").json()["items"]]
    top = [x["id"] for x in http.get("/recommend/u9").json()["items"]][0]
    assert http.post("/admin/blacklist", json={"add": [top]}).status_code == 200
    for _ in range(4):
        assert top not in [x["id"] for x in http.get("/recommend/u9").json()["items"]]


def test_worker_processes_share_the_redis_store(tmp_path):
    probe = redis_or_skip()
    settings = {"artifacts": small_artifacts(tmp_path / "art"), "state_dir": tmp_path / "state", "store": "redis",
                "redis_url": REDIS_URL, "redis_prefix": probe.prefix}
    try:
        with ServerProcess(settings, workers=2, log=tmp_path / "server.log") as server:
            with httpx.Client(base_url=server.url, headers=KEY, timeout=30.0) as http:
                check_workers_see_writes_at_once(http)
    finally:
        probe.clear()
