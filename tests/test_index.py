"""ANN indexes: exact search is exact, approximate ones keep recall, save/load is identical."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recfunnel.index.ann import IndexConfig, VectorIndex, recall_against_exact


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, 32))
    x = centers[rng.integers(0, 20, 4000)] + 0.3 * rng.normal(size=(4000, 32))
    q = centers[rng.integers(0, 20, 50)] + 0.3 * rng.normal(size=(50, 32))
    return x.astype(np.float32), q.astype(np.float32)


def test_flat_equals_brute_force(vectors):
    x, q = vectors
    ids, scores = VectorIndex(IndexConfig(kind="flat")).build(x).search(q, 10)
    brute = np.argsort(-(q @ x.T), axis=1)[:, :10]
    np.testing.assert_array_equal(ids, brute)
    np.testing.assert_allclose(scores[:, 0], (q @ x.T).max(axis=1), rtol=1e-5)


@pytest.mark.parametrize("kind,floor", [("hnsw", 0.95), ("ivfpq", 0.5)])
def test_approximate_indexes_keep_recall(vectors, kind, floor):
    x, q = vectors
    index = VectorIndex(IndexConfig(kind=kind, ivf_lists=32, pq_bytes=8)).build(x)
    assert recall_against_exact(x, q, index, k=100) >= floor


def test_exclusions_are_filled_from_further_down(vectors):
    x, q = vectors
    index = VectorIndex(IndexConfig(kind="flat")).build(x)
    full, _ = index.search(q[:2], 10)
    ex = sp.csr_matrix((np.ones(3), ([0, 0, 0], full[0, :3])), shape=(2, len(x)))
    ids, _ = index.search(q[:2], 10, exclude=ex)
    assert not set(full[0, :3]) & set(ids[0])
    assert (ids[0] >= 0).all() and list(ids[0][:7]) == list(full[0, 3:10])
    np.testing.assert_array_equal(ids[1], full[1])


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivfpq"])
def test_save_load_identical(vectors, tmp_path, kind):
    x, q = vectors
    index = VectorIndex(IndexConfig(kind=kind, ivf_lists=32, pq_bytes=8)).build(x)
    index.save(tmp_path / kind)
    again = VectorIndex.load(tmp_path / kind)
    a, sa = index.search(q, 20)
    b, sb = again.search(q, 20)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb)
