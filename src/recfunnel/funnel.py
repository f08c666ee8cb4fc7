"""The funnel: recall channels -> merge -> rank -> re-rank, from one config.

The same object answers offline evaluation (a batch of thousands of queries) and online
requests (a batch of one), so what is measured is what is served.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from recfunnel.candidates import Candidates
from recfunnel.config import FunnelConfig
from recfunnel.data.dataset import Dataset
from recfunnel.data.split import hold_out_steps
from recfunnel.features.candidates import CandidateFeatures
from recfunnel.features.pointintime import PointInTimeFeatures
from recfunnel.persist import load_state, read_json, save_state, write_json
from recfunnel.query import Query, QueryBatch, history_queries, step_queries
from recfunnel.rank.base import Ranker
from recfunnel.rank.lightgbm_ranker import LightGBMRanker
from recfunnel.rank.neural import NEURAL_RANKERS
from recfunnel.rank.prerank import EXTRA_FEATURES, PreRanker
from recfunnel.recall.base import Source
from recfunnel.recall.content import ContentSource
from recfunnel.recall.cooccurrence import CooccurrenceSource
from recfunnel.recall.eges import EGESSource
from recfunnel.recall.graph_embedding import DeepWalkSource, Node2VecSource
from recfunnel.recall.item2vec import Item2VecSource
from recfunnel.recall.mind import MINDSource
from recfunnel.recall.sequential import GRU4RecSource, SASRecSource
from recfunnel.recall.twotower import DSSMSource, YouTubeDNNSource
from recfunnel.recall.itemcf import ItemCFSource
from recfunnel.recall.merge import channel_feature_names, merge
from recfunnel.recall.popular import CategoryHotSource, HotSource, PopularSource
from recfunnel.recall.usercf import UserCFSource
from recfunnel.rerank.catalog import Catalog
from recfunnel.rerank.reranker import Reranker

SOURCES: dict[str, type[Source]] = {
    s.name: s
    for s in (
        PopularSource, HotSource, CategoryHotSource, ItemCFSource, UserCFSource, CooccurrenceSource,
        Item2VecSource, DeepWalkSource, Node2VecSource, SASRecSource, GRU4RecSource, EGESSource,
        ContentSource, DSSMSource, YouTubeDNNSource, MINDSource,
    )
}
RANKERS: dict[str, type[Ranker]] = {LightGBMRanker.name: LightGBMRanker, **NEURAL_RANKERS}
BATCH = 2048  # queries per funnel pass offline: bounds candidate memory


@dataclass
class Trace:
    """Per stage: candidates out and milliseconds; per rule: what it did."""

    counts: dict[str, int] = field(default_factory=dict)
    ms: dict[str, float] = field(default_factory=dict)
    rules: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # stage -> why (online budgets only)

    def timed(self, stage: str, fn: Callable[[], Candidates]) -> Candidates:
        t = time.perf_counter()
        out = fn()
        self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - t) * 1000
        self.counts[stage] = self.counts.get(stage, 0) + len(out)
        return out


@dataclass
class Budget:
    """Online limits (ms since the request started). Serving passes one; offline passes none.

    With a budget a recall channel that raises, or is reached after `recall_ms`, is skipped;
    ranking is skipped (merge order kept) when it fails or recall ran past `rank_after_ms`;
    a failing re-rank falls back to the ranked head. Every skip is named in `Trace.skipped`,
    and the answer still comes. Without one, nothing is caught: offline errors stay loud.
    """

    recall_ms: float = 30.0
    rank_after_ms: float = 40.0
    started: float = field(default_factory=time.perf_counter)

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


def _reason(e: BaseException) -> str:
    return f"error: {type(e).__name__}: {e}"[:200]


@dataclass
class FunnelOutput:
    final: Candidates
    trace: Trace
    channels: dict[str, Candidates] = field(default_factory=dict)  # kept when asked
    pool: Candidates | None = None
    ranked: Candidates | None = None


class Funnel:
    def __init__(self, config: FunnelConfig | None = None) -> None:
        self.config = config or FunnelConfig()
        self.sources: dict[str, Source] = {}
        self.features: CandidateFeatures | None = None
        self.pit: PointInTimeFeatures | None = None  # neural rankers' sparse/sequence inputs
        self.ranker: Ranker | None = None
        self.preranker: PreRanker | None = None  # cuts the pool to the ranker's input
        self.fit_seconds: dict[str, float] = {}
        self.dataset_name = ""
        self.ranker_report: dict[str, object] = {}
        self._reranker: Reranker | None = None

    # ---- training -------------------------------------------------------------------
    def fit(self, ds: Dataset, progress: bool = True) -> "Funnel":
        """Train the ranker on held-out last steps, then refit recall on all of `ds`.

        Recall for the training rows is fitted on `ds` minus each user's last
        `rank.train_steps` interactions, so no training target was ever seen by a channel.
        """
        self.dataset_name = ds.name
        self.n_items = ds.n_items
        self.item_categories = ds.item_categories
        self.item_ids = ds.item_ids
        rr = self.config.rerank
        self.catalog = Catalog.from_dataset(ds, group_column=rr.group.column, audience_pairs=rr.audience.pairs)
        self._reranker = None
        self.pit = None
        self.preranker = None
        if self.config.rank.model != "none":
            self._fit_ranker(ds, progress)
        self._fit_recall(ds, progress, prefix="fit")
        t = time.perf_counter()
        self.features = CandidateFeatures(self.config.rank.features).fit(ds)
        if self.pit is not None:
            self.pit = PointInTimeFeatures(self.config.rank.point_in_time).fit(ds)
        self.fit_seconds["fit:features"] = time.perf_counter() - t
        if self.config.rerank.diversity.exposure_penalty > 0:
            t = time.perf_counter()
            self.catalog.set_exposure(self._expected_exposure(ds))
            self.fit_seconds["fit:exposure"] = time.perf_counter() - t
        return self

    def _expected_exposure(self, ds: Dataset) -> np.ndarray:
        """How often each item reaches a top n before re-ranking, over a sample of fit users.

        The re-ranker's exposure penalty reads it: in near ties, items the ranker would show
        to nearly everyone give way to items it shows to few (coverage). Fit data only; each
        user is asked at the time of their last event, the context they were last active in.
        """
        users = np.flatnonzero(np.diff(ds.user_indptr) > 0)
        cap = self.config.rerank.diversity.exposure_users
        if len(users) > cap:
            users = np.sort(np.random.default_rng(self.config.seed).choice(users, cap, replace=False))
        last_ts = ds.ts[ds.user_indptr[users + 1] - 1]
        queries = history_queries(ds, users, last_ts, n=self.config.n)
        counts = np.zeros(ds.n_items, dtype=np.float64)
        for start in range(0, len(queries), BATCH):
            batch = QueryBatch(queries[start : start + BATCH], ds.n_items)
            ranked = self._recall(batch, Trace(), keep=None)
            if self.ranker is not None and len(ranked):
                ranked = self._rank(batch, ranked, Trace())
            top = ranked.head(self.config.n).item
            np.add.at(counts, top[top < ds.n_items], 1.0)
        return counts

    def _fit_recall(self, ds: Dataset, progress: bool, prefix: str) -> None:
        self.sources = {}
        enabled = self.config.recall.enabled()
        for name, cfg in tqdm(enabled.items(), desc=f"{prefix}: recall channels", disable=not progress):
            t = time.perf_counter()
            self.sources[name] = SOURCES[name](cfg).fit(ds)
            self.fit_seconds[f"{prefix}:recall:{name}"] = time.perf_counter() - t

    def _fit_ranker(self, ds: Dataset, progress: bool) -> None:
        t0 = time.perf_counter()
        val = hold_out_steps(ds, self.config.rank.train_steps, self.config.rank.train_max_share)
        self._fit_recall(val.fit, progress, prefix="ranker-data")
        self.features = CandidateFeatures(self.config.rank.features).fit(val.fit)
        ranker_cls = RANKERS[self.config.rank.model]
        self.pit = PointInTimeFeatures(self.config.rank.point_in_time).fit(val.fit) if ranker_cls.uses_specs else None
        rng = np.random.default_rng(self.config.seed)
        chosen = np.arange(len(val.users))
        if len(chosen) > self.config.rank.max_train_queries:
            chosen = np.sort(rng.choice(chosen, self.config.rank.max_train_queries, replace=False))
        queries = step_queries(ds, val.users[chosen], val.positions[chosen])
        targets = val.items[chosen]
        # the second label: a "like" where the data has ratings (MovieLens: rating >= 4)
        values = ds.value[val.positions[chosen]]
        has_ratings = bool(len(ds.value)) and float(ds.value.max()) > 1.0
        liked = values >= self.config.rank.point_in_time.like_threshold if has_ratings else np.ones(len(values), bool)
        parts, labels = [], []
        for start in tqdm(range(0, len(queries), BATCH), desc="ranker training rows", disable=not progress):
            batch = QueryBatch(queries[start : start + BATCH], ds.n_items)
            pool = self._recall(batch, Trace(), keep=None)
            target = targets[start : start + BATCH]
            is_pos = pool.item == target[pool.query]
            rows = _sample_rows(pool, is_pos, self.config.rank.negatives_per_query, rng)
            sample = pool.take(rows)
            if self.config.rank.prerank.enabled:
                sample.features["merge_score"] = sample.score.copy()  # NaN on random negatives
            n_random = self.config.rank.random_negatives_per_query
            if n_random > 0 and len(sample):
                sample = _add_random_negatives(sample, n_random, ds.n_items, rng)
            self.features.hydrate(batch, sample)
            if self.pit is not None:
                self.pit.hydrate(batch, sample)
            sample.query = sample.query + start  # global query ids keep groups apart
            positive = sample.item == target[sample.query - start]
            sample.features["label"] = positive.astype(np.float32)
            sample.features["label_like"] = (positive & liked[start : start + BATCH][sample.query - start]).astype(
                np.float32
            )
            parts.append(sample)
        train = Candidates.concat(parts, n_queries=len(queries))
        y = train.features.pop("label", np.empty(0, dtype=np.float32))
        like = train.features.pop("label_like", np.empty(0, dtype=np.float32))
        self.fit_seconds["ranker-data:rows"] = time.perf_counter() - t0
        if self.config.rank.prerank.enabled:
            t = time.perf_counter()
            in_pool = ~np.isnan(train.features["merge_score"])  # random negatives never reach it
            self.preranker = PreRanker(self.config.rank.prerank).fit(
                train.take(np.flatnonzero(in_pool)), y[in_pool], self.prerank_feature_names, progress=progress
            )
            train.features.pop("merge_score")
            self.fit_seconds["fit:prerank"] = time.perf_counter() - t
        t = time.perf_counter()
        self.ranker = ranker_cls(getattr(self.config.rank, self.config.rank.model))
        if ranker_cls.uses_specs:
            assert self.pit is not None
            specs = self.pit.specs().with_dense(self.feature_names)
            self.ranker.fit(train, y, self.feature_names, progress=progress, specs=specs, like=like)
        else:
            self.ranker.fit(train, y, self.feature_names, progress=progress)
        self.fit_seconds["fit:rank"] = time.perf_counter() - t
        self.ranker_report = {
            "train_rows": int(len(y)),
            "train_queries": int(len(np.unique(train.query))),
            "queries_with_target_in_pool": float(len(np.unique(train.query)) / max(len(queries), 1)),
            **{f"model:{k}": v for k, v in getattr(self.ranker, "report", {}).items()},
        }

    @property
    def feature_names(self) -> list[str]:
        assert self.features is not None
        return channel_feature_names(list(self.sources)) + ["n_channels"] + self.features.names

    @property
    def prerank_feature_names(self) -> list[str]:
        return channel_feature_names(list(self.sources)) + EXTRA_FEATURES

    # ---- serving --------------------------------------------------------------------
    def _recall(
        self, batch: QueryBatch, trace: Trace, keep: dict | None, budget: Budget | None = None
    ) -> Candidates:
        results = {}
        for name, src in self.sources.items():
            stage = f"recall:{name}"
            if budget is None:
                results[name] = trace.timed(stage, lambda s=src: s.retrieve(batch))
                continue
            if results and budget.elapsed_ms() > budget.recall_ms:
                trace.skipped[stage] = f"budget: recall past {budget.recall_ms:g} ms"
                continue
            try:
                results[name] = trace.timed(stage, lambda s=src: s.retrieve(batch))
            except Exception as e:  # noqa: BLE001 - a failing channel must not fail the answer
                trace.skipped[stage] = _reason(e)
        if keep is not None:
            keep.update(results)
        quotas = {n: s.config.quota for n, s in self.sources.items()}
        # a skipped channel still gets its (empty) columns: the ranker expects every one
        for name in self.sources:
            results.setdefault(name, Candidates.empty(len(batch)))
        results = {n: results[n] for n in self.sources}
        return trace.timed(
            "merge", lambda: merge(results, quotas, self.config.merge.pool_size, len(batch))
        )

    def run(self, batch: QueryBatch, keep_stages: bool = False, budget: Budget | None = None) -> FunnelOutput:
        trace = Trace()
        channels: dict[str, Candidates] = {}
        pool = self._recall(batch, trace, channels if keep_stages else None, budget)
        ranked = pool
        if self.ranker is not None and len(pool):
            assert self.features is not None
            if budget is None:
                ranked = self._rank(batch, pool, trace)
            elif budget.elapsed_ms() > budget.rank_after_ms:
                trace.skipped["rank"] = f"budget: recall ended past {budget.rank_after_ms:g} ms"
            else:
                try:
                    ranked = self._rank(batch, pool, trace)
                except Exception as e:  # noqa: BLE001 - keep the merge order instead
                    trace.skipped["rank"] = _reason(e)
        t = time.perf_counter()
        n = max(q.n for q in batch.queries) if len(batch) else self.config.n
        if budget is None:
            final, log = self.reranker(ranked, batch, n)
        else:
            try:
                final, log = self.reranker(ranked, batch, n)
            except Exception as e:  # noqa: BLE001 - the ranked head is still an answer
                trace.skipped["rerank"] = _reason(e)
                final, log = ranked.head(n), {}
                final.features["rank_before_rerank"] = final.rank_in_query()
        trace.ms["rerank"] = (time.perf_counter() - t) * 1000
        trace.counts["rerank"] = len(final)
        trace.rules.update(log)
        return FunnelOutput(
            final=final,
            trace=trace,
            channels=channels,
            pool=pool if keep_stages else None,
            ranked=ranked if keep_stages else None,
        )

    def _rank(self, batch: QueryBatch, pool: Candidates, trace: Trace) -> Candidates:
        assert self.features is not None and self.ranker is not None
        if self.preranker is not None and self.config.rank.prerank.enabled:
            pool = trace.timed("prerank", lambda: self._prerank(pool))
        trace.timed("hydrate", lambda: (self.features.hydrate(batch, pool), pool)[1])
        if self.pit is not None:
            trace.timed("hydrate:pit", lambda: (self.pit.hydrate(batch, pool), pool)[1])
        return trace.timed("rank", lambda: pool.reorder(self.ranker.score(pool)))

    def _prerank(self, pool: Candidates) -> Candidates:
        """The pool cut to `rank.prerank.keep` per query by the pre-ranker (cheap columns only)."""
        assert self.features is not None and self.preranker is not None
        pool.features["merge_score"] = pool.score.copy()
        pool.features["pop_all"] = self.features.pop_all[pool.item]
        return self.preranker.cut(pool, self.config.rank.prerank.keep)

    def recommend(self, query: Query) -> FunnelOutput:
        return self.run(QueryBatch([query], self.n_items))

    @property
    def reranker(self) -> Reranker:
        """The re-rank stage (built on first use; follows `config.rerank` if it is replaced)."""
        if self._reranker is None:
            self._reranker = Reranker(
                self.config.rerank, self.catalog, self.item_ids, list(self.sources), seed=self.config.seed
            )
        self._reranker.config = self.config.rerank
        return self._reranker

    def update_blacklist(self, add: list[str] = (), remove: list[str] = ()) -> int:  # type: ignore[assignment]
        """Block/unblock raw item ids at runtime (the admin endpoint calls this)."""
        return self.reranker.update_blacklist(add, remove)

    # ---- persistence ----------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "funnel.toml").write_text(self.config.to_toml())
        for name, src in self.sources.items():
            src.save(d / "recall" / name)
        assert self.features is not None
        save_state(d / "features", self.features.state())
        if self.pit is not None:
            save_state(d / "pit_features", self.pit.state())
        if self.ranker is not None:
            self.ranker.save(d / "rank")
        if self.preranker is not None:
            self.preranker.save(d / "prerank")
        self.item_ids.save(d / "item_ids.json")
        self.catalog.save(d / "catalog")
        if self._reranker is not None:
            self._reranker.save_state(d / "rerank")
        write_json(
            d / "funnel.json",
            {
                "dataset": self.dataset_name,
                "n_items": self.n_items,
                "sources": list(self.sources),
                "ranker": self.ranker.name if self.ranker else None,
                "fit_seconds": self.fit_seconds,
                "ranker_report": self.ranker_report,
            },
        )

    @classmethod
    def load(cls, directory: str | Path) -> "Funnel":
        from recfunnel.data.idmap import IdMap

        d = Path(directory)
        meta = read_json(d / "funnel.json")
        f = cls(FunnelConfig.from_toml(d / "funnel.toml"))
        f.dataset_name = meta["dataset"]
        f.n_items = int(meta["n_items"])
        f.fit_seconds = meta["fit_seconds"]
        f.ranker_report = meta.get("ranker_report", {})
        f.sources = {name: SOURCES[name].load(d / "recall" / name) for name in meta["sources"]}
        f.features = CandidateFeatures(f.config.rank.features)
        f.features.set_state(load_state(d / "features"))
        if (d / "pit_features").is_dir():
            f.pit = PointInTimeFeatures(f.config.rank.point_in_time)
            f.pit.set_state(load_state(d / "pit_features"))
        if meta["ranker"]:
            f.ranker = RANKERS[meta["ranker"]].load(d / "rank")
        if (d / "prerank").is_dir():
            f.preranker = PreRanker.load(d / "prerank")
        f.item_ids = IdMap.load(d / "item_ids.json")
        f.catalog = Catalog.load(d / "catalog")
        f.item_categories = f.catalog.categories
        f.reranker.load_state(d / "rerank")
        return f


def _sample_rows(pool: Candidates, is_pos: np.ndarray, n_neg: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of queries whose target is in the pool: the positive plus up to n_neg negatives."""
    has_pos = np.zeros(pool.n_queries, dtype=bool)
    has_pos[pool.query[is_pos]] = True
    eligible = has_pos[pool.query]
    key = rng.random(len(pool))
    key[is_pos] = -1.0  # positives first, then a random subset of negatives
    order = np.lexsort((key, pool.query))
    ranks = np.empty(len(pool), dtype=np.int64)
    ptr = pool.indptr
    ranks[order] = np.arange(len(pool)) - np.repeat(ptr[:-1], np.diff(ptr))
    keep = eligible & (ranks <= n_neg)
    return np.flatnonzero(keep)  # original (query, pool) order


def _add_random_negatives(sample: Candidates, n: int, n_items: int, rng: np.random.Generator) -> Candidates:
    """`n` random catalog items per query of `sample` that recall did not find (easy
    negatives next to the pool's hard ones): no channel features, below every pool row."""
    queries = np.unique(sample.query)
    q = np.repeat(queries, n).astype(np.int32)
    items = rng.integers(0, n_items, len(q)).astype(np.int32)
    in_pool = set(zip(sample.query.tolist(), sample.item.tolist()))
    keep = np.array([(a, b) not in in_pool for a, b in zip(q.tolist(), items.tolist())], dtype=bool)
    q, items = q[keep], items[keep]
    feats = {}
    for k, v in sample.features.items():
        fill = 0 if k == "channels" or k == "n_channels" else np.nan
        feats[k] = np.full((len(q), *v.shape[1:]), fill, dtype=v.dtype)
    low = np.full(len(q), float(sample.score.min()) - 1.0, dtype=np.float32)
    extra = Candidates(q, items, low, sample.n_queries, feats)
    return Candidates.concat([sample, extra], n_queries=sample.n_queries)
