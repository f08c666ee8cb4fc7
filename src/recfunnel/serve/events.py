"""Event intake: validate, make durable (group commit), then they are live.

`POST /events` takes one event or `{"events": [...]}`. Every field is checked (id
lengths and characters, timestamps not before 2000 nor in the future, finite values,
batch size, items known to the served catalog); a bad field is a 422 naming it.

Accepted events go to `EventIntake`, whose single writer thread commits everything
queued by concurrent requests in one store transaction (group commit): one fsync for
many requests, and each request returns only after its events are durable. Nothing more
is needed to "apply" them: the next request reads the user's history and the counter
versions from the store.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from recfunnel.features.store import Event

if TYPE_CHECKING:
    from recfunnel.serve.engine import Engine

MAX_ID_LEN = 128
MAX_BATCH = 1000
MIN_TS = 946_684_800  # 2000-01-01
MAX_FUTURE_S = 300
# printable, no leading/trailing space, no control characters
ID_PATTERN = r"^[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f])?$"
RawId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LEN, pattern=ID_PATTERN)]


class EventIn(BaseModel):
    """One behaviour event in raw ids."""

    model_config = ConfigDict(extra="forbid")
    user: RawId
    item: RawId
    ts: int | None = Field(None, description="unix seconds; default: when received")
    event: str = Field("interaction", pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")
    value: float = Field(1.0, ge=-1e6, le=1e6, allow_inf_nan=False)
    event_id: RawId | None = Field(None, description="client id: a retry with the same id is stored once")

    @field_validator("ts")
    @classmethod
    def _ts_in_range(cls, v: int | None) -> int | None:
        if v is None:
            return v
        if v < MIN_TS:
            raise ValueError(f"timestamp {v} is before 2000-01-01 ({MIN_TS}); send unix seconds")
        if v > time.time() + MAX_FUTURE_S:
            raise ValueError(f"timestamp {v} is more than {MAX_FUTURE_S} s in the future")
        return v

    def to_event(self, now: int) -> Event:
        return Event(self.user, self.item, self.ts if self.ts is not None else now, self.event, self.value, self.event_id or "")


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class EventsAccepted(BaseModel):
    accepted: int = Field(description="events stored now")
    duplicates: int = Field(description="events whose event_id was stored before (retries)")
    version: str = Field(description="artifact version that validated them")


class IntakeClosed(RuntimeError):
    pass


class EventIntake:
    """Group commit: one writer thread, one store transaction per group of requests."""

    def __init__(self, engine: "Engine", max_group: int = 5000, timeout_s: float = 30.0) -> None:
        self.engine = engine
        self.max_group = max_group
        self.timeout_s = timeout_s
        self.q: queue.Queue[tuple[list[Event], Future] | None] = queue.Queue()
        self.groups = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="event-writer", daemon=True)
        self._thread.start()

    def submit(self, events: list[Event]) -> list[bool]:
        """Block until `events` are durable; per event, False = a duplicate event_id."""
        if self._closed:
            raise IntakeClosed("event intake is shutting down")
        fut: Future = Future()
        self.q.put((events, fut))
        return fut.result(timeout=self.timeout_s)

    def _run(self) -> None:
        while True:
            first = self.q.get()
            if first is None:
                return
            group = [first]
            size = len(first[0])
            while size < self.max_group:
                try:
                    nxt = self.q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.q.put(None)
                    break
                group.append(nxt)
                size += len(nxt[0])
            self._commit(group)

    def _commit(self, group: list[tuple[list[Event], Future]]) -> None:
        events = [e for evs, _ in group for e in evs]
        try:
            snap = self.engine.current()
            seeds = self.engine.seeds_for({e.user for e in events})
            flags = self.engine.store.append(events, seeds, snap.windows)
        except Exception as e:  # noqa: BLE001 - every waiting request gets the error
            for _, fut in group:
                fut.set_exception(e)
            return
        self.groups += 1
        k = 0
        for evs, fut in group:
            fut.set_result(flags[k : k + len(evs)])
            k += len(evs)

    def close(self) -> None:
        self._closed = True
        self.q.put(None)
        self._thread.join(timeout=10)
