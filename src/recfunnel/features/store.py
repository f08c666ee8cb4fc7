"""The online feature store: what serving reads and writes between two builds.

It holds each user's recent history (seeded from the artifact the first time an event
arrives for them, so the store is the source of truth from then on), decayed counters
for the hot/popularity windows, the log of accepted events, what was served to whom,
free-form item/user features and the runtime blacklist.

One contract, two backends (tests/test_store.py runs the same tests on both):

- `SQLiteStore` (embedded, the default): one file in WAL mode in a state directory;
  `synchronous=FULL` makes a commit durable before `append` returns. Several API
  processes on one machine share it (WAL allows one writer and many readers).
- `RedisStore`: for real deployments and several API replicas. Durability then is the
  Redis server's own (run it with `appendonly yes`, `appendfsync always` for "durable
  before 200"; `everysec` bounds the loss to one second).

Values are strings, numbers and JSON — never pickle.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

HISTORY_CAP = 200  # events kept per user history (the longest any channel reads)


@dataclass(frozen=True)
class Event:
    """One accepted behaviour event, in raw ids."""

    user: str
    item: str
    ts: int  # unix seconds
    event: str = "interaction"
    value: float = 1.0
    event_id: str = ""  # a client's id: a retry with the same id is stored once


@dataclass(frozen=True)
class Window:
    """A decayed counter: each event adds 1, halving every `half_life_s` seconds."""

    name: str
    half_life_s: float


@dataclass
class Served:
    """One answer as served: who, when, on which surface, by which artifact version."""

    user: str
    items: list[str]
    ts: float
    surface: str = "home"
    version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class StoreError(RuntimeError):
    """The store could not do what was asked (unreachable, locked, corrupt)."""


class FeatureStore(ABC):
    backend: str = ""

    # ---- events and histories -------------------------------------------------------
    @abstractmethod
    def append(
        self,
        events: Sequence[Event],
        seeds: Mapping[str, Sequence[tuple[str, int]]] | None = None,
        windows: Sequence[Window] = (),
    ) -> list[bool]:
        """Make `events` durable and apply them, all or nothing.

        A user the store has never seen first gets `seeds[user]` (their history from the
        artifact, oldest first) so the new event lands after it. Each accepted event is
        appended to its user's history and to the event log and counted in every window.
        Returns, per event, False when its `event_id` was stored before (a retry: nothing
        is applied twice), else True.
        """

    @abstractmethod
    def history(self, user: str, limit: int = HISTORY_CAP) -> list[tuple[str, int]] | None:
        """The last `limit` (item, ts) of `user`, oldest first; None if never seen."""

    def read_user(self, user: str, limit: int = HISTORY_CAP) -> tuple[list[tuple[str, int]] | None, dict[str, int]]:
        """`history` and `versions` together: what every request reads (one round trip
        where the backend can)."""
        return self.history(user, limit), self.versions()

    @abstractmethod
    def has_events(self, event_ids: Sequence[str]) -> list[bool]:
        """Whether each event id is in the durable log."""

    @abstractmethod
    def count_events(self) -> int:
        """Accepted events in the log."""

    # ---- counters -------------------------------------------------------------------
    @abstractmethod
    def counts(self, window: Window, now: float, since: int = 0) -> tuple[int, dict[str, float]]:
        """(version, {item: decayed count at `now`}) for items changed after version `since`.

        Versions grow with every `append`; pass the last one you read to get only what
        changed since (0 = everything).
        """

    @abstractmethod
    def versions(self) -> dict[str, int]:
        """{"counters": n, "blacklist": m}: cheap to read every request, they say what to refresh."""

    # ---- served log -----------------------------------------------------------------
    @abstractmethod
    def log_served(self, entries: Sequence[Served]) -> None:
        """Remember answers (best effort: callers batch these off the request path)."""

    @abstractmethod
    def served(self, user: str, limit: int = 20) -> list[Served]:
        """The user's last `limit` answers, newest first."""

    # ---- features -------------------------------------------------------------------
    @abstractmethod
    def put_features(self, kind: Literal["item", "user"], key: str, values: Mapping[str, Any]) -> None:
        """Set (merge) JSON-able feature values of one item or user."""

    @abstractmethod
    def get_features(self, kind: Literal["item", "user"], key: str) -> dict[str, Any]:
        """All stored features of one item or user ({} if none)."""

    # ---- blacklist ------------------------------------------------------------------
    @abstractmethod
    def update_blacklist(self, add: Sequence[str] = (), remove: Sequence[str] = ()) -> list[str]:
        """Add/remove raw item ids; returns the whole list, sorted."""

    @abstractmethod
    def blacklist(self) -> list[str]: ...

    # ---- life cycle -----------------------------------------------------------------
    @abstractmethod
    def ping(self) -> None:
        """Raise StoreError unless the store answers."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections."""


def decay_add(value: float, t_ref: float, ts: float, weight: float, half_life_s: float) -> tuple[float, float]:
    """Add `weight` at time `ts` to a counter worth `value` at `t_ref`; returns the new pair.

    Counters are kept as (value at t_ref, t_ref) and decayed on every write and read,
    so they never overflow however long the store lives.
    """
    if ts >= t_ref:
        return value * 2.0 ** (-(ts - t_ref) / half_life_s) + weight, ts
    return value + weight * 2.0 ** (-(t_ref - ts) / half_life_s), t_ref


def decay_to(value: float, t_ref: float, now: float, half_life_s: float) -> float:
    return value * 2.0 ** (-max(now - t_ref, 0.0) / half_life_s) if math.isfinite(now) else value


def open_store(
    kind: Literal["sqlite", "redis"] = "sqlite",
    state_dir: str | Path | None = None,
    redis_url: str | None = None,
    **options: Any,
) -> FeatureStore:
    """The configured backend: SQLite in `state_dir` (default ./state), or Redis at `redis_url`."""
    if kind == "sqlite":
        from recfunnel.features.store_sqlite import SQLiteStore

        d = Path(state_dir or os.environ.get("RECFUNNEL_STATE", "state"))
        return SQLiteStore(d / "store.sqlite", **options)
    if kind == "redis":
        from recfunnel.features.store_redis import RedisStore

        return RedisStore(redis_url or os.environ.get("RECFUNNEL_REDIS_URL", "redis://127.0.0.1:6379/0"), **options)
    raise ValueError(f"unknown store '{kind}': choose sqlite or redis")
