"""Re-rank rules on hand-made lists, edge cases included."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recfunnel.candidates import Candidates
from recfunnel.query import Query, QueryBatch
from recfunnel.rerank.rules import RerankConfig, filter_item_set, rerank, scatter_categories


def _cats(rows):
    """items x categories matrix from a list of category lists."""
    r = [i for i, cs in enumerate(rows) for _ in cs]
    c = [x for cs in rows for x in cs]
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(rows), 5))


def _list(items, q=0, n_queries=1):
    items = np.array(items, np.int32)
    return Candidates(np.full(len(items), q, np.int32), items, -np.arange(len(items), dtype=np.float32), n_queries)


def _max_run(items, cats):
    ic = cats.tocsr()
    worst, run = 0, {}
    for i in items:
        cs = set(ic[i].indices.tolist())
        run = {c: run.get(c, 0) + 1 for c in cs}
        worst = max([worst, *run.values()])
    return worst


def test_scatter_limits_runs_and_keeps_best_first():
    cats = _cats([[0], [0], [0], [1], [1], [2]])
    out, moved = scatter_categories(_list([0, 1, 2, 3, 4, 5]), cats, max_run=2, n=6)
    assert out.item.tolist() == [0, 1, 3, 2, 4, 5]
    assert _max_run(out.item, cats) <= 2 and moved == 2
    assert out.features["rank_before_rerank"].tolist() == [0, 1, 3, 2, 4, 5]


def test_scatter_all_one_category_still_fills_the_list():
    cats = _cats([[0]] * 4)
    out, _ = scatter_categories(_list([0, 1, 2, 3]), cats, max_run=1, n=3)
    assert out.item.tolist() == [0, 1, 2]


def test_scatter_fewer_candidates_than_n_and_empty_input():
    cats = _cats([[0], [1]])
    out, _ = scatter_categories(_list([1, 0]), cats, max_run=1, n=10)
    assert out.item.tolist() == [1, 0]
    empty, moved = scatter_categories(Candidates.empty(2), cats, max_run=1, n=10)
    assert len(empty) == 0 and moved == 0


def test_uncategorised_items_never_block():
    cats = _cats([[], [], [], [0]])
    out, _ = scatter_categories(_list([0, 1, 2, 3]), cats, max_run=1, n=4)
    assert out.item.tolist() == [0, 1, 2, 3]


def test_blacklist_and_seen_filters():
    cats = _cats([[0], [1], [2], [3], [4]])
    batch = QueryBatch([Query(0, [1], [0])], n_items=5)
    cands = _list([0, 1, 2, 3, 4])
    out, log = rerank(cands, batch, RerankConfig(scatter_max_run=0), 10, cats, np.array([3]))
    assert out.item.tolist() == [0, 2, 4]
    assert log["seen"] == 1 and log["blacklist"] == 1
    kept, dropped = filter_item_set(cands, np.array([], dtype=np.int64))
    assert len(kept) == 5 and dropped == 0


def test_preset_none_keeps_ranker_order():
    cats = _cats([[0]] * 5)
    batch = QueryBatch([Query(0, [1], [0])], n_items=5)
    out, log = rerank(_list([0, 1, 2, 3, 4]), batch, RerankConfig(preset="none"), 3, cats, np.array([0]))
    assert out.item.tolist() == [0, 1, 2] and log == {}
