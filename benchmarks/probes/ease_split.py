"""Probe: the default preset with its EASE part tuned on a temporal vs a random validation
split (``ease_split``), evaluated on a random and on a temporal test split.

MovieLens 100k: the seed-42 random 80/20 split (the tests' split) and the per-user temporal
80/20 split; seen items excluded.

Usage: KERAS_BACKEND=jax python benchmarks/probes/ease_split.py
Output of the run quoted in docs/quality.md: results/probe-ease-split-20261129.txt
"""
import os

os.environ.setdefault("KERAS_BACKEND", "jax")
from twotower.data import random_split, read_movielens_100k, temporal_split  # noqa: E402
from twotower.evaluation import recommend_and_evaluate  # noqa: E402
from twotower.models import ModelConfig, TwoTower  # noqa: E402

d = read_movielens_100k((__import__("os").environ.get("ML100K") or __import__("twotower.data.fetch", fromlist=["x"]).fetch_movielens_100k()))
for test_kind, sp in (("random", random_split(d, 0.2, 42)), ("temporal", temporal_split(d, 0.2))):
    for kind in ("temporal", "random"):
        m = TwoTower(ModelConfig.preset("default", ease_split=kind)).fit(sp.train, verbose=0)
        r = recommend_and_evaluate(m, sp.train, sp.test, (10,))
        print(f"test split {test_kind}, ease_split {kind}:",
              {k: m.ease_tuning[k] for k in ("lambda", "half_life", "floor")},
              round(r["recall@10"], 4), round(r["ndcg@10"], 4))
