"""Point-in-time item popularity: exponentially decayed counts at any request time.

`hot` recall, hot-in-category recall and the ranker's popularity-window features all ask
"how popular was item i just before time t?". Counting from scratch per request is too slow
offline and impossible to keep exact online, so the fit data is summarised as snapshots
every `snapshot_every` seconds: snapshot j holds, for every item, the decayed count of the
events strictly before its time T_j. A query at time t reads the last snapshot with
T_j <= t and decays it to t, so no event at or after t is ever used.

Data with order but no clock (the S3-Rec files) has one snapshot, where an event's age is
its position from the end of its user's sequence.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from recfunnel.data.dataset import Dataset
from recfunnel.query import NO_TIME

MAX_SNAPSHOTS = 4000
DROP_BELOW = 1e-4  # decayed counts under this are stored as 0 (keeps snapshots sparse)


class DecayedPopularity:
    def __init__(self, half_life_s: float, half_life_events: float, snapshot_every_s: float) -> None:
        self.half_life_s = half_life_s
        self.half_life_events = half_life_events
        self.snapshot_every_s = snapshot_every_s
        self.times = np.zeros(1, dtype=np.int64)  # T_j
        self.snapshots = sp.csr_matrix((1, 0), dtype=np.float32)
        self.ordinal = False
        self._rows: dict[int, np.ndarray] = {}  # dense snapshot rows read by serving

    def fit(self, ds: Dataset) -> "DecayedPopularity":
        self.ordinal = ds.ordinal_time
        self._rows = {}
        if ds.ordinal_time or ds.n_events == 0:
            self._fit_ordinal(ds)
        else:
            self._fit_clock(ds)
        return self

    def _fit_ordinal(self, ds: Dataset) -> None:
        ptr = ds.user_indptr
        ends = np.repeat(ptr[1:], np.diff(ptr))
        age = (ends - 1 - np.arange(ds.n_events)).astype(np.float64)
        w = np.power(0.5, age / self.half_life_events)
        vec = np.bincount(ds.item, weights=w, minlength=ds.n_items).astype(np.float32)
        self.times = np.array([np.iinfo(np.int64).min], dtype=np.int64)
        self.snapshots = sp.csr_matrix(vec[None, :])

    def _fit_clock(self, ds: Dataset) -> None:
        lo, hi = ds.time_range
        every = max(self.snapshot_every_s, math.ceil((hi - lo + 1) / MAX_SNAPSHOTS))
        times = np.arange(lo + every, hi + every + 1, every, dtype=np.int64)
        times[-1] = max(times[-1], hi + 1)
        order = np.argsort(ds.ts, kind="stable")
        ts, items = ds.ts[order], ds.item[order]
        bounds = np.searchsorted(ts, times, side="left")  # events before T_j: [0, bounds[j])
        lam = math.log(2.0) / self.half_life_s
        running = np.zeros(ds.n_items, dtype=np.float64)
        rows, cols, vals = [], [], []
        prev_t, prev_b = None, 0
        for j, (t, b) in enumerate(zip(times, bounds)):
            if prev_t is not None:
                running *= math.exp(-lam * (t - prev_t))
            if b > prev_b:
                w = np.exp(-lam * (t - ts[prev_b:b]))
                running += np.bincount(items[prev_b:b], weights=w, minlength=ds.n_items)
            keep = np.flatnonzero(running > DROP_BELOW)
            rows.append(np.full(len(keep), j, dtype=np.int64))
            cols.append(keep)
            vals.append(running[keep].astype(np.float32))
            prev_t, prev_b = t, b
        self.times = times
        self.snapshots = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(len(times), ds.n_items),
        )

    @property
    def n_items(self) -> int:
        return self.snapshots.shape[1]

    def snapshot_index(self, times: np.ndarray) -> np.ndarray:
        """Snapshot each query reads (-1: before any data)."""
        if self.ordinal:
            return np.zeros(len(times), dtype=np.int64)
        return np.searchsorted(self.times, times, side="right") - 1

    def snapshot_row(self, j: int) -> np.ndarray:
        """Snapshot j as a dense read-only vector, cached: a request reads it without
        densifying the sparse snapshot again (serving asks for the same one each time)."""
        row = self._rows.get(j)
        if row is None:
            row = self.snapshots[j].toarray().ravel()
            row.setflags(write=False)
            if len(self._rows) >= 8:
                self._rows.clear()
            self._rows[j] = row
        return row

    def at(self, times: np.ndarray) -> np.ndarray:
        """Dense (len(times) x n_items) decayed counts just before each time."""
        idx = self.snapshot_index(np.asarray(times, dtype=np.int64))
        out = np.zeros((len(idx), self.n_items), dtype=np.float32)
        ok = idx >= 0
        if ok.any():
            if len(idx) == 1:
                out[0] = self.snapshot_row(int(idx[0]))
            else:
                out[ok] = self.snapshots[idx[ok]].toarray()
            if not self.ordinal:
                lam = math.log(2.0) / self.half_life_s
                t = times[ok]
                dt = np.where(t == NO_TIME, 0, t - self.times[idx[ok]]).astype(np.float64)
                out[ok] *= np.exp(-lam * np.maximum(dt, 0.0)).astype(np.float32)[:, None]
        return out

    def state(self, prefix: str) -> dict:
        return {
            f"{prefix}times": self.times,
            f"{prefix}snapshots": self.snapshots,
            f"{prefix}ordinal": np.array(self.ordinal),
        }

    def set_state(self, state: dict, prefix: str) -> None:
        self.times = state[f"{prefix}times"]
        self.snapshots = state[f"{prefix}snapshots"]
        self.ordinal = bool(state[f"{prefix}ordinal"])
        self._rows = {}
