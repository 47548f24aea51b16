"""Probe: exact search with the first chunk's top k found from group maxima (``_seed``, the
current code) against the partial sort it replaced (``_select``), side by side in one run.

For each catalogue, 1,024 queries (k = 10), back-to-back calls (median of 7 rounds of 30
calls, the two ways interleaved): no exclusions, 100 seen items per query as 1,024 id
arrays, and the same as CSR rows; then one query at a time (p50 of 300); and on trained 1M
the first chunk's top 10 alone (512 rows) for 512, 64, 32 and 16 queries. Catalogues: the
benchmark's trained 1M x 64 (``search.trained``, cached by ``benchmarks/search.py``; a few
minutes to train otherwise) and clustered 1,682 x 32 (one chunk).

Usage: python benchmarks/probes/first_chunk.py [--out FILE]
Output of the run quoted in README and docs/search.md: results/probe-first-chunk-20261129.txt
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, help="also write the output here")
    ap.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    args = ap.parse_args()
    from _results import claim
    if args.out is not None:  # checked before the run: a kept result is not written over
        claim(args.out, force=args.force)
    import scipy.sparse as sp

    import search as bench
    import twotower.index.exact as E
    from twotower.index import ExactIndex

    lines = [f"# python benchmarks/probes/first_chunk.py, {time.strftime('%Y-%m-%d %H:%M')}, "
             f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
             "catalogue | first chunk's top k | no exclusions ms | + 1,024 id arrays ms "
             "(overhead) | + CSR rows ms (overhead) | 1 query p50 µs"]
    real = E._seed
    ways = {"group maxima (_seed)": real, "partial sort (_select)": lambda S, kk: None}
    for name, (V, Q) in (("trained 1M x 64", bench.trained(1_000_000, 64)),
                         ("clustered 1,682 x 32", bench.clustered(1682, 32)[:2])):
        Q = Q[:1024]
        n = len(V)
        rng = np.random.default_rng(1)
        seen = [rng.choice(n, 100, replace=False) for _ in range(len(Q))]
        lens = np.array([len(s) for s in seen])
        csr = sp.csr_matrix((np.ones(lens.sum(), np.float32), np.concatenate(seen),
                             np.concatenate([[0], np.cumsum(lens)])), shape=(len(Q), n))
        index = ExactIndex().build(V)
        calls = {"plain": lambda: index.search(Q, 10),
                 "arrays": lambda: index.search(Q, 10, exclude=seen),
                 "csr": lambda: index.search(Q, 10, exclude=csr)}
        res: dict = {}
        for _ in range(7):
            for way, fn in ways.items():
                E._seed = fn
                for key, call in calls.items():
                    call()
                    t0 = time.perf_counter()
                    for _ in range(30):
                        call()
                    res.setdefault((way, key), []).append((time.perf_counter() - t0) / 30)
        for way, fn in ways.items():
            E._seed = fn
            ts = []
            for i in range(300):
                q = Q[i % len(Q):i % len(Q) + 1]
                t0 = time.perf_counter()
                index.search(q, 10)
                ts.append(time.perf_counter() - t0)
            med = {k: statistics.median(res[(way, k)]) * 1e3 for k in calls}
            lines.append(f"{name} | {way} | {med['plain']:.3f} | {med['arrays']:.3f} "
                         f"({med['arrays'] / med['plain'] - 1:+.1%}) | {med['csr']:.3f} "
                         f"({med['csr'] / med['plain'] - 1:+.1%}) | {np.median(ts) * 1e6:.0f}")
        E._seed = real
        if name.startswith("trained"):  # the first 512 x 512 block alone, as _chunked has it
            rows = index._vectors[:512]
            for nq in (512, 64, 32, 16):
                S = Q[:nq] @ rows.T
                t = {}
                for way, fn in ways.items():
                    E._seed = fn
                    t[way] = _best(lambda: E._select(S, 10))
                E._seed = real
                lines.append(f"{name}, top 10 of the first 512 rows for {nq} queries: "
                             + ", ".join(f"{w} {v:.1f} µs" for w, v in t.items()))
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)


def _best(fn, calls: int = 200) -> float:
    """Best of 5 rounds, µs per call."""
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


if __name__ == "__main__":
    main()
