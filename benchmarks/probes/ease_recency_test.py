"""A recency-weighted EASE baseline on the per-user temporal split of MovieLens 100k, on the
test part (independent numpy/scipy code, none of twotower's, written by an audit).

The README's temporal comparison is against plain EASE, whose query is the binary history.
The default model's own EASE part weights each history item by its recency (``floor +
(1 - floor) * 0.5 ** (r / half_life)``, r = places before the user's latest item). This
gives EASE the same query, tuned (lambda, half-life, floor) on a temporal validation split
carved from the training part by recall@10 + NDCG@10 (the model's rule), and reports it on
the test part beside plain EASE tuned the same way.

    python benchmarks/probes/ease_recency_test.py [--data-dir DIR]   # ~3 minutes

Splits: each user's latest floor(20%) interactions (at least one for users with two or
more; ties in time by file order) are the test part, as ``twotower train --split
temporal``; the validation split is carved from the training part the same way. Metrics:
seen items excluded, test items already in train dropped from the ground truth, users with
none left skipped; ties in score go to the lower item id.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp


def temporal_split_rows(df: pd.DataFrame, frac: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    d = df.assign(row=np.arange(len(df))).sort_values(["u", "t", "row"], kind="stable")
    d["rank"] = d.groupby("u").cumcount()
    d["n"] = d.groupby("u")["u"].transform("size")
    ntest = np.where(d["n"] >= 2, np.maximum(1, np.floor(frac * d["n"]).astype(int)), 0)
    is_test = d["rank"].to_numpy() >= d["n"].to_numpy() - ntest
    return np.sort(d["row"].to_numpy()[~is_test]), np.sort(d["row"].to_numpy()[is_test])


def metrics(recs: dict, train: dict, test: dict, ks=(10, 100)) -> dict:
    rows = []
    for u, t in test.items():
        rel = t - train.get(u, set())
        if not rel:
            continue
        lst = list(recs.get(u, []))
        row = {}
        for k in ks:
            hits = [1 if x in rel else 0 for x in lst[:k]]
            dcg = sum(h / np.log2(r + 2) for r, h in enumerate(hits))
            idcg = sum(1 / np.log2(r + 2) for r in range(min(k, len(rel))))
            row[f"recall@{k}"] = sum(hits) / len(rel)
            row[f"ndcg@{k}"] = dcg / idcg
        rows.append(row)
    return pd.DataFrame(rows).mean().to_dict()


def sets_by_user(df: pd.DataFrame) -> dict:
    return {u: set(g) for u, g in df.groupby("u")["i"]}


def binary_matrix(df: pd.DataFrame, n_users: int, n_items: int) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(df)), (df.u.to_numpy() - 1, df.i.to_numpy() - 1)),
                      shape=(n_users, n_items))
    m.sum_duplicates()
    m.data[:] = 1
    return m


def topk(scores: np.ndarray, seen: sp.csr_matrix, k: int) -> dict:
    s = np.array(scores, dtype=np.float64, copy=True)
    s[seen.nonzero()] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return {u + 1: (order[u][np.isfinite(s[u, order[u]])] + 1).tolist()
            for u in range(s.shape[0])}


def weighted_queries(d: pd.DataFrame, half_life: float, floor: float, shape) -> sp.csr_matrix:
    d = d.sort_values(["u", "t", "row"], kind="stable")
    r = d.groupby("u").cumcount(ascending=False).to_numpy()  # 0 = the latest
    w = floor + (1 - floor) * 0.5 ** (r / half_life) if half_life else np.ones(len(d))
    return sp.csr_matrix((w, (d.u.to_numpy() - 1, d.i.to_numpy() - 1)), shape=shape)


def ease(x: sp.csr_matrix, lam: float) -> np.ndarray:
    g = (x.T @ x).toarray()
    g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0)
    return b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None,
                    help="MovieLens 100k folder (default: as the product finds it: "
                         "TWOTOWER_ML100K_DIR, its cache, or a download)")
    args = ap.parse_args()
    if args.data_dir is None:
        from twotower.data.fetch import fetch_movielens_100k
        args.data_dir = str(fetch_movielens_100k())
    t0 = time.time()
    df = pd.read_csv(os.path.join(args.data_dir, "u.data"), sep="\t", header=None,
                     names=["u", "i", "r", "t"])
    df["row"] = np.arange(len(df))
    shape = (int(df.u.max()), int(df.i.max()))
    a, b = temporal_split_rows(df)
    tr, te = df.iloc[a], df.iloc[b]
    va, vb = temporal_split_rows(tr.drop(columns="row").reset_index(drop=True))
    parts = {"validation": (tr.iloc[va], tr.iloc[vb]), "test": (tr, te)}
    lambdas = (100.0, 200.0, 300.0, 500.0, 1000.0)
    weights = [(0.0, 1.0)] + [(h, f) for h in (2.0, 5.0, 10.0, 20.0)
                              for f in (0.0, 0.1, 0.2, 0.5)]
    res = {}
    for part, (p_tr, p_te) in parts.items():
        x = binary_matrix(p_tr, *shape)
        seen, truth = sets_by_user(p_tr), sets_by_user(p_te)
        for lam in lambdas:
            bmat = ease(x, lam)
            for h, fl in weights:
                q = weighted_queries(p_tr, h, fl, shape)
                res[(part, lam, h, fl)] = metrics(topk(np.asarray(q @ bmat), x, 100), seen,
                                                  truth)
    def score(key):  # noqa: E306
        return res[key]["recall@10"] + res[key]["ndcg@10"]
    best = max((k for k in res if k[0] == "validation"), key=score)
    plain = max((k for k in res if k[0] == "validation" and k[2] == 0), key=score)
    print("MovieLens 100k, per-user temporal split (20%), test part; tuned on a temporal "
          "validation split of the training part by recall@10 + ndcg@10")
    for name, k in (("EASE, binary history query", plain),
                    ("EASE, recency-weighted history query", best)):
        t = res[("test",) + k[1:]]
        print(f"{name}: lambda {k[1]:g}, half-life {k[2]:g}, floor {k[3]:g} -> recall@10 "
              f"{t['recall@10']:.4f}  ndcg@10 {t['ndcg@10']:.4f}  recall@100 "
              f"{t['recall@100']:.4f}")
    print(f"({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
