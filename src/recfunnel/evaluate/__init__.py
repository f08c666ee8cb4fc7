"""Offline evaluation on the shared protocol: metrics, full ranking, baselines, reports."""

from recfunnel.evaluate.baselines import MODELS as BASELINE_MODELS
from recfunnel.evaluate.baselines import run_implicit
from recfunnel.evaluate.metrics import (
    coverage,
    hit_rate,
    ild,
    mrr,
    ndcg,
    novelty,
    summarize,
    target_ranks,
)
from recfunnel.evaluate.ranking import candidate_mask, full_ranking_topk
from recfunnel.evaluate.report import format_table, table_text, write_report

__all__ = [
    "BASELINE_MODELS",
    "candidate_mask",
    "coverage",
    "format_table",
    "full_ranking_topk",
    "hit_rate",
    "ild",
    "mrr",
    "ndcg",
    "novelty",
    "run_implicit",
    "summarize",
    "table_text",
    "target_ranks",
    "write_report",
]
