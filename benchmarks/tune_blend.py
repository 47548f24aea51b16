"""Choose ``ease_weight`` (the share of the closed-form EASE part) on validation splits.

The same validation splits as ``benchmarks/tune.py`` (carved from the train parts of the
outer splits; test parts never read). Per split, the default preset's trained part is fitted
once; then for each weight ``w`` the EASE part is fitted the way ``TwoTower.fit`` does
(lambda and recency floor tuned on a split of train' carved like the outer split: random
or temporal) and the blend is scored against EASE tuned on the same split, as in
``tune.py``: mean of ``recall@10 / EASE`` and ``ndcg@10 / EASE``.

Usage:
    KERAS_BACKEND=jax python benchmarks/tune_blend.py [--weights 0 0.2 0.3 0.4 0.5]
        [--interactions LOG.csv] [--users-fraction 0.5] [--tag NAME]

Writes ``benchmarks/results/tune-blend-<timestamp>[-<tag>].json`` (``--out DIR``: there; never
over a file of the same name without ``--force``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402

from _results import claim, out_dir  # noqa: E402
from tune import load_data, validation_splits  # noqa: E402
from twotower.evaluation import EASE, recommend_and_evaluate, tune  # noqa: E402
from twotower.models import ModelConfig, TwoTower  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("ML100K"),
                    help="MovieLens 100k directory (default: $ML100K, else as the product finds it: "
                         "TWOTOWER_ML100K_DIR, its cache, or a download)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.2, 0.3, 0.4, 0.5])
    ap.add_argument("--interactions", default=None,
                    help="a CSV/Parquet log (user_id, item_id, rating[, timestamp]) instead "
                         "of MovieLens 100k")
    ap.add_argument("--users-fraction", type=float, default=1.0)
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for the result (default benchmarks/results)")
    ap.add_argument("--force", action="store_true",
                    help="overwrite a result file of the same name")
    args = ap.parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out_dir(args.out, name="tune_blend") / (
        f"tune-blend-{stamp}{'-' + args.tag if args.tag else ''}.json")
    claim(path, force=args.force, hint="--out or --tag")
    if args.data is None:  # TWOTOWER_ML100K_DIR, the cache, or a download
        from twotower.data.fetch import fetch_movielens_100k
        args.data = str(fetch_movielens_100k())

    data = load_data(args.interactions, args.data, args.users_fraction)

    rows = []
    for name, tr, va in validation_splits(data, args.seeds):
        kind = "temporal" if name == "temporal" else "random"
        best, _ = tune(EASE, tr, {"lambda_": [100.0, 200.0, 500.0, 1000.0]}, split=kind)
        ref = recommend_and_evaluate(EASE(best).fit(tr), tr, va, (10,))
        model = TwoTower(ModelConfig.preset("default", ease_weight=0.0)).fit(tr, verbose=0)
        for w in args.weights:
            # the weight as given: the preset's ease_weight_grid would choose its own
            # (on a temporal split, always), the same for every w
            model.config = ModelConfig.preset("default", ease_weight=w, ease_split=kind,
                                              ease_weight_grid=())
            model._linear = None
            model._export_tables()  # the trained part alone
            t0 = time.perf_counter()
            if w > 0:
                model._fit_linear(tr)
            seconds = time.perf_counter() - t0
            model._build_indexes()
            m = recommend_and_evaluate(model, tr, va, (10,))
            ratio = (m["recall@10"] / ref["recall@10"] + m["ndcg@10"] / ref["ndcg@10"]) / 2
            rows.append({"split": name, "weight": w, "score": float(ratio),
                         "recall@10": float(m["recall@10"]), "ndcg@10": float(m["ndcg@10"]),
                         "ease_ref": {"lambda": best.lambda_, "recall@10": ref["recall@10"],
                                      "ndcg@10": ref["ndcg@10"]},
                         "ease_part": model.ease_tuning and {
                             k: model.ease_tuning[k] for k in ("lambda", "half_life", "floor")},
                         "ease_part_seconds": seconds})
            print(name, w, round(ratio, 4), rows[-1]["ease_part"], flush=True)

    print("\nweight  mean score  per split")
    table = []
    for w in args.weights:
        sel = [r for r in rows if r["weight"] == w]
        table.append({"weight": w, "score": float(np.mean([r["score"] for r in sel])),
                      "per_split": {r["split"]: round(r["score"], 4) for r in sel}})
        print(f"{w:6.2f}  {table[-1]['score']:.4f}      {table[-1]['per_split']}")
    path.write_text(json.dumps({"args": {**vars(args), "out": args.out and str(args.out)},
                                "n_users": data.n_users,
                                "n_items": data.n_items, "rows": rows, "table": table},
                               indent=2))
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
