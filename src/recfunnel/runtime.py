"""A published artifact set, loaded and ready to answer for raw user ids.

Known users are answered from their stored history; an unknown user id is the cold-start
path (popular/hot channels), never an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recfunnel.artifacts import read_manifest, resolve
from recfunnel.data.idmap import IdMap
from recfunnel.funnel import Funnel
from recfunnel.query import NO_TIME, Query


@dataclass
class Recommendation:
    item: str
    title: str
    score: float
    channels: list[str]
    channel_scores: dict[str, float]
    rank_before_rerank: int  # 0-based position in the ranker's order

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class Recommender:
    def __init__(self, directory: str | Path) -> None:
        self.path = resolve(directory)
        self.manifest = read_manifest(self.path)
        self.funnel = Funnel.load(self.path / "funnel")
        self.user_ids = IdMap.load(self.path / "user_ids.json")
        self.item_ids = self.funnel.item_ids
        events = pl.read_parquet(self.path / "events.parquet")
        self._items = events["item"].to_numpy()
        self._ts = events["ts"].to_numpy()
        counts = np.bincount(events["user"].to_numpy(), minlength=len(self.user_ids))
        self._indptr = np.concatenate([[0], np.cumsum(counts)])
        self.titles = pl.read_parquet(self.path / "items.parquet")["title"].to_list()

    def history(self, raw_user: str) -> tuple[int, np.ndarray, np.ndarray]:
        u = self.user_ids.get(raw_user)
        if u < 0:
            return -1, np.empty(0, np.int32), np.empty(0, np.int64)
        a, b = self._indptr[u], self._indptr[u + 1]
        return u, self._items[a:b], self._ts[a:b]

    def recommend(self, raw_user: str, n: int = 10, time: int | None = None) -> list[Recommendation]:
        u, items, ts = self.history(raw_user)
        t = NO_TIME if time is None or self.manifest.get("ordinal_time") else int(time)
        out = self.funnel.recommend(Query(user=u, history=items, history_ts=ts, time=t, n=n))
        names = list(self.funnel.sources)
        recs = []
        f = out.final
        for row in range(len(f)):
            mask = int(f.features["channels"][row]) if "channels" in f.features else 0
            found = [nm for i, nm in enumerate(names) if mask >> i & 1]
            scores = {nm: float(f.features[f"score_{nm}"][row]) for nm in found}
            i = int(f.item[row])
            recs.append(
                Recommendation(
                    item=self.item_ids.raw(i),
                    title=self.titles[i] if i < len(self.titles) else "",
                    score=float(f.score[row]),
                    channels=found,
                    channel_scores=scores,
                    rank_before_rerank=int(f.features["rank_before_rerank"][row]),
                )
            )
        return recs
