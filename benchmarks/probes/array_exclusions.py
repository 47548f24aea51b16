"""Probe: where per-query exclusion arrays cost time at batch 1,024, and what each form adds.

The two catalogues of ``benchmarks/search.py`` whose array exclusions stood above issue 4's
20% line: its hot-path catalogue (clustered, 1,682 items, d = 32, one chunk) and the trained
1M catalogue (d = 64, norm-ordered; built by ``search.trained`` and cached under
``$TWOTOWER_SEARCH_CACHE``, default /tmp), with the same ~100 random seen items per query
as ``search.py`` draws. For each:

- CPU time per call (``time.thread_time`` in whichever thread runs it, so other
  processes' load does not count) of the plain search, of flattening the 1,024 arrays
  (``filters.exclusions``: concatenation, lengths, range check) and of the workers' band
  look-ups (``exact._Exclusions``, norm-ordered catalogues only);
- the overhead of each form over the plain search, back-to-back (runs of 10 calls, the forms
  alternated, 9 rounds; medians of wall time and of process CPU time), three times:
  per-query arrays, CSR rows ``[batch, n]``, rows of a prepared table.

Usage: TWOTOWER_SEARCH_CACHE=/tmp python benchmarks/probes/array_exclusions.py
Writes results/probe-array-exclusions-<time>.txt (``--out DIR`` for another folder).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))
sys.path.insert(0, str(HERE.parent))


def catalogue(name: str):
    import search
    if name == "clustered-1682":  # search.hot_path's
        V, Q = search.clustered(1682, 32, n_queries=2000)
        rng = np.random.default_rng(0)
        seen = [rng.choice(1682, 100, replace=False) for _ in range(len(Q))][:1024]
    else:  # search.run_case's trained 1M
        V, Q = search.trained(1_000_000, 64)
        rng = np.random.default_rng(1)
        seen = [rng.choice(len(V), 100, replace=False) for _ in range(1024)]
    return V, Q[:1024], seen


def stage_cpu(index, b, seen, calls: int = 100) -> list[str]:
    """CPU µs per call of the plain search, the flattening and the band look-ups."""
    from twotower.index import exact, filters
    spent: dict[str, list[float]] = {}
    lock = threading.Lock()
    saved = []

    def timed(owner, attr, tag):
        fn = getattr(owner, attr)
        saved.append((owner, attr, fn))

        def wrapper(*a, **k):
            c0 = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                with lock:
                    spent.setdefault(tag, []).append(time.thread_time() - c0)
        setattr(owner, attr, wrapper)

    timed(filters, "exclusions", "flatten (concatenate, lengths, range check)")
    timed(exact._Exclusions, "__init__", "band look-ups (all blocks)")
    try:
        out = []
        for label, fn in (("plain search", lambda: index.search(b, 10)),
                          ("with arrays", lambda: index.search(b, 10, exclude=seen))):
            fn()
            spent.clear()
            c0 = time.process_time()
            for _ in range(calls):
                fn()
            total = (time.process_time() - c0) / calls
            out.append(f"  {label}: {total * 1e6:,.0f} µs CPU per call (all threads)")
            out += [f"    {tag}: {sum(v) / calls * 1e6:,.0f} µs CPU per call "
                    f"({len(v) / calls:.0f} per call)" for tag, v in spent.items()]
        return out
    finally:
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)


def forms(index, b, seen, rounds: int = 9, calls: int = 10) -> str:
    import scipy.sparse as sp
    lens = np.array([len(s) for s in seen])
    csr = sp.csr_matrix((np.ones(lens.sum(), np.float32), np.concatenate(seen),
                         np.concatenate([[0], np.cumsum(lens)])), shape=(len(b), len(index)))
    table = index.prepare_exclusions(seen)
    rows = np.arange(len(seen))
    fns = {"plain": lambda: index.search(b, 10),
           "arrays": lambda: index.search(b, 10, exclude=seen),
           "CSR": lambda: index.search(b, 10, exclude=csr),
           "prepared": lambda: index.search(b, 10, exclude=table.rows(rows))}
    want = fns["arrays"]()
    for k in ("CSR", "prepared"):
        got = fns[k]()
        assert np.array_equal(got[1], want[1]) and np.array_equal(got[0], want[0]), k
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            fns[k]()
            c0, t0 = time.process_time(), time.perf_counter()
            for _ in range(calls):
                fns[k]()
            wall[k].append((time.perf_counter() - t0) / calls)
            cpu[k].append((time.process_time() - c0) / calls)
    w = {k: statistics.median(v) for k, v in wall.items()}
    c = {k: statistics.median(v) for k, v in cpu.items()}
    return (f"plain {w['plain'] * 1e3:.3f} ms ({c['plain'] * 1e3:.3f} ms CPU); "
            + "; ".join(f"{k} {w[k] / w['plain'] - 1:+.1%} (CPU {c[k] / c['plain'] - 1:+.1%})"
                        for k in ("arrays", "CSR", "prepared")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalogues", default="clustered-1682,trained-1m")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=None, help="folder (default benchmarks/results)")
    ap.add_argument("--force", action="store_true", help="overwrite a file of that name")
    args = ap.parse_args(argv)
    from _results import claim, out_dir, stamp
    path = out_dir(args.out, name="array-exclusions") / f"probe-array-exclusions-{stamp()}.txt"
    claim(path, force=args.force)
    from twotower.index import IndexConfig, make_index
    lines = ["# python benchmarks/probes/array_exclusions.py " + " ".join(argv or sys.argv[1:]),
             f"# {os.cpu_count()} CPUs; load at start {os.getloadavg()[0]:.2f}"]
    for name in args.catalogues.split(","):
        V, b, seen = catalogue(name)
        index = make_index(IndexConfig(kind="exact")).build(V)
        lines += ["", f"## {name}: {len(V):,} x {V.shape[1]}, batch {len(b)}, "
                      f"{np.mean([len(s) for s in seen]):.0f} excluded per query "
                      f"(load {os.getloadavg()[0]:.2f})", "CPU time by stage:"]
        lines += stage_cpu(index, b, seen)
        lines.append("Back-to-back overhead over the plain search, by form:")
        for run in range(args.runs):
            lines.append(f"  run {run + 1} (load {os.getloadavg()[0]:.2f}): "
                         + forms(index, b, seen))
            print(lines[-1], flush=True)
        path.write_text("\n".join(lines) + "\n")
    lines.append(f"\n# load at end {os.getloadavg()[0]:.2f}")
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
