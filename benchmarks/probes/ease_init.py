"""Probe: the default model started from EASE's rank-d factors instead of random tables.

On each validation split of benchmarks/tune.py (MovieLens 100k: random-0, random-1,
temporal) the history table is set to U_d S_d^(1/2) * alpha and the item table to
V_d S_d^(1/2) * alpha (SVD of EASE's B, lambda tuned as in tune.py) before training the
default configuration (20 epochs; scored every 5 as tune.py does, as the ratio to EASE).

Usage: KERAS_BACKEND=jax python benchmarks/probes/ease_init.py '[{}, {"alpha": 1},
    {"alpha": 3}, {"alpha": 3, "over": {"learning_rate": 0.001}},
    {"alpha": 3, "zero_user": true, "over": {"learning_rate": 0.001}}]' [interactions.csv]
Output of that run: results/probe-ease-init-20261129.txt
"""
import sys, json, time, os
os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import tune as T
from twotower.data import read_movielens_100k
from twotower.evaluation import EASE, recommend_and_evaluate, tune
from twotower.models import ModelConfig, TwoTower
import twotower.models.net as N

STATE = {}
orig_build = N.TwoTowerNet.build
def build(self, *a, **k):
    orig_build(self, *a, **k)
    if STATE.get("factors") is not None:
        H, O = STATE["factors"]
        self.history_embedding.embeddings.assign(np.vstack([np.zeros((1, H.shape[1]), np.float32), H]))
        self.item_embedding.embeddings.assign(O)
        if STATE.get("zero_user") and self.user_embedding is not None:
            self.user_embedding.embeddings.assign(np.zeros(self.user_embedding.embeddings.shape, np.float32))
N.TwoTowerNet.build = build

def factors(tr, lam, d, alpha):
    B = EASE(lambda_=lam).fit(tr)._weights.astype(np.float64)
    U, S, Vt = np.linalg.svd(B)
    s = np.sqrt(S[:d]) * alpha
    return (U[:, :d] * s).astype(np.float32), (Vt[:d].T * s).astype(np.float32)

args = json.loads(sys.argv[1])  # list of {alpha, lam, over}
data = __import__("twotower.data", fromlist=["x"]).read_interactions(sys.argv[2], rating_col="rating") if len(sys.argv) > 2 else read_movielens_100k((__import__("os").environ.get("ML100K") or __import__("twotower.data.fetch", fromlist=["x"]).fetch_movielens_100k()))
splits = T.validation_splits(data, [0, 1])
refs = {}
for name, tr, va in splits:
    best, _ = tune(EASE, tr, {"lambda_": [100.0, 200.0, 500.0, 1000.0]}, split="random")
    m = recommend_and_evaluate(EASE(best).fit(tr), tr, va, (10, 100))
    refs[name] = (best.lambda_, m["recall@10"], m["ndcg@10"])
    print("EASE", name, refs[name], flush=True)
for c in args:
    over = c.get("over", {})
    cfg = ModelConfig.from_dict({**T.BASE, "recency_half_life": 10, "recency_floor": 0.2,
                                 "item_features": ["genres", "year"], "epochs": 20, **over})
    res = []
    for name, tr, va in splits:
        STATE["factors"] = None if c.get("alpha") is None else factors(tr, c.get("lam", refs[name][0]), cfg.embedding_dim, c["alpha"])
        STATE["zero_user"] = c.get("zero_user", False)
        model = TwoTower(cfg)
        curve = T._Curve(model, tr, va, 5)
        model.fit(tr, verbose=0, callbacks=[curve])
        r = [(p["epoch"], round((p["recall@10"]/refs[name][1] + p["ndcg@10"]/refs[name][2])/2, 3)) for p in curve.points]
        res.append(r)
        print(c, name, r, flush=True)
    print("MEAN", c, [(res[0][i][0], round(float(np.mean([x[i][1] for x in res])), 4)) for i in range(len(res[0]))], flush=True)
