"""Probe: does every objective x query tower the config accepts train something, with the
settings a user gets from a preset plus ``objective = X`` (and ``query_tower = T``)?

The click probe (``click_softmax.py``) found ``sampled_softmax`` on the tutorial preset's
Adagrad 0.1 at temperature 1 close to random. This audits the rest: every objective with
every query tower ``ModelConfig`` accepts (``mse``: id only; ``multinomial``: history towers
only), started from each preset as ``twotower train --preset P --config x.toml`` starts it
(the preset's values, the objective and tower from the file, the CLI's defaults for the
rest; the preset's item features cut to the columns the data has, as ``train`` cuts them),
beside MostPop, on

- ``ml100k``: MovieLens 100k (``--data DIR`` or ``TWOTOWER_ML100K_DIR``), with its ratings
  (``mse`` trains on them; the other objectives read every rating as an interaction) and
  genre/year metadata (the default preset's item features);
- ``topics`` and ``popular``: ``click_softmax.py``'s generated click logs (60k rows, 3,000
  users, 1,500 items in 20 topics; 80% / 40% of a user's clicks in their topic). No ratings:
  ``mse`` is left out there (``train`` refuses it without a rating column).

Every model is scored on a **validation** split: the data's random 80% training part
(seed s) split again 80/20 (seed s + 1), as the click probe carves it; the test part is not
read unless ``--test`` is given (then: trained on the whole training part, scored on the
test part: the confirmation run, once, after the fix was chosen).

``--only LABEL...`` runs only the rows of those labels (``"tutorial + bpr / id"``);
``--suspects NAME...`` runs each row with each of those one-at-a-time changes (learning
rate, temperature, epochs, optimizer: ``SUSPECTS``) instead.

Usage: KERAS_BACKEND=jax python benchmarks/probes/objective_audit.py [--data ML100K_DIR]
    [--datasets ml100k topics popular] [--seeds 0 1] [--only LABEL ...] [--suspects NAME ...]
    [--test] [--out DIR] [--force]
Writes benchmarks/results/probe-objective-audit-<timestamp>.txt.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: (objective, query tower) pairs ModelConfig accepts
COMBOS = [("mse", "id"), ("softmax", "id"), ("sampled_softmax", "id"), ("bpr", "id"),
          ("softmax", "history"), ("sampled_softmax", "history"), ("bpr", "history"),
          ("multinomial", "history"),
          ("softmax", "id+history"), ("sampled_softmax", "id+history"), ("bpr", "id+history"),
          ("multinomial", "id+history")]


def rows() -> list[tuple[str, str, dict]]:
    """(label, preset, overrides) for every preset x accepted combination. The default
    preset's EASE part needs a history tower, so it runs only those (with the id tower the
    config refuses it); with another objective than its ``multinomial`` it also takes the
    two changes ``train`` asks for: ``item_bias = false`` (refused otherwise: only
    ``multinomial`` trains a bias) and ``batch_size = 1024`` (its warning's advice: the
    preset's 64 counts users for ``multinomial``, pairs for the others)."""
    out = []
    for preset in ("tutorial", "clicks", "default"):
        for objective, tower in COMBOS:
            if preset == "default" and tower == "id":
                continue  # refused: ease_weight > 0 needs a history tower
            over = dict(objective=objective, query_tower=tower)
            if preset == "default" and objective != "multinomial":
                over.update(item_bias=False, batch_size=1024)
            out.append((f"{preset} + {objective} / {tower}", preset, over))
    # the cheap rows first, the tutorial's 50 epochs of a history tower last
    order = {("id", "tutorial"): 0, ("id", "clicks"): 1, ("id+history", "clicks"): 2,
             ("id+history", "default"): 3, ("history", "clicks"): 4, ("history", "default"): 5,
             ("id+history", "tutorial"): 6, ("history", "tutorial"): 7}
    return sorted(out, key=lambda r: order[r[2]["query_tower"], r[1]])


#: one change at a time on the rows that fail (``--suspects NAME...``)
SUSPECTS: dict[str, dict] = {
    "learning_rate 0.5": dict(learning_rate=0.5),
    "learning_rate 2": dict(learning_rate=2.0),
    "temperature 0.1": dict(temperature=0.1),
    "temperature 1": dict(temperature=1.0),
    "epochs 3": dict(epochs=3),
    "epochs x 5": dict(epochs_x=5),
    "adam 0.01": dict(optimizer="adam", learning_rate=0.01),
    "learning_rate 0.5 + temperature 0.1": dict(learning_rate=0.5, temperature=0.1),
}


def dataset(name: str, data: str | None):
    from click_softmax import click_log
    if name == "ml100k":
        from twotower import load_movielens_100k
        return load_movielens_100k(data)
    return click_log(seed=0) if name == "topics" else click_log(zipf=1.2, affinity=0.4, seed=0)


def config(preset: str, overrides: dict, seed: int, x):
    """``ModelConfig.preset(preset, **overrides)`` with the preset's side-feature columns
    cut to those ``x`` has (as ``twotower train`` cuts them)."""
    from twotower import ModelConfig
    from twotower.models.features import present_columns
    over = dict(overrides)
    scale = over.pop("epochs_x", None)
    cfg = ModelConfig.preset(preset, seed=seed, **over)
    if scale:
        cfg = cfg.replace(epochs=cfg.epochs * scale)
    for what, info in (("item", x.item_info), ("user", x.user_info)):
        name = f"{what}_features"
        if getattr(cfg, name):
            cfg = cfg.replace(**{name: present_columns(info, getattr(cfg, name))})
    return cfg


def score(model, train, held) -> dict:
    from twotower.evaluation.metrics import recommend_and_evaluate
    m = recommend_and_evaluate(model, train, held, (10,), return_lists=True)
    cov = len(np.unique(m["lists"]["top_ids"][:, :10])) / train.n_items
    return {"recall@10": m["recall@10"], "ndcg@10": m["ndcg@10"], "cov": cov}


def run(name: str, x, seeds: list[int], only: list[str] | None, suspects: list[str] | None,
        test: bool, flush) -> list[str]:
    from twotower import TwoTower, random_split
    from twotower.errors import ConfigError
    from twotower.evaluation.baselines import MostPop
    part = "test" if test else "validation"
    out = [f"## {name}: {len(x):,} rows, {x.n_users:,} users, {x.n_items:,} items; {part} "
           f"split, seeds {', '.join(map(str, seeds))}", "",
           "| model | recall@10 | ndcg@10 | top-10 coverage | loss first -> last epoch | "
           "vs MostPop recall@10 | seconds |", "|---|---:|---:|---:|---|---:|---:|"]
    todo = [r for r in rows() if not only or r[0] in only]
    if only:  # in the order asked
        todo.sort(key=lambda r: only.index(r[0]))
    if suspects:
        todo = [(f"{label}, {s}", p, {**o, **SUSPECTS[s]}) for label, p, o in todo
                for s in suspects]
    if name != "ml100k":
        todo = [r for r in todo if r[2]["objective"] != "mse"]
    splits = {}
    for seed in seeds:
        outer = random_split(x, 0.2, seed)
        if test:
            tr, held = outer.train, outer.test
        else:
            inner = random_split(outer.train, 0.2, seed + 1)
            tr, held = inner.train, inner.test
        pop = score(MostPop().fit(tr), tr, held)
        splits[seed] = tr, held, pop
        out.append(f"| seed {seed}: MostPop | {pop['recall@10']:.4f} | {pop['ndcg@10']:.4f} | "
                   f"{pop['cov']:.3f} | | | |")
        print(out[-1], flush=True)
        flush(out)
    for label, preset, over in todo:  # each row on every seed before the next row
        for seed in seeds:
            tr, held, pop = splits[seed]
            try:
                cfg = config(preset, over, seed, x)
                cfg.check_used()
            except ConfigError as exc:
                out.append(f"| seed {seed}: {label} | refused: {exc} | | | | | |")
                print(out[-1], flush=True)
                flush(out)
                continue
            t0 = time.perf_counter()
            model = TwoTower(cfg).fit(tr, verbose=0)
            s = score(model, tr, held)
            loss = model.history.get("loss") or [float("nan")]
            out.append(f"| seed {seed}: {label} | {s['recall@10']:.4f} | {s['ndcg@10']:.4f} | "
                       f"{s['cov']:.3f} | {loss[0]:.4f} -> {loss[-1]:.4f} | "
                       f"{s['recall@10'] / pop['recall@10']:.2f}x | "
                       f"{time.perf_counter() - t0:.0f} |")
            print(out[-1], flush=True)
            flush(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("TWOTOWER_ML100K_DIR"),
                    help="MovieLens 100k folder (ml100k is left out without it)")
    ap.add_argument("--datasets", nargs="+", choices=("ml100k", "topics", "popular"),
                    default=["ml100k", "topics", "popular"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--only", nargs="+", help="only the rows of these labels (in this order), e.g. "
                         "'tutorial + bpr / id'")
    ap.add_argument("--suspects", nargs="+", choices=list(SUSPECTS),
                    help="instead of each row: the row with each of these changes (SUSPECTS)")
    ap.add_argument("--test", action="store_true",
                    help="score on the test part (the confirmation run; once)")
    ap.add_argument("--tag", default="", help="appended to the results file's name")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for the results file (default benchmarks/results)")
    ap.add_argument("--force", action="store_true", help="overwrite a results file of that name")
    args = ap.parse_args(argv)
    from _results import claim, out_dir, stamp
    tag = f"-{args.tag}" if args.tag else ""
    path = out_dir(args.out, name="objective-audit") / f"probe-objective-audit-{stamp()}{tag}.txt"
    claim(path, force=args.force)  # checked before the run: a kept result is not written over
    lines = ["# python benchmarks/probes/objective_audit.py " + " ".join(argv or sys.argv[1:]),
             f"# load at start: {Path('/proc/loadavg').read_text().strip()}"
             if Path("/proc/loadavg").exists() else "#"]
    for name in args.datasets:
        if name == "ml100k" and not args.data:
            print("ml100k left out: no --data (or TWOTOWER_ML100K_DIR)", file=sys.stderr)
            continue
        def flush(part: list[str], done: list[str] = list(lines)) -> None:
            path.write_text("\n".join([*done, "", *part]) + "\n")  # after every row
        lines += ["", *run(name, dataset(name, args.data), args.seeds, args.only,
                           args.suspects, args.test, flush)]
        path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
