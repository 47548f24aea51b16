"""Probe: choose ease_weight per data set at little extra cost, by warm-starting?

`ease_weight_grid` chooses the blend weight with the trained part fitted on train' (the EASE
tuning split's training part), then fits the trained part again from scratch on all of
train (about 1.7x the fit time). Here the final fit instead starts from the train' fit's
weights and runs only a few epochs on all of train. For each validation split of
benchmarks/tune.py (validation parts as the test), the blend is scored (mean ratio to a
tuned EASE of recall@10 and ndcg@10, as tune.py does) for:

  full@0.4   the default now: 15 epochs on train, ease_weight 0.4
  full@w     15 epochs on train, the weight the grid chose (the grid option now)
  warmF@w    the train' fit, then F epochs on train from its weights, the chosen weight
  warmF@0.4  the same at the fixed 0.4 (what the warm start alone costs or gains)

with each fit's seconds. No test part is read.

Usage: KERAS_BACKEND=jax python benchmarks/probes/warm_blend.py  [DATA=log.parquet]
       [EPOCHS="3 5"] [SEEDS="0 1"]
"""
import dataclasses
import os
import sys
import time

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from tune import validation_splits  # noqa: E402

from twotower.data import read_interactions, read_movielens_100k  # noqa: E402
from twotower.evaluation import EASE, recommend_and_evaluate, tune  # noqa: E402
from twotower.models import ModelConfig, TwoTower  # noqa: E402
from twotower.models import net as netmod  # noqa: E402
from twotower.models.linear import tune_and_fit  # noqa: E402

src = os.environ.get("DATA")
data = (read_interactions(src, rating_col="rating") if src else
        read_movielens_100k((__import__("os").environ.get("ML100K") or __import__("twotower.data.fetch", fromlist=["x"]).fetch_movielens_100k())))
WS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.9, 0.95)
EPOCHS = [int(e) for e in os.environ.get("EPOCHS", "3 5").split()]
SEEDS = [int(s) for s in os.environ.get("SEEDS", "0 1").split()]

INIT = {"net": None}
_build = netmod.TwoTowerNet.build


def build(self, *a, **k):  # the warm start: trained weights copied after the build
    out = _build(self, *a, **k)
    if INIT["net"] is not None:
        for dst, src_ in zip(self.trainable_variables, INIT["net"].trainable_variables):
            dst.assign(np.asarray(src_.value))
    return out


netmod.TwoTowerNet.build = build


def fit(train, init=None, **over):
    INIT["net"] = init
    t = time.perf_counter()
    m = TwoTower(ModelConfig.preset("default", **over)).fit(train, verbose=0)
    INIT["net"] = None
    return m, time.perf_counter() - t


for name, tr, va in validation_splits(data, SEEDS):
    kind = "temporal" if name == "temporal" else "random"
    best, _ = tune(EASE, tr, {"lambda_": [20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]},
                   split=kind)
    ref = recommend_and_evaluate(EASE(best).fit(tr), tr, va, (10,))

    def sc(model):
        r = recommend_and_evaluate(model, tr, va, (10,))
        return round((r["recall@10"] / ref["recall@10"] + r["ndcg@10"] / ref["ndcg@10"]) / 2, 4)

    cfg = ModelConfig.preset("default", ease_split=kind)
    kept = {}

    def trained_scores(part):  # as TwoTower._trained_scores_on, keeping the sub-model
        t = time.perf_counter()
        sub = TwoTower(dataclasses.replace(cfg, ease_weight=0.0)).fit(part, verbose=0)
        kept["sub"], kept["s"] = sub, time.perf_counter() - t
        return lambda users: np.asarray(sub._query_part(users) @ sub.item_embeddings.T,
                                        dtype=np.float32)
    t = time.perf_counter()
    _, _, chosen = tune_and_fit(tr, cfg.history_length, cfg.ease_lambdas, cfg.ease_half_lives,
                                cfg.ease_floors, cfg.embedding_dim, kind, cfg.seed, WS,
                                trained_scores, ranks=(32, 64, 128, 256))
    w = chosen["weight"]
    tune_s = time.perf_counter() - t
    out = {}
    m, s = fit(tr, ease_split=kind)
    out["full@0.4"] = (sc(m), round(s, 1))
    m, s = fit(tr, ease_split=kind, ease_weight=w)
    out[f"full@{w}"] = (sc(m), round(s, 1))
    for e in EPOCHS:
        for ww in dict.fromkeys((w, 0.4)):
            m, s = fit(tr, init=kept["sub"]._net, ease_split=kind, ease_weight=ww, epochs=e)
            out[f"warm{e}@{ww}"] = (sc(m), round(s, 1))
    print(f"{name}: chose {w} (train' fit {kept['s']:.1f} s, tuning {tune_s:.1f} s; "
          f"weights tried {chosen.get('weights_tried')})", flush=True)
    print("   ", "  ".join(f"{k}: {v[0]} ({v[1]} s)" for k, v in out.items()), flush=True)
