"""Probe: the default preset on MovieLens 100k with and without the EASE part's fill of
cold items' rows (``linear.fill_cold_rows``, 2026-12-06: an item with no training rows gets
its feature-mates' mean EASE row instead of zeros).

On MovieLens every item has interactions, but a split leaves some without training rows
(about 34 items on a random 80/20 split, more on the temporal ones), so the fill moves the
default's figures a little. This probe measures by how much, with the default configured
exactly as ``benchmarks/quality.py`` configures it (``ModelConfig.preset("default", seed=s,
ease_split=...)`` on ``make_split(data, split, 0.2, s)``), two fits per split and seed: the
library as it is (``fill``) and the same fit with the fill switched off (``no fill``).
Recall@10, NDCG@10, Recall@100 (``recommend_and_evaluate``, seen items excluded), and
Recall@100 of the test pairs whose item no training row has ("cold pairs").

Usage: TWOTOWER_ML100K_DIR=... python benchmarks/probes/cold_fill_movielens.py
           [--splits random temporal global-temporal] [--seeds 0 1 2]
Output: results/probe-cold-fill-movielens-<time>.txt (refuses to overwrite; --out names
another folder, --force overwrites)
"""
import argparse
import contextlib
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPLITS = ("random", "temporal", "global-temporal")


@contextlib.contextmanager
def no_fill(on: bool):
    """The fill switched off (``fill_cold_rows`` returns its rows unchanged) while ``on``."""
    from twotower.models import linear
    orig = linear.fill_cold_rows
    if on:
        linear.fill_cold_rows = lambda q, features, cold: q
    try:
        yield
    finally:
        linear.fill_cold_rows = orig


def one(data, split: str, seed: int, fill: bool) -> dict:
    from twotower.data import make_split
    from twotower.evaluation import recommend_and_evaluate
    from twotower.models import ModelConfig, TwoTower
    sp = make_split(data, split, 0.2, seed)
    kind = "random" if split == "random" else "temporal"
    cfg = ModelConfig.preset("default", seed=seed, ease_split=kind)
    with no_fill(not fill), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = TwoTower(cfg).fit(sp.train, verbose=0)
    m = recommend_and_evaluate(model, sp.train, sp.test, (10, 100))
    cold_items = np.flatnonzero(np.asarray(sp.train.item_popularity()) == 0)
    is_cold = np.isin(sp.test.items, cold_items)
    cold = (recommend_and_evaluate(model, sp.train, sp.test.take(np.flatnonzero(is_cold)),
                                   (100,))["recall@100"] if is_cold.any() else float("nan"))
    return {"recall@10": m["recall@10"], "ndcg@10": m["ndcg@10"],
            "recall@100": m["recall@100"], "cold_recall@100": cold,
            "cold_pairs": int(is_cold.sum()), "cold_items": len(cold_items)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("ML100K")
                    or os.environ.get("TWOTOWER_ML100K_DIR"))
    ap.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for the results file (default benchmarks/results)")
    ap.add_argument("--force", action="store_true", help="overwrite a results file of that name")
    args = ap.parse_args(argv)
    from _results import claim, mean_rows, out_dir
    path = (out_dir(args.out, name="cold-fill-movielens")
            / f"probe-cold-fill-movielens-{time.strftime('%Y%m%d-%H%M%S')}.txt")
    claim(path, force=args.force)  # checked before the run: a kept result is not written over
    from twotower.data import load_movielens_100k, read_movielens_100k
    data = read_movielens_100k(args.data) if args.data else load_movielens_100k()
    cmd = ["python", "benchmarks/probes/cold_fill_movielens.py", *(argv or sys.argv[1:])]
    lines = [f"# {' '.join(cmd)}", f"# {platform.machine()}, {os.cpu_count()} cpus; "
             f"{time.strftime('%Y-%m-%d %H:%M:%S')}", "",
             "| split | seed | variant | recall@10 | ndcg@10 | recall@100 | cold pairs' "
             "recall@100 (pairs, items) |", "|---|---:|---|---:|---:|---:|---:|"]
    rows = {}
    for split in args.splits:
        for seed in args.seeds:
            for fill in (False, True):
                r = one(data, split, seed, fill)
                name = "fill" if fill else "no fill"
                rows.setdefault((split, name), []).append(r)
                lines.append(f"| {split} | {seed} | {name} | {r['recall@10']:.4f} | "
                             f"{r['ndcg@10']:.4f} | {r['recall@100']:.4f} | "
                             f"{r['cold_recall@100']:.3f} ({r['cold_pairs']}, "
                             f"{r['cold_items']}) |")
                print(lines[-1], flush=True)
    lines += ["", f"mean ± std (population) over seeds {args.seeds}:", "",
              "| split | variant | recall@10 | ndcg@10 | recall@100 | cold pairs' recall@100 |",
              "|---|---|---:|---:|---:|---:|"]
    lines += mean_rows(rows, ("recall@10", "ndcg@10", "recall@100", "cold_recall@100"))
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-(len(rows) + 2):]))
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
