"""Point-in-time sparse, dense and sequence features for the neural rankers.

A feature of an (user, item, t) row reads only the query's own history (which holds the
events before t by construction, offline and online) and item counts of the events strictly
before t (`RunningCounts`, exact to the second). Static attributes (ids, demographics, item categories) do not depend on time.
One `hydrate` serves a batch of thousands (training rows, evaluation) and a batch of one
(a request), through the same code: there is no separate serving path to drift.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from recfunnel.candidates import Candidates
from recfunnel.data.dataset import Dataset
from recfunnel.features.candidates import DAY
from recfunnel.features.specs import FeatureSpecs, SequenceSpec, SparseSpec
from recfunnel.query import NO_TIME, QueryBatch

DENSE = [
    "pit_item_count",
    "pit_item_like_rate",
    "pit_cat_share",
    "pit_events_since_cat",
    "pit_days_since_cat",
    "pit_user_recent_30d",
]


class PointInTimeConfig(BaseModel):
    """Point-in-time features of the neural rankers (ids, demographics, recent items)."""

    model_config = ConfigDict(extra="forbid")
    sequence_length: int = Field(20, ge=1, description="recent items (and their categories) per row")
    like_threshold: float = Field(4.0, description="an event value at least this is a 'like' (MovieLens: rating >= 4)")
    like_prior_weight: float = Field(5.0, ge=0, description="pseudo-events pulling an item's like-rate to the global rate")
    attribute_buckets: int = Field(8, ge=2, description="quantile buckets for numeric user attributes (age)")
    attribute_vocab: int = Field(100, ge=1, description="most frequent values kept per text user attribute")


class PointInTimeFeatures:
    """Hydrator: the sparse, dense and sequence columns named by `specs()`."""

    def __init__(self, config: PointInTimeConfig | None = None) -> None:
        self.config = config or PointInTimeConfig()

    def fit(self, ds: Dataset) -> "PointInTimeFeatures":
        c = self.config
        self.n_users, self.n_items = ds.n_users, ds.n_items
        cmap = ds.category_ids
        self.n_categories = len(cmap)
        self.item_cat = np.array(
            [cmap.get(cs[0]) + 1 if cs else 0 for cs in ds.items["categories"].to_list()], dtype=np.int64
        )
        self.attr_names: list[str] = []
        self.attr_vocab: list[int] = []
        codes = []
        for col in ds.users.columns:
            if col == "user":
                continue
            code, vocab = _encode_attribute(ds.users[col], c.attribute_buckets, c.attribute_vocab)
            self.attr_names.append(col)
            self.attr_vocab.append(vocab)
            codes.append(code)
        self.user_attrs = np.column_stack(codes) if codes else np.zeros((ds.n_users, 0), dtype=np.int64)
        self.counts = RunningCounts().fit(ds.item, ds.ts, ds.value >= c.like_threshold, ds.n_items)
        self.ordinal = ds.ordinal_time
        return self

    def specs(self) -> FeatureSpecs:
        k = self.config.sequence_length
        sparse = [
            SparseSpec("user_id", self.n_users + 1),
            SparseSpec("item_id", self.n_items + 1),
            SparseSpec("item_cat", self.n_categories + 1),
        ] + [SparseSpec(f"user_{a}", v) for a, v in zip(self.attr_names, self.attr_vocab)]
        seq = [
            SequenceSpec("hist_items", self.n_items + 1, k, "item_id"),
            SequenceSpec("hist_cats", self.n_categories + 1, k, "item_cat"),
        ]
        return FeatureSpecs(sparse, list(DENSE), seq)

    def hydrate(self, batch: QueryBatch, cands: Candidates) -> None:
        f = cands.features
        nq = len(batch)
        q = cands.query.astype(np.int64)
        it = cands.item.astype(np.int64)
        known_item = it < self.n_items
        it_safe = np.where(known_item, it, 0)
        # ---- sparse: ids and static attributes
        users = batch.users
        known_user = (users >= 0) & (users < self.n_users)
        f["user_id"] = np.where(known_user, users + 1, 0)[q]
        f["item_id"] = np.where(known_item, it + 1, 0)
        cand_cat = np.where(known_item, self.item_cat[it_safe], 0)
        f["item_cat"] = cand_cat
        attrs = np.zeros((nq, len(self.attr_names)), dtype=np.int64)
        attrs[known_user] = self.user_attrs[users[known_user]]
        for j, a in enumerate(self.attr_names):
            f[f"user_{a}"] = attrs[q, j]
        # ---- sequence: recent items, most recent first
        k = self.config.sequence_length
        hist = np.zeros((nq, k), dtype=np.int64)
        lengths = np.diff(batch.indptr)
        for j in range(k):
            ok = lengths > j
            idx = batch.indptr[1:][ok] - 1 - j
            h = batch.items[idx].astype(np.int64)
            hist[ok, j] = np.where(h < self.n_items, h + 1, 0)
        hist_cat = np.where(hist > 0, np.r_[0, self.item_cat][hist], 0)
        f["hist_items"] = hist[q].astype(np.int32)
        f["hist_cats"] = hist_cat[q].astype(np.int32)
        # ---- dense: item statistics strictly before t
        t = batch.times[q]
        count, likes = self.counts.before(it_safe, t)
        count[~known_item] = 0.0
        likes[~known_item] = 0.0
        f["pit_item_count"] = np.log1p(count)
        glob = self.counts.global_rate_before(t)
        m = self.config.like_prior_weight
        f["pit_item_like_rate"] = ((likes + m * glob) / np.maximum(count + m, 1e-9)).astype(np.float32)
        # ---- dense: the user's history (all of it precedes t)
        ev_q = batch.row_of_event
        ev_items = batch.items.astype(np.int64)
        ev_cat = np.where(ev_items < self.n_items, np.r_[self.item_cat, 0][np.minimum(ev_items, self.n_items)], 0)
        n_cat = self.n_categories + 1
        counts = np.zeros((nq, n_cat), dtype=np.float32)
        np.add.at(counts, (ev_q, ev_cat), 1.0)
        share = counts[q, cand_cat] / np.maximum(lengths[q], 1)
        f["pit_cat_share"] = np.where(cand_cat > 0, share, np.nan).astype(np.float32)
        big = np.iinfo(np.int64).max
        since = np.full((nq, n_cat), big, dtype=np.int64)
        np.minimum.at(since, (ev_q, ev_cat), batch.position_from_end)
        s = since[q, cand_cat]
        f["pit_events_since_cat"] = np.where((s < big) & (cand_cat > 0), np.log1p(np.minimum(s, 1e9)), np.nan).astype(
            np.float32
        )
        clock = (batch.times != NO_TIME) & (not self.ordinal)
        last = np.full((nq, n_cat), np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(last, (ev_q, ev_cat), batch.item_ts)
        lt = last[q, cand_cat]
        ok = clock[q] & (lt > np.iinfo(np.int64).min) & (cand_cat > 0)
        days = np.full(len(q), np.nan, dtype=np.float32)
        days[ok] = (t[ok] - lt[ok]) / DAY
        f["pit_days_since_cat"] = days
        recent = np.zeros(nq, dtype=np.float32)
        if len(ev_q):
            in_window = clock[ev_q] & (batch.item_ts >= batch.times[ev_q] - 30 * DAY) & (batch.item_ts < batch.times[ev_q])
            recent = np.bincount(ev_q[in_window], minlength=nq).astype(np.float32)
        act = np.where(clock, np.log1p(recent), np.nan).astype(np.float32)
        f["pit_user_recent_30d"] = act[q]

    # ---- persistence --------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        s: dict[str, Any] = {
            "item_cat": self.item_cat,
            "user_attrs": self.user_attrs,
            "sizes": np.array([self.n_users, self.n_items, self.n_categories], dtype=np.int64),
            "attr_vocab": np.array(self.attr_vocab, dtype=np.int64),
            "attr_names": np.array(self.attr_names, dtype=np.str_),
            "ordinal": np.array(self.ordinal),
        }
        s.update(self.counts.state())
        return s

    def set_state(self, s: dict[str, Any]) -> None:
        self.item_cat = s["item_cat"]
        self.user_attrs = s["user_attrs"]
        self.n_users, self.n_items, self.n_categories = (int(x) for x in s["sizes"])
        self.attr_vocab = [int(v) for v in s["attr_vocab"]]
        self.attr_names = [str(a) for a in s["attr_names"]]
        self.ordinal = bool(s["ordinal"])
        self.counts = RunningCounts()
        self.counts.set_state(s)


class RunningCounts:
    """Events and likes of each item strictly before any time t, exactly.

    Events are sorted by (item, time) into one int64 key, so "how many before t" is a
    binary search; a running sum of the like flags gives the likes among them. With no
    time (`NO_TIME`, or order-only data) every fit event counts.
    """

    SHIFT = 34  # bits for (ts - lo): centuries of seconds

    def fit(self, item: np.ndarray, ts: np.ndarray, like: np.ndarray, n_items: int) -> "RunningCounts":
        self.lo = int(ts.min()) if len(ts) else 0
        rel = np.clip(ts.astype(np.int64) - self.lo, 0, (1 << self.SHIFT) - 1)
        key = (item.astype(np.int64) << self.SHIFT) | rel
        order = np.argsort(key, kind="stable")
        self.key = key[order]
        self.cum_likes = np.r_[0, np.cumsum(like[order])].astype(np.int64)
        self.item_ptr = np.searchsorted(self.key, np.arange(n_items + 1, dtype=np.int64) << self.SHIFT)
        t_order = np.argsort(rel, kind="stable")
        self.ts_sorted = rel[t_order]
        self.cum_likes_t = np.r_[0, np.cumsum(like[t_order])].astype(np.int64)
        return self

    def _rel(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.int64)
        top = (1 << self.SHIFT) - 1
        rel = np.where(t == NO_TIME, top, np.clip(t - self.lo, -1, top - 1))
        return rel

    def before(self, items: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(events, likes) of each item before the paired time, as float32."""
        rel = self._rel(t)
        items = items.astype(np.int64)
        start = self.item_ptr[items]
        end = np.where(rel < 0, start, np.searchsorted(self.key, (items << self.SHIFT) | np.maximum(rel, 0)))
        end = np.where(rel == (1 << self.SHIFT) - 1, self.item_ptr[items + 1], end)
        n = (end - start).astype(np.float32)
        likes = (self.cum_likes[end] - self.cum_likes[start]).astype(np.float32)
        return n, likes

    def global_rate_before(self, t: np.ndarray) -> np.ndarray:
        """Likes per event over all items before each time (0.5 before any event)."""
        rel = self._rel(t)
        end = np.where(rel < 0, 0, np.searchsorted(self.ts_sorted, np.maximum(rel, 0)))
        end = np.where(rel == (1 << self.SHIFT) - 1, len(self.ts_sorted), end)
        likes = self.cum_likes_t[end]
        return np.where(end > 0, likes / np.maximum(end, 1), 0.5).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {
            "rc_key": self.key,
            "rc_cum_likes": self.cum_likes,
            "rc_item_ptr": self.item_ptr,
            "rc_ts_sorted": self.ts_sorted,
            "rc_cum_likes_t": self.cum_likes_t,
            "rc_lo": np.array(self.lo, dtype=np.int64),
        }

    def set_state(self, s: dict) -> None:
        self.key, self.cum_likes, self.item_ptr = s["rc_key"], s["rc_cum_likes"], s["rc_item_ptr"]
        self.ts_sorted, self.cum_likes_t, self.lo = s["rc_ts_sorted"], s["rc_cum_likes_t"], int(s["rc_lo"])


def _encode_attribute(col: pl.Series, buckets: int, vocab: int) -> tuple[np.ndarray, int]:
    """Codes 1..V-1 for a user attribute (0 = missing): quantile buckets for numbers,
    the most frequent values for text."""
    if col.dtype.is_numeric():
        x = col.cast(pl.Float64).to_numpy()
        ok = ~np.isnan(x)
        if not ok.any():
            return np.zeros(len(x), dtype=np.int64), 1
        edges = np.unique(np.quantile(x[ok], np.linspace(0, 1, buckets + 1)[1:-1]))
        code = np.zeros(len(x), dtype=np.int64)
        code[ok] = np.searchsorted(edges, x[ok], side="right") + 1
        return code, len(edges) + 2
    values = col.cast(pl.Utf8).to_list()
    freq: dict[str, int] = {}
    for v in values:
        if v is not None:
            freq[v] = freq.get(v, 0) + 1
    kept = sorted(freq, key=lambda v: (-freq[v], v))[:vocab]
    index = {v: i + 1 for i, v in enumerate(kept)}
    return np.array([index.get(v, 0) if v is not None else 0 for v in values], dtype=np.int64), len(kept) + 1
