"""Classical baselines on MovieLens 100k: MostPop, ItemKNN, EASE.

Protocol: two splits (seeded random 80/20 over rows; per-user temporal, latest 20% of each
user's rows), seeds 0, 1, 2. Hyperparameters are tuned per seed on a random 20% validation
split carved out of TRAIN only (the seed picks that split; for the temporal split it is the
only thing the seed changes), then the chosen config is refit on all of train and
evaluated on test with seen (train) items excluded. Reports mean ± sample std over seeds.

Run (from the repository root)::

    .venv/bin/python benchmarks/baselines.py            # writes benchmarks/results/
    .venv/bin/python benchmarks/baselines.py --plot     # also a Recall@K PNG
    .venv/bin/python benchmarks/baselines.py --seeds 0 --splits random --out /tmp/b  # smoke

Writes ``baselines-ml100k-<timestamp>.json`` (config, machine, versions, every run with
timings) and ``.md`` (tables) under ``benchmarks/results`` or ``--out DIR``; a file already
there is not overwritten (``--force`` does). The kept run is ``baselines-ml100k.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from _results import claim, out_dir, stamp
from twotower.data import random_split, read_movielens_100k, temporal_split
from twotower.evaluation import (EASE, ItemKNN, MostPop, format_table, plot_recall_curves,
                                 recommend_and_evaluate, tune)

KS = (10, 20, 50, 100)
TABLE = ("recall@10", "ndcg@10", "recall@100", "hit_rate@10", "mrr@10", "coverage@10")
GRIDS = {
    "MostPop": {},
    "ItemKNN": {"neighbors": [25, 50, 100, 200, 400], "shrink": [0.0, 10.0]},
    "EASE": {"lambda_": [50.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 2000.0]},
}
METHODS = {"MostPop": MostPop, "ItemKNN": ItemKNN, "EASE": EASE}
#: An earlier measurement under this protocol (Recall@10 / NDCG@10), for comparison.
REFERENCE = {
    "random": {"MostPop": {"recall@10": 0.116}, "ItemKNN": {"recall@10": 0.212},
               "EASE": {"recall@10": 0.234, "ndcg@10": 0.441}},
    "temporal": {"EASE": {"recall@10": 0.125, "ndcg@10": 0.208}},
}


def machine() -> dict:
    import scipy

    return {
        "python": sys.version.split()[0], "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "numpy": np.__version__, "scipy": scipy.__version__,
        "blas_threads": {k: os.environ.get(k) for k in
                         ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
    }


def run(data_dir: Path, seeds: list[int], splits: list[str]) -> dict:
    x = read_movielens_100k(data_dir)
    runs = []
    for split_name in splits:
        for seed in seeds:
            s = (random_split(x, 0.2, seed) if split_name == "random"
                 else temporal_split(x, 0.2))
            for name, cls in METHODS.items():
                t0 = time.perf_counter()
                best, grid = tune(cls, s.train, GRIDS[name], seed=seed,
                                  validation_fraction=0.2, metric="recall@10", ks=(10,))
                t1 = time.perf_counter()
                model = cls(best).fit(s.train)
                t2 = time.perf_counter()
                metrics = recommend_and_evaluate(model, s.train, s.test, KS)
                t3 = time.perf_counter()
                runs.append({
                    "split": split_name, "seed": seed, "method": name,
                    "config": best.to_dict(), "metrics": metrics,
                    "seconds": {"tune": t1 - t0, "fit": t2 - t1, "recommend_evaluate": t3 - t2},
                    "grid": [{"config": g["config"], "recall@10": g["metrics"]["recall@10"]}
                             for g in grid],
                })
                print(f"{split_name:8s} seed={seed} {name:8s} {best.to_dict()} "
                      f"R@10={metrics['recall@10']:.4f} N@10={metrics['ndcg@10']:.4f} "
                      f"fit={t2 - t1:.2f}s eval={t3 - t2:.2f}s", flush=True)
    return {"dataset": "ml-100k", "n_interactions": len(x), "n_users": x.n_users,
            "n_items": x.n_items, "runs": runs}


def summarise(runs: list[dict]) -> dict:
    out: dict = {}
    for r in runs:
        out.setdefault(r["split"], {}).setdefault(r["method"], []).append(r)
    summary: dict = {}
    for split_name, methods in out.items():
        for name, rs in methods.items():
            keys = [k for k in rs[0]["metrics"] if k != "users"]
            summary.setdefault(split_name, {})[name] = {
                k: [float(np.mean([r["metrics"][k] for r in rs])),
                    float(np.std([r["metrics"][k] for r in rs], ddof=1)) if len(rs) > 1
                    else 0.0]
                for k in keys}
    return summary


def markdown(result: dict) -> str:
    parts = [f"# Baselines on MovieLens 100k\n\n{result['protocol']}\n\n"
             f"Run {result['started']} on {result['machine']['processor']} "
             f"({result['machine']['cpus']} CPUs), numpy {result['machine']['numpy']}, "
             f"scipy {result['machine']['scipy']}; {result['seconds']:.0f} s in all.\n"]
    for split_name, rows in result["summary"].items():
        parts.append(f"\n## {split_name} split (mean ± std over seeds {result['seeds']})\n\n")
        parts.append(format_table(rows, TABLE))
        ref = REFERENCE.get(split_name)
        if ref:
            parts.append("\nEarlier reference measurement under this protocol:\n\n")
            parts.append(format_table(ref, ("recall@10", "ndcg@10")))
        chosen = {}
        for r in result["runs"]:
            if r["split"] == split_name and r["config"]:
                chosen.setdefault(r["method"], []).append(
                    f"seed {r['seed']}: " + ", ".join(f"{k}={v}" for k, v in r["config"].items()))
        if chosen:
            parts.append("\nTuned configs: " + "; ".join(
                f"{m} ({' | '.join(v)})" for m, v in chosen.items()) + "\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=os.environ.get("ML100K"),
                    help="MovieLens 100k directory (default: $ML100K, else as the product "
                         "finds it: TWOTOWER_ML100K_DIR, its cache, or a download)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--splits", nargs="+", default=["random", "temporal"],
                    choices=["random", "temporal"])
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for the results (default benchmarks/results)")
    ap.add_argument("--force", action="store_true",
                    help="overwrite result files of the same name")
    ap.add_argument("--plot", action="store_true", help="also write a Recall@K PNG")
    args = ap.parse_args(argv)
    out = out_dir(args.out, name="baselines")
    stem = f"baselines-ml100k-{stamp()}"
    pngs = [out / f"{stem}-{split}-recall.png" for split in args.splits] if args.plot else []
    claim(out / f"{stem}.json", out / f"{stem}.md", *pngs, force=args.force)
    if args.data is None:  # TWOTOWER_ML100K_DIR, the cache, or a download
        from twotower.data.fetch import fetch_movielens_100k
        args.data = fetch_movielens_100k()

    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    result = run(args.data, args.seeds, args.splits)
    result.update({
        "benchmark": "baselines", "started": started, "seconds": time.perf_counter() - t0,
        "seeds": args.seeds, "ks": list(KS), "grids": GRIDS, "machine": machine(),
        "protocol": ("Splits: random 80/20 over rows (seeded) and per-user temporal (latest "
                     "20%). Tuning: random 20% of TRAIN, maximising Recall@10; refit on all "
                     "of train. Evaluation: every test user, train items excluded; Recall@K "
                     "= hits / |relevant|."),
        "reference": REFERENCE,
    })
    result["summary"] = summarise(result["runs"])
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    md = markdown(result)
    (out / f"{stem}.md").write_text(md, encoding="utf-8")
    if args.plot:
        for split_name, rows in result["summary"].items():
            curves = {m: {k: v[f"recall@{k}"][0] for k in KS} for m, v in rows.items()}
            plot_recall_curves(curves, out / f"{stem}-{split_name}-recall.png",
                               title=f"Recall@K, ML-100k {split_name} split")
    print(md)
    print("wrote", out / f"{stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
