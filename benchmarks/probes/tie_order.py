"""Probe: the cost of exact search's tie order (equal scores lower id first, on every
path) against the code before it, both loaded in one run and timed interleaved.

``--baseline FILE``: the exact index module before the change (``git show
<commit>:src/twotower/index/exact.py > FILE``); it is loaded beside the current one (with
the current package's other modules). Cases, k = 10: the serving hot path (clustered 1,682
x 32, one query, 100 excluded items; p50 of paired calls, and rounds of calls), the
selection of that path alone (``_topk_one``), the 1,682 batch of 1,024, and the
benchmark's trained 1M x 64 catalogue (``search.trained``, cached by
``benchmarks/search.py``; ``TWOTOWER_SEARCH_CACHE`` names its folder) with batches of
1,024 (plain and 100 seen items per query) and single queries. Rounds alternate the two
codes (which goes first too); per code, the median of the rounds' per-call wall and CPU
(``time.process_time``, all threads) times, and the median of the rounds' paired ratios.
The machine is shared: the load average is printed beside each case.

Usage: python benchmarks/probes/tie_order.py --baseline FILE [--skip-1m] [--out FILE]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load_baseline(path: Path):
    from twotower.index import _base
    kept = dict(_base._REGISTRY)
    spec = importlib.util.spec_from_file_location("twotower_exact_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _base._REGISTRY.clear()
    _base._REGISTRY.update(kept)  # the baseline's class registered itself: undone
    return mod


def paired_calls(fns: dict, args: list, rounds: int = 1) -> dict:
    """Per-call wall seconds of each fn over ``args``, alternating which goes first."""
    ts = {name: [] for name in fns}
    names = list(fns)
    for _ in range(rounds):
        for j, a in enumerate(args):
            for name in (names if j % 2 == 0 else names[::-1]):
                t0 = time.perf_counter()
                fns[name](a)
                ts[name].append(time.perf_counter() - t0)
    return {name: np.array(v) for name, v in ts.items()}


def runs(fns: dict, call_args: list, rounds: int) -> dict:
    """Rounds of back-to-back runs over ``call_args``, the two codes alternated (which goes
    first too): per code, the median per-call wall and CPU (``time.process_time``, all
    threads) seconds of the rounds, and the median over rounds of the second code's time
    over the first's (paired: a round's two runs share its load)."""
    names = list(fns)
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            c0, t0 = time.process_time(), time.perf_counter()
            for a in call_args:
                fns[name](a)
            wall[name].append((time.perf_counter() - t0) / len(call_args))
            cpu[name].append((time.process_time() - c0) / len(call_args))
    a, b = names
    out = {name: (statistics.median(wall[name]), statistics.median(cpu[name]))
           for name in names}
    out["ratio"] = (statistics.median(np.divide(wall[b], wall[a])),
                    statistics.median(np.divide(cpu[b], cpu[a])))
    return out


def line(what: str, got: dict, unit: float, u: str) -> str:
    (wa, ca), (wb, cb), (rw, rc) = got["before"], got["ties"], got["ratio"]
    return (f"{what}: wall {wa * unit:.2f} -> {wb * unit:.2f} {u} (paired median "
            f"{rw - 1:+.1%}), CPU {ca * unit:.2f} -> {cb * unit:.2f} {u} (paired median "
            f"{rc - 1:+.1%})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", type=Path, required=True)
    ap.add_argument("--skip-1m", action="store_true")
    ap.add_argument("--out", type=Path, help="also write the output here")
    ap.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    args = ap.parse_args()
    from _results import claim
    if args.out is not None:
        claim(args.out, force=args.force)
    import search as bench
    from twotower.index import ExactIndex

    base = load_baseline(args.baseline)
    lines = [f"# python benchmarks/probes/tie_order.py, {time.strftime('%Y-%m-%d %H:%M')}, "
             f"{os.cpu_count()} cores"]

    def say(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    def load() -> str:
        return f"load {os.getloadavg()[0]:.1f}"

    K = 10
    cases = [("clustered 1,682 x 32", bench.clustered(1682, 32, n_queries=2000)[:2])]
    if not args.skip_1m:
        cases.append(("trained 1M x 64", bench.trained(1_000_000, 64)))
    for name, (V, Q) in cases:
        n = len(V)
        rng = np.random.default_rng(0)
        idx = {"before": base.ExactIndex().build(V), "ties": ExactIndex().build(V)}
        seen = [rng.choice(n, 100, replace=False) for _ in range(len(Q))]
        # same results up to ties: the ids of every row hold the same scores
        for ex in (None, seen[:1024]):
            a = idx["before"].search(Q[:1024], K, exclude=ex)
            b = idx["ties"].search(Q[:1024], K, exclude=ex)
            same = float(np.mean(np.all(a[1] == b[1], axis=1)))
            assert np.array_equal(a[0], b[0]), "scores differ"
            say(f"{name}: batch of 1,024{' + 100 seen' if ex else ''}: identical scores, "
                f"identical ids in {same:.1%} of rows")
        singles = min(len(Q), 2000 if n < 10_000 else 500)
        for i in range(min(200, singles)):  # warm
            for ix in idx.values():
                ix.search(Q[i:i + 1], K, exclude=seen[i:i + 1])
        bench.settle()
        ld = load()
        ts = paired_calls({k: (lambda i, ix=ix: ix.search(Q[i:i + 1], K,
                                                          exclude=seen[i:i + 1]))
                           for k, ix in idx.items()}, list(range(singles)),
                          rounds=3 if n < 10_000 else 1)
        d = ts["ties"] - ts["before"]
        say(f"{name}: one query + 100 seen ({ld}): p50 before {np.median(ts['before'])*1e6:.1f}"
            f" µs, ties {np.median(ts['ties'])*1e6:.1f} µs, paired median difference "
            f"{np.median(d)*1e6:+.2f} µs ({np.median(d)/np.median(ts['before']):+.1%}), "
            f"{len(d)} pairs")
        ld = load()
        got = runs({k: (lambda i, ix=ix: ix.search(Q[i:i + 1], K, exclude=seen[i:i + 1]))
                    for k, ix in idx.items()}, list(range(min(singles, 200))), rounds=20)
        say(line(f"{name}: one query + 100 seen, rounds of 200 calls x 20 ({ld})", got,
                 1e6, "µs"))
        if n <= 2048:  # the hot path's selection alone (``_topk_one``), its filters compiled
            from twotower.index import exact
            from twotower.index.filters import compile_filters
            fs = [compile_filters(seen[i:i + 1], None, None, n, 1) for i in range(200)]
            ld = load()
            got = runs({"before": lambda i: base._topk_one(V, Q[i], K, fs[i]),
                        "ties": lambda i: exact._topk_one(V, Q[i], K, fs[i])},
                       list(range(200)), rounds=60)
            say(line(f"{name}: _topk_one alone (+ 100 seen), rounds of 200 calls x 60 ({ld})",
                     got, 1e6, "µs"))
        b = Q[:1024]
        for label, ex in (("plain", None), ("+ 100 seen (id arrays)", seen[:1024])):
            ld = load()
            calls = 5 if n < 10_000 else 3
            got = runs({k: (lambda _, ix=ix, ex=ex: ix.search(b, K, exclude=ex))
                        for k, ix in idx.items()}, [0] * calls, rounds=40)
            say(line(f"{name}: batch of 1,024, {label}, rounds of {calls} calls x 40 ({ld})",
                     got, 1e3, "ms"))
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
