"""Who asks, with what history, at what time: the input of every Source and stage.

A `Query` is one request. A `QueryBatch` packs many of them column-wise (CSR histories) so
that sources score a batch with sparse/dense matrix products; online serving is a batch of
one, offline evaluation a batch of a thousand, through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Sequence

import numpy as np
import scipy.sparse as sp

NO_TIME = np.iinfo(np.int64).max


@dataclass
class Query:
    user: int  # dense user index, -1 for a user the model has never seen
    history: np.ndarray  # int32 item indices, oldest first (may be empty)
    history_ts: np.ndarray  # int64 timestamps of `history`
    time: int = NO_TIME  # request time; NO_TIME = "after everything we know"
    n: int = 10
    surface: str = "home"
    exclude: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32))
    attributes: dict[str, object] = field(default_factory=dict)  # user attributes (audience rules)

    def __post_init__(self) -> None:
        self.history = np.asarray(self.history, dtype=np.int32)
        self.history_ts = np.asarray(self.history_ts, dtype=np.int64)
        if len(self.history) != len(self.history_ts):
            raise ValueError("history and history_ts differ in length")


class QueryBatch:
    """Many queries, histories packed as CSR (row q = query q)."""

    def __init__(self, queries: Sequence[Query], n_items: int) -> None:
        self.queries = list(queries)
        self.n_items = n_items
        lengths = np.fromiter((len(q.history) for q in self.queries), dtype=np.int64)
        self.indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.items = (
            np.concatenate([q.history for q in self.queries]).astype(np.int32)
            if self.queries and lengths.sum() > 0
            else np.empty(0, dtype=np.int32)
        )
        self.item_ts = (
            np.concatenate([q.history_ts for q in self.queries]).astype(np.int64)
            if self.queries and lengths.sum() > 0
            else np.empty(0, dtype=np.int64)
        )
        self.users = np.array([q.user for q in self.queries], dtype=np.int64)
        self.times = np.array([q.time for q in self.queries], dtype=np.int64)
        # Items beyond the model's catalog (added online after the build) are ignored
        # by the matrix views below.
        self._known = self.items < n_items

    def __len__(self) -> int:
        return len(self.queries)

    @cached_property
    def row_of_event(self) -> np.ndarray:
        """Query row of each packed history event."""
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.indptr))

    @cached_property
    def position_from_end(self) -> np.ndarray:
        """0 for each query's most recent history item, 1 for the one before, ..."""
        ends = np.repeat(self.indptr[1:], np.diff(self.indptr))
        return (ends - 1 - np.arange(len(self.items))).astype(np.int64)

    def history_matrix(self, weights: np.ndarray | None = None) -> sp.csr_matrix:
        """queries x items matrix of history weights (repeats summed; default 1 each)."""
        w = np.ones(len(self.items), dtype=np.float32) if weights is None else weights
        k = self._known
        m = sp.csr_matrix(
            (w[k].astype(np.float32), (self.row_of_event[k], self.items[k])),
            shape=(len(self), self.n_items),
        )
        m.sum_duplicates()
        return m

    def known_history(self, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(items, weights) of the packed history events inside the catalog with a nonzero
        weight, in packed order: the single-query path's view of `history_matrix`."""
        w = np.ones(len(self.items), dtype=np.float32) if weights is None else weights
        k = self._known & (w != 0)
        return self.items[k], w[k]

    @cached_property
    def seen(self) -> sp.csr_matrix:
        """Binary queries x items: history plus explicit exclusions."""
        rows = [self.row_of_event[self._known]]
        cols = [self.items[self._known]]
        for r, q in enumerate(self.queries):
            if len(q.exclude):
                ex = q.exclude[q.exclude < self.n_items]
                rows.append(np.full(len(ex), r, dtype=np.int64))
                cols.append(ex.astype(np.int32))
        rr, cc = np.concatenate(rows), np.concatenate(cols)
        if len(self) == 1:  # serving: build the one row directly (no COO round trip)
            cc = np.unique(cc).astype(np.int32)
            ptr = np.array([0, len(cc)], dtype=np.int32)
            return sp.csr_matrix(
                (np.ones(len(cc), dtype=np.float32), cc, ptr), shape=(1, self.n_items)
            )
        m = sp.csr_matrix(
            (np.ones(len(rr), dtype=np.float32), (rr, cc)), shape=(len(self), self.n_items)
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        return m


def history_queries(ds, users: np.ndarray, times: np.ndarray | None = None, n: int = 10) -> list[Query]:
    """One query per user with their full history in `ds` (offline evaluation, training)."""
    out = []
    for k, u in enumerate(users):
        items, ts = ds.history(int(u))
        t = NO_TIME if times is None or ds.ordinal_time else int(times[k])
        out.append(Query(user=int(u), history=items, history_ts=ts, time=t, n=n))
    return out


def step_queries(ds, users: np.ndarray, positions: np.ndarray, n: int = 10) -> list[Query]:
    """Queries asking for the event at `positions` (rows of ds.events) with the history before it."""
    out = []
    starts = ds.user_indptr[users]
    for u, a, p in zip(users, starts, positions):
        t = NO_TIME if ds.ordinal_time else int(ds.ts[p])
        out.append(Query(user=int(u), history=ds.item[a:p], history_ts=ds.ts[a:p], time=t, n=n))
    return out
