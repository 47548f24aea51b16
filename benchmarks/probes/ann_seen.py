"""Probe: ANN recall@10 when each query's own seen items are excluded, on the embeddings
of a model trained by twotower (``benchmarks/search.py``'s ``trained`` catalogue, whose
query users' interactions are their seen items). A trained user vector points at the
items the user interacted with, so excluding them removes the head of its ranking and
the answer comes from deeper in it, where a graph over inner products is weakest.

Every index kind side by side in one run: recall@10 against exact search with and
without the exclusions, and the batch-1 latency with them.

Usage: python benchmarks/probes/ann_seen.py [--items 300000] [--queries 500]
Output: results/probe-ann-seen-<date>.txt
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
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--configs", default="hnsw;hnsw,ef_search=512;hnsw,mips_to_l2=1;"
                   "hnsw,mips_to_l2=1,ef_search=512;ivf",
                   help="index configs, ';'-separated: kind[,key=value...]")
    a = p.parse_args()
    from search import trained, trained_info, trained_seen

    from twotower.index import IndexConfig, make_index, recall_at_k

    V, Q = trained(a.items, 64, n_queries=a.queries)
    seen = trained_seen(a.items, 64)[:a.queries]
    exact = make_index(IndexConfig(kind="exact")).build(V)
    lens = np.array([len(s) for s in seen])
    top100 = exact.search(Q, 100)[1]
    in_top = np.mean([np.isin(top100[r], seen[r]).sum() for r in range(len(Q))])
    print(f"{os.cpu_count()} CPUs; trained catalogue {a.items:,} x 64 "
          f"({trained_info(a.items, 64)['items_with_interactions']:,} items with "
          f"interactions); {len(Q)} users drawn from the 4,096 most active: seen lists of "
          f"{lens.min()}-{lens.max()} "
          f"items (median {np.median(lens):.0f}); on average {in_top:.1f} of each user's "
          f"exact top 100 are seen items", flush=True)
    ref_ex = exact.search(Q, 10, exclude=seen)[1]
    ref = top100[:, :10]
    print(f"{'index':38s} {'build s':>8s} {'recall@10':>10s} {'seen excl.':>11s} "
          f"{'p50 ms':>8s} {'p99 ms':>8s}", flush=True)
    for spec in a.configs.split(";"):
        kind, *kv = spec.split(",")
        kw = {}
        for item in kv:
            key, val = item.split("=")
            kw[key] = bool(int(val)) if key in ("mips_to_l2", "norm_bound") else int(val)
        t0 = time.perf_counter()
        index = make_index(IndexConfig(kind=kind, **kw)).build(V)
        build = time.perf_counter() - t0
        r0 = recall_at_k(ref, index.search(Q, 10)[1])
        got, ts = np.empty_like(ref_ex), []
        for r in range(len(Q)):
            t = time.perf_counter()
            got[r] = index.search(Q[r:r + 1], 10, exclude=[seen[r]])[1]
            ts.append(time.perf_counter() - t)
        r1 = recall_at_k(ref_ex, got)
        print(f"{spec:38s} {build:8.1f} {r0:10.3f} {r1:11.3f} {np.median(ts) * 1e3:8.2f} "
              f"{np.quantile(ts, 0.99) * 1e3:8.2f}", flush=True)
        del index


if __name__ == "__main__":
    main()
