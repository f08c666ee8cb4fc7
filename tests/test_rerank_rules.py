"""Every filter and selector of the re-rank stage on hand-made lists, edge cases included."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recfunnel.candidates import Candidates
from recfunnel.data.idmap import IdMap
from recfunnel.query import Query, QueryBatch
from recfunnel.rerank import filters as flt
from recfunnel.rerank import selectors as sel
from recfunnel.rerank.catalog import FOREVER, NEVER, Audience, Catalog
from recfunnel.rerank.config import RerankConfig
from recfunnel.rerank.notes import BIT, explain, rules_of
from recfunnel.rerank.reranker import Reranker
from recfunnel.rerank.served_log import InMemoryServedLog, ServedLog

T = 1_700_000_000


def cats(rows, n_cat=6):
    r = [i for i, cs in enumerate(rows) for _ in cs]
    c = [x for cs in rows for x in cs]
    return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(len(rows), n_cat))


def lists(*per_query):
    """Candidates of several queries, each best first (scores descending)."""
    q = np.concatenate([np.full(len(p), k, np.int32) for k, p in enumerate(per_query)]) if per_query else np.empty(0, np.int32)
    items = np.concatenate([np.asarray(p, np.int32) for p in per_query]) if per_query else np.empty(0, np.int32)
    score = np.concatenate([10.0 - np.arange(len(p), dtype=np.float32) for p in per_query]) if per_query else np.empty(0, np.float32)
    return Candidates(q, items, score.astype(np.float32), len(per_query))


def batch(*histories, n_items=10, time=T, attributes=None):
    qs = [Query(u, h, np.arange(len(h)), time=time, attributes=(attributes or {})) for u, h in enumerate(histories)]
    return QueryBatch(qs, n_items)


def plain(**kw) -> RerankConfig:
    """Only what a test names: no diversity, no scattering."""
    c = RerankConfig(scatter_max_run=0, **kw)
    c.diversity.method = "off"
    return c


def per_query(c: Candidates) -> list[list[int]]:
    ptr = c.indptr
    return [c.item[ptr[q] : ptr[q + 1]].tolist() for q in range(c.n_queries)]


# ---- filters ------------------------------------------------------------------------
def test_served_log_filters_recent_items_only():
    log = InMemoryServedLog()
    assert isinstance(log, ServedLog)
    log.record(0, np.array([1, 2]), T - 100)
    log.record(0, np.array([3]), T - 10_000)
    out, n = flt.filter_served(lists([1, 2, 3, 4], [1, 2]), log, np.array([0, -1]), np.array([T - 500, T - 500]))
    assert per_query(out) == [[3, 4], [1, 2]] and n == 2  # old serve and unknown user pass
    empty, n = flt.filter_served(Candidates.empty(1), log, np.array([0]), np.array([0]))
    assert len(empty) == 0 and n == 0


def test_served_filter_through_the_reranker_pages_do_not_repeat():
    cfg = plain()
    cfg.served.enabled = True
    rr = Reranker(cfg, Catalog(cats([[0]] * 10)))
    b = batch([], time=T)
    first, _ = rr(lists(list(range(10))), b, 3)
    second, log = rr(lists(list(range(10))), b, 3)
    assert first.item.tolist() == [0, 1, 2] and second.item.tolist() == [3, 4, 5] and log["served"] == 3
    cfg.served.enabled = False
    assert rr(lists(list(range(10))), b, 3)[0].item.tolist() == [0, 1, 2]


def test_blacklist_config_file_and_runtime_updates(tmp_path):
    ids = IdMap([f"i{k}" for k in range(6)])
    f = tmp_path / "block.txt"
    f.write_text("# blocked\ni4\n")
    cfg = plain(blacklist=["i1"], blacklist_file=str(f))
    rr = Reranker(cfg, Catalog(cats([[0]] * 6)), item_ids=ids)
    b = batch([], n_items=6)
    assert rr(lists(list(range(6))), b, 6)[0].item.tolist() == [0, 2, 3, 5]
    assert rr.update_blacklist(add=["i0", "nope"]) == 1
    assert rr(lists(list(range(6))), b, 6)[0].item.tolist() == [2, 3, 5]
    rr.update_blacklist(remove=["i1", "i0"])
    out, log = rr(lists(list(range(6))), b, 6)
    assert out.item.tolist() == [0, 1, 2, 3, 5] and log["blacklist"] == 1
    assert rr.blocked_items().tolist() == [4]


def test_availability_window():
    cat = Catalog(cats([[0]] * 4))
    cat.available_from = np.array([NEVER, T + 10, NEVER, T - 10], dtype=np.int64)
    cat.available_until = np.array([FOREVER, FOREVER, T, T + 10], dtype=np.int64)
    out, n = flt.filter_unavailable(lists([0, 1, 2, 3]), cat, np.array([T]))
    assert out.item.tolist() == [0, 3] and n == 2  # not yet, expired at T
    out, n = flt.filter_unavailable(lists([0, 1, 2, 3]), Catalog(cats([[0]] * 4)), np.array([T]))
    assert n == 0  # no columns: a no-op


def test_audience_pairs_and_query_attributes():
    cat = Catalog(cats([[0]] * 4))
    cat.audiences = [Audience("aud", "gender", ["F", "M"], np.array([0, 1, -1, 0], np.int32), np.array([0, -1], np.int32))]
    rr = Reranker(plain(), cat)
    b = QueryBatch([Query(0, [], []), Query(1, [], []), Query(1, [], [], attributes={"gender": "M"})], 4)
    out, log = rr(lists([0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]), b, 4)
    # user 0 is F: the M item goes; user 1 is unknown: nothing goes; an explicit M drops F items
    assert per_query(out) == [[0, 2, 3], [0, 1, 2, 3], [1, 2]] and log["audience"] == 3


def test_group_dedupe_keeps_best_per_group():
    group = np.array([0, 0, 1, -1, -1, 1, 0], dtype=np.int64)
    out, n = flt.dedupe_groups(lists([1, 0, 2, 3, 4, 5, 6], [6, 5]), group, 1)
    assert per_query(out) == [[1, 2, 3, 4], [6, 5]] and n == 3
    out, n = flt.dedupe_groups(lists([1, 0, 6, 2]), group, 2)
    assert out.item.tolist() == [1, 0, 2] and n == 1
    assert flt.dedupe_groups(Candidates.empty(2), group)[1] == 0
    assert flt.dedupe_groups(lists([1, 0]), None)[1] == 0


def test_group_dedupe_through_the_catalog():
    import polars as pl

    class DS:
        items = pl.DataFrame({"item": [0, 1, 2], "sku": ["a", "a", None], "price": [1.0, None, 2.0]})
        users = pl.DataFrame({"user": [0]})
        item_categories = cats([[0], [1], [2]])
        item_user_count = np.array([3, 1, 0])

    cat = Catalog.from_dataset(DS, group_column="sku")
    assert cat.group.tolist() == [0, 0, -1] and np.isnan(cat.price[1])
    cfg = plain()
    cfg.group.column = "sku"
    out, log = Reranker(cfg, cat)(lists([1, 0, 2]), batch([], n_items=3), 3)
    assert out.item.tolist() == [1, 2] and log["group"] == 1


# ---- selectors ----------------------------------------------------------------------
def test_sink_moves_flagged_down_by_k():
    order = np.array([[10, 11, 12, 13, 14, -1]])
    flag = np.array([[True, False, False, False, True, False]])
    assert sel.sink(order, flag, 2).tolist() == [[11, 12, 10, 13, 14, -1]]
    assert sel.sink(order, np.zeros_like(flag), 2) is order


def test_price_sink_uses_the_users_usual_range():
    cat = Catalog(cats([[0]] * 6))
    cat.price = np.array([10, 11, 12, 100, 9, np.nan])
    rr = Reranker(RerankConfig(scatter_max_run=0, diversity={"method": "off"}, sink_price={"positions": 2}), cat)
    b = batch([0, 1, 2], [0], n_items=6)  # second user: too little history
    out, log = rr(lists([3, 4, 5], [3, 4, 5]), b, 3)
    assert per_query(out) == [[4, 5, 3], [3, 4, 5]] and log["sink_price_moved"] == 3
    assert rules_of(out.features["rerank_notes"][2]) == ["sink_price"]


def test_similar_sink_moves_items_like_the_last_one_down():
    cat = Catalog(cats([[0], [0], [1], [2]]))
    cfg = RerankConfig(scatter_max_run=0, diversity={"method": "off"}, sink_similar={"enabled": True, "positions": 5})
    out, _ = Reranker(cfg, cat)(lists([1, 2, 3]), batch([0], n_items=4), 3)
    assert out.item.tolist() == [2, 3, 1]


def test_ratio_cap_limits_a_category_share():
    c = sel.CategorySets(cats([[0], [0], [0], [0], [1], [2], []]))
    item = np.arange(7)
    order = np.array([[0, 1, 2, 3, 4, 5, 6]])
    out = sel.ratio_cap(order, item, c, 0.5, 4)  # at most 2 of the top 4 from category 0
    assert out[0, :4].tolist() == [0, 1, 4, 5] and sorted(out[0].tolist()) == list(range(7))
    # all one category: the list still fills, in ranker order
    same = sel.CategorySets(cats([[0]] * 4))
    assert sel.ratio_cap(np.array([[0, 1, 2, 3]]), item, same, 0.25, 3).tolist() == [[0, 1, 2, 3]]
    # fewer candidates than n, padding and empty rows
    assert sel.ratio_cap(np.array([[0, 1, -1], [-1, -1, -1]]), item, c, 0.5, 10).tolist() == [[0, 1, -1], [-1, -1, -1]]


def test_scatter_inside_the_reranker_records_notes_and_trace():
    cat = Catalog(cats([[0], [0], [0], [1], [1], [2]]))
    cfg = RerankConfig(scatter_max_run=2, diversity={"method": "off"})
    out, log = Reranker(cfg, cat)(lists([0, 1, 2, 3, 4, 5]), batch([], n_items=6), 6)
    assert out.item.tolist() == [0, 1, 3, 2, 4, 5]
    assert out.features["rank_before_rerank"].tolist() == [0, 1, 3, 2, 4, 5]
    notes = out.features["rerank_notes"]
    assert [rules_of(x) for x in notes] == [[], [], ["scatter"], ["scatter"], [], []]
    assert log["scatter_moved"] == 2
    assert explain(int(notes[2]), 3, 2)[0] == "moved from #4 to #3" and "scattering" in explain(int(notes[2]), 3, 2)[1]
    assert np.all(out.features["propensity"] == 1.0)


def test_fixed_slot_puts_the_best_fresh_item_at_its_slot():
    order = np.array([[0, 1, 2, 3, 4], [0, 1, 2, -1, -1], [0, 1, 2, 3, 4]])
    fresh = np.array([[False, False, False, True, True], [False, False, True, False, False], [True] * 5])
    out = sel.fixed_slot(order, fresh, 1)
    assert out.tolist() == [[0, 3, 1, 2, 4], [0, 2, 1, -1, -1], [0, 1, 2, 3, 4]]
    assert sel.fixed_slot(np.array([[0, 1]]), np.array([[False, True]]), 5).tolist() == [[0, 1]]  # short list


def test_fixed_slot_through_the_reranker_uses_item_age():
    cat = Catalog(cats([[0], [1], [2], [3], [4]]))
    cat.created = np.array([T - 10**8, T - 10**8, T - 10**8, T - 100, NEVER], dtype=np.int64)
    cfg = RerankConfig(scatter_max_run=0, diversity={"method": "off"}, fixed_slot={"enabled": True, "slot": 2})
    out, log = Reranker(cfg, cat)(lists([0, 1, 2, 3, 4]), batch([], n_items=5), 4)
    assert out.item.tolist() == [0, 3, 1, 2] and log["fixed_slot_moved"] == 3


def test_interleave_alternates_channels():
    order = np.array([[0, 1, 2, 3, 4, 5]])
    mask = np.array([[1, 1, 1, 2, 2, 3]])  # bit 0 = a, bit 1 = b
    primary = sel.primary_channel(mask, [1, 0])
    assert primary.tolist() == [[0, 0, 0, 1, 1, 1]]
    assert sel.interleave(order, primary, [1, 0], 4).tolist() == [[3, 0, 4, 1, 2, 5]]
    c = lists([0, 1, 2, 3])
    c.features["channels"] = np.array([1, 1, 2, 2])
    cfg = RerankConfig(scatter_max_run=0, diversity={"method": "off"}, interleave={"enabled": True})
    out, _ = Reranker(cfg, Catalog(cats([[0]] * 4)), channel_names=["a", "b"])(c, batch([], n_items=4), 4)
    assert out.item.tolist() == [0, 2, 1, 3]
    assert all("interleave" in rules_of(x) for x in out.features["rerank_notes"][1:3])


@pytest.mark.parametrize("preset", ["default", "mmr", "dpp", "none"])
def test_presets_on_edge_cases(preset):
    cat = Catalog(cats([[0]] * 5 + [[1]] * 5))
    cfg = RerankConfig(preset=preset)
    rr = Reranker(cfg, cat)
    # fewer candidates than n, all one category, an empty query, a seen item
    c = lists([0, 1, 2], [], [5, 6, 7, 8, 9, 0, 1])
    out, _ = rr(c, batch([], [], [6], n_items=10), 5)
    got = per_query(out)
    assert sorted(got[0]) == [0, 1, 2] and got[1] == []
    assert len(got[2]) == 5 and (preset == "none" or 6 not in got[2])
    empty, _ = rr(Candidates.empty(2), batch([], [], n_items=10), 5)
    assert len(empty) == 0 and set(empty.features) >= {"rank_before_rerank", "rerank_notes", "propensity"}


def test_trace_notes_bits_are_distinct():
    assert len(set(BIT.values())) == len(BIT)
    assert rules_of(BIT["mmr"] | BIT["explore"]) == ["mmr", "explore"]
    assert explain(0, 3, 3) == []
