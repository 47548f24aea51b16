"""Probe: choose ease_weight per data set with a trained part fitted on train' only?

For each validation split of benchmarks/tune.py: the trained part (default preset, no EASE
part) is fitted on train' (an 80% split of the validation train part, carved like it), the
blend weight is chosen on the held-out 20% of train', and the blend is scored on the
validation split twice: with that train'-trained part (serving with full-train histories)
and with a trained part fitted on all of the validation train part. Scores as in tune.py
(mean ratio to EASE of recall@10 and ndcg@10).

Usage: KERAS_BACKEND=jax python benchmarks/probes/inner_trained.py   [DATA=log.parquet]
Output of the run quoted in docs/quality.md: results/probe-inner-trained-20261129.txt
"""
import os, sys, time, numpy as np
os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from tune import validation_splits
from twotower.data import read_movielens_100k, read_interactions, random_split, temporal_split
from twotower.evaluation import EASE, recommend_and_evaluate, tune
from twotower.models import ModelConfig, TwoTower
from twotower.models.retriever import history_table
src = os.environ.get("DATA")
data = (read_interactions(src, rating_col="rating") if src else
        read_movielens_100k((__import__("os").environ.get("ML100K") or __import__("twotower.data.fetch", fromlist=["x"]).fetch_movielens_100k())))
WS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
def blend_eval(model, train, test, w, kind):
    model.config = ModelConfig.preset("default", ease_weight=w, ease_split=kind)
    model._linear = None; model._export_tables(); model._fit_linear(train); model._build_indexes()
    m = recommend_and_evaluate(model, train, test, (10,)); return m["recall@10"], m["ndcg@10"]
for name, tr, va in validation_splits(data, [0, 1]):
    kind = "temporal" if name == "temporal" else "random"
    best, _ = tune(EASE, tr, {"lambda_": [100.0, 200.0, 500.0, 1000.0]}, split=kind)
    ref = recommend_and_evaluate(EASE(best).fit(tr), tr, va, (10,))
    sc = lambda r: round((r[0] / ref["recall@10"] + r[1] / ref["ndcg@10"]) / 2, 4)
    inner = temporal_split(tr, 0.2) if kind == "temporal" else random_split(tr, 0.2, 42)
    m = TwoTower(ModelConfig.preset("default", ease_weight=0.0)).fit(inner.train, verbose=0)
    # choose w on the inner validation split (all parts fitted on inner.train)
    got = {w: blend_eval(m, inner.train, inner.test, w, kind) for w in WS}
    wbest = max(WS, key=lambda w: sum(got[w]))
    # serve with full-train histories and seen items
    m._history = history_table(tr, m.config.history_length); m._seen = tr.to_csr()
    res = {w: sc(blend_eval(m, tr, va, w, kind)) for w in (0.0, 0.3, wbest)}
    full = TwoTower(ModelConfig.preset("default", ease_weight=0.0)).fit(tr, verbose=0)
    res_full = {w: sc(blend_eval(full, tr, va, w, kind)) for w in (0.0, 0.3, wbest)}
    print(name, "chosen w", wbest, "inner-trained:", res, "full-trained:", res_full, flush=True)
