"""Exact-search internals the contract tests do not reach: block boundaries, memory bound."""

from __future__ import annotations

import numpy as np
import pytest

from twotower.index import IndexConfig, make_index

from .conftest import assert_topk_equal, reference


@pytest.mark.parametrize("chunk_size, batch_size", [(4096, 64), (1000, 16), (8, 3)])
def test_blocked_search_matches_reference(chunk_size, batch_size):
    rng = np.random.default_rng(11)
    V = rng.standard_normal((5003, 8)).astype(np.float32)
    Q = rng.standard_normal((70, 8)).astype(np.float32)
    ex = [rng.choice(5003, rng.integers(0, 300), replace=False) for _ in range(70)]
    deny = rng.choice(5003, 50, replace=False)
    index = make_index(IndexConfig(kind="exact", chunk_size=chunk_size, batch_size=batch_size,
                                   threads=2)).build(V)
    for k in (1, 10, 3000):
        got = index.search(Q, k, exclude=ex, deny=deny)
        assert_topk_equal(got, reference(V, Q, k, ex, deny=deny), V, Q)


def test_large_allow_list_uses_mask():
    rng = np.random.default_rng(2)
    V = rng.standard_normal((3000, 8)).astype(np.float32)
    Q = rng.standard_normal((5, 8)).astype(np.float32)
    allow = rng.choice(3000, 2500, replace=False)  # masked, not gathered
    index = make_index(IndexConfig(kind="exact", chunk_size=512, batch_size=2)).build(V)
    got = index.search(Q, 20, allow=allow)
    assert_topk_equal(got, reference(V, Q, 20, allow=allow), V, Q)
    one = index.search(Q[:1], 20, allow=allow)
    assert_topk_equal(one, reference(V, Q[:1], 20, allow=allow), V, Q[:1])
