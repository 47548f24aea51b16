"""Probe: HNSW search for users who have seen many items. Before, a batch's walk was
widened to ``k`` plus the longest exclusion list in it (``ef`` 2,010 for a user with 2,000
seen items); now a query whose list would widen it past twice ``ef_search`` is walked
alone with its seen items as a faiss selector (``faiss_ann.OWN_SELECTOR_EF``). Both ways
side by side, on the clustered, skewed-norm catalogue of ``benchmarks/search.py``:

- batch 1, one heavy user at a time: ``--seen`` excluded items, half of them drawn from
  the query's exact top ``10 x seen`` (a heavy user has seen much of what suits them;
  ``--near``: its very top results, the hard case), half random;
- batch 1,024 with list lengths of a long tail (a log-normal, median ~60, a few thousand
  at most), as a batch endpoint or an evaluation sends them.

Usage: python benchmarks/probes/heavy_exclusions.py [--items 300000] [--seen 2000] [--near]
Output of the run quoted in docs/search.md: results/probe-heavy-exclusions-20261205.txt
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
    p.add_argument("--seen", type=int, default=2000)
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--near", action="store_true")
    a = p.parse_args()
    from search import clustered

    from twotower.index import IndexConfig, faiss_ann, make_index, recall_at_k

    V, Q = clustered(a.items, 64, n_queries=1024)
    rng = np.random.default_rng(0)
    exact = make_index(IndexConfig(kind="exact")).build(V)
    t0 = time.perf_counter()
    hnsw = make_index(IndexConfig(kind="hnsw")).build(V)
    print(f"{os.cpu_count()} CPUs; clustered {a.items:,} x 64; HNSW built in "
          f"{time.perf_counter() - t0:.1f} s (ef_search {hnsw.config.ef_search})", flush=True)
    half = a.seen // 2
    top = exact.search(Q[:a.users], 10 * a.seen)[1]
    near = [top[u, :half] if a.near else rng.choice(top[u], half, replace=False)
            for u in range(a.users)]
    heavy = [np.unique(np.concatenate([near[u], rng.choice(a.items, half, replace=False)]))
             for u in range(a.users)]
    lens = np.minimum(np.round(rng.lognormal(np.log(60), 1.0, 1024)).astype(int), a.items // 10)
    batch = [rng.choice(a.items, m, replace=False) for m in lens]
    ref1 = exact.search(Q[:a.users], 10, exclude=heavy)[1]
    refb = exact.search(Q, 10, exclude=batch)[1]
    rows = []
    for name, factor in (("before: over-fetch", None), ("now: walked alone", 2.0)):
        faiss_ann.OWN_SELECTOR_EF = factor
        got = np.empty_like(ref1)
        ts = []
        for rep in range(2):
            for u in range(a.users):
                t = time.perf_counter()
                got[u] = hnsw.search(Q[u:u + 1], 10, exclude=[heavy[u]])[1][0]
                ts.append(time.perf_counter() - t)
        r1 = recall_at_k(ref1, got)
        tb = []
        for rep in range(3):
            t = time.perf_counter()
            gb = hnsw.search(Q, 10, exclude=batch)[1]
            tb.append(time.perf_counter() - t)
        rows.append((name, np.median(ts) * 1e3, np.percentile(ts, 99) * 1e3, r1, min(tb),
                     recall_at_k(refb, gb)))
    faiss_ann.OWN_SELECTOR_EF = 2.0
    print(f"batch 1: {a.users} users, {np.mean([len(h) for h in heavy]):.0f} distinct seen "
          f"items each; batch 1,024: seen lists of {lens.min()}-{lens.max()} items "
          f"(median {int(np.median(lens))}, {int((10 + lens > 256).sum())} over 2 x ef_search)")
    print(f"{'':>20} {'batch 1 p50':>12} {'p99':>9} {'recall@10':>10} {'batch 1,024':>12} "
          f"{'recall@10':>10}")
    for name, p50, p99, r1, tb, rb in rows:
        print(f"{name:>20} {p50:>9.2f} ms {p99:>6.2f} ms {r1:>10.3f} {tb * 1e3:>9.1f} ms "
              f"{rb:>10.3f}")


if __name__ == "__main__":
    main()
