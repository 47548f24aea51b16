"""Retrieval quality on MovieLens 100k: the only script that reads the test parts.

Every method on three splits (seeded random 80/20; per-user temporal 80/20; global
temporal, one time cutoff with the latest 20% of the rows as test, so no training row comes
after a test row), 3 seeds each (the temporal splits are fixed; the seed changes model
initialisation and shuffling), seen items excluded, metrics averaged over users with test
items and training rows (``twotower.evaluation``; on the global split most test users have
none: they are left out of every row, and the table says how many are scored):

- ``tutorial``: ``ModelConfig.preset("tutorial")`` (the Keras-RS tutorial's MSE model);
- ``default``: ``ModelConfig.preset("default")`` (chosen by ``benchmarks/tune.py`` on
  validation splits carved from train);
- ``MostPop``, ``ItemKNN`` and ``EASE`` (their hyperparameters tuned by
  ``twotower.evaluation.tune`` on a validation split of the same train part, carved like
  the test part: each user's latest items on both temporal splits, as ``twotower evaluate
  --baselines`` does); on the temporal splits also ``EASE+recency``, EASE with the default
  model's recency-weighted
  query, tuned with EASE in one search (``tune_ease``, as ``twotower evaluate
  --baselines``; its fit-time column leaves out that shared search, counted in EASE's).

Also: held-out users (10% of users absent from training, recommended from their first 80% of
items through ``recommend_from_history``) against the same users and test items when they
are in training; and the training time of ``tutorial`` vs ``default`` measured side by side,
both as ``fit`` time and as ``twotower train`` wall time (CLI start to saved model).

Usage:
    KERAS_BACKEND=jax python benchmarks/quality.py [--data /path/to/ml-100k] [--seeds 0 1 2]
    python benchmarks/quality.py --held-out-only      # the held-out users part alone
    # on a shared machine: time alone under a lock, then the rest with those times
    flock /tmp/twotower-bench.lock python benchmarks/quality.py --timing-only
    python benchmarks/quality.py --timing-from benchmarks/results/quality-timing-<stamp>.json

Writes ``benchmarks/results/quality-<timestamp>.{json,md}`` (``--out DIR``: there; a file of
the same name is not overwritten without ``--force``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from twotower.data import (held_out_users_split, make_split,  # noqa: E402
                           read_movielens_100k)
from twotower.evaluation import (BASELINE_GRIDS, EASE, ItemKNN, MostPop,  # noqa: E402
                                 recommend_and_evaluate, tune)
from twotower.evaluation.baselines import recency_settings, tune_ease  # noqa: E402
from twotower.models import ModelConfig, TwoTower  # noqa: E402

from _results import claim, out_dir, stamp  # noqa: E402

KS = (10, 100)
SHOW = ("recall@10", "ndcg@10", "recall@100")
GRIDS = BASELINE_GRIDS  # the CLI's (twotower evaluate --baselines)


def _baseline(name, train, kind, seed, chosen):
    if name == "MostPop":
        return MostPop().fit(train)
    if name.startswith("EASE"):  # as `evaluate --baselines`: on a temporal split one tune
        # (every lambda with every recency weight of the query) gives EASE and EASE+recency
        if "EASE" not in chosen:
            chosen["EASE"] = tune_ease(train, seed, split=kind, recency=(
                recency_settings() if kind == "temporal" else ()))
        plain, weighted = chosen["EASE"]
        return EASE(plain if name == "EASE" else weighted).fit(train)
    cls = {"ItemKNN": ItemKNN}[name]
    best, _ = tune(cls, train, GRIDS[name], seed=seed, split=kind)
    return cls(best).fit(train)


def _keep(m):
    return {k: float(m[k]) for k in SHOW}


SPLITS = ("random", "temporal", "global-temporal")


def quality(data, seeds, splits=SPLITS):
    import warnings
    rows = []
    for split in splits:
        # validation splits of the training part are carved like the test part: each
        # user's latest items on a temporal split of either kind (as `twotower train`
        # and `twotower evaluate --baselines` carve them)
        kind = "random" if split == "random" else "temporal"
        for seed in seeds:
            sp = make_split(data, split, 0.2, seed)
            for preset in ("tutorial", "default"):
                # the EASE part is tuned on a validation split carved like this one
                cfg = ModelConfig.preset(preset, seed=seed, ease_split=kind)
                with warnings.catch_warnings():  # users with no training row (global):
                    warnings.simplefilter("ignore")  # left out of the metrics, counted
                    model = TwoTower(cfg).fit(sp.train, verbose=0)
                m = recommend_and_evaluate(model, sp.train, sp.test, KS)
                # the EASE part's blend weight: chosen on validation where the default
                # preset's check (ease_weight_choice) says so, else the configured one
                tuning = model.ease_tuning or {}
                ease = ({"ease_weight": tuning.get("weight", cfg.ease_weight),
                         "weight_check": tuning.get("weight_check")}
                        if cfg.ease_weight else {})
                rows.append({"split": split, "seed": seed, "method": preset,
                             "fit_s": model.fit_seconds, "users": int(m["users"]), **ease,
                             **_keep(m)})
                print(split, seed, preset, rows[-1], flush=True)
            chosen = {}  # EASE's tune, shared with EASE+recency (its time in EASE's row)
            for name in ("MostPop", "ItemKNN", "EASE") + (("EASE+recency",)
                                                         if kind == "temporal" else ()):
                t0 = time.perf_counter()
                rec = _baseline(name, sp.train, kind, seed, chosen)
                m = recommend_and_evaluate(rec, sp.train, sp.test, KS)
                rows.append({"split": split, "seed": seed, "method": name,
                             "fit_s": time.perf_counter() - t0, "users": int(m["users"]),
                             **_keep(m)})
                print(split, seed, name, rows[-1], flush=True)
    return rows


def held_out(data, seeds):
    """Held-out users from history alone vs the same users and test items when trained on."""
    rows = []
    for seed in seeds:
        sp = held_out_users_split(data, 0.1, seed)
        # held-out users' test items are the last 20% of their items: tuned like a temporal split
        cfg = ModelConfig.preset("default", seed=seed, ease_split="temporal")
        cold = TwoTower(cfg).fit(sp.train, verbose=0)
        m_cold = recommend_and_evaluate(cold, sp.train, sp.test, KS, history=sp.history)
        # the same users in training: everything but their test rows
        key = data.users * data.n_items + data.items
        test_key = sp.test.users * data.n_items + sp.test.items
        warm_train = data.take(np.flatnonzero(~np.isin(key, test_key)))
        warm = TwoTower(cfg).fit(warm_train, verbose=0)
        m_warm = recommend_and_evaluate(warm, warm_train, sp.test, KS)
        rows.append({"seed": seed, "held_out": _keep(m_cold), "in_training": _keep(m_warm),
                     "users": int(m_cold["users"]),
                     "ratio_recall@10": m_cold["recall@10"] / m_warm["recall@10"]})
        print("held-out", rows[-1], flush=True)
    return rows


def timing(data_dir, repeats=2):
    """``twotower train`` wall time and fit time, tutorial and default alternating."""
    exe = shutil.which("twotower", path=str(Path(sys.executable).parent)) or "twotower"
    out = {"tutorial": [], "default": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for preset in ("tutorial", "default"):
                run_dir = Path(tmp) / f"{preset}-{r}"
                t0 = time.perf_counter()
                p = subprocess.run([exe, "train", "--data-dir", str(data_dir), "--preset",
                                    preset, "--out", str(run_dir)], capture_output=True,
                                   text=True, env={**os.environ, "KERAS_BACKEND": "jax"})
                wall = time.perf_counter() - t0
                if p.returncode:
                    raise RuntimeError(f"twotower train failed: {p.stderr[-2000:]}")
                fit = float(p.stdout.split(" in ")[-1].split(" s;")[0])
                out[preset].append({"cli_s": wall, "fit_s": fit})
                print("timing", preset, out[preset][-1], flush=True)
    return out


def softmax_scaling(sizes=(1_000, 5_000, 20_000, 50_000), n=50_000, epochs=3):
    """Seconds per epoch of full ``softmax`` vs in-batch ``sampled_softmax`` (id tower,
    d=64, batch 1000) on synthetic data, by catalogue size; first epoch (compile) dropped."""
    from twotower.data import Interactions
    rng = np.random.default_rng(0)
    out = []
    for n_items in sizes:
        x = Interactions.from_ids(rng.integers(0, 2000, n), rng.zipf(1.3, n) % n_items)
        row = {"n_items": n_items}
        for obj in ("softmax", "sampled_softmax"):
            cfg = ModelConfig.from_dict(dict(query_tower="id", objective=obj, embedding_dim=64,
                                             epochs=epochs, batch_size=1000, optimizer="adam",
                                             learning_rate=0.005, temperature=0.1))
            times = []
            cb = keras.callbacks.LambdaCallback(
                on_epoch_begin=lambda e, logs: times.append(time.perf_counter()),
                on_epoch_end=lambda e, logs: times.append(time.perf_counter()))
            TwoTower(cfg).fit(x, verbose=0, callbacks=[cb])
            row[obj] = float(np.mean([times[2 * e + 1] - times[2 * e]
                                      for e in range(1, epochs)]))
        out.append(row)
        print("softmax scaling", row, flush=True)
    return out


def _ms(vals):
    return f"{np.mean(vals):.4f} ± {np.std(vals):.4f}"


def markdown(rows, held, times, seeds):
    lines = [f"MovieLens 100k, seen items excluded, mean ± std over seeds {list(seeds)} "
             "(population std, ddof 0: `np.std`).", ""]
    for kind in dict.fromkeys(r["split"] for r in rows):
        users = sorted({r["users"] for r in rows if r["split"] == kind and "users" in r})
        lines += [f"**{kind} split** (users scored: {', '.join(map(str, users))})", "",
                  "| method | " + " | ".join(SHOW) + " | fit s |",
                  "|---|" + "---:|" * (len(SHOW) + 1)]
        for method in ("tutorial", "default", "MostPop", "ItemKNN", "EASE", "EASE+recency"):
            sel = [r for r in rows if r["split"] == kind and r["method"] == method]
            if not sel:  # EASE+recency: temporal splits only
                continue
            cells = [_ms([r[k] for r in sel]) for k in SHOW]
            lines.append(f"| {method} | " + " | ".join(cells)
                         + f" | {np.mean([r['fit_s'] for r in sel]):.1f} |")
        lines.append("")
    lines += ["**held-out users** (default preset, 10% of users absent from training, "
              "first 80% of their items as history)", "",
              "| query | " + " | ".join(SHOW) + " |", "|---|" + "---:|" * len(SHOW)]
    for name, key in (("history only (held out)", "held_out"),
                      ("same users in training", "in_training")):
        lines.append(f"| {name} | " + " | ".join(_ms([h[key][k] for h in held]) for k in SHOW)
                     + " |")
    ratio = [h["ratio_recall@10"] for h in held]
    lines += ["", f"held-out / in-training Recall@10: {_ms(ratio)}", ""]
    if times:
        lines += ["**training time** (same run, alternating; best of repeats)", "",
                  "| preset | fit s | `twotower train` s (CLI start to saved model) |",
                  "|---|---:|---:|"]
        for preset, ts in times.items():
            lines.append(f"| {preset} | {min(t['fit_s'] for t in ts):.1f} | "
                         f"{min(t['cli_s'] for t in ts):.1f} |")
    return "\n".join(lines) + "\n"


def _machine():
    return {"python": sys.version.split()[0], "platform": platform.platform(),
            "keras": keras.__version__, "cpus": os.cpu_count()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("ML100K"),
                    help="MovieLens 100k directory (default: $ML100K, else as the product finds it: "
                         "TWOTOWER_ML100K_DIR, its cache, or a download)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--held-out-only", action="store_true",
                    help="only the held-out users' part (no splits, no timing)")
    ap.add_argument("--timing-only", action="store_true",
                    help="only time `twotower train` (run it under the shared benchmark lock)")
    ap.add_argument("--timing-from", type=Path, default=None,
                    help="take the training times from a --timing-only result file")
    ap.add_argument("--softmax-scaling", action="store_true",
                    help="only time full vs sampled softmax by catalogue size")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for the results (default benchmarks/results)")
    ap.add_argument("--force", action="store_true",
                    help="overwrite result files of the same name")
    args = ap.parse_args(argv)
    out = out_dir(args.out, name="quality")
    when = stamp()
    kind = ("quality-softmax-scaling" if args.softmax_scaling else "quality-timing"
            if args.timing_only else "quality")
    claim(*([out / f"{kind}-{when}.json"] + ([out / f"{kind}-{when}.md"] if kind == "quality"
                                             else [])), force=args.force)
    if args.data is None:  # TWOTOWER_ML100K_DIR, the cache, or a download
        from twotower.data.fetch import fetch_movielens_100k
        args.data = str(fetch_movielens_100k())
    if args.softmax_scaling:
        rows = softmax_scaling()
        path = out / f"{kind}-{when}.json"
        path.write_text(json.dumps({"n_interactions": 50_000, "rows": rows}, indent=1))
        print("wrote", path)
        return 0
    if args.timing_only:
        times = timing(args.data)
        path = out / f"{kind}-{when}.json"
        path.write_text(json.dumps({"machine": _machine(), "timing": times}, indent=1))
        print("wrote", path)
        return 0
    data = read_movielens_100k(args.data)
    if args.timing_from is not None:
        times = json.loads(args.timing_from.read_text())["timing"]
    else:
        times = None if args.no_timing or args.held_out_only else timing(args.data)
    rows = [] if args.held_out_only else quality(data, args.seeds, args.splits)
    held = held_out(data, args.seeds)
    md = markdown(rows, held, times, args.seeds)
    print(md)
    (out / f"{kind}-{when}.md").write_text(md)
    (out / f"{kind}-{when}.json").write_text(json.dumps({
        "machine": _machine(), "timing_from": str(args.timing_from or ""),
        "presets": {p: ModelConfig.preset(p).to_dict() for p in ("tutorial", "default")},
        "seeds": args.seeds, "rows": rows, "held_out": held, "timing": times}, indent=1))
    print("wrote", out / f"{kind}-{when}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
