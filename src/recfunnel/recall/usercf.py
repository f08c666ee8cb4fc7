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

from recfunnel.candidates import smallest_k, smallest_k_row
from recfunnel.data.dataset import Dataset
from recfunnel.query import QueryBatch
from recfunnel.recall.base import Source, SourceConfig
from recfunnel.recall.sparse_ops import gather_rows, weighted_row_sum


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
        self._item_users = None
        return self

    def score(self, batch: QueryBatch, rows: slice) -> np.ndarray:
        if len(batch) == 1:
            return self._score_one(batch)[None, :]
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
        # most similar first, ties to the lower user index (the same choice as `_score_one`)
        top, vals = smallest_k(np.negative(sim, dtype=np.float32), k)
        vals = -vals
        neighbours = sp.csr_matrix(
            (vals.ravel(), (np.repeat(np.arange(sim.shape[0]), k), top.ravel())), shape=sim.shape
        )
        return (neighbours @ self.user_items).toarray()

    def _score_one(self, batch: QueryBatch) -> np.ndarray:
        """`score` for a batch of one: only users sharing an item are touched (serving)."""
        items = np.unique(batch.known_history()[0])
        n_users = self.user_items.shape[0]
        q_norm = np.float32(np.sqrt(max(len(items), 1.0)))
        owner, users, vals = gather_rows(self._by_item(), items)
        sim = np.bincount(users, weights=self.item_weight[items][owner] * vals, minlength=n_users)
        sim = sim.astype(np.float32) / (q_norm * self.user_norm)
        u = int(batch.users[0])
        if 0 <= u < n_users:
            sim[u] = 0.0  # a user is not their own neighbour
        found = np.flatnonzero(sim > 0)  # users with nothing shared vote nothing
        k = min(self.config.neighbors, n_users)
        if len(found) > k:
            found = found[smallest_k_row(np.negative(sim[found]), k)]
        return weighted_row_sum(self.user_items, found, sim[found])

    def _by_item(self) -> sp.csr_matrix:
        m = getattr(self, "_item_users", None)
        if m is None:
            m = self._item_users = self.user_items.T.tocsr()
        return m

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
        self._item_users = None
