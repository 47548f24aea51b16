"""Probe: EASE alone with a recency-weighted query, on the temporal validation split.

The temporal validation split of benchmarks/tune.py (each user's latest 20% of the train part
of the per-user temporal 80/20 split). EASE is fitted on the binary train' matrix; the query
is the user's history weighted ``floor + (1 - floor) * 0.5 ** (rank / half_life)`` (rank 0 =
the latest item) instead of binary. Prints, per (lambda, half-life, floor), Recall@10 and
NDCG@10 as ratios to the EASE baseline tuned on the same split (binary query).

Usage: KERAS_BACKEND=jax python benchmarks/probes/ease_recency.py
Output of the run quoted in docs/quality.md: results/probe-ease-recency-20261129.txt
"""
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tune import validation_splits  # noqa: E402
from twotower.data import read_movielens_100k  # noqa: E402
from twotower.evaluation import EASE, recommend_and_evaluate, tune  # noqa: E402
from twotower.evaluation.baselines import ease_weights  # noqa: E402
from twotower.models.linear import _Scores, floor_weights, history_matrix  # noqa: E402
from twotower.models.retriever import history_table  # noqa: E402

data = read_movielens_100k((__import__("os").environ.get("ML100K") or __import__("twotower.data.fetch", fromlist=["x"]).fetch_movielens_100k()))
name, tr, va = validation_splits(data, [])[0]
best, _ = tune(EASE, tr, {"lambda_": [100.0, 200.0, 500.0, 1000.0]}, split="temporal")
ref = recommend_and_evaluate(EASE(best).fit(tr), tr, va, (10,))
print(name, "EASE baseline", best, round(ref["recall@10"], 4), round(ref["ndcg@10"], 4))
x = tr.to_csr()
g = (x.T @ x).toarray()
h = history_table(tr, 1000)
print("lambda half_life floor recall@10/EASE ndcg@10/EASE")
for lam in (100.0, 200.0, 500.0):
    b = ease_weights(g, lam, np.float32)
    for hl in (2.0, 5.0, 10.0, 20.0):
        for f in (0.0, 0.1, 0.2, 0.35, 1.0):
            q = history_matrix(h, floor_weights(1000, hl, f), tr.n_items + 1, "latest")[:, 1:]
            m = recommend_and_evaluate(_Scores(q, b), tr, va, (10,))
            print(lam, hl, f, round(m["recall@10"] / ref["recall@10"], 3),
                  round(m["ndcg@10"] / ref["ndcg@10"], 3), flush=True)
