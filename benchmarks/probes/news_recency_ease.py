"""Probe (not part of the product; written by an independent quality check): plain EASE
with a recency-weighted history query on the news log's per-user temporal split (the rule of
``twotower.temporal_split``, rebuilt here in pandas), to see how much of the model's temporal
margin a recency-weighted classical baseline already gets. lambda 500 and (half-life 5, floor 0)
are the values the model's own EASE part chose on its validation split (training.json);
nothing here is tuned on the test part.

Usage: python benchmarks/shapes.py news /tmp/news.csv --seed 0
       python benchmarks/probes/news_recency_ease.py /tmp/news.csv 500 5 0
Output: results/probe-news-recency-ease-20261205.txt
"""
import sys, numpy as np, pandas as pd, scipy.sparse as sp
df = pd.read_csv(sys.argv[1] if len(sys.argv) > 1 else "/tmp/news.csv")
df["row"] = np.arange(len(df))
u_codes, u = np.unique(df.user_id, return_inverse=True); i_codes, i = np.unique(df.item_id, return_inverse=True)
df["u"], df["i"] = u, i
df = df.sort_values(["u", "timestamp", "row"])
df["rank"] = df.groupby("u").cumcount(); n = df.groupby("u")["u"].transform("size")
nt = np.where(n >= 2, np.maximum(1, np.floor(0.2 * n)).astype(int), 0)
test = df[df["rank"] >= n - nt]; train = df[df["rank"] < n - nt]
U, I = len(u_codes), len(i_codes)
X = sp.csr_matrix((np.ones(len(train)), (train.u, train.i)), shape=(U, I)); X.data[:] = 1
G = (X.T @ X).toarray(); lam = float(sys.argv[2]) if len(sys.argv) > 2 else 500.0
G[np.diag_indices(I)] += lam; P = np.linalg.inv(G); B = -P / np.diag(P); B[np.diag_indices(I)] = 0
# recency rank: 0 = the user's latest training item
train = train.assign(rr=train.groupby("u")["rank"].transform("max") - train["rank"])
truth = test.groupby("u")["i"].apply(np.array)
def evaluate(half_life, floor):
    w = floor + (1 - floor) * 0.5 ** (train.rr.values / half_life) if floor < 1 else np.ones(len(train))
    Q = sp.csr_matrix((w, (train.u, train.i)), shape=(U, I))
    users = truth.index.values; S = (Q[users] @ B)
    S[X[users].nonzero()] = -np.inf
    top = np.argpartition(-S, 10, axis=1)[:, :10]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(S, top, 1), 1), 1)
    rec, nd = [], []
    seen = X[users]
    for r, uu in enumerate(users):
        R = set(truth[uu]) - set(seen[r].indices)
        if not R: continue
        hits = [k for k, it in enumerate(top[r]) if it in R]
        rec.append(len(hits) / len(R))
        nd.append(sum(1 / np.log2(k + 2) for k in hits) / sum(1 / np.log2(k + 2) for k in range(min(10, len(R)))))
    return np.mean(rec), np.mean(nd), len(rec)
print(f"EASE lambda {lam:g}, unweighted query:    recall@10 %.4f ndcg@10 %.4f users %d" % evaluate(0, 1.0))
hl, fl = (float(sys.argv[3]), float(sys.argv[4])) if len(sys.argv) > 4 else (5.0, 0.0)
print(f"EASE lambda {lam:g}, query hl {hl:g}, floor {fl:g}: recall@10 %.4f ndcg@10 %.4f users %d" % evaluate(hl, fl))
