"""Probe: approximate search over catalogues with repeated vectors.

8,000 random items (d = 16) of which a share are one repeated vector; 300 random queries;
tie-aware recall@10 of HNSW and IVF (default settings) against exact search, under inner
product (and for HNSW also with ``mips_to_l2``) and cosine. Output:
results/probe-ann-duplicates-<date>.txt (``-20261205``: before HNSW graphs on L2 distances
were built over distinct vectors; ``-20261205b``: after).

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
    for kind, metric, mips in (("hnsw", "ip", None), ("hnsw", "ip", True),
                               ("hnsw", "cosine", None), ("ivf", "ip", None),
                               ("ivf", "cosine", None)):
        ref, _ = make_index(IndexConfig(metric=metric)).build(V).search(Q, 10)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            index = make_index(IndexConfig(kind=kind, metric=metric, mips_to_l2=mips)).build(V)
            s, _ = index.search(Q, 10)
        groups = getattr(index, "_groups", None)
        note = f"  (graph over {len(groups.reps):,} distinct vectors)" if groups else ""
        note += "  (warned)" if w else ""
        hit = float(np.mean(s >= ref[:, -1:] - 1e-4))
        name = f"{metric}{' + mips_to_l2' if mips else ''}"
        print(f"{share:.1f} {kind} {name}: {hit:.3f}{note}")
