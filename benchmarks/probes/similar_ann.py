"""Probe: similar items (cosine, each item itself excluded) by the exact scan, which every
run used before, against the HNSW and IVF cosine indexes an ANN run now builds for them
(``TwoTower._build_similar``), their knob tuned to recall@10 0.95 on 500 items as
``twotower index`` does, then measured on 1,000 other items one query at a time.

Catalogues: the first ``--items`` rows of the trained 1M catalogue of
``benchmarks/search.py`` (cached in $TWOTOWER_SEARCH_CACHE, a few minutes to train when
absent) and of its clustered, skewed-norm one.

Usage: python benchmarks/probes/similar_ann.py [--items 300000] [--kinds hnsw ivf]
Output of the run quoted in docs/search.md: results/probe-similar-ann-20261205.txt
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--items", type=lambda s: int(s.replace("_", "")), default=300_000)
    p.add_argument("--kinds", nargs="+", default=["hnsw", "ivf"])
    p.add_argument("--target", type=float, default=0.95)
    a = p.parse_args()
    from search import clustered, latencies, trained

    from twotower.index import IndexConfig, make_index, recall_at_k, tune_recall

    print(f"{os.cpu_count()} CPUs; {a.items:,} items; k = 10; latency of one item's "
          "query (the lower-median of 2 rounds over 1,000 items)", flush=True)
    for name, make in (("trained", lambda: trained(1_000_000, 64)[0]),
                       ("clustered", lambda: clustered(1_000_000, 64)[0])):
        V = np.ascontiguousarray(make()[:a.items])
        rng = np.random.default_rng(0)
        pick = rng.permutation(len(V))
        calib, test = np.sort(pick[:500]), np.sort(pick[500:1500])

        def run(index, items):
            return index.search(V[items], 10, exclude=[np.array([i]) for i in items])[1]

        exact = make_index(IndexConfig(kind="exact", metric="cosine")).build(V)
        ref_c, ref_t = run(exact, calib), run(exact, test)

        def one(index):
            it = iter(test.tolist() * 4)
            return lambda q: index.search(q, 10, exclude=[np.array([next(it)])])
        lat = latencies(one(exact), V[test])
        print(f"{name:>9} exact    build {0:7.1f} s   p50 {lat['p50_us'] / 1e3:6.2f} ms  "
              f"p99 {lat['p99_us'] / 1e3:6.2f} ms  recall@10 1.000", flush=True)
        for kind in a.kinds:
            t0 = time.perf_counter()
            index = make_index(IndexConfig(kind=kind, metric="cosine")).build(V)
            build = time.perf_counter() - t0
            default = recall_at_k(ref_t, run(index, test))
            tuned = tune_recall(index, V[calib], ref_c, a.target, k=10,
                                exclude=[np.array([i]) for i in calib])
            recall = recall_at_k(ref_t, run(index, test))
            lat_a = latencies(one(index), V[test])
            print(f"{name:>9} {kind:<8} build {build:7.1f} s   p50 {lat_a['p50_us'] / 1e3:6.2f} ms  "
                  f"p99 {lat_a['p99_us'] / 1e3:6.2f} ms  recall@10 {recall:.3f} "
                  f"({tuned['knob']} {tuned['value']}; default {default:.3f}); "
                  f"{lat['p50_us'] / lat_a['p50_us']:.1f}x exact at p50", flush=True)


if __name__ == "__main__":
    main()
