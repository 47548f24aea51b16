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


def test_hnsw_head_prefix_gives_the_whole_heads_results(monkeypatch):
    """HNSW scores only the part of its exact head whose norm bound can beat the graph
    walk's k-th best: the results equal those of scoring the whole head, with exclusions
    and an allow-list, and the prefix is shorter than the head for skewed norms."""
    import twotower.index.faiss_ann as fa
    rng = np.random.default_rng(9)
    V, Q = clustered(20_000, 16, n_clusters=50, seed=4)
    V *= rng.pareto(2.0, size=(len(V), 1)).astype(np.float32) + 1  # long-tailed norms
    index = make_index(IndexConfig(kind="hnsw", hnsw_exact_head=0.2, ef_search=32)).build(V)
    head = len(index._head)
    ex = [np.concatenate([index._head[rng.integers(0, 50, 5)], rng.choice(20_000, 20)])
          for _ in range(len(Q))]  # some of the best head items excluded
    allow = rng.choice(20_000, 18_000, replace=False)
    rows = []
    real = fa.topk_exact

    def spy(V, *args, **kwargs):
        rows.append(len(V))
        return real(V, *args, **kwargs)
    monkeypatch.setattr(fa, "topk_exact", spy)
    got = [index.search(Q[i:i + 1], 10, exclude=ex[i:i + 1], allow=allow)
           for i in range(len(Q))]
    assert min(rows) < head / 4  # the bound cut the head for some queries
    index._head_norms = np.full(head, np.inf, np.float32)  # no prefix: the whole head
    for i, (s, ids) in enumerate(got):
        s2, ids2 = index.search(Q[i:i + 1], 10, exclude=ex[i:i + 1], allow=allow)
        np.testing.assert_allclose(s, s2, rtol=1e-6)
        assert set(ids[0]) == set(ids2[0]) or np.unique(s).size < s.size  # ties aside
