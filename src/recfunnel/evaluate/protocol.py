"""Evaluate a whole funnel on PROTOCOL.md: leave-last-one-out, full ranking, per stage.

The funnel is fitted on the fit data, then asked for every test user through the same
`Funnel.run` that serves online, with the request time set to the held-out event's time.
Per stage we record where the target is: in each channel's list, in the merged pool,
among the ranked candidates the re-ranker sees, and in the final list.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from recfunnel.config import FunnelConfig
from recfunnel.data.dataset import Dataset
from recfunnel.data.split import Split, leave_last_out
from recfunnel.evaluate.metrics import hit_rate, summarize, target_ranks
from recfunnel.funnel import BATCH, Funnel
from recfunnel.query import QueryBatch, history_queries

CURVE_KS = (1, 5, 10, 20, 50, 100, 200, 300, 500, 1000)


@dataclass
class Evaluation:
    result: dict[str, Any]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    funnel_shares: list[tuple[str, float]] = field(default_factory=list)
    funnel: Funnel | None = None


def evaluate(
    ds: Dataset, config: FunnelConfig, progress: bool = True, split: Split | None = None
) -> Evaluation:
    split = split or leave_last_out(ds)
    funnel = Funnel(config).fit(split.fit, progress=progress)
    return evaluate_fitted(funnel, split, progress=progress)


def evaluate_fitted(funnel: Funnel, split: Split, progress: bool = True) -> Evaluation:
    fit = split.fit
    cfg = funnel.config
    queries = history_queries(fit, split.users, split.ts, n=cfg.n)
    names = list(funnel.sources)
    widths = {n: funnel.sources[n].config.quota for n in names}
    ch_ranks = {n: [] for n in names}
    pool_ranks, ranked_ranks, finals = [], [], []
    stage_ms: dict[str, float] = {}
    pool_sizes = []
    t0 = time.perf_counter()
    for start in tqdm(range(0, len(queries), BATCH), desc="evaluate", disable=not progress):
        batch = QueryBatch(queries[start : start + BATCH], fit.n_items)
        target = split.items[start : start + BATCH]
        out = funnel.run(batch, keep_stages=True)
        for n in names:
            ch_ranks[n].append(target_ranks(out.channels[n].padded(widths[n]), target))
        pool_ranks.append(target_ranks(out.pool.padded(cfg.merge.pool_size), target))
        ranked_ranks.append(target_ranks(out.ranked.padded(cfg.merge.pool_size), target))
        pool_sizes.append(np.bincount(out.pool.query, minlength=len(batch)))
        finals.append(out.final.padded(cfg.n))
        for stage, ms in out.trace.ms.items():
            stage_ms[stage] = stage_ms.get(stage, 0.0) + ms
    total_s = time.perf_counter() - t0
    final = np.concatenate(finals)
    metrics = summarize(final, split.items, fit.item_categories, fit.item_user_count, fit.n_users, fit.n_items)
    ranks = {n: np.concatenate(r) for n, r in ch_ranks.items()}
    pool_r = np.concatenate(pool_ranks)
    ranked_r = np.concatenate(ranked_ranks)
    any_channel = np.zeros(len(split), dtype=bool)
    for r in ranks.values():
        any_channel |= r >= 0
    window = cfg.rerank.window if cfg.rerank.preset != "none" else cfg.n
    final_r = target_ranks(final, split.items)
    result: dict[str, Any] = {
        "dataset": fit.name,
        "users": int(len(split)),
        "final": {k: metrics[k] for k in ("HR@10", "NDCG@10", "MRR@10", "coverage@10", "ILD@10", "novelty@10")},
        "pool": {
            "size": cfg.merge.pool_size,
            "mean_size": float(np.concatenate(pool_sizes).mean()),
            "HR": hit_rate(pool_r, cfg.merge.pool_size),
        },
        "channels": {n: {"quota": widths[n], "HR": hit_rate(ranks[n], widths[n])} for n in names},
        "ranked": {f"HR@{k}": hit_rate(ranked_r, k) for k in (10, 50, 100, 200) if k <= cfg.merge.pool_size},
        "timings": {
            **{k: round(v, 3) for k, v in funnel.fit_seconds.items()},
            **{f"serve:{k}_ms_per_query": round(v / max(len(split), 1), 4) for k, v in stage_ms.items()},
            "evaluate_total": round(total_s, 3),
        },
        "config": {"rank": cfg.rank.model, "rerank": cfg.rerank.preset},
        "ranker": funnel.ranker_report,
    }
    curves = {n: [(k, hit_rate(ranks[n], k)) for k in CURVE_KS if k <= widths[n]] for n in names}
    curves["merged pool"] = [(k, hit_rate(pool_r, k)) for k in CURVE_KS if k <= cfg.merge.pool_size]
    curves["ranked"] = [(k, hit_rate(ranked_r, k)) for k in CURVE_KS if k <= cfg.merge.pool_size]
    shares = [
        ("any channel", float(any_channel.mean())),
        (f"merged pool ({cfg.merge.pool_size})", hit_rate(pool_r, cfg.merge.pool_size)),
        (f"ranked top {window}", hit_rate(ranked_r, window)),
        (f"final top {cfg.n}", hit_rate(final_r, cfg.n)),
    ]
    return Evaluation(result=result, curves=curves, funnel_shares=shares, funnel=funnel)
