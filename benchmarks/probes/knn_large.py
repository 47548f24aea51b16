"""Probe: the sparse ItemKNN on catalogues far above ``DENSE_BASELINE_MAX_ITEMS`` (20,000).

``twotower.evaluation.ItemKNN`` keeps a sparse similarity (``neighbors`` entries per target
item) and computes ``XᵀX`` a block of columns at a time, so ``evaluate --baselines`` runs it
above 20,000 items, where the dense ``n x n`` matrix it held before (40 GB at 100k items)
was out of reach. This generates a power-law log with ``benchmarks/synthetic.py`` (its
``Planted`` model: topic preference mixed with Zipf popularity, heavy-tailed user
activity), splits it 80/20 at random (seed 0), and for each ``neighbors`` / ``shrink``
setting fits ItemKNN on the training part and scores it on the test part (seen items
excluded) beside MostPop: fit seconds, nnz of the similarity, the process's peak RSS
(``resource.getrusage``; also VmHWM per stage, reset before each where the kernel allows),
recall@10, NDCG@10, recall@100 and the scoring seconds. With ``--tune`` it also times
``tune(ItemKNN, train, LARGE_KNN_GRID)``, what ``evaluate --baselines`` runs above 20,000
items.

Usage (at nice -n 19 on a shared host):
    nice -n 19 python benchmarks/probes/knn_large.py --rows 1_000_000 --users 50_000 \\
        --items 100_000 --tune
Output: results/probe-knn-large-<time>.txt
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import results_log  # noqa: E402
from _results import proc_status_mb as _status  # noqa: E402
from _results import reset_peak_rss as _reset_peak  # noqa: E402
from synthetic import Planted, write  # noqa: E402

from twotower.data import random_split, read_interactions  # noqa: E402
from twotower.evaluation import ItemKNN, MostPop, recommend_and_evaluate  # noqa: E402
from twotower.evaluation.baselines import LARGE_KNN_GRID, tune  # noqa: E402

SHOW = ("recall@10", "ndcg@10", "recall@100")


def peak_mb() -> float:
    """The process's peak RSS so far (``ru_maxrss``, KB on Linux) in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    num = lambda s: int(s.replace("_", ""))  # noqa: E731
    ap.add_argument("--rows", type=num, default=1_000_000)
    ap.add_argument("--users", type=num, default=50_000)
    ap.add_argument("--items", type=num, default=100_000)
    ap.add_argument("--seed", type=int, default=0, help="the planted model's and the split's")
    ap.add_argument("--neighbors", type=int, nargs="+", default=[100])
    ap.add_argument("--shrink", type=float, nargs="+", default=[0.0])
    ap.add_argument("--tune", action="store_true",
                    help="also time tune(ItemKNN, train, LARGE_KNN_GRID)")
    ap.add_argument("--log", help="an existing synthetic.py Parquet log instead of generating")
    ap.add_argument("--out", default=None,
                    help="results file (default: results/probe-knn-large-<time>.txt)")
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)
    say, close = results_log(a.out, "knn-large", force=a.force)

    say(f"python benchmarks/probes/knn_large.py {' '.join(argv or sys.argv[1:])}")
    say(f"cpus {os.cpu_count()}, numpy {np.__version__}, load {os.getloadavg()[0]:.2f} "
        f"(1-min average at the start), nice {os.nice(0)}")
    with tempfile.TemporaryDirectory() as tmp:
        path = a.log
        if path is None:
            path = f"{tmp}/syn.parquet"
            t0 = time.perf_counter()
            write(path, a.rows, Planted(a.users, a.items, seed=a.seed), seed=a.seed + 1)
            say(f"generated {a.rows:,} rows (synthetic.Planted: {a.users:,} users, "
                f"{a.items:,} items, alpha 1.1, beta 4) in {time.perf_counter() - t0:.0f} s")
        data = read_interactions(path, rating_col="rating")
    parts = random_split(data, 0.2, a.seed)
    train, test = parts.train, parts.test
    say(f"log: {len(data):,} rows, {data.n_users:,} users, {data.n_items:,} items "
        f"(with at least one row); train {len(train):,}, test {len(test):,}; a dense "
        f"float32 item x item matrix would be {data.n_items ** 2 * 4 / 2**30:.1f} GB")
    del data
    say(f"before any fit: RSS {_status('VmRSS')} MB, peak {peak_mb():.0f} MB")

    t0 = time.perf_counter()
    pop = MostPop().fit(train)
    m = recommend_and_evaluate(pop, train, test, (10, 100))
    say(f"MostPop: fit+score {time.perf_counter() - t0:.1f} s; users {m['users']:,}; "
        + "  ".join(f"{k} {m[k]:.4f}" for k in SHOW))
    del pop

    for nb in a.neighbors:
        for shrink in a.shrink:
            resettable = _reset_peak()
            before = _status("VmRSS")
            t0 = time.perf_counter()
            knn = ItemKNN(neighbors=nb, shrink=shrink).fit(train)
            fit_s = time.perf_counter() - t0
            fit_hwm = _status("VmHWM")
            nnz = knn._sim.nnz
            _reset_peak()
            t0 = time.perf_counter()
            m = recommend_and_evaluate(knn, train, test, (10, 100))
            score_s = time.perf_counter() - t0
            say(f"ItemKNN neighbors {nb}, shrink {shrink:g}: fit {fit_s:.1f} s, "
                f"nnz(sim) {nnz:,} ({nnz * 8 / 2**20:.0f} MB as CSR); RSS before the fit "
                f"{before} MB, peak during the fit "
                f"{fit_hwm if resettable else float('nan')} MB, during scoring "
                f"{_status('VmHWM') if resettable else float('nan')} MB; score "
                f"{score_s:.1f} s; " + "  ".join(f"{k} {m[k]:.4f}" for k in SHOW)
                + f"; load {os.getloadavg()[0]:.2f}")
            del knn

    if a.tune:
        t0 = time.perf_counter()
        res = tune(ItemKNN, train, LARGE_KNN_GRID, a.seed)
        say(f"tune(ItemKNN, train, LARGE_KNN_GRID = {LARGE_KNN_GRID}) on a random "
            f"validation split of train: {time.perf_counter() - t0:.0f} s, best "
            f"{res.best_config}; load {os.getloadavg()[0]:.2f}")
        for row in res.results:
            say(f"  {row['config']}: " + "  ".join(f"{k} {row['metrics'][k]:.4f}"
                                                   for k in ("recall@10", "ndcg@10")))
    say(f"peak RSS of the whole run (ru_maxrss) {peak_mb():.0f} MB; load "
        f"{os.getloadavg()[0]:.2f}")
    close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
