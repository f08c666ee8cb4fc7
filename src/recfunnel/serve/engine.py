"""The serving engine: one loaded artifact version at a time, the store beside it.

A `Snapshot` is one artifact version with everything a request reads. The `Engine`
holds the current one in a single attribute: a request takes it once at the start and
uses it to the end, so a reload that swaps in a new one (after loading and warming it in
the background) never changes what an in-flight request sees. A version that fails to
load or to answer is refused and the old one keeps serving.

Histories come from the store once a user has online events (the store seeded them from
the artifact), otherwise from the artifact; the store's counters add live hot counts; the
store's blacklist is applied on top of the config's.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recfunnel.artifacts import resolve
from recfunnel.features.store import FeatureStore, Served, StoreError, Window
from recfunnel.funnel import Budget, Trace
from recfunnel.query import Query, QueryBatch
from recfunnel.recall.popular import HotSource
from recfunnel.runtime import Recommender

log = logging.getLogger("recfunnel.serve")
REBASE_S = 600.0  # live counters are re-read in full this often (keeps the scaling exact)


def _num(x: float) -> float:
    """A JSON-safe float: NaN and infinities (a missing score) become 0."""
    v = float(x)
    return v if math.isfinite(v) else 0.0


class ReloadError(RuntimeError):
    """A new version could not be loaded or did not answer; the old one keeps serving."""


def window_of(half_life_s: float) -> Window:
    return Window(f"hot_{half_life_s:g}s", half_life_s)


class LiveCounts:
    """Live decayed counts per half-life, dense over one snapshot's items.

    Arrays hold values as of `t_base`; a read scales them to now. A refresh builds new
    arrays and swaps (arrays, t_base) in one assignment, so a request reading during a
    refresh sees one consistent state.
    """

    def __init__(self, snapshot: "Snapshot", half_lives: list[float]) -> None:
        self.snap = snapshot
        self.windows = [window_of(h) for h in sorted(set(half_lives))]
        self.state: tuple[dict[float, np.ndarray], float] = ({}, time.time())
        self.version = -1
        self._lock = threading.Lock()

    def __call__(self, half_life_s: float) -> np.ndarray | None:
        arrays, t_base = self.state
        arr = arrays.get(half_life_s)
        if arr is None:
            return None
        return arr * np.float32(2.0 ** (-(time.time() - t_base) / half_life_s))

    def refresh(self, store: FeatureStore, version: int) -> None:
        if version <= self.version or not self.windows:
            return
        with self._lock:
            if version <= self.version:
                return
            now = time.time()
            old_arrays, old_base = self.state
            full = self.version < 0 or now - old_base > REBASE_S
            base = now if full else old_base
            arrays: dict[float, np.ndarray] = {} if full else dict(old_arrays)
            new_version = self.version
            for w in self.windows:
                v, counts = store.counts(w, now, since=0 if full else self.version)
                new_version = max(new_version, v)
                if not counts:
                    continue
                old = arrays.get(w.half_life_s)
                arr = np.zeros(self.snap.n_items, np.float32) if old is None else old.copy()
                idx = self.snap.item_ids.lookup(counts.keys())
                vals = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
                ok = (idx >= 0) & (idx < self.snap.n_items)
                arr[idx[ok]] = (vals[ok] * 2.0 ** ((now - base) / w.half_life_s)).astype(np.float32)
                arrays[w.half_life_s] = arr
            self.state = (arrays, base)
            self.version = new_version


class StoreServedLog:
    """The re-ranker's `ServedLog` read from the store (the engine itself does the writes)."""

    def __init__(self, snapshot: "Snapshot", store: FeatureStore) -> None:
        self.snap, self.store = snapshot, store

    def recent(self, user: int, since: int) -> np.ndarray:
        if user < 0:
            return np.empty(0, dtype=np.int32)
        raw = self.snap.user_ids.raw(user)
        items = [i for s in self.store.served(raw, limit=50) if s.ts >= since for i in s.items]
        idx = self.snap.item_ids.lookup(items)
        return np.unique(idx[idx >= 0]).astype(np.int32)

    def record(self, user: int, items: np.ndarray, ts: int) -> None:
        """Nothing: `Engine.recommend` logs every answer, known user or not."""


class Snapshot:
    """One loaded artifact version and what serving derives from it at load time."""

    def __init__(self, path: str | Path, store: FeatureStore) -> None:
        t = time.perf_counter()
        self.rec = Recommender(path)
        self.path = self.rec.path
        self.version = str(self.rec.manifest.get("version", self.path.name))
        self.manifest = self.rec.manifest
        self.funnel = self.rec.funnel
        self.item_ids = self.rec.item_ids
        self.user_ids = self.rec.user_ids
        self.n_items = int(self.funnel.n_items)
        items = pl.read_parquet(self.path / "items.parquet")
        self.titles: list[str] = items["title"].to_list()
        self.categories: list[list[str]] = [list(c or []) for c in items["categories"].to_list()]
        hot = [s for s in self.funnel.sources.values() if isinstance(s, HotSource)]
        self.live = LiveCounts(self, [s.config.half_life_days * 86400.0 for s in hot])
        for s in hot:
            s.live = self.live
        self.funnel.reranker.served_log = StoreServedLog(self, store)
        pop = self.funnel.sources.get("popular")
        counts = (
            np.asarray(pop.counts, dtype=np.float64)
            if pop is not None
            else np.bincount(self.rec._items, minlength=self.n_items).astype(np.float64)
        )
        self.popularity = counts
        self.popular_order = np.lexsort((np.arange(self.n_items), -counts))
        self.similarity = (
            self.funnel.sources["itemcf"].matrix if "itemcf" in self.funnel.sources else self.funnel.features.similarity
        )
        self.assoc = self.funnel.sources["cooccur"].matrix if "cooccur" in self.funnel.sources else None
        self.blacklist_version = -1
        self.blacklisted: set[str] = set()
        self.sync_lock = threading.Lock()
        self.ranker_mode = self.funnel.ranker.name if self.funnel.ranker is not None else "none"
        self.load_seconds = time.perf_counter() - t

    def compile_ranker(self) -> None:
        """Switch the ranker to native code when it compiles and agrees (see rank.compiled)."""
        ranker = self.funnel.ranker
        if ranker is None or not hasattr(ranker, "compile_native"):
            return
        self.ranker_mode = "compiling"
        t = time.perf_counter()
        try:
            ok = ranker.compile_native()
        except Exception as e:  # noqa: BLE001 - LightGBM keeps scoring
            log.warning("ranker of %s not compiled: %s", self.version, e)
            ok = False
        self.ranker_mode = "native" if ok else "lightgbm"
        log.info("ranker of %s: %s (%.1fs)", self.version, self.ranker_mode, time.perf_counter() - t)

    @property
    def windows(self) -> list[Window]:
        return self.live.windows

    def artifact_history(self, user: str) -> tuple[int, np.ndarray, np.ndarray]:
        return self.rec.history(user)

    def sync(self, store: FeatureStore, versions: dict[str, int]) -> None:
        """Bring live counts and the blacklist up to the store's versions."""
        self.live.refresh(store, versions.get("counters", 0))
        bv = versions.get("blacklist", 0)
        if bv != self.blacklist_version:
            with self.sync_lock:
                if bv != self.blacklist_version:
                    wanted = set(store.blacklist())
                    self.funnel.update_blacklist(
                        add=sorted(wanted - self.blacklisted), remove=sorted(self.blacklisted - wanted)
                    )
                    self.blacklisted = wanted
                    self.blacklist_version = bv

    def item_info(self, i: int) -> dict[str, Any]:
        return {
            "id": self.item_ids.raw(i),
            "title": self.titles[i] if i < len(self.titles) else "",
            "categories": self.categories[i] if i < len(self.categories) else [],
        }


@dataclass
class Answer:
    """A recommendation as the API returns it (see `as_dict`)."""

    user: str
    version: str
    items: list[dict[str, Any]]
    trace: Trace
    cold_start: bool
    history_source: str
    fallback: str | None = None
    total_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self, explain: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "user": self.user,
            "version": self.version,
            "cold_start": self.cold_start,
            "items": self.items,
        }
        if self.fallback:
            out["fallback"] = self.fallback
        if self.trace.skipped:
            out["skipped"] = self.trace.skipped
        if explain:
            out["history_source"] = self.history_source
            out["trace"] = {
                "ms": {k: round(v, 3) for k, v in self.trace.ms.items()},
                "counts": self.trace.counts,
                "rules": self.trace.rules,
                "skipped": self.trace.skipped,
                "total_ms": round(self.total_ms, 3),
            }
        return out


class ServedWriter:
    """Writes served-items logs in batches on a thread of its own: never on the request path."""

    def __init__(self, store: FeatureStore, every_s: float = 0.2, max_queue: int = 10_000) -> None:
        self.store = store
        self.every_s = every_s
        self.q: queue.Queue[Served] = queue.Queue(maxsize=max_queue)
        self.dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="served-writer", daemon=True)
        self._thread.start()

    def put(self, s: Served) -> None:
        try:
            self.q.put_nowait(s)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._stop.wait(self.every_s)
            self.flush()

    def flush(self) -> None:
        batch: list[Served] = []
        while True:
            try:
                batch.append(self.q.get_nowait())
            except queue.Empty:
                break
        if batch:
            try:
                self.store.log_served(batch)
            except StoreError as e:  # best effort: serving goes on
                self.dropped += len(batch)
                log.warning("served log dropped %d entries: %s", len(batch), e)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()


class Engine:
    def __init__(
        self,
        artifacts: str | Path,
        store: FeatureStore,
        history_limit: int = 200,
        recall_budget_ms: float = 30.0,
        rank_after_ms: float = 40.0,
        served_log: bool = True,
        compile_ranker: bool = True,
    ) -> None:
        self.artifacts = Path(artifacts)
        self.store = store
        self.history_limit = history_limit
        self.recall_budget_ms = recall_budget_ms
        self.rank_after_ms = rank_after_ms
        self.compile_ranker = compile_ranker
        self.snapshot: Snapshot | None = None
        self.refused: dict[str, str] = {}
        self.reloads = {"ok": 0, "refused": 0}
        self._reload_lock = threading.Lock()
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.served = ServedWriter(store) if served_log else None

    # ---- versions -------------------------------------------------------------------
    def start(self, watch_s: float = 0.0) -> "Engine":
        self.reload()
        if watch_s > 0:
            self._watcher = threading.Thread(target=self._watch, args=(watch_s,), name="artifact-watch", daemon=True)
            self._watcher.start()
        return self

    def stop(self) -> None:
        self._watch_stop.set()
        if self.served is not None:
            self.served.close()

    def current(self) -> Snapshot:
        snap = self.snapshot
        if snap is None:
            raise ReloadError("no artifact version loaded yet")
        return snap

    def reload(self, target: str | Path | None = None) -> dict[str, Any]:
        """Load `target` (default: the root's current version), warm it, swap it in.

        Runs in the caller's thread while requests keep being answered by the old
        version; only the final assignment is the swap. Raises ReloadError (and keeps
        the old version) when loading or the warm-up answers fail.
        """
        with self._reload_lock:
            try:
                path = resolve(target if target is not None else self.artifacts)
            except Exception as e:  # noqa: BLE001 - any failure refuses the version
                self.reloads["refused"] += 1
                raise ReloadError(f"{target or self.artifacts}: {e}") from e
            old = self.snapshot
            if old is not None and path.resolve() == old.path.resolve():
                return {"version": old.version, "previous": old.version, "changed": False}
            try:
                snap = Snapshot(path, self.store)
                self._warm(snap)
            except Exception as e:  # noqa: BLE001
                self.refused[path.name] = f"{type(e).__name__}: {e}"
                self.reloads["refused"] += 1
                log.error("refused artifact version %s: %s", path.name, e)
                raise ReloadError(f"version {path.name} refused: {type(e).__name__}: {e}") from e
            self.snapshot = snap  # the swap: one reference assignment
            if self.compile_ranker:  # native scoring takes over when ready (seconds)
                threading.Thread(target=snap.compile_ranker, name="compile-ranker", daemon=True).start()
            self.reloads["ok"] += 1
            self.refused.pop(path.name, None)
            log.info("serving %s (loaded in %.2fs)", snap.version, snap.load_seconds)
            return {"version": snap.version, "previous": old.version if old else None, "changed": True}

    def _warm(self, snap: Snapshot) -> None:
        """Answer a cold and a known user with the new version before it serves anyone."""
        try:
            snap.sync(self.store, self.store.versions())
        except StoreError as e:
            log.warning("store unavailable while warming %s: %s", snap.version, e)
        users = ["\x00warm-up-cold"] + snap.user_ids.raw_ids[:1]
        for u in users:
            _, items, ts = snap.artifact_history(u)
            q = Query(user=snap.user_ids.get(u), history=items, history_ts=ts, n=10)
            out = snap.funnel.run(QueryBatch([q], snap.n_items), budget=None)
            if len(out.final) == 0 and snap.n_items > 0:
                raise ReloadError("warm-up answer was empty")

    def _watch(self, every_s: float) -> None:
        while not self._watch_stop.wait(every_s):
            try:
                path = resolve(self.artifacts)
            except Exception:  # noqa: BLE001 - nothing published (yet)
                continue
            snap = self.snapshot
            if snap is None or path.resolve() == snap.path.resolve() or path.name in self.refused:
                continue
            try:
                self.reload()
            except ReloadError:
                pass

    # ---- reads ----------------------------------------------------------------------
    def user_history(self, snap: Snapshot, user: str, trace: Trace | None = None) -> tuple[int, np.ndarray, np.ndarray, str]:
        """(user index, item indices, timestamps, where from) for one raw user id.

        A store that fails is skipped (named in `trace`): the artifact's history answers.
        """
        u = snap.user_ids.get(user)
        t = time.perf_counter()
        try:
            hist, versions = self.store.read_user(user, self.history_limit)
            snap.sync(self.store, versions)
        except StoreError as e:
            log.warning("store read failed for %r: %s", user, e)
            if trace is not None:
                trace.skipped["store"] = f"error: {e}"[:200]
            hist = None
        if trace is not None:
            trace.ms["store"] = (time.perf_counter() - t) * 1000
        if hist is None:
            _, items, ts = snap.artifact_history(user)
            return u, items[-self.history_limit :], ts[-self.history_limit :], "artifact" if len(items) else "none"
        idx = snap.item_ids.lookup([i for i, _ in hist])
        ts = np.fromiter((t for _, t in hist), dtype=np.int64, count=len(hist))
        keep = (idx >= 0) & (idx < snap.n_items)
        return u, idx[keep], ts[keep], "store"

    def recommend(self, user: str, n: int = 10, surface: str = "home", page: int = 0, explain: bool = True) -> Answer:
        """The funnel's answer for a raw user id; `explain=False` leaves out the per-item
        scores, ranks and rules (the items and the channels that found them stay)."""
        t0 = time.perf_counter()
        snap = self.current()
        trace = Trace()
        budget = Budget(recall_ms=self.recall_budget_ms, rank_after_ms=self.rank_after_ms, started=t0)
        u, items, ts, source = self.user_history(snap, user, trace)
        q = Query(user=u, history=items, history_ts=ts, n=n * (page + 1), surface=surface)
        fallback = None
        try:
            out = snap.funnel.run(QueryBatch([q], snap.n_items), budget=budget)
            trace.ms.update(out.trace.ms)
            trace.counts.update(out.trace.counts)
            trace.rules.update(out.trace.rules)
            trace.skipped.update(out.trace.skipped)
            rows = self._rows(snap, out.final, explain, skip=page * n)
        except Exception as e:  # noqa: BLE001 - the popular floor still answers
            trace.skipped["funnel"] = f"error: {type(e).__name__}: {e}"[:200]
            rows, fallback = self._popular(snap, items, n * (page + 1)), "popular"
        if not rows and fallback is None and page == 0:
            rows, fallback = self._popular(snap, items, n), "popular"
        elif fallback is not None:
            rows = rows[page * n :]
        rows = rows[:n]
        total = (time.perf_counter() - t0) * 1000
        ans = Answer(user, snap.version, rows, trace, u < 0 and len(items) == 0, source, fallback, total)
        if self.served is not None and rows:
            self.served.put(Served(user, [r["id"] for r in rows], time.time(), surface, snap.version))
        return ans

    def _rows(self, snap: Snapshot, final, explain: bool, skip: int = 0) -> list[dict[str, Any]]:  # noqa: ANN001 - Candidates
        from recfunnel.rerank.notes import explain as explain_note

        names = list(snap.funnel.sources)
        quotas = {nm: s.config.quota for nm, s in snap.funnel.sources.items()}
        f = final.features
        rows = []
        for r in range(skip, len(final)):
            i = int(final.item[r])
            mask = int(f["channels"][r]) if "channels" in f else 0
            found = [nm for k, nm in enumerate(names) if mask >> k & 1]
            if not explain:
                rows.append({**snap.item_info(i), "score": _num(final.score[r]), "channels": found})
                continue
            ranks = {nm: int(f[f"rank_{nm}"][r]) for nm in found if f"rank_{nm}" in f}
            before = int(f["rank_before_rerank"][r]) if "rank_before_rerank" in f else r
            note = int(f["rerank_notes"][r]) if "rerank_notes" in f else 0
            rules = explain_note(note, before, r)
            if not rules and before != r:
                rules = [f"moved from #{before + 1} to #{r + 1} (items above it were filtered or moved)"]
            rows.append(
                {
                    **snap.item_info(i),
                    "score": _num(final.score[r]),
                    "channels": found,
                    "channel_scores": {nm: _num(f[f"score_{nm}"][r]) for nm in found if f"score_{nm}" in f},
                    "channel_ranks": ranks,
                    "scores": {
                        "merge": -min((ranks[nm] / quotas[nm] for nm in ranks), default=0.0),
                        "rank": _num(final.score[r]),
                    },
                    "rank_before_rerank": before,
                    "rules": rules,
                    "propensity": _num(f["propensity"][r]) if "propensity" in f else 1.0,
                }
            )
        return rows

    def _popular(self, snap: Snapshot, history: np.ndarray, n: int) -> list[dict[str, Any]]:
        """The floor: most popular items the user has not seen and that are not blocked."""
        blocked = set(snap.item_ids.lookup(sorted(snap.blacklisted)).tolist())
        seen = set(np.asarray(history).tolist()) | blocked
        out = []
        for i in snap.popular_order:
            if int(i) in seen:
                continue
            out.append({**snap.item_info(int(i)), "score": float(snap.popularity[i]), "channels": ["popular-fallback"],
                        "channel_scores": {}, "channel_ranks": {}, "scores": {}, "rank_before_rerank": len(out),
                        "rules": [], "propensity": 1.0})
            if len(out) >= n:
                break
        return out

    def similar(self, item: str, n: int = 10) -> tuple[Snapshot, list[dict[str, Any]], str]:
        """Item-to-item: ItemCF neighbours, then co-occurrence, then popular in its categories."""
        snap = self.current()
        i = snap.item_ids.get(item)
        if i < 0 or i >= snap.n_items:
            raise KeyError(item)
        for name, m in (("itemcf", snap.similarity), ("cooccur", snap.assoc)):
            if m is None:
                continue
            a, b = m.indptr[i], m.indptr[i + 1]
            cols, vals = m.indices[a:b], m.data[a:b]
            keep = cols != i
            cols, vals = cols[keep], vals[keep]
            if len(cols):
                order = np.lexsort((cols, -vals))[:n]
                return snap, [{**snap.item_info(int(c)), "score": float(v)} for c, v in zip(cols[order], vals[order])], name
        cats = set(snap.categories[i])
        out = [int(j) for j in snap.popular_order if int(j) != i and cats & set(snap.categories[int(j)])][:n]
        return snap, [{**snap.item_info(j), "score": float(snap.popularity[j])} for j in out], "category-popular"

    def seeds_for(self, users: set[str]) -> dict[str, list[tuple[str, int]]]:
        """Artifact histories (raw ids) of users, for the store to seed the first time it sees them."""
        snap = self.current()
        out = {}
        for u in users:
            _, items, ts = snap.artifact_history(u)
            if len(items):
                items, ts = items[-self.history_limit :], ts[-self.history_limit :]
                out[u] = list(zip(snap.item_ids.raws(items), (int(t) for t in ts)))
        return out
