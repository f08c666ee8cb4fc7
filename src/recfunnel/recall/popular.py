"""Non-personal channels: all-time popular, hot (time-decayed), hot in the user's categories.

These are the floor of the funnel and the cold-start path: they answer for a user with no
history at all.
"""

from __future__ import annotations

from typing import Any, Callable, Self

import numpy as np
from pydantic import Field

from recfunnel.candidates import Candidates
from recfunnel.data.dataset import Dataset
from recfunnel.features.popularity import DecayedPopularity
from recfunnel.query import QueryBatch
from recfunnel.recall.base import Source, SourceConfig, recency_weights
from recfunnel.recall.sparse_ops import gather_rows

DAY = 86400

# Serving injects this: half-life in seconds -> live decayed counts per item (dense,
# n_items) from the online store, or None. Offline it is never set.
LiveCounts = Callable[[float], "np.ndarray | None"]


class PopularConfig(SourceConfig):
    """popular: distinct users per item over all the data (the cold-start floor)."""


class PopularSource(Source):
    """Distinct users per item over all the fit data."""

    name = "popular"
    Config = PopularConfig

    def fit(self, ds: Dataset) -> Self:
        self.n_items = ds.n_items
        self.counts = ds.item_user_count.astype(np.float32)
        self._sorted = None
        return self

    def score(self, batch: QueryBatch, rows: slice) -> np.ndarray:
        n = rows.stop - rows.start
        return np.broadcast_to(self.counts, (n, self.n_items))

    def retrieve(self, batch: QueryBatch, k: int | None = None) -> Candidates:
        if len(batch) != 1:
            return super().retrieve(batch, k)
        # serving: the order never changes, so walk it once sorted, skipping what was seen
        k = k or self.config.quota
        order = self._order()
        seen = batch.seen.indices
        head = order[: k + len(seen)]
        head = head[~np.isin(head, seen)][:k]
        return Candidates(
            query=np.zeros(len(head), dtype=np.int32),
            item=head.astype(np.int32),
            score=self.counts[head].astype(np.float32),
            n_queries=1,
        )

    def _order(self) -> np.ndarray:
        """Items with a positive count by (-count, item): the order `top_k` gives."""
        order = getattr(self, "_sorted", None)
        if order is None:
            found = np.flatnonzero(self.counts > 0)
            order = found[np.lexsort((found, -self.counts[found].astype(np.float32)))]
            self._sorted = order
        return order

    def state(self) -> dict[str, Any]:
        return {**super().state(), "counts": self.counts}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.counts = state["counts"]
        self._sorted = None


class HotConfig(SourceConfig):
    """hot: time-decayed popularity just before the request time."""

    half_life_days: float = Field(7.0, gt=0, description="decay half-life of an event's weight")
    half_life_events: float = Field(
        3.0, gt=0, description="for order-only data: half-life in positions from a user's end"
    )
    snapshot_every_hours: float = Field(24.0, gt=0, description="resolution of point-in-time counts")


class HotSource(Source):
    """Time-decayed popularity just before the request time.

    Online, `live` (set by the server) adds the decayed counts of events that arrived
    after the build, so a burst of events makes an item hot at once; offline it is None
    and the channel reads the point-in-time snapshots only.
    """

    name = "hot"
    Config = HotConfig
    live: LiveCounts | None = None

    def fit(self, ds: Dataset) -> Self:
        c = self.config
        self.n_items = ds.n_items
        self.pop = DecayedPopularity(
            c.half_life_days * DAY, c.half_life_events, c.snapshot_every_hours * 3600
        ).fit(ds)
        return self

    def hot(self, times: np.ndarray) -> np.ndarray:
        """(len(times) x n_items) decayed counts: snapshots plus live counts when served."""
        out = self.pop.at(times)
        if self.live is not None:
            extra = self.live(self.config.half_life_days * DAY)
            if extra is not None:
                out += extra[None, : self.n_items]
        return out

    def score(self, batch: QueryBatch, rows: slice) -> np.ndarray:
        return self.hot(batch.times[rows])

    def retrieve(self, batch: QueryBatch, k: int | None = None) -> Candidates:
        if len(batch) != 1 or type(self) is not HotSource:
            return super().retrieve(batch, k)
        # serving: a snapshot decays uniformly, so its order is fixed; only the items with
        # live counts can overtake it. Rank the snapshot's head plus those, exactly.
        k = k or self.config.quota
        times = batch.times[:1]
        j = int(self.pop.snapshot_index(times)[0])
        scores = self.pop.at(times)[0]
        live = np.empty(0, dtype=np.int64)
        extra = self.live(self.config.half_life_days * DAY) if self.live is not None else None
        if extra is not None:
            extra = extra[: self.n_items]
            scores = scores + extra
            live = np.flatnonzero(extra)
        seen = batch.seen.indices
        base = self._order(j)
        pool = np.union1d(base[: k + len(seen) + len(live)], live)
        pool = pool[(scores[pool] > 0) & ~np.isin(pool, seen)]
        order = np.lexsort((pool, -scores[pool]))[:k]
        return Candidates(
            query=np.zeros(len(order), dtype=np.int32),
            item=pool[order].astype(np.int32),
            score=scores[pool][order].astype(np.float32),
            n_queries=1,
        )

    def _order(self, j: int) -> np.ndarray:
        """Items with a positive count in snapshot j by (-count, item), cached."""
        cache = self.__dict__.setdefault("_orders", {})
        order = cache.get(j)
        if order is None:
            row = self.pop.snapshot_row(j) if j >= 0 else np.zeros(self.n_items, np.float32)
            found = np.flatnonzero(row > 0)
            order = found[np.lexsort((found, -row[found]))]
            cache.clear()
            cache[j] = order
        return order

    def state(self) -> dict[str, Any]:
        return {**super().state(), **self.pop.state("pop_")}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        c = self.config
        self.pop = DecayedPopularity(c.half_life_days * DAY, c.half_life_events, c.snapshot_every_hours * 3600)
        self.pop.set_state(state, "pop_")


class CategoryHotConfig(HotConfig):
    """category_hot: hot items inside the user's top categories ("tag recall")."""

    top_categories: int = Field(3, ge=1, description="how many of the user's categories to recall from")
    history_decay: float = Field(0.9, gt=0, le=1, description="weight of older history items")
    history_last_n: int = Field(50, ge=1, description="history items that define the user's categories")


class CategoryHotSource(HotSource):
    """Hot items inside the user's top categories ("tag recall").

    The user's affinity to each category is their recency-weighted share of history in it;
    within a category an item scores its hot count relative to the category's hottest item,
    so a niche category the user loves is not drowned by a big one.
    """

    name = "category_hot"
    Config = CategoryHotConfig

    def fit(self, ds: Dataset) -> Self:
        super().fit(ds)
        self.item_categories = ds.item_categories.tocsr().astype(np.float32)
        return self

    def score(self, batch: QueryBatch, rows: slice) -> np.ndarray:
        c = self.config
        w = recency_weights(batch, c.history_decay, c.history_last_n)
        if len(batch) == 1:
            return self._score_one(batch, w)[None, :]
        hist = batch.history_matrix(w)[rows]
        ic = self.item_categories
        aff = np.asarray((hist @ ic).todense(), dtype=np.float32)  # queries x categories
        n_cat = aff.shape[1]
        if n_cat == 0:
            return np.zeros((hist.shape[0], self.n_items), dtype=np.float32)
        if c.top_categories < n_cat:
            cut = np.partition(aff, n_cat - c.top_categories, axis=1)[:, n_cat - c.top_categories]
            aff[aff < cut[:, None]] = 0.0
        total = aff.sum(axis=1, keepdims=True)
        aff = np.divide(aff, total, out=np.zeros_like(aff), where=total > 0)
        hot = self.hot(batch.times[rows])  # queries x items
        # the hottest item of each category, per query
        cat_max = np.zeros_like(aff)
        icc = ic.tocsc()
        for cat in np.flatnonzero(aff.any(axis=0)):
            members = icc.indices[icc.indptr[cat] : icc.indptr[cat + 1]]
            if len(members):
                cat_max[:, cat] = hot[:, members].max(axis=1)
        weight = np.divide(aff, cat_max, out=np.zeros_like(aff), where=cat_max > 0)
        return hot * np.asarray(ic @ weight.T).T

    def _score_one(self, batch: QueryBatch, w: np.ndarray) -> np.ndarray:
        """`score` for a batch of one, in NumPy on the CSR arrays (the serving path)."""
        c = self.config
        ic = self.item_categories
        n_cat = ic.shape[1]
        if n_cat == 0:
            return np.zeros(self.n_items, dtype=np.float32)
        items, w = batch.known_history(w)
        owner, cats, vals = gather_rows(ic, items)
        aff = np.bincount(cats, weights=vals * w[owner], minlength=n_cat).astype(np.float32)
        if c.top_categories < n_cat:
            cut = np.partition(aff, n_cat - c.top_categories)[n_cat - c.top_categories]
            aff[aff < cut] = 0.0
        total = aff.sum()
        chosen = np.flatnonzero(aff) if total > 0 else np.empty(0, dtype=np.int64)
        aff = aff / total if total > 0 else aff
        hot = self.hot(batch.times[:1])[0]
        icc = self._by_category()
        weight = np.zeros(self.n_items, dtype=np.float32)
        for cat in chosen:
            members = icc.indices[icc.indptr[cat] : icc.indptr[cat + 1]]
            top = hot[members].max() if len(members) else 0.0
            if top > 0:
                weight[members] += (aff[cat] / top) * icc.data[icc.indptr[cat] : icc.indptr[cat + 1]]
        return hot * weight

    def _by_category(self):  # noqa: ANN202 - a scipy CSC matrix
        icc = getattr(self, "_icc", None)
        if icc is None:
            icc = self._icc = self.item_categories.tocsc()
        return icc

    def state(self) -> dict[str, Any]:
        return {**super().state(), "item_categories": self.item_categories}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.item_categories = state["item_categories"]
        self._icc = None
