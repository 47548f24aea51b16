"""Probe: the default preset with ``interaction_weights = "rating"`` (each pair weighted by
its rating in the multinomial loss and the EASE part) against the same fit without
(``"none"``: every pair counts once), on two data sets, seeds given:

- ``clicks``: a generated click log where purchases are the signal: 600 users, 400 items in
  8 topics of 50; each user views 30 items drawn uniformly from the whole catalogue
  (weight 1) and buys 8 items of their own topic (weight 10, drawn by a Zipf-like
  popularity within the topic). The test part is 3 of each user's purchases (drawn at
  random); training holds every view and the other 5 purchases. Seen items are excluded.
- ``movielens``: MovieLens 100k, random 80/20 split (``make_split``), ratings used as
  weights ``max(rating - 2, 0)`` (1-2 stars: weight 0, so no target and not in EASE's Gram;
  still in the user's history and still seen). Evaluated on every test pair (binary, the
  product's protocol) and, as a second view, on the test pairs rated 4 or 5 ("liked").

Both variants fit ``ModelConfig.preset("default", seed=s, ease_split="random",
item_features=...)`` on the same training part (the default tunes EASE and the blend on a
validation split carved from training; the numbers here are on the test part).

Usage: TWOTOWER_ML100K_DIR=... python benchmarks/probes/interaction_weights.py
           [--sets clicks movielens] [--seeds 0 1]
Output: results/probe-interaction-weights-<time>.txt (refuses to overwrite; --out names
another folder, --force overwrites)
"""
import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETS = ("clicks", "movielens")


def clicks(seed: int):
    """``(train, test)`` of the generated click log (see the module docstring)."""
    from twotower.data import Interactions
    rng = np.random.default_rng(1000 + seed)
    n_users, n_items, topics, views, buys, held = 600, 400, 8, 30, 8, 3
    per = n_items // topics
    pop = 1.0 / np.arange(1, per + 1) ** 0.8
    pop /= pop.sum()
    u, i, w, t, test = [], [], [], [], []
    for user in range(n_users):
        topic = user % topics
        seen = rng.choice(n_items, views, replace=False)
        bought = topic * per + rng.choice(per, buys, replace=False, p=pop)
        bought = bought[~np.isin(bought, seen)]
        held_out = rng.permutation(len(bought)) < held
        events = [(int(v), 1.0, False) for v in seen] + \
                 [(int(b), 10.0, bool(h)) for b, h in zip(bought, held_out)]
        for k in rng.permutation(len(events)):
            item, weight, is_test = events[k]
            u.append(user), i.append(item), w.append(weight), t.append(len(t))
            test.append(is_test)
    x = Interactions.from_ids(np.array(u), np.array(i), np.array(w),
                              np.array(t, dtype=np.int64), time_unit="s")
    test = np.array(test)
    return x.take(np.flatnonzero(~test)), x.take(np.flatnonzero(test))


def fit(train, seed: int, weighted: bool, features: tuple[str, ...]):
    from twotower.models import ModelConfig, TwoTower
    cfg = ModelConfig.preset("default", seed=seed, ease_split="random",
                             item_features=features,
                             interaction_weights="rating" if weighted else "none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        model = TwoTower(cfg).fit(train, verbose=0)
    return model, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("ML100K")
                    or os.environ.get("TWOTOWER_ML100K_DIR"))
    ap.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for the results file (default benchmarks/results)")
    ap.add_argument("--force", action="store_true", help="overwrite a results file of that name")
    args = ap.parse_args(argv)
    from _results import claim, mean_rows, out_dir
    path = (out_dir(args.out, name="interaction-weights")
            / f"probe-interaction-weights-{time.strftime('%Y%m%d-%H%M%S')}.txt")
    claim(path, force=args.force)  # checked before the run: a kept result is not written over
    from twotower.data import Interactions, load_movielens_100k, make_split, \
        read_movielens_100k
    from twotower.evaluation import recommend_and_evaluate
    cmd = ["python", "benchmarks/probes/interaction_weights.py", *(argv or sys.argv[1:])]
    lines = [f"# {' '.join(cmd)}", f"# {platform.machine()}, {os.cpu_count()} cpus; "
             f"{time.strftime('%Y-%m-%d %H:%M:%S')}", "",
             "| set | seed | weights | recall@10 | ndcg@10 | recall@100 | liked recall@10 "
             "| fit s |", "|---|---:|---|---:|---:|---:|---:|---:|"]
    rows: dict = {}
    for name in args.sets:
        for seed in args.seeds:
            liked = None
            if name == "clicks":
                train, test = clicks(seed)
                features: tuple[str, ...] = ()
            else:
                data = read_movielens_100k(args.data) if args.data else load_movielens_100k()
                data = Interactions(data.users, data.items, data.user_vocab, data.item_vocab,
                                    ratings=np.maximum(data.ratings - 2, 0).astype(np.float32),
                                    timestamps=data.timestamps, item_info=data.item_info,
                                    user_info=data.user_info, time_unit=data.time_unit)
                sp = make_split(data, "random", 0.2, seed)
                train, test = sp.train, sp.test
                liked = test.take(np.flatnonzero(test.ratings >= 2))  # rated 4 or 5
                features = ("genres", "year")
            for weighted in (False, True):
                model, secs = fit(train, seed, weighted, features)
                m = recommend_and_evaluate(model, train, test, (10, 100))
                r = {"recall@10": m["recall@10"], "ndcg@10": m["ndcg@10"],
                     "recall@100": m["recall@100"],
                     "liked@10": (recommend_and_evaluate(model, train, liked, (10,))
                                  ["recall@10"] if liked is not None else float("nan"))}
                label = "rating" if weighted else "none"
                rows.setdefault((name, label), []).append(r)
                lines.append(f"| {name} | {seed} | {label} | {r['recall@10']:.4f} | "
                             f"{r['ndcg@10']:.4f} | {r['recall@100']:.4f} | "
                             f"{r['liked@10']:.4f} | {secs:.0f} |")
                print(lines[-1], flush=True)
    lines += ["", f"mean ± std (population) over seeds {args.seeds}:", "",
              "| set | weights | recall@10 | ndcg@10 | recall@100 | liked recall@10 |",
              "|---|---|---:|---:|---:|---:|"]
    lines += mean_rows(rows, ("recall@10", "ndcg@10", "recall@100", "liked@10"))
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-(len(rows) + 2):]))
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
