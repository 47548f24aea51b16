"""recall_at_k by hand, and the ANN kinds' recall with DEFAULT settings."""

from __future__ import annotations

import time

import numpy as np
import pytest

from twotower.errors import DataError
from twotower.index import PAD_ID, IndexConfig, make_index, recall_at_k


def test_recall_hand_cases():
    assert recall_at_k([[1, 2, 3, 4]], [[1, 2, 3, 4]]) == 1.0  # perfect
    assert recall_at_k([[1, 2, 3, 4]], [[4, 3, 2, 1]]) == 1.0  # order does not matter
    assert recall_at_k([[1, 2, 3, 4]], [[5, 6, 7, 8]]) == 0.0  # no hit
    assert recall_at_k([[1, 2, 3, 4], [1, 2, 3, 4]], [[1, 2, 9, 9], [1, 2, 3, 4]]) == 0.75
    # padding in the reference is not something to find; padding in approx is no hit
    assert recall_at_k([[1, 2, PAD_ID, PAD_ID]], [[1, PAD_ID, PAD_ID, PAD_ID]]) == 0.5
    assert np.isnan(recall_at_k([[PAD_ID, PAD_ID]], [[1, 2]]))
    assert np.isnan(recall_at_k(np.empty((0, 10), int), np.empty((0, 10), int)))
    with pytest.raises(DataError, match="same number of rows"):
        recall_at_k([[1, 2]], [[1, 2], [3, 4]])


def clustered(n, d, n_clusters=1000, rank=16, seed=0):
    """Mixture of Gaussians in a low-dimensional subspace, popularity-skewed norms."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, d)) / np.sqrt(rank)
    centres = rng.standard_normal((n_clusters, rank)) * 2.0
    labels = rng.integers(0, n_clusters, n)
    x = (centres[labels] + 0.5 * rng.standard_normal((n, rank))) @ basis
    x += 0.05 * rng.standard_normal((n, d))
    x *= rng.lognormal(0.0, 0.35, size=(n, 1))
    q_labels = rng.integers(0, n_clusters, 200)
    q = (centres[q_labels] + 0.5 * rng.standard_normal((200, rank))) @ basis
    return x.astype(np.float32), q.astype(np.float32)


@pytest.fixture(scope="module")
def big():
    V, Q = clustered(50_000, 32)
    exact = make_index().build(V)
    return V, Q, exact, exact.search(Q, 10)[1]


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_default_recall_at_10(big, kind):
    V, Q, _, ref = big
    t0 = time.perf_counter()
    index = make_index(IndexConfig(kind=kind)).build(V)
    got = index.search(Q, 10)[1]
    assert recall_at_k(ref, got) >= 0.95, f"{kind} recall@10 {recall_at_k(ref, got):.3f}"
    assert time.perf_counter() - t0 < 30


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_selective_filters_never_short(big, kind):
    V, Q, exact, _ = big
    rng = np.random.default_rng(5)
    index = make_index(IndexConfig(kind=kind, ef_search=16, nprobe=1)).build(V[:5000])
    allow = rng.choice(5000, 4500, replace=False)  # not small enough for the exact path
    ex = [rng.choice(5000, 300, replace=False) for _ in range(20)]
    s, i = index.search(Q[:20], 50, exclude=ex, allow=allow, deny=np.arange(100))
    assert (i != PAD_ID).all()
    for r in range(20):
        assert not set(i[r]) & set(ex[r].tolist())
        assert set(i[r]) <= set(allow.tolist()) and (i[r] >= 100).all()
    # 30 allowed items: every one is found even by a coarse index
    allow = rng.choice(5000, 30, replace=False)
    s, i = index.search(Q[:3], 40, allow=allow)
    assert ((i != PAD_ID).sum(axis=1) == 30).all()
