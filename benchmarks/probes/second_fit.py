"""Probe: what a second fit of the default preset's trained part costs in one process.

Fits the trained part (ease_weight 0) on train' (64k rows) then on train (80k rows) then
train' again, each a new TwoTower, timing each fit; then the same with JAX's persistent
compilation cache on (a scratch directory).

Usage: KERAS_BACKEND=jax python benchmarks/probes/second_fit.py
Output of the run quoted in docs/quality.md: results/probe-second-fit-20261129.txt
"""
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
from twotower.data import random_split, read_movielens_100k  # noqa: E402
from twotower.models import ModelConfig, TwoTower  # noqa: E402

d = read_movielens_100k((__import__("os").environ.get("ML100K") or __import__("twotower.data.fetch", fromlist=["x"]).fetch_movielens_100k()))
tr = random_split(d, 0.2, 42).train
inner = random_split(tr, 0.2, 7)
for x in (inner.train, tr, inner.train):
    t = time.perf_counter()
    TwoTower(ModelConfig.preset("default", ease_weight=0.0)).fit(x, verbose=0)
    print(len(x), round(time.perf_counter() - t, 2))
import jax  # noqa: E402
jax.config.update("jax_compilation_cache_dir", tempfile.mkdtemp())
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
for x in (inner.train, tr, inner.train, tr):
    t = time.perf_counter()
    TwoTower(ModelConfig.preset("default", ease_weight=0.0)).fit(x, verbose=0)
    print("cache", len(x), round(time.perf_counter() - t, 2))
