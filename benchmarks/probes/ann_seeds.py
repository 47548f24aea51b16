"""Probe: do the ANN defaults hold on clustered catalogues the benchmark did not tune on?

``benchmarks/search.py`` generates its clustered 1M x 64 catalogue (and its queries) with
seed 0. This builds HNSW and IVF with the default ``IndexConfig`` on catalogues of other
seeds and reports, per seed: recall@10 against exact search (1,024 queries, one batch),
and one-query p50 latency (300 queries) of each index, of the default exact search (norm
bound) and of the full scan, with the ratios the issue's goal reads. ``--hnsw`` adds HNSW
settings to compare (``M:head``, e.g. ``32:0.02``, the defaults before this probe).

Usage: python benchmarks/probes/ann_seeds.py [--seeds 0,1,2,3] [--hnsw 32:0.02] [--out FILE]
Output of the runs quoted in docs/search.md: results/probe-ann-seeds-20261129.txt
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def p50_us(index, Q: np.ndarray) -> float:
    for q in Q[:20]:
        index.search(q[None], 10)
    ts = []
    for q in Q:
        t0 = time.perf_counter()
        index.search(q[None], 10)
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts) * 1e6)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--hnsw", default="", help="other HNSW settings, M:head, comma-separated")
    ap.add_argument("--out", type=Path, help="also write the output here")
    ap.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    args = ap.parse_args()
    from _results import claim
    if args.out is not None:  # checked before the run: a kept result is not written over
        claim(args.out, force=args.force)
    import search as bench
    from twotower.index import IndexConfig, make_index, recall_at_k

    lines = [f"# python benchmarks/probes/ann_seeds.py --seeds {args.seeds}, "
             f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
             f"load {os.getloadavg()[0]:.1f}",
             "seed | kind | build s | recall@10 | 1-query p50 µs | x full scan | "
             "x exact (norm bound)"]
    for seed in (int(s) for s in args.seeds.split(",")):
        V, Q = bench.clustered(args.n, 64, seed)[:2]
        exact = make_index(IndexConfig(kind="exact")).build(V)
        full = make_index(IndexConfig(kind="exact", norm_bound=False)).build(V)
        ref = exact.search(Q, 10)[1]
        q1 = Q[:300]
        t_exact, t_full = p50_us(exact, q1), p50_us(full, q1)
        lines.append(f"{seed} | exact (norm bound) | | 1.000 | {t_exact:,.0f} | "
                     f"{t_full / t_exact:.1f} | 1.0")
        lines.append(f"{seed} | exact full scan | | 1.000 | {t_full:,.0f} | 1.0 | "
                     f"{t_exact / t_full:.2f}")
        others = [(f"hnsw M={m} head={h}",
                   IndexConfig(kind="hnsw", hnsw_m=int(m), hnsw_exact_head=float(h)))
                  for m, h in (x.split(":") for x in args.hnsw.split(",") if x)]
        for kind, cfg in [("hnsw", IndexConfig(kind="hnsw")), *others,
                          ("ivf", IndexConfig(kind="ivf"))]:
            t0 = time.perf_counter()
            index = make_index(cfg).build(V)
            build = time.perf_counter() - t0
            rec = recall_at_k(ref, index.search(Q, 10)[1])
            t = p50_us(index, q1)
            lines.append(f"{seed} | {kind} | {build:.1f} | {rec:.3f} | {t:,.0f} | "
                         f"{t_full / t:.1f} | {t_exact / t:.1f}")
            del index
        print("\n".join(lines[-4 - len(others):]), flush=True)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
