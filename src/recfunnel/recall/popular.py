"""Non-personal channels: all-time popular, hot (time-decayed), hot in the user's categories.

These are the floor of the funnel and the cold-start path: they answer for a user with no
history at all.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
from pydantic import Field

from recfunnel.data.dataset import Dataset
from recfunnel.features.popularity import DecayedPopularity
from recfunnel.query import QueryBatch
from recfunnel.recall.base import Source, SourceConfig, recency_weights

DAY = 86400


class PopularConfig(SourceConfig):
    """popular: distinct users per item over all the data (the cold-start floor)."""


class PopularSource(Source):
    """Distinct users per item over all the fit data."""

    name = "popular"
    Config = PopularConfig

    def fit(self, ds: Dataset) -> Self:
        self.n_items = ds.n_items
        self.counts = ds.item_user_count.astype(np.float32)
        return self

    def score(self, batch: QueryBatch, rows: slice) -> np.ndarray:
        n = rows.stop - rows.start
        return np.broadcast_to(self.counts, (n, self.n_items))

    def state(self) -> dict[str, Any]:
        return {**super().state(), "counts": self.counts}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.counts = state["counts"]


class HotConfig(SourceConfig):
    """hot: time-decayed popularity just before the request time."""

    half_life_days: float = Field(7.0, gt=0, description="decay half-life of an event's weight")
    half_life_events: float = Field(
        3.0, gt=0, description="for order-only data: half-life in positions from a user's end"
    )
    snapshot_every_hours: float = Field(24.0, gt=0, description="resolution of point-in-time counts")


class HotSource(Source):
    """Time-decayed popularity just before the request time."""

    name = "hot"
    Config = HotConfig

    def fit(self, ds: Dataset) -> Self:
        c = self.config
        self.n_items = ds.n_items
        self.pop = DecayedPopularity(
            c.half_life_days * DAY, c.half_life_events, c.snapshot_every_hours * 3600
        ).fit(ds)
        return self

    def score(self, batch: QueryBatch, rows: slice) -> np.ndarray:
        return self.pop.at(batch.times[rows])

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
        hot = self.pop.at(batch.times[rows])  # queries x items
        # the hottest item of each category, per query
        cat_max = np.zeros_like(aff)
        icc = ic.tocsc()
        for cat in np.flatnonzero(aff.any(axis=0)):
            members = icc.indices[icc.indptr[cat] : icc.indptr[cat + 1]]
            if len(members):
                cat_max[:, cat] = hot[:, members].max(axis=1)
        weight = np.divide(aff, cat_max, out=np.zeros_like(aff), where=cat_max > 0)
        return hot * np.asarray(ic @ weight.T).T

    def state(self) -> dict[str, Any]:
        return {**super().state(), "item_categories": self.item_categories}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.item_categories = state["item_categories"]
