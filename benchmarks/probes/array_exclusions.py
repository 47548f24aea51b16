"""Probe: where per-query exclusions cost time at batch 1,024, by form, before and after.

The catalogues of ``benchmarks/search.py`` where issue 4's 20% line for exclusions is at
stake: its hot-path catalogue (clustered, 1,682 items, d = 32, one chunk), the trained 1M
catalogue (d = 64, norm-ordered; built by ``search.trained`` and cached under
``$TWOTOWER_SEARCH_CACHE``, default /tmp) and the clustered 1M one (d = 64,
norm-ordered), with the same ~100 random seen items per query as ``search.py`` draws.
For each:

- CPU time per call (``time.thread_time`` in whichever thread runs it, so other
  processes' load does not count) of the plain search, of flattening the 1,024 arrays
  (``filters.exclusions``: concatenation, lengths, range check) and of the band look-ups
  of norm-ordered catalogues (``exact._near_exclusions``, or ``_Exclusions.__init__``
  in code before it); with the compiled loops (``twotower.index._kernels``, since
  2026-12-07) the arrays are checked in place (``check_rows``) instead of flattened, and
  the look-ups read a bitmap;
- the overhead of each form over the plain search, back-to-back: runs of 10 calls (or as
  many as take ~30 ms, at least 2), each form's run between two runs of the plain search
  and taken as a ratio to their mean, so that the load of the moment cancels out; the
  forms alternated, 15 rounds; medians of the ratios of wall time and of process CPU
  time; three times. Forms: per-query arrays, CSR rows ``[batch, n]``, rows of a
  prepared table;
- the wall time of each phase of a call, by form (``phases``: the check on the calling
  thread, what the calling thread prepares before the workers start, the workers);
- the median time of a single query with its ~100 seen items excluded (as arrays).

``--before SRC`` also loads the ``twotower`` package of another source tree (e.g. a
worktree of the commit before a change) as a second copy in this process, and times both
side by side: each round runs every form of both, in alternating order.

Usage: TWOTOWER_SEARCH_CACHE=/tmp python benchmarks/probes/array_exclusions.py
           [--before /path/to/old/src] [--catalogues clustered-1682,trained-1m,clustered-1m]
Writes results/probe-array-exclusions-<time>.txt (``--out DIR`` for another folder).
"""
from __future__ import annotations

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(HERE.parent))


def load_copy(src: Path) -> dict:
    """The ``twotower`` modules of source tree ``src``, imported as a second copy: this
    process's own ``twotower`` modules stay as they were in ``sys.modules``."""
    own = {k: v for k, v in sys.modules.items() if k == "twotower" or k.startswith("twotower.")}
    for k in own:
        del sys.modules[k]
    sys.path.insert(0, str(src))
    importlib.invalidate_caches()
    copy: dict = {}
    try:
        import twotower.index  # noqa: F401 - the copy's, from `src`
        import twotower.index.exact  # noqa: F401
        import twotower.index.filters  # noqa: F401
        import twotower.index._base  # noqa: F401
        copy = {k: v for k, v in sys.modules.items()
                if k == "twotower" or k.startswith("twotower.")}
        if not Path(copy["twotower"].__file__).resolve().is_relative_to(src.resolve()):
            raise SystemExit(f"error: --before {src}: twotower was not imported from there")
    finally:
        sys.path.remove(str(src))
        for k in copy:
            del sys.modules[k]
        sys.modules.update(own)
    return copy


def commit_of(src: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(src), "log", "-1", "--format=%h %s"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()[:90] if out.returncode == 0 else "not a git checkout"
    except OSError:
        return "git not found"


def catalogue(name: str):
    import search
    if name == "clustered-1682":  # search.hot_path's
        V, Q = search.clustered(1682, 32, n_queries=2000)
        rng = np.random.default_rng(0)
        seen = [rng.choice(1682, 100, replace=False) for _ in range(len(Q))][:1024]
    elif name == "trained-1m":  # search.run_case's trained 1M
        V, Q = search.trained(1_000_000, 64)
        rng = np.random.default_rng(1)
        seen = [rng.choice(len(V), 100, replace=False) for _ in range(1024)]
    elif name == "clustered-1m":
        V, Q = search.clustered(1_000_000, 64)
        rng = np.random.default_rng(1)
        seen = [rng.choice(len(V), 100, replace=False) for _ in range(1024)]
    else:
        raise SystemExit(f"error: unknown catalogue {name!r} (clustered-1682, trained-1m, "
                         "clustered-1m)")
    return V, np.ascontiguousarray(Q[:1024]), seen


def stage_cpu(mods: dict, index, b, seen, calls: int = 100) -> list[str]:
    """CPU µs per call of the plain search, the flattening and the band look-ups."""
    exact, filters = mods["twotower.index.exact"], mods["twotower.index.filters"]
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
    loops = getattr(filters, "_kernels", None)
    if loops is not None:  # the compiled loops: the arrays are checked, not flattened
        import types
        proxy = types.SimpleNamespace(**{name: getattr(loops, name) for name in dir(loops)
                                         if not name.startswith("_")})
        saved.append((filters, "_kernels", loops))
        filters._kernels = proxy
        timed(proxy, "check_rows", "check in place (compiled check_rows)")
        if hasattr(proxy, "check_near_rows"):  # the check that also finds the first rows'
            timed(proxy, "check_near_rows", "check and find in place (check_near_rows)")
    if hasattr(exact, "_near_exclusions"):
        timed(exact, "_near_exclusions", "band look-ups (all blocks)")
    else:  # code before it: in _Exclusions.__init__
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
            out.append(f"    {label}: {total * 1e6:,.0f} µs CPU per call (all threads)")
            out += [f"      {tag}: {sum(v) / calls * 1e6:,.0f} µs CPU per call "
                    f"({len(v) / calls:.0f} per call)" for tag, v in spent.items()]
        return out
    finally:
        for owner, attr, fn in saved:
            setattr(owner, attr, fn)


FORMS = ("arrays", "CSR", "prepared")


def calls_of(index, b, seen) -> dict:
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
    return fns


def forms(fns: dict, rounds: int = 15, calls: int = 10) -> dict:
    """``fns``: version -> form -> call. Each form's overhead as a ratio to the plain search
    timed just before and just after it (so that the load of the moment cancels out), every
    round running every version's forms in turn (reversed every other round); medians over
    the rounds, of wall and of CPU time per call."""
    def timed(fn) -> tuple[float, float]:
        fn()
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - t0) / calls, (time.process_time() - c0) / calls

    keys = [(v, k) for v in fns for k in FORMS]
    wall: dict = {key: [] for key in keys}
    cpu: dict = {key: [] for key in keys}
    plain: dict = {v: [] for v in fns}
    for r in range(rounds):
        for v, k in (keys if r % 2 == 0 else keys[::-1]):
            w0, c0 = timed(fns[v]["plain"])
            w, c = timed(fns[v][k])
            w1, c1 = timed(fns[v]["plain"])
            wall[(v, k)].append(2 * w / (w0 + w1))
            cpu[(v, k)].append(2 * c / (c0 + c1))
            plain[v] += [w0, w1]
    out = {}
    for v in fns:
        out[v] = (f"plain {statistics.median(plain[v]) * 1e3:.3f} ms; "
                  + "; ".join(f"{k} {statistics.median(wall[(v, k)]) - 1:+.1%} "
                              f"(CPU {statistics.median(cpu[(v, k)]) - 1:+.1%})"
                              for k in FORMS))
    return out


PHASES = ("check", "to workers", "workers", "rest", "total")


def phases(mods: dict, fns: dict, rounds: int = 40, calls: int = 5) -> list[str]:
    """Wall µs of each phase of one call, by form (medians of ``rounds * calls`` calls,
    the forms interleaved): ``check``, ``compile_filters`` (the filters checked, on the
    calling thread); ``to workers``, from ``topk_exact``'s start to its workers' start
    (``_run``: what it prepares for them on the calling thread); ``workers``, until the
    last of them is done; ``rest``, everything else (results, the call around it)."""
    base, exact = mods["twotower.index._base"], mods["twotower.index.exact"]
    marks: dict[str, float] = {}
    saved = [(base, "compile_filters"), (exact, "topk_exact"), (exact, "_run")]
    originals = {(owner, attr): getattr(owner, attr) for owner, attr in saved}

    def timed(owner, attr, tag):
        fn = originals[(owner, attr)]

        def wrapper(*a, **k):
            marks[tag + " in"] = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                marks[tag + " out"] = time.perf_counter()
        setattr(owner, attr, wrapper)

    timed(base, "compile_filters", "check")
    timed(exact, "topk_exact", "topk")
    timed(exact, "_run", "run")
    got: dict = {form: {p: [] for p in PHASES} for form in ("plain", *FORMS)}
    try:
        for r in range(rounds):
            order = list(got) if r % 2 == 0 else list(got)[::-1]
            for form in order:
                fn = fns[form]
                fn()
                for _ in range(calls):
                    marks.clear()
                    t0 = time.perf_counter()
                    fn()
                    t1 = time.perf_counter()
                    check = marks["check out"] - marks["check in"]
                    to_workers = marks["run in"] - marks["topk in"]
                    workers = marks["run out"] - marks["run in"]
                    for p, v in zip(PHASES, (check, to_workers, workers,
                                             t1 - t0 - check - to_workers - workers, t1 - t0)):
                        got[form][p].append(v)
    finally:
        for (owner, attr), fn in originals.items():
            setattr(owner, attr, fn)
    out = ["    phase       " + "".join(f"{form:>10s}" for form in got)]
    for p in PHASES:
        out.append(f"    {p:12s}" + "".join(f"{statistics.median(got[form][p]) * 1e6:10.0f}"
                                           for form in got))
    return out


def single(indexes: dict, Q, seen, n_queries: int = 300) -> dict:
    """Median µs of one query with its seen items excluded (arrays), versions alternated
    query by query."""
    ts: dict = {v: [] for v in indexes}
    for v, index in indexes.items():
        for i in range(50):
            index.search(Q[i:i + 1], 10, exclude=seen[i:i + 1])
    for i in range(n_queries):
        j = i % len(Q)
        for v, index in indexes.items():
            t0 = time.perf_counter()
            index.search(Q[j:j + 1], 10, exclude=seen[j:j + 1])
            ts[v].append(time.perf_counter() - t0)
    return {v: statistics.median(t) * 1e6 for v, t in ts.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalogues", default="clustered-1682,trained-1m,clustered-1m")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--before", default=None,
                    help="another source tree (its src/ folder) to time side by side")
    ap.add_argument("--out", default=None, help="folder (default benchmarks/results)")
    ap.add_argument("--force", action="store_true", help="overwrite a file of that name")
    args = ap.parse_args(argv)
    from _results import claim, out_dir, stamp
    path = out_dir(args.out, name="array-exclusions") / f"probe-array-exclusions-{stamp()}.txt"
    claim(path, force=args.force)
    versions = {"after": load_copy(SRC)} if args.before is None else {
        "before": load_copy(Path(args.before)), "after": load_copy(SRC)}
    lines = ["# python benchmarks/probes/array_exclusions.py " + " ".join(argv or sys.argv[1:]),
             f"# {os.cpu_count()} CPUs; load at start {os.getloadavg()[0]:.2f}"]
    if args.before is not None:
        lines += [f"# before: {args.before} ({commit_of(Path(args.before))})",
                  f"# after: {SRC} ({commit_of(SRC)}; uncommitted changes not shown)"]
    for name in args.catalogues.split(","):
        V, b, seen = catalogue(name)
        indexes = {}
        for v, mods in versions.items():
            ti = mods["twotower.index"]
            indexes[v] = ti.make_index(ti.IndexConfig(kind="exact")).build(V)
        first = next(iter(indexes.values()))
        first.search(b, 10)
        per_call = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            first.search(b, 10)
            per_call = min(per_call, time.perf_counter() - t0)
        # calls per timing: ~30 ms of them (2 to 10), ~0.5 s for the stage times (10 to 100)
        calls = max(2, min(10, int(0.03 / per_call)))
        stage_calls = max(10, min(100, int(0.5 / per_call)))
        lines += ["", f"## {name}: {len(V):,} x {V.shape[1]}, batch {len(b)}, "
                      f"{np.mean([len(s) for s in seen]):.0f} excluded per query "
                      f"(load {os.getloadavg()[0]:.2f})", "CPU time by stage:"]
        for v, mods in versions.items():
            lines.append(f"  {v}:")
            lines += stage_cpu(mods, indexes[v], b, seen, stage_calls)
        fns = {v: calls_of(index, b, seen) for v, index in indexes.items()}
        want = fns[next(iter(fns))]["arrays"]()
        for v in fns:  # every version returns the same results
            got = fns[v]["arrays"]()
            assert np.array_equal(got[1], want[1]) and np.array_equal(got[0], want[0]), v
        lines.append("Wall µs by phase of a call (medians, forms interleaved; "
                     "`phases`):")
        for v, mods in versions.items():
            lines.append(f"  {v}:")
            lines += phases(mods, fns[v], rounds=max(4, min(40, int(2.0 / per_call))),
                            calls=min(5, calls))
        lines.append(f"Back-to-back overhead over the plain search, by form ({calls} calls a "
                     "run):")
        for run in range(args.runs):
            load = os.getloadavg()[0]
            for v, text in forms(fns, calls=calls).items():
                lines.append(f"  run {run + 1} (load {load:.2f}) {v}: {text}")
                print(lines[-1], flush=True)
        one = single(indexes, b, seen)
        lines.append("One query, ~100 seen items excluded (arrays), median of 300: "
                     + "; ".join(f"{v} {us:.1f} µs" for v, us in one.items()))
        del fns, indexes
        path.write_text("\n".join(lines) + "\n")
    lines.append(f"\n# load at end {os.getloadavg()[0]:.2f}")
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
