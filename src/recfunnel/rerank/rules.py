"""Re-ranking: filters that remove candidates and selectors that order and cut the list.

Each rule records what it did in the `Trace` so an explanation can say "moved down by
category scattering" or "removed: blacklisted".
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field

from recfunnel.candidates import Candidates
from recfunnel.query import QueryBatch


class RerankConfig(BaseModel):
    """Re-rank: filters and selectors applied to the ranked list before the top n."""

    model_config = ConfigDict(extra="forbid")
    preset: str = Field("default", description="'none' keeps the ranker's order; 'default' applies the rules below")
    filter_seen: bool = Field(True, description="drop items the user already consumed")
    blacklist: list[str] = Field([], description="raw item ids never to recommend")
    scatter_max_run: int = Field(
        2, ge=0, description="at most this many items in a row sharing a category (0 = off)"
    )
    window: int = Field(50, ge=1, description="ranked candidates the re-ranker may draw from")


def filter_items(cands: Candidates, banned: sp.csr_matrix) -> tuple[Candidates, int]:
    """Drop rows whose (query, item) is set in `banned` (queries x items)."""
    if banned.nnz == 0 or len(cands) == 0:
        return cands, 0
    hit = np.asarray(banned[cands.query, cands.item]).ravel() > 0
    return cands.take(np.flatnonzero(~hit)), int(hit.sum())


def filter_item_set(cands: Candidates, items: np.ndarray) -> tuple[Candidates, int]:
    if len(items) == 0 or len(cands) == 0:
        return cands, 0
    hit = np.isin(cands.item, items)
    return cands.take(np.flatnonzero(~hit)), int(hit.sum())


def scatter_categories(
    cands: Candidates, item_categories: sp.csr_matrix, max_run: int, n: int
) -> tuple[Candidates, int]:
    """Greedy re-order so that no more than `max_run` consecutive items share a category.

    Walk the ranked list; take the best remaining item that does not extend any category's
    run past `max_run`; if every remaining item would, take the best one anyway (never
    return fewer items because of diversity). Returns the first `n` per query and how many
    items ended at a different position than the ranker gave them; each row's position
    before scattering is kept in the `rank_before_rerank` feature (for explanations).
    """
    cands.features["rank_before_rerank"] = cands.rank_in_query()
    if max_run <= 0 or len(cands) == 0:
        return cands.head(n), 0
    ic = item_categories.tocsr()
    ptr = cands.indptr
    chosen_rows: list[np.ndarray] = []
    moved = 0
    for q in range(cands.n_queries):
        a, b = int(ptr[q]), int(ptr[q + 1])
        if a == b:
            continue
        items = cands.item[a:b]
        cats = [set(ic.indices[ic.indptr[i] : ic.indptr[i + 1]].tolist()) for i in items]
        remaining = list(range(b - a))
        run: dict[int, int] = {}
        picked: list[int] = []
        while remaining and len(picked) < n:
            pick_at = 0
            for j, idx in enumerate(remaining):
                if all(run.get(c, 0) < max_run for c in cats[idx]):
                    pick_at = j
                    break
            idx = remaining.pop(pick_at)
            run = {c: run.get(c, 0) + 1 for c in cats[idx]}
            if idx != len(picked):
                moved += 1
            picked.append(idx)
        chosen_rows.append(a + np.asarray(picked, dtype=np.int64))
    rows = np.concatenate(chosen_rows) if chosen_rows else np.empty(0, dtype=np.int64)
    return cands.take(rows), moved


def rerank(
    cands: Candidates,
    batch: QueryBatch,
    config: RerankConfig,
    n: int,
    item_categories: sp.csr_matrix,
    blacklist_items: np.ndarray,
) -> tuple[Candidates, dict[str, int]]:
    """Apply the configured rules to ranked candidates; keep the top `n` per query."""
    log: dict[str, int] = {}
    if config.preset == "none":
        cands.features["rank_before_rerank"] = cands.rank_in_query()
        return cands.head(n), log
    cands = cands.head(config.window)  # recall already skips the history; this is the guard
    if config.filter_seen:
        cands, log["seen"] = filter_items(cands, batch.seen)
    cands, log["blacklist"] = filter_item_set(cands, blacklist_items)
    cands, log["scatter_moved"] = scatter_categories(cands, item_categories, config.scatter_max_run, n)
    return cands, log
