"""Probe: the default preset with event weights (``interaction_weights = "event"``,
``event_weights = {view = 1, addtocart = 3, transaction = 10}``: the log's event names
mapped to weights where it is read) against the same fit without (every pair counts once),
with MostPop and EASE beside them, on a generated shop log, a per-user temporal split and a
random split, seeds given.

The log (written as a CSV with an ``event`` column and read by ``read_interactions(...,
event_col="event", event_weights=...)``, the path ``twotower train --event-col event
--event-weights ...`` takes): 600 users, 400 items in 8 topics of 50. Each user views 30
items drawn uniformly from the whole catalogue (``view``: noise), puts 2 other random items
in the cart without buying them (``view``, ``addtocart``), and buys 8 items of their own
topic (drawn by a Zipf-like popularity within the topic), each as ``view``, ``addtocart``,
``transaction`` in a row. These episodes come in a random order, one time step per row.
Purchases are the signal; a pair's weight is the sum of its rows' (a purchase 14, a view 1).

Splits (``make_split``, test fraction 0.2): ``temporal``, each user's latest 20% of rows
(the default tunes its EASE part and blend on a temporal validation split, as
``twotower train --split temporal`` does); ``random``, 20% of the rows. A pair with rows on
both sides (its view in training, its purchase in the test part) is seen, and left out of
the test pairs, as the product's evaluation does. Metrics are binary (every test pair
counts, the product's protocol) on all test pairs and, as a second view, on the test pairs
that hold a ``transaction`` row ("purchases").

Baselines: MostPop; EASE tuned (lambda, and the recency weights of its query) by
``tune_ease`` on a validation split carved from training the way the test split is cut;
both binary (they read no weights).

Usage: python benchmarks/probes/event_weights.py [--splits temporal random] [--seeds 0 1]
       [--preset default|clicks]
Output: results/probe-event-weights-<time>.txt (refuses to overwrite; --out names another
folder, --force overwrites)
"""
import argparse
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPLITS = ("temporal", "random")
MAPPING = {"view": 1.0, "addtocart": 3.0, "transaction": 10.0}


def shop_log(seed: int, path: Path) -> None:
    """Write the generated shop log (see the module docstring) to ``path`` (CSV)."""
    import pandas as pd
    rng = np.random.default_rng(2000 + seed)
    n_users, n_items, topics, views, carts, buys = 600, 400, 8, 30, 2, 8
    per = n_items // topics
    pop = 1.0 / np.arange(1, per + 1) ** 0.8
    pop /= pop.sum()
    rows = []
    for user in range(n_users):
        topic = user % topics
        seen = rng.choice(n_items, views + carts, replace=False)
        bought = topic * per + rng.choice(per, buys, replace=False, p=pop)
        bought = bought[~np.isin(bought, seen)]
        episodes = ([[(int(v), "view")] for v in seen[:views]]
                    + [[(int(c), "view"), (int(c), "addtocart")] for c in seen[views:]]
                    + [[(int(b), "view"), (int(b), "addtocart"), (int(b), "transaction")]
                       for b in bought])
        t = 0
        for k in rng.permutation(len(episodes)):
            for item, event in episodes[k]:
                rows.append((f"u{user}", f"i{item}", event, t))
                t += 1
    pd.DataFrame(rows, columns=["user_id", "item_id", "event", "timestamp"]).to_csv(
        path, index=False)


def fit(train, seed: int, split: str, weighted: bool, preset: str = "default"):
    from twotower.models import ModelConfig, TwoTower
    own = dict(ease_split=split, item_features=()) if preset == "default" else {}
    cfg = ModelConfig.preset(preset, seed=seed, **own,
                             **(dict(interaction_weights="event", event_weights=MAPPING)
                                if weighted else {}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        model = TwoTower(cfg).fit(train, verbose=0)
    return model, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--preset", choices=("default", "clicks"), default="default",
                    help="the model preset fitted with and without the weights (clicks: "
                         "sampled_softmax on the id tower, which reads weights since "
                         "2026-12-07)")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for the results file (default benchmarks/results)")
    ap.add_argument("--force", action="store_true", help="overwrite a results file of that name")
    args = ap.parse_args(argv)
    from _results import claim, mean_rows, out_dir
    path = (out_dir(args.out, name="event-weights")
            / f"probe-event-weights-{time.strftime('%Y%m%d-%H%M%S')}.txt")
    claim(path, force=args.force)  # checked before the run: a kept result is not written over
    from twotower.data import make_split, read_interactions
    from twotower.evaluation import recommend_and_evaluate
    from twotower.evaluation.baselines import EASE, MostPop, recency_settings, tune_ease
    cmd = ["python", "benchmarks/probes/event_weights.py", *(argv or sys.argv[1:])]
    lines = [f"# {' '.join(cmd)}", f"# {platform.machine()}, {os.cpu_count()} cpus; "
             f"{time.strftime('%Y-%m-%d %H:%M:%S')}; mapping {MAPPING}", "",
             "| split | seed | method | recall@10 | ndcg@10 | purchases recall@10 "
             "| purchases ndcg@10 | test rows | purchase rows | fit s |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    keys = ("recall@10", "ndcg@10", "buy_recall@10", "buy_ndcg@10")
    rows: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            log = Path(tmp) / f"shop-{seed}.csv"
            shop_log(seed, log)
            # the event names read as weights once, here (Interactions.ratings)
            x = read_interactions(log, time_col="timestamp", event_col="event",
                                  event_weights=MAPPING)
            for split in args.splits:
                sp = make_split(x, split, 0.2, seed)
                train, test = sp.train, sp.test
                bought = test.take(np.flatnonzero(test.ratings == MAPPING["transaction"]))
                methods = {"MostPop": lambda: MostPop().fit(train)}

                def ease():
                    _, best = tune_ease(train, seed, split=split, recency=recency_settings())
                    return EASE(best).fit(train)
                methods["EASE"] = ease
                p = args.preset
                methods[p] = lambda: fit(train, seed, split, False, p)[0]
                methods[f"{p} + event weights"] = lambda: fit(train, seed, split, True, p)[0]
                for name, make in methods.items():
                    t0 = time.perf_counter()
                    model = make()
                    secs = time.perf_counter() - t0
                    m = recommend_and_evaluate(model, train, test, (10,))
                    b = recommend_and_evaluate(model, train, bought, (10,))
                    r = {"recall@10": m["recall@10"], "ndcg@10": m["ndcg@10"],
                         "buy_recall@10": b["recall@10"], "buy_ndcg@10": b["ndcg@10"]}
                    rows.setdefault((split, name), []).append(r)
                    lines.append(f"| {split} | {seed} | {name} | "
                                 + " | ".join(f"{r[k]:.4f}" for k in keys)
                                 + f" | {len(test):,} | {len(bought):,} "
                                   f"| {secs:.0f} |")
                    print(lines[-1], flush=True)
    lines += ["", f"mean ± std (population) over seeds {args.seeds}:", "",
              "| split | method | recall@10 | ndcg@10 | purchases recall@10 "
              "| purchases ndcg@10 |", "|---|---|---:|---:|---:|---:|"]
    lines += mean_rows(rows, keys)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-(len(rows) + 2):]))
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
