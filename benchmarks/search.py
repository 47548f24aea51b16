"""Search benchmark: twotower's exact and ANN indexes against references measured in the
same run (numpy matmul + argpartition, faiss IndexFlatIP, the machine's float32 GEMM peak).

Run on demand, never in the test suite::

    .venv/bin/python benchmarks/search.py --sizes 1682,100000,1000000 --dims 64
    .venv/bin/python benchmarks/search.py --sizes 1682,100000 --dims 32,64 --quick

Writes ``benchmarks/results/search-<timestamp>.json`` (raw) and ``.md`` (tables).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import faiss  # noqa: E402

from twotower.index import IndexConfig, make_index, recall_at_k  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
K = 10


# ---------------------------------------------------------------- catalogues
def clustered(n: int, d: int, seed: int = 0, n_queries: int = 1024,
              n_clusters: int = 1000, rank: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """~1,000 Gaussians in a rank-16 subspace; item norms skewed by popularity.

    Popular items (a Zipf-like rank) get larger norms, as trained two-tower item
    embeddings do; queries come from the same clusters.
    """
    rng = np.random.default_rng(seed)
    basis = (rng.standard_normal((rank, d)) / np.sqrt(rank)).astype(np.float32)
    centres = (rng.standard_normal((n_clusters, rank)) * 2.0).astype(np.float32)
    x = np.empty((n, d), dtype=np.float32)
    step = 1 << 18
    for s in range(0, n, step):  # in blocks: bounded temporaries at 5M items
        m = min(step, n - s)
        z = centres[rng.integers(0, n_clusters, m)] + 0.5 * rng.standard_normal(
            (m, rank), dtype=np.float32)
        x[s:s + m] = z @ basis + 0.05 * rng.standard_normal((m, d), dtype=np.float32)
    popularity_rank = rng.permutation(n) + 1
    x *= (1.0 + 2.0 * popularity_rank ** -0.3).astype(np.float32)[:, None]
    z = centres[rng.integers(0, n_clusters, n_queries)] + 0.5 * rng.standard_normal(
        (n_queries, rank), dtype=np.float32)
    return x, (z @ basis).astype(np.float32)


def isotropic(n: int, d: int, seed: int = 0, n_queries: int = 1024
              ) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic Gaussian items and queries: no structure for an ANN index to use."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d), dtype=np.float32),
            rng.standard_normal((n_queries, d), dtype=np.float32))


# ---------------------------------------------------------------- measuring
def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def settle() -> None:
    # Let the other library's idle BLAS/OpenMP threads stop spinning before timing.
    gc.collect()
    time.sleep(0.5)


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        settle()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def latencies(fn, queries: np.ndarray, warmup: int = 20, rounds: int = 2) -> dict:
    """One query at a time; the round with the lower median is kept (shared machine)."""
    for i in range(min(warmup, len(queries))):
        fn(queries[i:i + 1])
    best = None
    for _ in range(rounds):
        settle()
        ts = np.empty(len(queries))
        for i in range(len(queries)):
            t0 = time.perf_counter()
            fn(queries[i:i + 1])
            ts[i] = time.perf_counter() - t0
        if best is None or np.median(ts) < np.median(best):
            best = ts
    ts = best
    return {"p50_us": float(np.percentile(ts, 50) * 1e6),
            "p99_us": float(np.percentile(ts, 99) * 1e6),
            "qps": float(len(ts) / ts.sum()), "n_queries": len(ts)}


def overhead(plain, filtered, repeat: int) -> tuple[float, float]:
    """Best-of-``repeat`` times of two calls, interleaved so both see the same load."""
    a = b = float("inf")
    for _ in range(repeat):
        a = min(a, timed(plain))
        b = min(b, timed(filtered))
    return a, b


def gemm_peak(size: int = 4096) -> dict:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    a @ a
    t = timed(lambda: a @ a, repeat=3)
    return {"size": size, "seconds": t, "gflops": 2 * size ** 3 / t / 1e9}


def numpy_reference(V: np.ndarray, Q: np.ndarray, k: int, block: int = 64):
    """The textbook exact search: matmul of a query block, argpartition, sort."""
    n = V.shape[0]
    ids = np.empty((len(Q), k), dtype=np.int64)
    for r in range(0, len(Q), block):
        S = Q[r:r + block] @ V.T
        p = np.argpartition(S, n - k, axis=1)[:, n - k:]
        o = np.argsort(-np.take_along_axis(S, p, axis=1), axis=1)
        ids[r:r + block] = np.take_along_axis(p, o, axis=1)
    return ids


def machine() -> dict:
    info = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
            "processor": platform.processor(), "python": sys.version.split()[0],
            "numpy": np.__version__, "faiss": faiss.__version__,
            "faiss_omp_threads": faiss.omp_get_max_threads(),
            "env": {k: v for k, v in os.environ.items()
                    if k.startswith(("OPENBLAS", "OMP_", "MKL_", "NVPL_"))},
            "loadavg_start": os.getloadavg()}
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu_model"] = next(ln.split(":", 1)[1].strip() for ln in fh
                                     if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        from threadpoolctl import threadpool_info
        info["blas"] = threadpool_info()
    except ImportError:
        cfg = np.show_config(mode="dicts")
        info["blas"] = cfg.get("Build Dependencies", {}).get("blas", {})
        info["blas_note"] = "threadpoolctl not installed: numpy's build-time BLAS shown"
    return info


# ---------------------------------------------------------------- cases
def run_case(kind_name: str, V: np.ndarray, Q: np.ndarray, args, peak: float) -> dict:
    n, d = V.shape
    out: dict = {"catalogue": kind_name, "n": n, "d": d}
    n_single = 30 if n >= 1_000_000 else 100 if n >= 100_000 else 300
    b = Q[:args.batch]
    flops = 2.0 * n * d * len(b)

    # exact (twotower)
    r0 = rss_mb()
    t0 = time.perf_counter()
    exact = make_index(IndexConfig(kind="exact")).build(V)
    out["exact"] = {"build_s": time.perf_counter() - t0, "rss_mb": rss_mb() - r0}
    ref = None

    def ours():
        nonlocal ref
        ref = exact.search(b, K)[1]
    t = timed(ours, repeat=args.repeat)
    out["exact"].update(batch_s=t, batch_qps=len(b) / t, gflops=flops / t / 1e9,
                        frac_gemm_peak=flops / t / 1e9 / peak)
    out["exact"]["single"] = latencies(lambda q: exact.search(q, K), Q[:n_single])

    # references: faiss IndexFlatIP and numpy matmul + argpartition
    flat = faiss.IndexFlatIP(d)
    flat.add(V)
    # faiss at 1 OpenMP thread and at all cores; the better one is the reference (OpenMP
    # barriers suffer badly when other processes share the cores).
    per_threads = {}
    for threads in sorted({1, os.cpu_count() or 1}):
        faiss.omp_set_num_threads(threads)
        t = timed(lambda: flat.search(b, K), repeat=args.repeat)
        per_threads[threads] = {
            "batch_s": t, "single": latencies(lambda q: flat.search(q, K), Q[:n_single])}
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    best_t = min(per_threads, key=lambda th: per_threads[th]["batch_s"])
    t = per_threads[best_t]["batch_s"]
    best_s = min(per_threads, key=lambda th: per_threads[th]["single"]["p50_us"])
    out["faiss_flat"] = {"batch_s": t, "batch_qps": len(b) / t, "gflops": flops / t / 1e9,
                         "frac_gemm_peak": flops / t / 1e9 / peak, "batch_threads": best_t,
                         "single": per_threads[best_s]["single"], "single_threads": best_s,
                         "per_threads": per_threads}
    out["faiss_flat"]["recall_vs_exact"] = recall_at_k(ref, flat.search(b, K)[1])
    del flat
    if not args.quick or n <= 100_000:
        ids = None

        def ref_np():
            nonlocal ids
            ids = numpy_reference(V, b, K)
        t = timed(ref_np)
        out["numpy_ref"] = {"batch_s": t, "batch_qps": len(b) / t, "gflops": flops / t / 1e9,
                            "frac_gemm_peak": flops / t / 1e9 / peak,
                            "recall_vs_exact": recall_at_k(ref, ids)}

    # exclusion overhead: ~100 seen items per query, batch and single
    rng = np.random.default_rng(1)
    n_seen = min(100, n // 4)
    seen = [rng.choice(n, n_seen, replace=False) for _ in range(len(b))]
    t_plain, t_ex = overhead(lambda: exact.search(b, K), lambda: exact.search(b, K, exclude=seen),
                             repeat=max(args.repeat, 5 if n <= 100_000 else 2))
    out["exact"]["batch_plain_s"] = t_plain
    out["exact"]["batch_exclude_s"] = t_ex
    out["exact"]["exclude_overhead"] = t_ex / t_plain - 1.0
    out["exact"]["single_exclude"] = latencies(
        lambda q: exact.search(q, K, exclude=seen[:1]), Q[:n_single])

    # ANN kinds with default settings
    for kind in args.ann:
        if n < 10_000:
            continue  # below ~10k items exact search is faster than any index
        gc.collect()
        r0 = rss_mb()
        t0 = time.perf_counter()
        index = make_index(IndexConfig(kind=kind)).build(V)
        res = {"build_s": time.perf_counter() - t0, "rss_mb": rss_mb() - r0,
               "config": index.config.to_dict()}
        got = None

        def ann():
            nonlocal got
            got = index.search(b, K)[1]
        t = timed(ann, repeat=args.repeat)
        res.update(batch_s=t, batch_qps=len(b) / t, recall_at_10=recall_at_k(ref, got))
        res["single"] = latencies(lambda q: index.search(q, K), Q[:max(n_single, 300)])
        res["speedup_single_vs_exact"] = res["single"]["qps"] / out["exact"]["single"]["qps"]
        if kind == "hnsw" and (kind_name == "isotropic" or args.curves):
            curve = []
            for ef in (16, 32, 64, 128, 256, 512):
                index.config = index.config.replace(ef_search=ef)
                ids = index.search(b[:256], K)[1]
                lat = latencies(lambda q: index.search(q, K), Q[:200])
                curve.append({"ef_search": ef, "recall_at_10": recall_at_k(ref[:256], ids),
                              "qps_single": lat["qps"], "p50_us": lat["p50_us"]})
            res["ef_curve"] = curve
        if kind == "ivf":
            res["nlist"], res["nprobe"] = index.nlist, index.nprobe
        out[kind] = res
        del index
    del exact
    return out


def hot_path() -> dict:
    """The serving case: 1,682 items, d=32, one query, ~100 excluded items."""
    rng = np.random.default_rng(0)
    V, Q = clustered(1682, 32, n_queries=2000)
    index = make_index(IndexConfig(kind="exact")).build(V)
    seen = [rng.choice(1682, 100, replace=False) for _ in range(len(Q))]
    for i in range(200):
        index.search(Q[i:i + 1], K, exclude=seen[i:i + 1])
    settle()
    ts = np.empty(len(Q))
    for i in range(len(Q)):
        t0 = time.perf_counter()
        index.search(Q[i:i + 1], K, exclude=seen[i:i + 1])
        ts[i] = time.perf_counter() - t0
    b = Q[:1024]
    t_plain, t_ex = overhead(lambda: index.search(b, K),
                             lambda: index.search(b, K, exclude=seen[:1024]), repeat=15)
    return {"n": 1682, "d": 32, "excluded": 100,
            "single_p50_us": float(np.percentile(ts, 50) * 1e6),
            "single_p99_us": float(np.percentile(ts, 99) * 1e6),
            "batch1024_s": t_plain, "batch1024_exclude_s": t_ex,
            "exclude_overhead": t_ex / t_plain - 1.0}


# ---------------------------------------------------------------- report
def goals(res: dict) -> list[dict]:
    rows = []
    hp = res["hot_path"]
    rows.append({"goal": "exact N=1682 d=32 1 query, 100 excluded: p50 < 50 µs",
                 "value": f"{hp['single_p50_us']:.1f} µs", "pass": hp["single_p50_us"] < 50})
    rows.append({"goal": "exclusion overhead, batch 1024, 100 seen/query (N=1682): < 20%",
                 "value": f"{hp['exclude_overhead']:+.1%}", "pass": hp["exclude_overhead"] < 0.2})
    for c in res["cases"]:
        tag = f"{c['catalogue']} N={c['n']:,} d={c['d']}"
        if c["n"] >= 100_000:
            ov = c["exact"]["exclude_overhead"]
            rows.append({"goal": f"exclusion overhead, batch 1024 ({tag}): < 20%",
                         "value": f"{ov:+.1%}", "pass": ov < 0.2})
        if c["n"] == 1_000_000 and c["d"] == 64 and c["catalogue"] == "clustered":
            e, f = c["exact"], c["faiss_flat"]
            rows.append({"goal": f"exact batch 1024 >= faiss IndexFlatIP ({tag})",
                         "value": f"{e['batch_qps']:.0f} vs {f['batch_qps']:.0f} QPS "
                                  f"({e['batch_qps'] / f['batch_qps']:.2f}x)",
                         "pass": e["batch_qps"] >= f["batch_qps"]})
            rows.append({"goal": f"exact batch 1024 >= 60% of GEMM peak ({tag})",
                         "value": f"{e['frac_gemm_peak']:.0%} ({e['gflops']:.0f} of "
                                  f"{res['gemm_peak_gflops']:.0f} GFLOP/s)",
                         "pass": e["frac_gemm_peak"] >= 0.6})
            if "hnsw" in c:
                h = c["hnsw"]
                ok = h["recall_at_10"] >= 0.95 and h["speedup_single_vs_exact"] >= 10
                rows.append({"goal": f"HNSW batch 1: recall@10 >= 0.95 at >= 10x exact QPS "
                                     f"({tag})",
                             "value": f"recall {h['recall_at_10']:.3f}, "
                                      f"{h['speedup_single_vs_exact']:.0f}x",
                             "pass": ok})
    return rows


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"# Search benchmark {res['started']}", "",
             f"Command: `{res['command']}`", "",
             f"Machine: {m.get('cpu_model', m['processor'])}, {m['cpu_count']} cores; "
             f"numpy {m['numpy']}, faiss {m['faiss']}; load average at start "
             f"{m['loadavg_start'][0]:.1f}, at end {res['loadavg_end'][0]:.1f} "
             f"(shared machine). float32 GEMM peak ({res['gemm']['size']}² matmul, better of "
             f"start {res['gemm']['gflops']:.0f} and end {res['gemm_end']['gflops']:.0f}): "
             f"{res['gemm_peak_gflops']:.0f} GFLOP/s. k = {K}; batch = {res['batch']} queries.",
             "", "## Goals", "", "| goal | measured | pass |", "|---|---|---|"]
    for g in res["goals"]:
        lines.append(f"| {g['goal']} | {g['value']} | {'yes' if g['pass'] else '**no**'} |")
    lines += ["", "## Results", "",
              "| catalogue | N | d | method | build s | batch QPS | % GEMM peak | "
              "1-query p50 µs | p99 µs | 1-query QPS | recall@10 | RSS MB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in res["cases"]:
        for name in ("exact", "faiss_flat", "numpy_ref", "hnsw", "ivf"):
            if name not in c:
                continue
            r = c[name]
            s = r.get("single", {})
            pct = f"{r['frac_gemm_peak']:.0%}" if "frac_gemm_peak" in r else ""
            rec = r.get("recall_at_10", r.get("recall_vs_exact", 1.0 if name == "exact" else ""))
            label = {"exact": "twotower exact",
                     "faiss_flat": f"faiss IndexFlatIP ({r.get('batch_threads', '')} thr)",
                     "numpy_ref": "numpy matmul+argpartition", "hnsw": "twotower hnsw",
                     "ivf": "twotower ivf"}[name]
            build = f"{r['build_s']:.1f}" if "build_s" in r else ""
            rec = rec if isinstance(rec, str) else f"{rec:.3f}"
            rss = f"{r['rss_mb']:,.0f}" if "rss_mb" in r else ""
            single = (f"{s['p50_us']:,.0f} | {s['p99_us']:,.0f} | {s['qps']:,.0f}" if s
                      else " | | ")
            lines.append(f"| {c['catalogue']} | {c['n']:,} | {c['d']} | {label} | {build} | "
                         f"{r['batch_qps']:,.0f} | {pct} | {single} | {rec} | {rss} |")
    lines += ["", "## Exclusions (~100 seen items per query)", "",
              "| catalogue | N | d | batch s | batch + exclude s | overhead | "
              "1-query p50 µs | with exclude |", "|---|---|---|---|---|---|---|---|"]
    hp = res["hot_path"]
    lines.append(f"| clustered | 1,682 | 32 | {hp['batch1024_s']:.4f} | "
                 f"{hp['batch1024_exclude_s']:.4f} | {hp['exclude_overhead']:+.1%} | | "
                 f"{hp['single_p50_us']:.1f} (p99 {hp['single_p99_us']:.1f}) |")
    for c in res["cases"]:
        e = c["exact"]
        lines.append(f"| {c['catalogue']} | {c['n']:,} | {c['d']} | {e['batch_plain_s']:.3f} | "
                     f"{e['batch_exclude_s']:.3f} | {e['exclude_overhead']:+.1%} | "
                     f"{e['single']['p50_us']:,.0f} | {e['single_exclude']['p50_us']:,.0f} |")
    curves = [(c, c["hnsw"]["ef_curve"]) for c in res["cases"]
              if "hnsw" in c and "ef_curve" in c["hnsw"]]
    if curves:
        lines += ["", "## HNSW recall / speed over ef_search", "",
                  "| catalogue | N | d | ef_search | recall@10 | 1-query QPS | p50 µs |",
                  "|---|---|---|---|---|---|---|"]
        for c, curve in curves:
            for p in curve:
                lines.append(f"| {c['catalogue']} | {c['n']:,} | {c['d']} | {p['ef_search']} | "
                             f"{p['recall_at_10']:.3f} | {p['qps_single']:,.0f} | "
                             f"{p['p50_us']:,.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1682,100000,1000000",
                   help="catalogue sizes, comma-separated (e.g. 1682,100000,1000000,5000000)")
    p.add_argument("--dims", default="64", help="embedding dims, comma-separated (32,64)")
    p.add_argument("--catalogues", default="clustered,isotropic")
    p.add_argument("--isotropic-max", type=int, default=100_000,
                   help="largest N for the isotropic stress case (HNSW builds are slow)")
    p.add_argument("--ann", default="hnsw,ivf", help="ANN kinds to run (empty: none)")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--repeat", type=int, default=2, help="best of this many batch runs")
    p.add_argument("--curves", action="store_true", help="ef_search curve on every catalogue")
    p.add_argument("--quick", action="store_true", help="one repeat; skip slow references")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    args.ann = [a for a in args.ann.split(",") if a]
    if args.quick:
        args.repeat = 1
    sizes = [int(s) for s in args.sizes.split(",")]
    dims = [int(s) for s in args.dims.split(",")]
    faiss.omp_set_num_threads(os.cpu_count() or 1)

    started = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    res = {"started": started, "command": " ".join(["python", "benchmarks/search.py",
                                                     *(argv or sys.argv[1:])]),
           "args": vars(args), "machine": machine(), "k": K, "batch": args.batch}
    print(f"machine: {res['machine'].get('cpu_model')} x{os.cpu_count()}", flush=True)
    res["gemm"] = gemm_peak()
    peak = res["gemm"]["gflops"]
    print(f"GEMM peak {peak:.0f} GFLOP/s", flush=True)
    res["hot_path"] = hot_path()
    print(f"hot path: {res['hot_path']}", flush=True)
    res["cases"] = []
    for cat in args.catalogues.split(","):
        for d in dims:
            for n in sizes:
                if cat == "isotropic" and n > args.isotropic_max:
                    continue
                t0 = time.perf_counter()
                V, Q = (clustered if cat == "clustered" else isotropic)(n, d)
                case = run_case(cat, V, Q, args, peak)
                case["case_s"] = time.perf_counter() - t0
                res["cases"].append(case)
                print(json.dumps(case, default=float)[:600], flush=True)
                del V, Q
                gc.collect()
    res["loadavg_end"] = os.getloadavg()
    res["gemm_end"] = gemm_peak()
    # Other processes share this machine: the GEMM peak is the better of the two
    # measurements, and every fraction of it is recomputed against that.
    peak = max(res["gemm"]["gflops"], res["gemm_end"]["gflops"])
    res["gemm_peak_gflops"] = peak
    for case in res["cases"]:
        for r in case.values():
            if isinstance(r, dict) and "gflops" in r:
                r["frac_gemm_peak"] = r["gflops"] / peak
    res["goals"] = goals(res)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"search-{started}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=2, default=float))
    stem.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
