"""What each user was recently shown, so pages and refreshes do not repeat themselves.

`ServedLog` is the interface the re-ranker needs; `InMemoryServedLog` is the embedded
implementation. The online store backs the same two methods later (the re-ranker never
sees which one it talks to).
"""

from __future__ import annotations

from collections import deque
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class ServedLog(Protocol):
    def recent(self, user: int, since: int) -> np.ndarray:
        """Item indices served to `user` at or after time `since` (seconds)."""
        ...

    def record(self, user: int, items: np.ndarray, ts: int) -> None:
        """Remember that `items` were served to `user` at time `ts`."""
        ...


class InMemoryServedLog:
    """Per user, the last `max_per_user` served (time, item) pairs."""

    def __init__(self, max_per_user: int = 500) -> None:
        self.max_per_user = max_per_user
        self._log: dict[int, deque[tuple[int, int]]] = {}

    def recent(self, user: int, since: int) -> np.ndarray:
        entries = self._log.get(int(user))
        if not entries:
            return np.empty(0, dtype=np.int32)
        items = [i for t, i in entries if t >= since]
        return np.unique(np.asarray(items, dtype=np.int32))

    def record(self, user: int, items: np.ndarray, ts: int) -> None:
        q = self._log.setdefault(int(user), deque(maxlen=self.max_per_user))
        q.extend((int(ts), int(i)) for i in np.asarray(items).ravel())

    def clear(self) -> None:
        self._log.clear()
