"""Embedding channels learn planted structure and serve from their index."""

from __future__ import annotations

import numpy as np
import pytest

from recfunnel.evaluate.metrics import hit_rate, target_ranks
from recfunnel.query import Query, QueryBatch, history_queries
from recfunnel.recall.graph_embedding import DeepWalkConfig, DeepWalkSource, Node2VecConfig, Node2VecSource, transition_graph
from recfunnel.recall.item2vec import Item2VecConfig, Item2VecSource
from recfunnel.recall.popular import PopularSource
from recfunnel.recall.walks import random_walks

import scipy.sparse as sp

# one worker thread: gensim is only reproducible single-threaded
CHANNELS = [
    (Item2VecSource, Item2VecConfig(threads=1, dim=32)),
    (DeepWalkSource, DeepWalkConfig(threads=1, dim=32, walks_per_node=5)),
    (Node2VecSource, Node2VecConfig(threads=1, dim=32, walks_per_node=5)),
]


@pytest.fixture(scope="module")
def fitted(planted_split):
    split, _ = planted_split
    return {cls.name: cls(cfg).fit(split.fit) for cls, cfg in CHANNELS}


@pytest.mark.parametrize("name", [c.name for c, _ in CHANNELS])
def test_embedding_channels_beat_popularity_at_the_top(planted_split, fitted, name):
    split, _ = planted_split
    fit = split.fit
    batch = QueryBatch(history_queries(fit, split.users, split.ts), fit.n_items)
    def hr10(src):
        return hit_rate(target_ranks(src.retrieve(batch, 10).padded(10), split.items), 10)
    assert hr10(fitted[name]) > 1.1 * hr10(PopularSource().fit(fit))


@pytest.mark.parametrize("name", [c.name for c, _ in CHANNELS])
def test_vectors_place_the_planted_successor_near(planted_split, fitted, name):
    """Each item's planted next item is among its 10 nearest vectors far above chance."""
    _, truth = planted_split
    v = fitted[name].item_vectors
    sim = v @ v.T
    np.fill_diagonal(sim, -np.inf)
    top = np.argsort(-sim, axis=1)[:, :10]
    active = np.flatnonzero(np.linalg.norm(v, axis=1) > 0)
    share = np.mean([truth.successor[i] in top[i] for i in active])
    assert share > 5 * 10 / len(v), share


@pytest.mark.parametrize("name", [c.name for c, _ in CHANNELS])
def test_save_load_gives_identical_vectors_and_answers(planted_split, fitted, name, tmp_path):
    split, _ = planted_split
    src = fitted[name]
    src.save(tmp_path / name)
    again = type(src).load(tmp_path / name)
    np.testing.assert_array_equal(src.item_vectors, again.item_vectors)
    batch = QueryBatch(history_queries(split.fit, split.users[:50], split.ts[:50]), split.fit.n_items)
    np.testing.assert_array_equal(src.retrieve(batch, 20).item, again.retrieve(batch, 20).item)


def test_user_vector_follows_the_history(planted_split, fitted):
    split, truth = planted_split
    src = fitted["item2vec"]
    n = split.fit.n_items
    a = QueryBatch([Query(-1, [1, 2, 3], [0, 1, 2])], n)
    b = QueryBatch([Query(-1, [1, 2, 3, 400], [0, 1, 2, 3])], n)
    assert not np.allclose(src.user_vectors(a, slice(0, 1)), src.user_vectors(b, slice(0, 1)))
    assert src.retrieve(a, 10).item.tolist() != src.retrieve(b, 10).item.tolist()
    empty = QueryBatch([Query(-1, [], [])], n)
    assert len(src.retrieve(empty, 10)) == 0


def test_deterministic_per_seed(planted_split):
    split, _ = planted_split
    cfg = Item2VecConfig(threads=1, dim=16, epochs=3)
    a = Item2VecSource(cfg).fit(split.fit).item_vectors
    b = Item2VecSource(cfg).fit(split.fit).item_vectors
    np.testing.assert_array_equal(a, b)


def test_walks_follow_edges_and_weights():
    # 0 -> 1 (weight 9), 0 -> 2 (weight 1); 1 -> 0; 2 -> 0
    g = sp.csr_matrix(np.array([[0, 9, 1], [1, 0, 0], [1, 0, 0]], dtype=np.float32))
    walks = random_walks(g, walks_per_node=400, walk_length=5, seed=1)
    steps = [(int(w[i]), int(w[i + 1])) for w in walks for i in range(len(w) - 1)]
    assert all(g[a, b] > 0 for a, b in steps)
    from_zero = [b for a, b in steps if a == 0]
    share_one = np.mean(np.array(from_zero) == 1)
    assert 0.85 < share_one < 0.95  # 9 / 10


def test_node2vec_bias_changes_how_often_walks_return():
    # a small ring with chords: q > 1 keeps walks near where they came from
    n = 30
    rows = np.arange(n)
    g = sp.csr_matrix((np.ones(2 * n), (np.r_[rows, rows], np.r_[(rows + 1) % n, (rows + 7) % n])), shape=(n, n))
    g = (g + g.T).tocsr()
    def return_rate(p):
        walks = random_walks(g, 50, 10, p=p, q=1.0, seed=0)
        back = [w[i] == w[i - 2] for w in walks for i in range(2, len(w))]
        return np.mean(back)
    assert return_rate(0.25) > 2 * return_rate(4.0)


def test_transition_graph_counts_distinct_users(planted):
    ds, _ = planted
    g = transition_graph(ds, 24 * 30, directed=True)
    assert g.nnz > 0 and g.data.max() <= ds.n_users
