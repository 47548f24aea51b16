"""Shared helpers of the index tests: a numpy argsort reference and tie-aware checks."""

from __future__ import annotations

import numpy as np
import pytest

from twotower.index import PAD_ID, IndexConfig, make_index


def reference(V, Q, k, exclude=None, allow=None, deny=None, metric="ip"):
    """Top-k by a full numpy argsort: (scores [b, k], ids [b, k]) padded like the contract."""
    V = np.asarray(V, np.float64)
    Q = np.asarray(Q, np.float64)
    if metric == "cosine":
        V = V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-30)
        Q = Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-30)
    S = Q @ V.T
    if allow is not None:
        keep = np.zeros(V.shape[0], bool)
        keep[np.asarray(allow, int)] = True
        S[:, ~keep] = -np.inf
    if deny is not None:
        S[:, np.asarray(deny, int)] = -np.inf
    if exclude is not None:
        for r, ex in enumerate(exclude):
            S[r, np.asarray(ex, int)] = -np.inf
    out_s = np.full((len(Q), k), -np.inf)
    out_i = np.full((len(Q), k), PAD_ID, np.int64)
    for r in range(len(Q)):
        order = np.argsort(-S[r], kind="stable")[:k]
        out_s[r, :len(order)] = S[r, order]
        out_i[r, :len(order)] = order
    out_i[out_s == -np.inf] = PAD_ID
    return out_s, out_i


def assert_topk_equal(got, ref, V=None, Q=None, tol=1e-4, metric="ip"):
    """Equal up to ties: same sorted scores, ids unique and each id carrying its score."""
    gs, gi = got
    rs, ri = ref
    assert gs.dtype == np.float32 and gi.dtype == np.int64
    assert gs.shape == rs.shape and gi.shape == ri.shape
    np.testing.assert_array_equal(gi == PAD_ID, ri == PAD_ID)
    np.testing.assert_array_equal(np.isneginf(gs), gi == PAD_ID)
    fin = gi != PAD_ID
    np.testing.assert_allclose(gs[fin], rs[fin], rtol=tol, atol=tol)
    assert np.all(np.diff(np.where(fin, gs, -1e30), axis=1) <= tol), "not best first"
    for row in gi:
        ids = row[row != PAD_ID]
        assert len(set(ids.tolist())) == len(ids), f"duplicate ids in {row}"
    if V is not None:
        Vn, Qn = np.asarray(V, np.float64), np.asarray(Q, np.float64)
        if metric == "cosine":
            Vn = Vn / np.linalg.norm(Vn, axis=1, keepdims=True)
            Qn = Qn / np.linalg.norm(Qn, axis=1, keepdims=True)
        r, c = np.nonzero(fin)
        true = np.einsum("ij,ij->i", Qn[r], Vn[gi[r, c]])
        np.testing.assert_allclose(gs[r, c], true, rtol=tol, atol=tol)


# Settings under which every kind is exact on a small catalogue (the contract tests).
EXACT_SMALL = {
    "exact": IndexConfig(kind="exact"),
    "exact-chunked": IndexConfig(kind="exact", batch_size=7, chunk_size=50),
    "hnsw": IndexConfig(kind="hnsw", hnsw_m=16, ef_construction=200, ef_search=400),
    "hnsw-l2": IndexConfig(kind="hnsw", hnsw_m=16, ef_construction=200, ef_search=400,
                           mips_to_l2=True),
    "ivf": IndexConfig(kind="ivf", nlist=6, nprobe=6),
    "ivf-ip": IndexConfig(kind="ivf", nlist=6, nprobe=6, mips_to_l2=False),
}


@pytest.fixture(params=sorted(EXACT_SMALL), scope="module")
def config(request) -> IndexConfig:
    return EXACT_SMALL[request.param]


@pytest.fixture(scope="module")
def catalogue():
    rng = np.random.default_rng(7)
    V = rng.standard_normal((300, 12)).astype(np.float32)
    V *= rng.lognormal(0.0, 0.5, size=(300, 1)).astype(np.float32)  # varied norms
    Q = rng.standard_normal((9, 12)).astype(np.float32)
    return V, Q


@pytest.fixture(scope="module")
def built(config, catalogue):
    return make_index(config).build(catalogue[0])


@pytest.fixture(params=["kernels", "numpy"])
def exclusion_loops(request, monkeypatch):
    """A test twice (modules that filter: ``pytestmark = pytest.mark.usefixtures(
    "exclusion_loops")``): with the compiled loops of ``twotower.index._kernels``
    (per-query exclusions read in place) and with the numpy path that runs where they are
    not built. tests/test_package.py fails where they should have been built and were
    not, so this skip cannot hide a broken build."""
    from twotower.index import filters

    if request.param == "numpy":
        monkeypatch.setattr(filters, "_kernels", None)
    elif filters._kernels is None:
        pytest.skip("twotower.index._kernels is not built (or TWOTOWER_NO_KERNELS is set)")
    return request.param
