"""Probe: could the per-query arrays' preparation hide behind the search on the other core?

On the trained 1M catalogue (d = 64, norm-ordered; built by ``search.trained`` and cached
under ``$TWOTOWER_SEARCH_CACHE``, default /tmp), 1,024 queries with ~100 random seen items
each (as ``array_exclusions.py``), this times per call, wall and process CPU:

- ``plain``: the search without exclusions;
- ``prep``: what the arrays form costs before any worker starts: flattening and checking
  the 1,024 arrays (``filters.exclusions``) and finding the ids stored in the first chunks
  (``exact._near_exclusions``, the whole batch at once);
- ``serial``: ``prep``, then ``plain`` (what the search does now, less the masking);
- ``overlapped``: ``prep`` on a second thread while ``plain`` runs on this one: the best a
  search that prepared its exclusions while its workers scan could do (it never waits
  for them), so an upper bound on what hiding the preparation could gain;
- ``arrays``: the search with the arrays, as a caller makes it.

Rounds alternate the order of the five; medians over the rounds, and the median ratio of
``overlapped`` to ``serial`` paired round by round. CPU time is all threads': hiding work
on an idle core is not less work, and under load (no idle core) it cannot gain.

Usage: TWOTOWER_SEARCH_CACHE=/tmp python benchmarks/probes/exclusion_overlap.py [--rounds 20]
Writes results/probe-exclusion-overlap-<time>.txt (``--out FILE`` for another file).
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


def timed(fn, calls: int) -> tuple[float, float]:
    """Wall and process CPU seconds per call, over ``calls`` calls after one warm-up."""
    fn()
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls, (time.process_time() - c0) / calls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--calls", type=int, default=10, help="calls per timing")
    ap.add_argument("--out", default=None, help="results file (default benchmarks/results)")
    ap.add_argument("--force", action="store_true", help="overwrite a file of that name")
    args = ap.parse_args(argv)
    from _results import results_log

    import search
    from twotower.index import IndexConfig, make_index
    from twotower.index import exact, filters

    say, close = results_log(args.out, "exclusion-overlap", force=args.force)
    say("# python benchmarks/probes/exclusion_overlap.py " + " ".join(argv or sys.argv[1:]))
    say(f"# {os.cpu_count()} CPUs; load at start {os.getloadavg()[0]:.2f}")
    V, Q = search.trained(1_000_000, 64)
    Q = np.ascontiguousarray(Q[:1024])
    rng = np.random.default_rng(1)
    seen = [rng.choice(len(V), 100, replace=False) for _ in range(len(Q))]
    index = make_index(IndexConfig(kind="exact")).build(V)
    n, b = len(V), len(Q)
    near = 512 + 7 * 2048  # the defaults' first chunk and 7 more (exact's `near`)

    def prep():
        ptr, ids = filters.exclusions(seen, n, b)
        return exact._near_exclusions(ptr, ids, index._inverse, index._band, near)

    def plain():
        index.search(Q, 10)

    def serial():
        prep()
        plain()

    def overlapped():
        t = threading.Thread(target=prep)
        t.start()
        plain()
        t.join()

    def arrays():
        index.search(Q, 10, exclude=seen)

    fns = {"plain": plain, "prep": prep, "serial": serial, "overlapped": overlapped,
           "arrays": arrays}
    wall: dict = {k: [] for k in fns}
    cpu: dict = {k: [] for k in fns}
    ratio = []
    for r in range(args.rounds):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            w, c = timed(fns[k], args.calls)
            wall[k].append(w)
            cpu[k].append(c)
        ratio.append(wall["overlapped"][-1] / wall["serial"][-1])
    say(f"## trained 1M x 64, batch {b}, 100 excluded per query, {args.rounds} rounds of "
        f"{args.calls} calls (load {os.getloadavg()[0]:.2f})")
    for k in fns:
        say(f"  {k}: wall {statistics.median(wall[k]) * 1e6:,.0f} µs, CPU (all threads) "
            f"{statistics.median(cpu[k]) * 1e6:,.0f} µs per call")
    q = statistics.quantiles(ratio, n=4)
    say(f"  overlapped / serial wall, paired: median {statistics.median(ratio):.3f} "
        f"(quartiles {q[0]:.3f} to {q[2]:.3f})")
    say(f"# load at end {os.getloadavg()[0]:.2f}")
    close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
