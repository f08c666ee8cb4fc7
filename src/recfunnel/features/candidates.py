"""The ranker's view of a (query, candidate item) pair, computed point-in-time.

Everything here reads the query's history and request time plus state fitted on data
before the request, so the same code builds training rows offline and features online.
Item popularity comes from decayed snapshots taken strictly before the request time.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from recfunnel.candidates import Candidates
from recfunnel.data.dataset import Dataset
from recfunnel.features.popularity import DecayedPopularity
from recfunnel.query import NO_TIME, QueryBatch
from recfunnel.recall.base import CHUNK, recency_weights
from recfunnel.recall.cooccurrence import CooccurrenceConfig, association_matrix
from recfunnel.recall.itemcf import item_similarity
from recfunnel.recall.sparse_ops import gather_rows, weighted_row_sum

DAY = 86400.0


class CandidateFeaturesConfig(BaseModel):
    """Ranker features: point-in-time popularity windows, item, user and user-item signals."""

    model_config = ConfigDict(extra="forbid")
    popularity_half_lives_days: list[float] = Field(
        [1.0, 7.0, 30.0], description="one decayed-popularity feature per half-life"
    )
    popularity_half_lives_events: list[float] = Field(
        [1.0, 3.0, 10.0], description="for order-only data: half-lives in positions from a user's end"
    )
    similarity_neighbors: int = Field(200, description="ItemCF neighbours kept for the similarity features")


class CandidateFeatures:
    """Hydrator: adds item, user and user-item features to merged candidates."""

    def __init__(self, config: CandidateFeaturesConfig | None = None) -> None:
        self.config = config or CandidateFeaturesConfig()

    def fit(self, ds: Dataset) -> "CandidateFeatures":
        c = self.config
        self.pops = [
            DecayedPopularity(hl * DAY, hle, DAY).fit(ds)
            for hl, hle in zip(c.popularity_half_lives_days, c.popularity_half_lives_events)
        ]
        self.pop_all = np.log1p(ds.item_user_count).astype(np.float32)
        sums = np.bincount(ds.item, weights=ds.value, minlength=ds.n_items)
        cnt = np.bincount(ds.item, minlength=ds.n_items)
        self.item_mean_value = np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan).astype(np.float32)
        created = ds.items["created"].to_numpy().astype(np.float64)
        self.item_created = np.where(np.isnan(created), np.nan, created) if not ds.ordinal_time else np.full(ds.n_items, np.nan)
        self.item_categories = ds.item_categories.astype(np.float32).tocsr()
        n_cat = np.asarray(self.item_categories.sum(axis=1)).ravel()
        self.item_n_categories = n_cat.astype(np.float32)
        self.assoc = association_matrix(ds, CooccurrenceConfig(normalize="cosine"))
        self.similarity = item_similarity(ds.user_item, c.similarity_neighbors)
        self.ordinal = ds.ordinal_time
        return self

    @property
    def names(self) -> list[str]:
        pops = [f"pop_{i}" for i in range(len(self.pops))]
        return pops + [
            "pop_all",
            "item_mean_value",
            "item_age_days",
            "user_history_len",
            "user_days_since_last",
            "cat_affinity",
            "cat_affinity_max",
            "assoc_last1",
            "assoc_recent",
            "sim_last1",
            "sim_recent",
        ]

    def hydrate(self, batch: QueryBatch, cands: Candidates) -> None:
        q, it = cands.query.astype(np.int64), cands.item.astype(np.int64)
        f = cands.features
        times = batch.times[q]
        for i, pop in enumerate(self.pops):
            f[f"pop_{i}"] = np.log1p(_gather(lambda r: pop.at(batch.times[r]), len(batch), q, it))
        f["pop_all"] = self.pop_all[it]
        f["item_mean_value"] = self.item_mean_value[it]
        known_time = times != NO_TIME
        age = np.full(len(it), np.nan, dtype=np.float32)
        age[known_time] = (times[known_time] - self.item_created[it[known_time]]) / DAY
        f["item_age_days"] = age
        lengths = np.diff(batch.indptr).astype(np.float32)
        f["user_history_len"] = np.log1p(lengths)[q]
        last_ts = np.full(len(batch), np.nan)
        has = lengths > 0
        last_ts[has] = batch.item_ts[batch.indptr[1:][has] - 1]
        since = np.full(len(batch), np.nan, dtype=np.float32)
        ok = has & (batch.times != NO_TIME) & ~np.full(len(batch), self.ordinal)
        since[ok] = (batch.times[ok] - last_ts[ok]) / DAY
        f["user_days_since_last"] = since[q]

        if len(batch) == 1:  # serving: the same features without per-request sparse matrices
            self._hydrate_history_one(batch, it, f)
            return
        share = batch.history_matrix(recency_weights(batch, 0.98, 200))
        total = np.asarray(share.sum(axis=1)).ravel()
        share = sp.diags(1.0 / np.maximum(total, 1e-9)) @ share
        aff = (share @ self.item_categories).tocsr()  # queries x categories
        ic_t = self.item_categories.T.tocsr()
        f["cat_affinity"] = _gather(lambda r: (aff[r] @ ic_t).toarray(), len(batch), q, it) / np.maximum(
            self.item_n_categories[it], 1.0
        )
        f["cat_affinity_max"] = _gather(
            lambda r: _row_max_product(aff[r], self.item_categories), len(batch), q, it
        )
        last1 = batch.history_matrix(recency_weights(batch, 1.0, 1))
        recent = batch.history_matrix(recency_weights(batch, 0.7, 5))
        f["assoc_last1"] = _gather(lambda r: (last1[r] @ self.assoc).toarray(), len(batch), q, it)
        f["assoc_recent"] = _gather(lambda r: (recent[r] @ self.assoc).toarray(), len(batch), q, it)
        f["sim_last1"] = _gather(lambda r: (last1[r] @ self.similarity).toarray(), len(batch), q, it)
        f["sim_recent"] = _gather(lambda r: (recent[r] @ self.similarity).toarray(), len(batch), q, it)

    def _hydrate_history_one(self, batch: QueryBatch, it: np.ndarray, f: dict[str, np.ndarray]) -> None:
        """The history features of `hydrate` for a batch of one, on the CSR arrays."""
        items, w = batch.known_history(recency_weights(batch, 0.98, 200))
        ic = self.item_categories
        owner, cats, vals = gather_rows(ic, items)
        aff = np.bincount(cats, weights=vals * w[owner], minlength=ic.shape[1])
        aff = (aff / max(float(w.astype(np.float64).sum()), 1e-9)).astype(np.float32)
        c_owner, c_cats, c_vals = gather_rows(ic, it)
        per = aff[c_cats] * c_vals
        f["cat_affinity"] = np.bincount(c_owner, weights=per, minlength=len(it)).astype(
            np.float32
        ) / np.maximum(self.item_n_categories[it], 1.0)
        best = np.zeros(len(it), dtype=np.float32)
        np.maximum.at(best, c_owner, aff[c_cats])
        f["cat_affinity_max"] = best
        for name, decay, last_n, m in (
            ("assoc_last1", 1.0, 1, self.assoc),
            ("assoc_recent", 0.7, 5, self.assoc),
            ("sim_last1", 1.0, 1, self.similarity),
            ("sim_recent", 0.7, 5, self.similarity),
        ):
            h, hw = batch.known_history(recency_weights(batch, decay, last_n))
            f[name] = weighted_row_sum(m, h, hw)[it]

    # ---- persistence --------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        s: dict[str, Any] = {
            "pop_all": self.pop_all,
            "item_mean_value": self.item_mean_value,
            "item_created": self.item_created,
            "item_categories": self.item_categories,
            "item_n_categories": self.item_n_categories,
            "assoc": self.assoc,
            "similarity": self.similarity,
            "ordinal": np.array(self.ordinal),
        }
        for i, p in enumerate(self.pops):
            s.update(p.state(f"pop{i}_"))
        return s

    def set_state(self, s: dict[str, Any]) -> None:
        c = self.config
        self.pop_all = s["pop_all"]
        self.item_mean_value = s["item_mean_value"]
        self.item_created = s["item_created"]
        self.item_categories = s["item_categories"]
        self.item_n_categories = s["item_n_categories"]
        self.assoc = s["assoc"]
        self.similarity = s["similarity"]
        self.ordinal = bool(s["ordinal"])
        self.pops = []
        for i, (hl, hle) in enumerate(zip(c.popularity_half_lives_days, c.popularity_half_lives_events)):
            p = DecayedPopularity(hl * DAY, hle, DAY)
            p.set_state(s, f"pop{i}_")
            self.pops.append(p)


def _gather(
    dense_rows: Callable[[slice], np.ndarray], n_queries: int, q: np.ndarray, it: np.ndarray
) -> np.ndarray:
    """Value at (q, it) of a queries x items matrix computed a chunk of queries at a time."""
    out = np.zeros(len(q), dtype=np.float32)
    for start in range(0, n_queries, CHUNK):
        rows = slice(start, min(start + CHUNK, n_queries))
        sel = np.flatnonzero((q >= rows.start) & (q < rows.stop))
        if len(sel) == 0:
            continue
        block = dense_rows(rows)
        out[sel] = block[q[sel] - rows.start, it[sel]]
    return out


def _row_max_product(aff: sp.csr_matrix, item_categories: sp.csr_matrix) -> np.ndarray:
    """max over c of aff[q, c] * item_categories[i, c], for every query q and item i."""
    dense_aff = aff.toarray()
    out = np.zeros((dense_aff.shape[0], item_categories.shape[0]), dtype=np.float32)
    ic = item_categories.tocsc()
    for c in np.flatnonzero(dense_aff.any(axis=0)):
        members = ic.indices[ic.indptr[c] : ic.indptr[c + 1]]
        if len(members):
            out[:, members] = np.maximum(out[:, members], dense_aff[:, c : c + 1])
    return out


