"""Probe: approximate search over catalogues with repeated vectors.

8,000 random items (d = 16) of which a share are one repeated vector; 300 random queries;
tie-aware recall@10 of HNSW and IVF (default settings) against exact search, under inner
product and cosine. Output: results/probe-ann-duplicates-<date>.txt.

Usage: python benchmarks/probes/ann_duplicates.py
"""
import warnings

import numpy as np

from twotower.index import IndexConfig, make_index

rng = np.random.default_rng(1)
base = rng.standard_normal((8000, 16)).astype(np.float32)
Q = rng.standard_normal((300, 16)).astype(np.float32)
print("repeated share, kind, metric: tie-aware recall@10 against exact")
for share in (0.0, 0.1, 0.3, 0.5):
    V = base.copy()
    V[:int(share * len(V))] = V[0]
    for kind in ("hnsw", "ivf"):
        for metric in ("ip", "cosine"):
            ref, _ = make_index(IndexConfig(metric=metric)).build(V).search(Q, 10)
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                s, _ = make_index(IndexConfig(kind=kind, metric=metric)).build(V).search(Q, 10)
            warned = any("share their vector" in str(x.message) for x in w)
            hit = float(np.mean(s >= ref[:, -1:] - 1e-4))
            print(f"{share:.1f} {kind} {metric}: {hit:.3f}{'  (warned)' if warned else ''}")
