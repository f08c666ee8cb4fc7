"""The embedded feature store: one SQLite file in WAL mode.

Writes go through one connection under a lock (SQLite has one writer at a time; other
processes wait up to `busy_timeout_ms`); reads use one connection per thread and never
wait for a writer (WAL). `synchronous=FULL` fsyncs every commit, so `append` returning
means the events survive a crash of the process or the machine.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from recfunnel.features.store import (
    HISTORY_CAP,
    Event,
    FeatureStore,
    Served,
    StoreError,
    Window,
    decay_add,
    decay_to,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE, user TEXT NOT NULL,
    item TEXT NOT NULL, ts INTEGER NOT NULL, event TEXT NOT NULL, value REAL NOT NULL,
    received REAL NOT NULL);
CREATE TABLE IF NOT EXISTS users (user TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    user TEXT NOT NULL, seq INTEGER NOT NULL, item TEXT NOT NULL, ts INTEGER NOT NULL,
    PRIMARY KEY (user, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (
    win TEXT NOT NULL, item TEXT NOT NULL, value REAL NOT NULL, t_ref REAL NOT NULL,
    version INTEGER NOT NULL, PRIMARY KEY (win, item)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS counters_version ON counters (win, version);
CREATE TABLE IF NOT EXISTS served (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, ts REAL NOT NULL,
    surface TEXT NOT NULL, version TEXT NOT NULL, items TEXT NOT NULL, extra TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS served_user ON served (user, seq);
CREATE TABLE IF NOT EXISTS features (
    kind TEXT NOT NULL, key TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (kind, key, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blacklist (item TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('counters', 0), ('blacklist', 0);
"""


class SQLiteStore(FeatureStore):
    backend = "sqlite"

    def __init__(
        self,
        path: str | Path,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_ms: int = 5000,
        history_cap: int = HISTORY_CAP,
        served_cap: int = 100,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.history_cap = history_cap
        self.served_cap = served_cap
        self._local = threading.local()
        self._untrimmed: dict[str, int] = {}
        self._write_lock = threading.Lock()
        self._writer = self._connect()
        with self._write_lock:
            self._writer.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        try:
            c = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout_ms / 1000)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute(f"PRAGMA synchronous={self.synchronous}")
            c.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: {e}") from e
        return c

    def _reader(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = self._local.conn = self._connect()
        return c

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        try:
            return self._reader().execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: {e}") from e

    def _write(self, fn):  # noqa: ANN001, ANN202 - fn(conn) inside one IMMEDIATE transaction
        with self._write_lock:
            c = self._writer
            try:
                c.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(c)
                except BaseException:
                    c.execute("ROLLBACK")
                    raise
                c.execute("COMMIT")
                return out
            except sqlite3.Error as e:
                raise StoreError(f"{self.path}: {e}") from e

    # ---- events and histories -------------------------------------------------------
    def append(
        self,
        events: Sequence[Event],
        seeds: Mapping[str, Sequence[tuple[str, int]]] | None = None,
        windows: Sequence[Window] = (),
    ) -> list[bool]:
        seeds = seeds or {}
        now = time.time()

        def tx(c: sqlite3.Connection) -> list[bool]:
            version = c.execute("UPDATE meta SET value = value + 1 WHERE key = 'counters' RETURNING value").fetchone()[0]
            touched: set[str] = set()
            out: list[bool] = []
            for e in events:
                if e.user not in touched:
                    touched.add(e.user)
                    if c.execute("INSERT OR IGNORE INTO users VALUES (?)", (e.user,)).rowcount == 1:
                        seed = list(seeds.get(e.user, ()))[-self.history_cap :]
                        c.executemany(
                            "INSERT INTO history VALUES (?, ?, ?, ?)",
                            [(e.user, k - len(seed), item, int(ts)) for k, (item, ts) in enumerate(seed)],
                        )
                cur = c.execute(
                    "INSERT OR IGNORE INTO events (event_id, user, item, ts, event, value, received) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (e.event_id or None, e.user, e.item, int(e.ts), e.event, float(e.value), now),
                )
                if cur.rowcount == 0:  # the same event_id was stored before
                    out.append(False)
                    continue
                out.append(True)
                c.execute("INSERT INTO history VALUES (?, ?, ?, ?)", (e.user, cur.lastrowid, e.item, int(e.ts)))
                for w in windows:
                    row = c.execute("SELECT value, t_ref FROM counters WHERE win = ? AND item = ?", (w.name, e.item)).fetchone()
                    value, t_ref = decay_add(row[0], row[1], e.ts, 1.0, w.half_life_s) if row else (1.0, float(e.ts))
                    c.execute(
                        "INSERT OR REPLACE INTO counters VALUES (?, ?, ?, ?, ?)", (w.name, e.item, value, t_ref, version)
                    )
            for user in touched:  # keep the last `history_cap` events of each user
                c.execute(
                    "DELETE FROM history WHERE user = ? AND seq <= "
                    "(SELECT seq FROM history WHERE user = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                    (user, user, self.history_cap),
                )
            return out

        return self._write(tx)

    def history(self, user: str, limit: int = HISTORY_CAP) -> list[tuple[str, int]] | None:
        rows = self._read(
            "SELECT item, ts FROM history WHERE user = ? ORDER BY seq DESC LIMIT ?", (user, int(limit))
        )
        if not rows:
            known = self._read("SELECT 1 FROM users WHERE user = ?", (user,))
            return [] if known else None
        rows.reverse()
        return rows

    def has_events(self, event_ids: Sequence[str]) -> list[bool]:
        found: set[str] = set()
        ids = list(event_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self._read(f"SELECT event_id FROM events WHERE event_id IN ({marks})", chunk))
        return [i in found for i in ids]

    def count_events(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM events")[0][0])

    # ---- counters -------------------------------------------------------------------
    def counts(self, window: Window, now: float, since: int = 0) -> tuple[int, dict[str, float]]:
        c = self._reader()
        try:
            c.execute("BEGIN")  # one snapshot: the version matches the rows
            try:
                version = c.execute("SELECT value FROM meta WHERE key = 'counters'").fetchone()[0]
                rows = c.execute(
                    "SELECT item, value, t_ref FROM counters WHERE win = ? AND version > ?", (window.name, int(since))
                ).fetchall()
            finally:
                c.execute("COMMIT")
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: {e}") from e
        return int(version), {item: decay_to(v, t, now, window.half_life_s) for item, v, t in rows}

    def versions(self) -> dict[str, int]:
        return {k: int(v) for k, v in self._read("SELECT key, value FROM meta")}

    # ---- served log -----------------------------------------------------------------
    def log_served(self, entries: Sequence[Served]) -> None:
        if not entries:
            return
        # a user's log is trimmed to served_cap only now and then (the trim costs more
        # than the insert); reads return the newest entries anyway
        due = []
        for s in entries:
            k = self._untrimmed.get(s.user, 0) + 1
            self._untrimmed[s.user] = k
            if k >= max(self.served_cap // 4, 1):
                due.append(s.user)
                self._untrimmed.pop(s.user)

        def tx(c: sqlite3.Connection) -> None:
            c.executemany(
                "INSERT INTO served (user, ts, surface, version, items, extra) VALUES (?, ?, ?, ?, ?, ?)",
                [(s.user, s.ts, s.surface, s.version, json.dumps(s.items), json.dumps(s.extra)) for s in entries],
            )
            for user in due:
                c.execute(
                    "DELETE FROM served WHERE user = ? AND seq <= "
                    "(SELECT seq FROM served WHERE user = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                    (user, user, self.served_cap),
                )

        self._write(tx)

    def served(self, user: str, limit: int = 20) -> list[Served]:
        rows = self._read(
            "SELECT user, items, ts, surface, version, extra FROM served WHERE user = ? ORDER BY seq DESC LIMIT ?",
            (user, int(limit)),
        )
        return [Served(u, json.loads(i), t, s, v, json.loads(x)) for u, i, t, s, v, x in rows]

    # ---- features -------------------------------------------------------------------
    def put_features(self, kind: Literal["item", "user"], key: str, values: Mapping[str, Any]) -> None:
        rows = [(kind, key, name, json.dumps(v)) for name, v in values.items()]
        self._write(lambda c: c.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)", rows))

    def get_features(self, kind: Literal["item", "user"], key: str) -> dict[str, Any]:
        rows = self._read("SELECT name, value FROM features WHERE kind = ? AND key = ?", (kind, key))
        return {name: json.loads(v) for name, v in rows}

    # ---- blacklist ------------------------------------------------------------------
    def update_blacklist(self, add: Sequence[str] = (), remove: Sequence[str] = ()) -> list[str]:
        def tx(c: sqlite3.Connection) -> None:
            c.executemany("INSERT OR IGNORE INTO blacklist VALUES (?)", [(i,) for i in add])
            c.executemany("DELETE FROM blacklist WHERE item = ?", [(i,) for i in remove])
            c.execute("UPDATE meta SET value = value + 1 WHERE key = 'blacklist'")

        self._write(tx)
        return self.blacklist()

    def blacklist(self) -> list[str]:
        return [r[0] for r in self._read("SELECT item FROM blacklist ORDER BY item")]

    # ---- life cycle -----------------------------------------------------------------
    def ping(self) -> None:
        self._read("SELECT 1")

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None
