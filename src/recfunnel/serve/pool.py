"""Funnel worker processes behind one HTTP process.

The funnel is CPU-bound Python: threads share one core (the GIL), so two cores need two
processes. Letting uvicorn fork workers that each accept connections balances badly:
keep-alive connections stay with the worker that accepted them, and with 8 clients the
kernel often hands one worker 6 or all 8 of them, doubling its queue while the other
idles. Here one asyncio HTTP process keeps the connections and a single FIFO queue of
recommendation requests, and hands the next request to whichever worker process is idle
(at most one in flight each): least-loaded, first come first served.

Workers are forked from a fork server (a clean process that imported the engine once), each
with its own `Engine` (artifact snapshot, store
connection, watcher). Messages are JSON over pipes, no pickle: the worker returns a small
JSON header (version, stage ms, skips) and the answer's JSON body, which the HTTP process
passes through untouched. A worker that dies is restarted; the request it held is answered
by the HTTP process's own engine, so a crash is never a 5xx. Reloads are sent to one worker
after the other, so one always serves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing as mp
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from recfunnel.serve.settings import ServeSettings

log = logging.getLogger("recfunnel.serve")


class WorkerGone(RuntimeError):
    """The worker process died holding this request."""


# ---- the worker process -----------------------------------------------------------------
def worker_main(settings_json: str, conn: Any) -> None:  # noqa: ANN401 - a multiprocessing Connection
    """Entry point of a worker process: answer requests from the pipe until it closes."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from recfunnel.features.store import open_store
    from recfunnel.serve.engine import Engine, ReloadError

    s = ServeSettings.model_validate_json(settings_json)
    store = open_store(
        s.store, state_dir=s.state_dir, redis_url=s.redis_url, **({"prefix": s.redis_prefix} if s.store == "redis" else {})
    )
    engine = Engine(
        s.artifacts, store, history_limit=s.history_limit, recall_budget_ms=s.recall_budget_ms,
        rank_after_ms=s.rank_after_ms, served_log=s.served_log, compile_ranker=s.compile_ranker,
    ).start(watch_s=s.watch_s)
    conn.send_bytes(json.dumps({"ready": engine.current().version, "pid": os.getpid()}).encode())
    while True:
        try:
            req = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            break
        op = req.get("op")
        try:
            if op == "recommend":
                ans = engine.recommend(req["user"], n=req["n"], surface=req["surface"], page=req["page"], explain=req["explain"])
                t = ans.trace
                header = {"version": ans.version, "ms": t.ms, "skipped": t.skipped}
                body = json.dumps(ans.as_dict(req["explain"])).encode()
            elif op == "reload":
                try:
                    header = {"ok": engine.reload(req.get("target")), "version": engine.current().version}
                except ReloadError as e:
                    header = {"error": str(e), "version": engine.current().version}
                body = b""
            elif op == "status":
                snap = engine.current()
                header, body = {"version": snap.version, "ranker": snap.ranker_mode, "pid": os.getpid()}, b""
            else:
                header, body = {"error": f"unknown op {op!r}"}, b""
        except Exception as e:  # noqa: BLE001 - the HTTP process answers instead
            header, body = {"error": f"{type(e).__name__}: {e}"}, b""
        conn.send_bytes(json.dumps(header).encode() + b"\n" + body)
    engine.stop()
    store.close()


# ---- the HTTP process's side --------------------------------------------------------------
@dataclass
class _Worker:
    k: int
    proc: Any = None
    conn: Any = None
    ready: bool = False
    pid: int = 0
    busy: asyncio.Future | None = None
    own: deque = field(default_factory=deque)  # jobs for this worker only (reloads)
    restarts: int = 0


class FunnelPool:
    def __init__(self, settings: ServeSettings, n: int) -> None:
        self.settings = settings
        # forkserver: one clean single-threaded process imports the engine once and forks
        # the workers (fast starts and restarts; never a fork of this threaded process)
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(["recfunnel.serve.pool", "recfunnel.serve.engine"])
        self.workers = [_Worker(k) for k in range(n)]
        self.pending: deque[tuple[dict, asyncio.Future]] = deque()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closing = False

    async def start(self, timeout: float = 300.0) -> None:
        self.loop = asyncio.get_running_loop()
        for w in self.workers:
            self._spawn(w)
        deadline = time.monotonic() + timeout
        while not all(w.ready for w in self.workers):
            if time.monotonic() > deadline:
                raise RuntimeError("funnel workers did not start in time")
            await asyncio.sleep(0.05)

    def _spawn(self, w: _Worker) -> None:
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(
            target=worker_main, args=(self.settings.model_dump_json(), child), name=f"recfunnel-funnel-{w.k}", daemon=True
        )
        proc.start()
        child.close()
        w.proc, w.conn, w.ready, w.busy = proc, parent, False, None
        assert self.loop is not None
        self.loop.add_reader(parent.fileno(), self._readable, w)

    def _readable(self, w: _Worker) -> None:
        try:
            data = w.conn.recv_bytes()
        except (EOFError, OSError):
            self._died(w)
            return
        if not w.ready:
            hello = json.loads(data)
            w.ready, w.pid = True, int(hello.get("pid", 0))
            log.info("funnel worker %d (pid %d) serving %s", w.k, w.pid, hello.get("ready"))
            self._pump()
            return
        fut, w.busy = w.busy, None
        head, _, body = data.partition(b"\n")
        if fut is not None and not fut.done():
            fut.set_result((json.loads(head), body))
        self._pump()

    def _died(self, w: _Worker) -> None:
        assert self.loop is not None
        self.loop.remove_reader(w.conn.fileno())
        w.conn.close()
        w.ready = False
        if w.busy is not None and not w.busy.done():
            w.busy.set_exception(WorkerGone(f"funnel worker {w.k} died"))
        w.busy = None
        while w.own:
            _, fut = w.own.popleft()
            if not fut.done():
                fut.set_exception(WorkerGone(f"funnel worker {w.k} died"))
        if self.closing:
            return
        w.restarts += 1
        log.error("funnel worker %d (pid %d) died (exit %s); restarting", w.k, w.pid, w.proc.exitcode)
        self._spawn(w)

    def _pump(self) -> None:
        for w in self.workers:
            if not w.ready or w.busy is not None:
                continue
            if w.own:
                msg, fut = w.own.popleft()
            elif self.pending:
                msg, fut = self.pending.popleft()
            else:
                continue
            if fut.done():  # the caller gave up
                continue
            w.busy = fut
            try:
                w.conn.send_bytes(json.dumps(msg).encode())
            except OSError:
                self._died(w)

    async def call(self, msg: dict, worker: _Worker | None = None) -> tuple[dict, bytes]:
        """Send `msg` to the next idle worker (or to `worker`) and wait for its answer."""
        assert self.loop is not None
        fut = self.loop.create_future()
        (worker.own if worker is not None else self.pending).append((msg, fut))
        self._pump()
        return await fut

    async def recommend(self, **query: Any) -> tuple[dict, bytes]:
        return await self.call({"op": "recommend", **query})

    async def reload(self, target: str | None) -> list[dict]:
        """Reload every worker, one after the other (the others keep serving)."""
        out = []
        for w in self.workers:
            head, _ = await self.call({"op": "reload", "target": target}, worker=w)
            out.append(head)
        return out

    async def status(self) -> list[dict]:
        return [
            (await self.call({"op": "status"}, worker=w))[0] if w.ready else {"ready": False, "k": w.k}
            for w in self.workers
        ]

    async def close(self) -> None:
        self.closing = True
        for w in self.workers:
            if w.conn is not None:
                try:
                    self.loop.remove_reader(w.conn.fileno())  # type: ignore[union-attr]
                    w.conn.close()
                except OSError:
                    pass
        for w in self.workers:
            if w.proc is not None:
                w.proc.join(timeout=5)
                if w.proc.is_alive():
                    w.proc.kill()
