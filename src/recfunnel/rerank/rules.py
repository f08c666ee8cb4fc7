"""Back-compatible entry points of the re-rank stage (the first version lived here).

New code uses `Reranker` (reranker.py) with a `Catalog`; these wrappers keep the original
function signatures working on a bare item x category matrix.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recfunnel.candidates import Candidates
from recfunnel.query import QueryBatch
from recfunnel.rerank import selectors as sel
from recfunnel.rerank.catalog import Catalog
from recfunnel.rerank.config import RerankConfig
from recfunnel.rerank.filters import filter_item_set, filter_items
from recfunnel.rerank.reranker import Reranker

__all__ = ["RerankConfig", "filter_item_set", "filter_items", "rerank", "scatter_categories"]


def scatter_categories(
    cands: Candidates, item_categories: sp.csr_matrix, max_run: int, n: int
) -> tuple[Candidates, int]:
    """Category scattering alone: the first `n` per query and how many rows moved.

    Each row's position before scattering is kept in `rank_before_rerank`.
    """
    cands.features["rank_before_rerank"] = cands.rank_in_query()
    order = sel.to_order(cands)
    new = sel.scatter(order, cands.item, sel.CategorySets(item_categories), max_run, n)
    top = new[:, :n]
    moved = int(((top != order[:, :n]) & (top >= 0)).sum())
    return cands.take(top[top >= 0]), moved


def rerank(
    cands: Candidates,
    batch: QueryBatch,
    config: RerankConfig,
    n: int,
    item_categories: sp.csr_matrix,
    blacklist_items: np.ndarray,
) -> tuple[Candidates, dict[str, int]]:
    """Apply the configured rules to ranked candidates; keep the top `n` per query."""
    r = Reranker(config, Catalog(categories=sp.csr_matrix(item_categories)))
    r.block_indices(blacklist_items)
    return r(cands, batch, n)
