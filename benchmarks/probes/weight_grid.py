"""Probe: what ``ModelConfig.ease_weight_grid`` chooses on MovieLens 100k, and what it costs.

For the train parts of the random splits with seeds 0, 1, 2 and of the temporal split
(the test parts are never read), fits the default preset as it is (weight 0.4) and with
``ease_weight_grid = (0.2, 0.3, 0.4, 0.5, 0.6, 0.8)``, in one process (so compilation is
shared after the first fit), and prints the chosen weight, the validation metrics of every
weight and both fit times.

Usage: KERAS_BACKEND=jax python benchmarks/probes/weight_grid.py
Output of the run quoted in README and docs/quality.md: results/probe-weight-grid-20261129.txt
"""
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
from twotower.data import random_split, read_movielens_100k, temporal_split  # noqa: E402
from twotower.models import ModelConfig, TwoTower  # noqa: E402

GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.8)
d = read_movielens_100k((__import__("os").environ.get("ML100K") or __import__("twotower.data.fetch", fromlist=["x"]).fetch_movielens_100k()))
TwoTower(ModelConfig.preset("default")).fit(random_split(d, 0.2, 9).train, verbose=0)  # compile
parts = [(f"random seed {s}", random_split(d, 0.2, s).train, "random") for s in (0, 1, 2)]
parts.append(("temporal", temporal_split(d, 0.2).train, "temporal"))
for name, train, kind in parts:
    t = time.perf_counter()
    TwoTower(ModelConfig.preset("default", ease_split=kind)).fit(train, verbose=0)
    plain = time.perf_counter() - t
    t = time.perf_counter()
    m = TwoTower(ModelConfig.preset("default", ease_split=kind, ease_weight_grid=GRID)).fit(
        train, verbose=0)
    grid = time.perf_counter() - t
    tried = "  ".join(f"{r['weight']}: {r['recall@10']:.4f}/{r['ndcg@10']:.4f}"
                      for r in m.ease_tuning["weights_tried"])
    print(f"{name}: chosen {m.ease_tuning['weight']}; fit {plain:.1f} s -> {grid:.1f} s with "
          f"the grid; validation recall@10/ndcg@10 by weight: {tried}", flush=True)
