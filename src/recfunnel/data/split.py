"""Leave-last-one-out by time (PROTOCOL.md).

Each user's interactions are ordered by (timestamp, position in the file); the last one is
the test target and everything before it is the fit data. Applied again to the fit data it
gives the validation step used for tuning, early stopping and ranker training rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from recfunnel.data.dataset import Dataset


@dataclass
class Split:
    fit: Dataset
    users: np.ndarray  # int32 test users (each had >= 2 interactions)
    items: np.ndarray  # int32 their held-out last item
    ts: np.ndarray  # int64 its timestamp: the time of the request

    def __len__(self) -> int:
        return len(self.users)


def leave_last_out(ds: Dataset) -> Split:
    """Hold out each user's last interaction.

    Users with a single interaction have nothing to learn from: their interaction stays in
    the fit data and they are not test users.
    """
    ev = ds.events  # sorted by (user, ts, pos)
    indptr = ds.user_indptr
    counts = np.diff(indptr)
    users = np.flatnonzero(counts >= 2).astype(np.int32)
    last_rows = indptr[users + 1] - 1
    keep = np.ones(ev.height, dtype=bool)
    keep[last_rows] = False
    fit = ds.with_events(ev.filter(pl.Series(keep)))
    return Split(
        fit=fit,
        users=users,
        items=ds.item[last_rows].astype(np.int32),
        ts=ds.ts[last_rows].astype(np.int64),
    )


@dataclass
class Steps:
    """The last `n` steps of every user held out at once (ranker training data).

    `fit` lacks all of them, so a model fitted on it has seen none of the targets; query
    j asks for the item at `positions[j]` with the user's history up to just before it.
    """

    fit: Dataset
    users: np.ndarray  # int32, one row per (user, step)
    positions: np.ndarray  # int64 row in the full dataset's events of the target
    items: np.ndarray  # int32 target item
    ts: np.ndarray  # int64 target time


def hold_out_steps(ds: Dataset, n: int, max_share: float = 1.0) -> Steps:
    """Hold out up to the last `n` interactions of each user, keeping at least one in fit.

    `max_share` caps a user's held-out steps at that share of their interactions (at least
    one): on sparse data (Beauty: 5-10 events a user) a fixed `n` would leave the fit part
    too thin to stand for the data it is meant to imitate."""
    indptr = ds.user_indptr
    counts = np.diff(indptr)
    allowed = np.minimum(n, np.maximum(np.floor(max_share * counts), 1)).astype(np.int64)
    rows, users = [], []
    for j in range(1, n + 1):
        ok = np.flatnonzero((counts > j) & (allowed >= j))
        rows.append(indptr[ok + 1] - j)
        users.append(ok)
    r = np.concatenate(rows).astype(np.int64)
    keep = np.ones(ds.n_events, dtype=bool)
    keep[r] = False
    return Steps(
        fit=ds.with_events(ds.events.filter(pl.Series(keep))),
        users=np.concatenate(users).astype(np.int32),
        positions=r,
        items=ds.item[r].astype(np.int32),
        ts=ds.ts[r].astype(np.int64),
    )
