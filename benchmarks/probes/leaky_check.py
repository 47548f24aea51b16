"""Probe: can a cheap check tell when the fixed ease_weight is too low, with no second fit?

The blend weight can only be chosen honestly with the trained part fitted again on the EASE
tuning split's training part train' (`ease_weight_grid`, about 1.7x the fit time). The
trained part already fitted on all of train has seen the validation rows, so its
validation scores are optimistic (the query is built from train' histories, the item
table has learned the held-out pairs). That makes a one-sided check: if EASE alone beats
even this optimistic blend at the fixed weight on validation, the fixed weight is too low.
For each validation split of benchmarks/tune.py (no test part is read) this prints the
validation recall@10 + ndcg@10 of: EASE alone (the part's tuned lambda, full rank), the
blend at 0.4 with the optimistic trained part, and the honest blend (trained part fitted
on train') at 0.4 and at the grid's best weight.

Usage: KERAS_BACKEND=jax python benchmarks/probes/leaky_check.py [DATA=log] [SEEDS="0 1"]
"""
import dataclasses
import os
import sys

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from tune import validation_splits  # noqa: E402

from twotower.data import read_interactions, read_movielens_100k  # noqa: E402
from twotower.models import ModelConfig, TwoTower  # noqa: E402
from twotower.models.linear import tune_and_fit  # noqa: E402
from twotower.models.retriever import history_table  # noqa: E402

src = os.environ.get("DATA")
data = (read_interactions(src, rating_col="rating" if src.endswith(".parquet") else None)
        if src else
        read_movielens_100k((__import__("os").environ.get("ML100K") or __import__("twotower.data.fetch", fromlist=["x"]).fetch_movielens_100k())))
WS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.9, 0.95)
SEEDS = [int(s) for s in os.environ.get("SEEDS", "0 1").split()]


def row(chosen, w):
    r = next(t for t in chosen["weights_tried"] if t["weight"] == w)
    return r["recall@10"] + r["ndcg@10"]


for name, tr, _ in validation_splits(data, SEEDS):
    kind = "temporal" if name == "temporal" else "random"
    cfg = ModelConfig.preset("default", ease_split=kind)
    full = TwoTower(dataclasses.replace(cfg, ease_weight=0.0)).fit(tr, verbose=0)

    def optimistic(part):
        hist = history_table(part, cfg.history_length)
        def scores(users):
            q = np.zeros((len(users), cfg.embedding_dim), dtype=np.float32)
            if full.user_embeddings is not None:
                q += full.user_embeddings[users]
            q += full._pool(hist[users])
            return full._with_bias_column(q) @ full.item_embeddings.T
        return scores

    def honest(part):
        sub = TwoTower(dataclasses.replace(cfg, ease_weight=0.0)).fit(part, verbose=0)
        return lambda users: sub._query_part(users) @ sub.item_embeddings.T

    args = (tr, cfg.history_length, cfg.ease_lambdas, cfg.ease_half_lives, cfg.ease_floors,
            cfg.embedding_dim, kind, cfg.seed, WS)
    _, _, opt = tune_and_fit(*args, optimistic)
    _, _, hon = tune_and_fit(*args, honest)
    at = (opt["lambda"], opt["half_life"], opt["floor"])
    ease = next(r["recall@10"] + r["ndcg@10"] for r in opt["tried"]
                if (r["lambda"], r["half_life"], r["floor"]) == at)
    print(f"{name}: EASE alone {ease:.4f}  optimistic@0.4 {row(opt, 0.4):.4f} "
          f"(optimistic best {opt['weight']})  honest@0.4 {row(hon, 0.4):.4f}  "
          f"honest@{hon['weight']} {row(hon, hon['weight']):.4f}  "
          f"check fires: {ease > row(opt, 0.4)}", flush=True)
