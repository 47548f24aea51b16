"""Probe: rank-128 truncated SVD of a dense 4,000 x 4,000 matrix, SciPy vs ``low_rank``.

Why ``twotower.models.linear.low_rank`` (a randomized range finder) is hand-written: SciPy's
truncated SVDs (``scipy.sparse.linalg.svds`` with ARPACK and PROPACK,
``scipy.linalg.interpolative.svd``) against it on a planted rank-64 matrix plus noise, with
the reconstruction error of each relative to the exact truncation.

Usage: python benchmarks/probes/low_rank_svd.py
Output of the run quoted in the docstring of low_rank: results/probe-low-rank-svd-20261129.txt
"""
import time

import numpy as np
import scipy.linalg.interpolative as sli
import scipy.sparse.linalg as sl

from twotower.models.linear import low_rank

n, r = 4000, 128
rng = np.random.default_rng(0)
b = (rng.standard_normal((n, 64)) @ rng.standard_normal((64, n))
     + 0.3 * rng.standard_normal((n, n))).astype(np.float32)
u, s, vt = np.linalg.svd(b, full_matrices=False)
best = np.linalg.norm(b - (u[:, :r] * s[:r]) @ vt[:r])


def run(name, f):
    t0 = time.perf_counter()
    approx = f()
    dt = time.perf_counter() - t0
    print(f"{name}: {dt:.2f} s, error / best {np.linalg.norm(b - approx) / best:.4f}", flush=True)


def svds(solver):
    uu, ss, vv = sl.svds(b, k=r, solver=solver)
    return (uu * ss) @ vv


def interp():
    uu, ss, vv = sli.svd(b.astype(np.float64), r)
    return (uu * ss) @ vv.T


def ours():
    p, q = low_rank(b, r)
    return p @ q.T


run("svds arpack", lambda: svds("arpack"))
run("svds propack", lambda: svds("propack"))
run("interpolative.svd", interp)
run("low_rank", ours)
