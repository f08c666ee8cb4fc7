"""UserCF: what people with a similar history consumed.

sim(q, v) = sum over shared items of 1/log(1 + |N(i)|) (inverse item frequency: sharing a
blockbuster says little), divided by sqrt(|q| |N(v)|). The query's similarity to every fit
user is computed from its *current* history, so a new or changed user works at serve time.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recfunnel.data.dataset import Dataset
from recfunnel.query import QueryBatch
from recfunnel.recall.base import Source, SourceConfig


class UserCFConfig(SourceConfig):
    """usercf: what the most similar users consumed (IIF-weighted cosine on histories)."""

    neighbors: int = Field(50, ge=1, description="most similar users who vote")
    iif: bool = Field(True, description="down-weight shared popular items")


class UserCFSource(Source):
    name = "usercf"
    Config = UserCFConfig

    def fit(self, ds: Dataset) -> Self:
        self.n_items = ds.n_items
        x = ds.user_item.astype(np.float32).tocsr()
        n_i = np.asarray(x.sum(axis=0)).ravel()
        self.item_weight = (
            1.0 / np.log1p(np.maximum(n_i, 1.0)) if self.config.iif else np.ones_like(n_i)
        ).astype(np.float32)
        n_u = np.asarray(x.sum(axis=1)).ravel()
        self.user_items = x
        self.user_norm = np.sqrt(np.maximum(n_u, 1.0)).astype(np.float32)
        return self

    def score(self, batch: QueryBatch, rows: slice) -> np.ndarray:
        hist = batch.history_matrix()[rows]
        hist.data[:] = 1.0
        q_norm = np.sqrt(np.maximum(np.asarray(hist.sum(axis=1)).ravel(), 1.0))
        weighted = (hist @ sp.diags(self.item_weight)).T.toarray()  # items x queries
        sim = np.asarray(self.user_items @ weighted).T  # queries x users
        sim /= q_norm[:, None] * self.user_norm[None, :]
        users = batch.users[rows]
        own = (users >= 0) & (users < sim.shape[1])
        sim[np.flatnonzero(own), users[own]] = 0.0  # a user is not their own neighbour
        k = min(self.config.neighbors, sim.shape[1])
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(sim, top, axis=1)
        neighbours = sp.csr_matrix(
            (vals.ravel(), (np.repeat(np.arange(sim.shape[0]), k), top.ravel())), shape=sim.shape
        )
        return (neighbours @ self.user_items).toarray()

    def state(self) -> dict[str, Any]:
        return {
            **super().state(),
            "item_weight": self.item_weight,
            "user_items": self.user_items,
            "user_norm": self.user_norm,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.item_weight = state["item_weight"]
        self.user_items = state["user_items"]
        self.user_norm = state["user_norm"]
