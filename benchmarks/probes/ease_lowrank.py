"""Probe: does a rank-d two-tower have the capacity of EASE on MovieLens 100k?

Fits EASE (lambda 500) on the first random validation split of benchmarks/tune.py (train part
of the seed-0 80/20 split, split again with seed 1000), truncates its item-item matrix B to
rank d by SVD (B ~ (U_d S_d) V_d^T: a history tower with sum pooling and an item tower) and
prints validation metrics at @10 for d in 64, 128, 256, 512.

Usage: KERAS_BACKEND=jax python benchmarks/probes/ease_lowrank.py
Output of the run quoted in docs/quality.md: results/probe-ease-lowrank-20261129.txt
"""
import sys, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from twotower.data import random_split, read_movielens_100k
from twotower.evaluation import EASE, recommend_and_evaluate
data = read_movielens_100k((__import__("os").environ.get("ML100K") or __import__("twotower.data.fetch", fromlist=["x"]).fetch_movielens_100k()))
outer = random_split(data, 0.2, 0).train
inner = random_split(outer, 0.2, 1000)
tr, va = inner.train, inner.test
e = EASE(lambda_=500.0).fit(tr)
print("full", {k: round(v,4) for k,v in recommend_and_evaluate(e, tr, va, (10,)).items() if '@10' in k})
B = e._weights.astype(np.float64)
U, S, Vt = np.linalg.svd(B)
for d in (64, 128, 256, 512):
    e._weights = ((U[:, :d] * S[:d]) @ Vt[:d]).astype(np.float32)
    m = recommend_and_evaluate(e, tr, va, (10,))
    print(d, {k: round(v,4) for k,v in m.items() if '@10' in k})
