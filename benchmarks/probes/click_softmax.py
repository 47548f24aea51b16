"""Probe: why ``sampled_softmax`` on a click log scored far below MostPop, and which
settings fix it.

An audit found the README's click-log advice (the ``tutorial`` preset with ``objective =
"sampled_softmax"``) at Recall@10 0.007 against MostPop 0.143 on a generated click log:
lists close to random. This trains that model, then changes one setting at a time (the
suspects: learning rate, temperature, epochs, optimizer, the log-Q correction's strength,
L2, batch size), then the ``clicks`` preset, on

- ``topics``: a generated click log, 60k rows, 3,000 users (lognormal activity), 1,500
  items in 20 topics, Zipf popularity (exponent 1.0), 80% of a user's clicks in their topic;
- ``popular``: as ``topics`` with Zipf exponent 1.2 and 40% of clicks in the user's topic
  (the rest follow global popularity: MostPop is strong);
- ``ml100k``: MovieLens 100k as implicit data (every rating a click; ``--data DIR`` or
  ``TWOTOWER_ML100K_DIR``; left out when neither is given).

Every setting is read on a **validation** split: the data's random 80% training part
(seed 0) split again 80/20 (seed 1); the test part is only read in the second table, where
the ``clicks`` preset (chosen on the first table) and the old advice are trained on the
whole training part (scored on the test rows whose user and item it has), in memory and streamed (``fit_stream`` over a Parquet copy of the
training part, as ``twotower train --stream`` trains), beside MostPop and ItemKNN.

``log-Q x a`` multiplies the log sampling probability the correction subtracts by ``a``
(1 is the product's full correction, 0 none); the product has no such setting, the probe
scales its inputs.

``--planted ROWS USERS ITEMS`` instead trains ``benchmarks/train_throughput.py``'s planted
set (its only quality check of this path: planted recall@100) for 2 epochs with that
benchmark's settings (the old advice's) and with the ``clicks`` preset.

Usage: KERAS_BACKEND=jax python benchmarks/probes/click_softmax.py [--data ML100K_DIR]
    [--datasets topics popular ml100k] [--seed 0] [--planted 500_000 20_000 50_000]
Writes benchmarks/results/probe-click-softmax-[planted-]<timestamp>.txt (``--out DIR``:
there).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: the old advice: the tutorial preset with objective = "sampled_softmax"
OLD = dict(objective="sampled_softmax")
#: one change at a time from OLD (``logq`` is the probe's scale of the log-Q correction)
SUSPECTS: list[tuple[str, dict]] = [
    ("old advice (tutorial + sampled_softmax, 5 epochs)", dict(epochs=5)),
    ("  50 epochs", dict(epochs=50)),
    ("  learning_rate 1.0", dict(epochs=5, learning_rate=1.0)),
    ("  temperature 0.05", dict(epochs=5, temperature=0.05)),
    ("  adam 0.01", dict(epochs=5, optimizer="adam", learning_rate=0.01)),
    ("  batch_size 256", dict(epochs=5, batch_size=256)),
    ("  l2 1e-4", dict(epochs=5, l2=1e-4)),
    ("  log-Q x 0.5", dict(epochs=5, logq=0.5)),
    ("  log-Q x 0", dict(epochs=5, logq=0.0)),
    ("learning_rate 1.0 + temperature 0.05", dict(epochs=5, learning_rate=1.0,
                                                  temperature=0.05)),
    ("learning_rate 0.5 + temperature 0.1, 10 epochs", dict(epochs=10, learning_rate=0.5,
                                                            temperature=0.1)),
    ("clicks preset", dict(preset="clicks")),
    ("clicks preset, log-Q x 0.5", dict(preset="clicks", logq=0.5)),
    ("clicks preset, log-Q x 0", dict(preset="clicks", logq=0.0)),
]


def click_log(rows: int = 60_000, users: int = 3_000, items: int = 1_500, topics: int = 20,
              zipf: float = 1.0, affinity: float = 0.8, seed: int = 0):
    """A click log with planted topics: ``[rows]`` user and item ids (strings)."""
    from twotower import Interactions
    rng = np.random.default_rng(seed)
    item_topic = rng.integers(0, topics, items)
    pop = (1.0 / np.arange(1, items + 1) ** zipf)[rng.permutation(items)]
    user_topic = rng.integers(0, topics, users)
    act = rng.lognormal(0.0, 1.0, users)
    u = np.concatenate([np.arange(users), rng.choice(users, rows - users, p=act / act.sum())])
    own = rng.random(rows) < affinity
    it = np.empty(rows, np.int64)
    it[~own] = rng.choice(items, int((~own).sum()), p=pop / pop.sum())
    for t in range(topics):
        ix = np.flatnonzero(item_topic == t)
        m = own & (user_topic[u] == t)
        it[m] = rng.choice(ix, int(m.sum()), p=pop[ix] / pop[ix].sum())
    return Interactions.from_ids(np.char.add("u", u.astype(str)),
                                 np.char.add("i", it.astype(str)))


def movielens(path: str):
    from twotower import Interactions, load_movielens_100k
    x = load_movielens_100k(path)
    return Interactions(users=x.users, items=x.items, user_vocab=x.user_vocab,
                        item_vocab=x.item_vocab)  # implicit: every rating a click


class _LogQScale:
    """Scales the log sampling probability ``TwoTower`` feeds the correction by ``a``."""

    def __init__(self, a: float) -> None:
        self.a = a

    def __enter__(self) -> None:
        import twotower.models.retriever as R
        self.orig = R.TwoTower._inputs
        a, orig = self.a, self.orig

        def inputs(model, x):
            out = orig(model, x)
            if "logq" in out:
                out["logq"] = out["logq"] * np.float32(a)
            return out
        R.TwoTower._inputs = inputs

    def __exit__(self, *exc) -> None:
        import twotower.models.retriever as R
        R.TwoTower._inputs = self.orig


def config(settings: dict, seed: int):
    from twotower import ModelConfig
    s = {k: v for k, v in settings.items() if k not in ("preset", "logq")}
    if "preset" in settings:
        return ModelConfig.preset(settings["preset"], seed=seed, **s)
    return ModelConfig.preset("tutorial", seed=seed, **OLD, **s)


def score(model, train, held) -> tuple[float, float, float]:
    from twotower.evaluation.metrics import recommend_and_evaluate
    m = recommend_and_evaluate(model, train, held, (10, 100), return_lists=True)
    cov = len(np.unique(m["lists"]["top_ids"][:, :10])) / train.n_items
    return m["recall@10"], m["recall@100"], cov


def fit(settings: dict, train, seed: int):
    from twotower import TwoTower
    with _LogQScale(settings.get("logq", 1.0)):
        return TwoTower(config(settings, seed)).fit(train, verbose=0)


def remap(x, model):
    """``x`` in ``model``'s vocabularies (a streamed model reads its own from the file)."""
    from twotower import Interactions
    users = model.user_vocab.lookup(x.user_vocab.ids_of(x.users))
    items = model.item_vocab.lookup(x.item_vocab.ids_of(x.items))
    return Interactions(users=users, items=items, user_vocab=model.user_vocab,
                        item_vocab=model.item_vocab)


def fit_stream(settings: dict, train, seed: int):
    import pandas as pd

    from twotower import TwoTower
    from twotower.training import InteractionStream, StreamConfig
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.parquet"
        pd.DataFrame({"user_id": train.user_vocab.ids_of(train.users),
                      "item_id": train.item_vocab.ids_of(train.items)}).to_parquet(path)
        stream = InteractionStream(path, StreamConfig(seed=seed))
        return TwoTower(config(settings, seed)).fit_stream(stream, progress_every_s=0)


def probe(name: str, x, seed: int) -> list[str]:
    from twotower import random_split
    from twotower.evaluation.baselines import ItemKNN, MostPop
    outer = random_split(x, 0.2, seed)
    inner = random_split(outer.train, 0.2, seed + 1)
    tr, va = inner.train, inner.test
    out = [f"## {name}: {len(x):,} rows, {x.n_users:,} users, {x.n_items:,} items",
           "", "validation (training part split 80/20 again):", "",
           "| model | recall@10 | recall@100 | top-10 coverage | seconds |",
           "|---|---:|---:|---:|---:|"]
    for label, rec in (("MostPop", MostPop()), ("ItemKNN", ItemKNN())):
        r10, r100, cov = score(rec.fit(tr), tr, va)
        out.append(f"| {label} | {r10:.4f} | {r100:.4f} | {cov:.3f} | |")
    for label, settings in SUSPECTS:
        t0 = time.perf_counter()
        r10, r100, cov = score(fit(settings, tr, seed), tr, va)
        out.append(f"| {label} | {r10:.4f} | {r100:.4f} | {cov:.3f} | "
                   f"{time.perf_counter() - t0:.0f} |")
        print(out[-1], flush=True)
    tr, te = outer.train, outer.test
    # test rows whose user and item the training part has (a streamed model knows no other)
    known = (np.isin(te.users, tr.users) & np.isin(te.items, tr.items))
    te = te.take(np.flatnonzero(known))
    out += ["", f"test (trained on the whole training part; the {len(te):,} test rows whose "
            "user and item it has):", "",
            "| model | recall@10 | recall@100 | top-10 coverage |", "|---|---:|---:|---:|"]
    rows = [("MostPop", lambda: MostPop().fit(tr)), ("ItemKNN", lambda: ItemKNN().fit(tr))]
    for label, settings in (("old advice, 5 epochs", dict(epochs=5)),
                            ("clicks preset", dict(preset="clicks"))):
        rows.append((label, lambda s=settings: fit(s, tr, seed)))
        rows.append((label + ", streamed", lambda s=settings: fit_stream(s, tr, seed)))
    for label, make in rows:
        model = make()
        if label.endswith("streamed"):
            r10, r100, cov = score(model, remap(tr, model), remap(te, model))
        else:
            r10, r100, cov = score(model, tr, te)
        out.append(f"| {label} | {r10:.4f} | {r100:.4f} | {cov:.3f} |")
        print(out[-1], flush=True)
    return out


def planted(rows: int, users: int, items: int, epochs: int, seed: int) -> list[str]:
    """``benchmarks/train_throughput.py``'s quality check (planted recall@100 on its synthetic
    planted set, the product loop) for the old advice's settings, which that benchmark
    trains, and the ``clicks`` preset's."""
    import keras

    import train_throughput as T
    from twotower import ModelConfig
    from twotower.models.net import TwoTowerNet
    from twotower.training.loop import LoopConfig, TrainLoop, make_optimizer
    ns = argparse.Namespace(rows=rows, users=users, items=items, seed=seed,
                            objective="sampled_softmax", batch_size=1000, embedding_dim=32,
                            learning_rate=0.1, shuffle_buffer=262_144,
                            work=str(Path(tempfile.gettempdir()) / "twotower-bench"))
    x, uv, iv, _ = T.cached_inputs(ns, T.data_file(ns, rows))
    out = [f"## planted: {rows:,} rows, {users:,} users, {items:,} items, {epochs} epochs",
           "", "| model | planted recall@100 | loss per epoch | seconds |", "|---|---:|---|---:|"]
    for label, cfg in (("old advice (train_throughput's settings)", T.model_config(ns)),
                       ("clicks preset", ModelConfig.preset("clicks", seed=seed))):
        cfg = ModelConfig.from_dict({**cfg.to_dict(), "epochs": epochs})
        keras.utils.set_random_seed(seed)
        net = TwoTowerNet(len(uv), len(iv), cfg)
        net.build()
        loop = TrainLoop(net, make_optimizer(cfg), LoopConfig())
        t0 = time.perf_counter()
        loop.fit(x, batch_size=cfg.batch_size, epochs=epochs, seed=seed)
        out.append(f"| {label} | {T.planted_recall(net, uv, iv, ns):.4f} | "
                   f"{', '.join(f'{v:.3f}' for v in loop.history['loss'])} | "
                   f"{time.perf_counter() - t0:.0f} |")
        print(out[-1], flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("TWOTOWER_ML100K_DIR"),
                    help="MovieLens 100k folder (ml100k is left out without it)")
    ap.add_argument("--datasets", nargs="+", choices=("topics", "popular", "ml100k"),
                    default=["topics", "popular", "ml100k"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--planted", type=lambda v: int(v.replace("_", "")), nargs=3, metavar=("ROWS", "USERS", "ITEMS"),
                    help="instead: train_throughput's planted recall@100 (2 epochs)")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for the results file (default benchmarks/results)")
    ap.add_argument("--force", action="store_true", help="overwrite a results file of that name")
    args = ap.parse_args(argv)
    from _results import claim, out_dir
    kind = "planted-" if args.planted else ""
    path = (out_dir(args.out, name="click-softmax")
            / f"probe-click-softmax-{kind}{time.strftime('%Y%m%d-%H%M%S')}.txt")
    claim(path, force=args.force)  # checked before the run: a kept result is not written over
    lines = ["# python benchmarks/probes/click_softmax.py " + " ".join(argv or sys.argv[1:])]
    if args.planted:
        lines += ["", *planted(*args.planted, epochs=2, seed=args.seed)]
        path.write_text("\n".join(lines) + "\n")
        print(f"wrote {path}", file=sys.stderr)
        return 0
    for name in args.datasets:
        if name == "ml100k" and not args.data:
            print("ml100k left out: no --data (or TWOTOWER_ML100K_DIR)", file=sys.stderr)
            continue
        x = (movielens(args.data) if name == "ml100k" else
             click_log(seed=args.seed) if name == "topics" else
             click_log(zipf=1.2, affinity=0.4, seed=args.seed))
        lines += ["", *probe(name, x, args.seed)]
        path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
