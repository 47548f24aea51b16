"""Choose the ``default`` preset's hyperparameters on validation splits carved from train.

The test part of every split is never read here: each outer split (seeded random 80/20, per-user
temporal 80/20) keeps only its train part, which is split again the same way into
train' / validation. Every candidate config is trained once per validation split and scored
every ``--every`` epochs (Adam at a constant learning rate: the model after epoch ``e`` is the
model ``epochs=e`` would give), so one run also chooses the number of epochs. EASE, tuned on the
same validation split, is the yardstick: a candidate's score is the mean over splits of
``recall@10 / EASE recall@10`` and ``ndcg@10 / EASE ndcg@10``.

Usage:
    KERAS_BACKEND=jax python benchmarks/tune.py [--data /path/to/ml-100k] [--quick]
        [--candidates '[{"recency_half_life": 10}, ...]'] [--epochs N] [--tag NAME]
        [--users-fraction 0.5]

``--candidates`` replaces CANDIDATES (overrides of BASE, the previous default);
``--users-fraction`` tunes on a random share of the users (a differently shaped data set, to
check that a choice carries over). The rounds behind the current default are listed, with
their commands, in ``docs/quality.md``.

Writes ``benchmarks/results/tune-<timestamp>[-<tag>].json`` (every curve, the EASE references
and the winner) and prints a table. ``--quick`` (a smoke run) writes to a temporary folder,
printed, and ``--out DIR`` to that one; a file of the same name is not overwritten without
``--force``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from twotower.data import random_split, read_movielens_100k, temporal_split  # noqa: E402
from twotower.evaluation import EASE, recommend_and_evaluate, tune  # noqa: E402
from twotower.models import ModelConfig, TwoTower  # noqa: E402

from _results import claim, out_dir, stamp  # noqa: E402
KS = (10, 100)

#: The search space actually explored (kept small on purpose: 2 shared CPU cores). Each entry
#: overrides BASE; the epoch count is chosen from the curves.
BASE = dict(query_tower="id+history", objective="multinomial", embedding_dim=128, epochs=30,
            batch_size=64, optimizer="adam", learning_rate=0.005, l2=5.0, temperature=1.0,
            history_length=1000, history_dropout=0.5, item_bias=True)
CANDIDATES: list[dict] = [
    {},
    {"l2": 2.0},
    {"embedding_dim": 256, "l2": 10.0},
    {"embedding_dim": 256, "l2": 10.0, "learning_rate": 0.01, "batch_size": 128},
    {"history_dropout": 0.7},
    {"query_tower": "id+history"},
]


def validation_splits(data, seeds):
    """``(name, train', validation)`` triples from the train parts of the outer splits."""
    out = []
    for s in seeds:
        outer = random_split(data, 0.2, s).train
        inner = random_split(outer, 0.2, s + 1000)
        out.append((f"random-{s}", inner.train, inner.test))
    if data.timestamps is not None:
        outer = temporal_split(data, 0.2).train
        inner = temporal_split(outer, 0.2)
        out.append(("temporal", inner.train, inner.test))
    return out


def subsample_users(data, fraction, seed=12345):
    """The interactions of a random ``fraction`` of the users, vocabularies rebuilt; a log
    without ratings or times stays without (its times, if any, keep their unit)."""
    from twotower.data import Interactions
    rng = np.random.default_rng(seed)
    keep = rng.random(data.n_users) < fraction
    rows = np.flatnonzero(keep[data.users])
    info = None if data.item_info is None else data.item_info.set_index("id")
    users = None if data.user_info is None else data.user_info.set_index("id")
    times = None if data.timestamps is None else data.timestamps[rows]
    return Interactions.from_ids(data.user_vocab.ids[data.users[rows]],
                                 data.item_vocab.ids[data.items[rows]],
                                 None if data.ratings is None else data.ratings[rows],
                                 times, item_info=info, user_info=users,
                                 time_unit="auto" if times is None else data.time_unit)


#: how read_interactions says a log has no timestamp column (check_columns)
NO_TIMES = "has no column 'timestamp' (the time column)"


def load_data(interactions: str | None, ml100k_dir: str, users_fraction: float = 1.0):
    """A CSV/Parquet log (user_id, item_id, rating[, timestamp]) or MovieLens 100k,
    optionally a random share of its users."""
    if interactions:
        from twotower.data import read_interactions
        from twotower.errors import DataError
        try:
            data = read_interactions(interactions, rating_col="rating", time_col="timestamp")
        except DataError as exc:
            # only no timestamp column (as read_interactions says it) means random splits
            # only; any other error (a bad time or rating, a missing id column) is the
            # file's, said as it is (a bad time was dropped with the column in silence)
            if NO_TIMES not in str(exc):
                raise
            data = read_interactions(interactions, rating_col="rating")
    else:
        data = read_movielens_100k(ml100k_dir)
    if users_fraction < 1.0:
        data = subsample_users(data, users_fraction)
    return data


class _Curve(keras.callbacks.Callback):
    """Evaluates the model on the validation split every ``every`` epochs."""

    def __init__(self, model: TwoTower, train, valid, every: int) -> None:
        super().__init__()
        self.tt, self.train, self.valid, self.every = model, train, valid, every
        self.points: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        tt = self.tt
        tt._net = self.model
        opt = self.model.optimizer
        saved = None
        if getattr(opt, "use_ema", False):  # score the average, as fit() would end on it
            saved = [np.array(v.value) for v in self.model.trainable_variables]
            opt.finalize_variable_values(self.model.trainable_variables)
        tt._export_tables()
        if saved is not None:
            for v, value in zip(self.model.trainable_variables, saved):
                v.assign(value)
        tt._fitted = True
        tt._build_indexes()
        m = recommend_and_evaluate(tt, self.train, self.valid, KS)
        self.points.append({"epoch": epoch + 1, "loss": float(logs["loss"]),
                            **{k: m[k] for k in ("recall@10", "ndcg@10", "recall@100")}})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("ML100K"),
                    help="MovieLens 100k directory (default: $ML100K, else as the product finds it: "
                         "TWOTOWER_ML100K_DIR, its cache, or a download)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="first candidate, one split")
    ap.add_argument("--candidates", type=json.loads, default=None,
                    help="JSON list of overrides of BASE to try instead of CANDIDATES")
    ap.add_argument("--epochs", type=int, default=None, help="train this long (curve max)")
    ap.add_argument("--tag", default="", help="added to the result file name")
    ap.add_argument("--users-fraction", type=float, default=1.0,
                    help="keep a random share of the users (a differently shaped data set)")
    ap.add_argument("--interactions", default=None,
                    help="tune on this CSV/Parquet log (columns user_id, item_id, rating and, "
                         "if present, timestamp) instead of MovieLens 100k")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for the result (default benchmarks/results; --quick: a "
                         "temporary one)")
    ap.add_argument("--force", action="store_true",
                    help="overwrite a result file of the same name")
    args = ap.parse_args(argv)
    path = out_dir(args.out, smoke=args.quick, name="tune") / (
        f"tune-{stamp()}{'-' + args.tag if args.tag else ''}.json")
    claim(path, force=args.force, hint="--out or --tag")
    if args.data is None:  # TWOTOWER_ML100K_DIR, the cache, or a download
        from twotower.data.fetch import fetch_movielens_100k
        args.data = str(fetch_movielens_100k())

    data = load_data(args.interactions, args.data, args.users_fraction)
    splits = validation_splits(data, args.seeds)
    candidates = CANDIDATES if args.candidates is None else args.candidates
    if args.epochs:
        candidates = [{"epochs": args.epochs, **c} for c in candidates]
    if args.quick:
        splits, candidates = splits[:1], candidates[:1]

    refs = {}
    for name, tr, va in splits:
        best, rows = tune(EASE, tr, {"lambda_": [100.0, 200.0, 500.0, 1000.0]},
                          split="random")  # lambda from a split of train', not va
        m = recommend_and_evaluate(EASE(best).fit(tr), tr, va, KS)
        refs[name] = {"lambda_": best.lambda_, **{k: m[k] for k in ("recall@10", "ndcg@10")}}
        print(f"EASE {name}: {refs[name]}", flush=True)

    runs = []
    for over in candidates:
        cfg = ModelConfig.from_dict({**BASE, **over})
        for name, tr, va in splits:
            model = TwoTower(cfg)
            curve = _Curve(model, tr, va, args.every)
            t0 = time.perf_counter()
            model.fit(tr, verbose=0, callbacks=[curve])
            runs.append({"override": over, "split": name, "points": curve.points,
                         "seconds": time.perf_counter() - t0})
            print(name, over, [(p["epoch"], round(p["recall@10"], 4)) for p in curve.points],
                  flush=True)

    # score every (candidate, epoch): mean over splits of the metric ratios to EASE
    table = []
    for over in candidates:
        mine = [r for r in runs if r["override"] == over]
        for i, p in enumerate(mine[0]["points"]):
            ratios = [(r["points"][i]["recall@10"] / refs[r["split"]]["recall@10"]
                       + r["points"][i]["ndcg@10"] / refs[r["split"]]["ndcg@10"]) / 2
                      for r in mine]
            table.append({"override": over, "epochs": p["epoch"],
                          "score": float(np.mean(ratios)),
                          "per_split": dict(zip([r["split"] for r in mine],
                                                map(float, ratios)))})
    table.sort(key=lambda row: -row["score"])
    print("\nbest (score = mean ratio to EASE on validation):")
    for row in table[:10]:
        print(f"  {row['score']:.4f}  epochs={row['epochs']:<3} {row['override']} "
              f"{ {k: round(v, 3) for k, v in row['per_split'].items()} }")
    winner = {**BASE, **table[0]["override"], "epochs": table[0]["epochs"]}
    print("winner:", winner)

    path.write_text(json.dumps({
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "keras": keras.__version__, "cpus": os.cpu_count()},
        "args": {**vars(args), "out": args.out and str(args.out)},  # (a Path: not JSON)
        "n_users": data.n_users, "n_items": data.n_items,
        "n_interactions": len(data), "splits": [s[0] for s in splits], "ease": refs, "base": BASE, "runs": runs,
        "ranking": table, "winner": winner}, indent=1))
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
