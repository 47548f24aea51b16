"""Synthetic interaction logs of two more shapes, for robustness checks of the default model
(written by an independent quality check; ``benchmarks/robustness_shapes.sh`` runs them).

Two shapes, both CSV with columns user_id,item_id,timestamp (unix seconds):

  ecom  (string ids): 20k users, 8k items in 50 categories, global Zipf(1.1) popularity,
        3-15 purchases per user, users prefer 1-3 categories, ~30% of purchases re-buy
        an item the user already bought, timestamps over 180 days.
  news  (int ids): 12k users, 6k articles published uniformly over 60 days in 20 topics;
        an article is consumed only in the ~3 days after it appears (freshness decay,
        half-life ~1 day); users have Dirichlet topic preferences and are active over a
        sub-window of the 60 days; 5-40 clicks per user, no repeats.

Usage: python benchmarks/shapes.py ecom OUT.csv [--seed 0] [--users N] [--items N]
       python benchmarks/shapes.py news OUT.csv [--seed 0] [--users N] [--items N]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

T0 = 1_700_000_000  # an arbitrary epoch start
DAY = 86_400


def gen_ecom(seed: int, n_users=20_000, n_items=8_000, n_cat=50, zipf=1.1,
             repeat_p=0.3, pref_p=0.8) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # global popularity: Zipf over a random permutation of items
    ranks = rng.permutation(n_items) + 1
    pop = 1.0 / ranks.astype(float) ** zipf
    cat = rng.integers(0, n_cat, n_items)
    cat_items = [np.flatnonzero(cat == c) for c in range(n_cat)]
    cat_p = [pop[ix] / pop[ix].sum() for ix in cat_items]
    glob_p = pop / pop.sum()
    # category popularity also skewed (bigger categories get more preference)
    cat_w = np.array([pop[ix].sum() for ix in cat_items])
    cat_w = cat_w / cat_w.sum()

    rows_u, rows_i, rows_t = [], [], []
    for u in range(n_users):
        n = rng.integers(3, 16)  # 3..15 purchases
        k = rng.integers(1, 4)   # 1..3 preferred categories
        prefs = rng.choice(n_cat, size=k, replace=False, p=cat_w)
        start = rng.uniform(0, 150) * DAY
        gaps = rng.exponential(2.0 * DAY, n)
        ts = (T0 + start + np.cumsum(gaps)).astype(np.int64)
        bought: list[int] = []
        for j in range(n):
            r = rng.random()
            if bought and r < repeat_p:
                it = bought[rng.integers(len(bought))]  # re-buy
            elif rng.random() < pref_p:
                c = prefs[rng.integers(k)]
                it = int(rng.choice(cat_items[c], p=cat_p[c]))
            else:
                it = int(rng.choice(n_items, p=glob_p))
            bought.append(it)
            rows_u.append(u); rows_i.append(it); rows_t.append(ts[j])
    df = pd.DataFrame({
        "user_id": ["cust-%05d" % u for u in rows_u],
        "item_id": ["SKU-%s-%04d" % (chr(65 + cat[i] % 26), i) for i in rows_i],
        "timestamp": rows_t,
    })
    return df


def gen_news(seed: int, n_users=12_000, n_items=6_000, n_topics=20, days=60,
             life_half_days=1.0, max_age_days=3.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pub = np.sort(rng.uniform(0, days, n_items))  # publish day (float); item id ~ publish order
    topic = rng.integers(0, n_topics, n_items)
    quality = rng.lognormal(0.0, 1.0, n_items)      # intrinsic appeal
    # per (topic, integer day) candidate lists: items published in [d - max_age, d + 1)
    by_topic = [np.flatnonzero(topic == z) for z in range(n_topics)]
    topic_alpha = np.full(n_topics, 0.3)

    rows_u, rows_i, rows_t = [], [], []
    for u in range(n_users):
        pref = rng.dirichlet(topic_alpha)
        n = int(rng.integers(5, 41))
        a = rng.uniform(0, days - 5)
        b = min(days, a + rng.uniform(5, 40))
        tclick = np.sort(rng.uniform(a, b, n))
        seen: set[int] = set()
        for t in tclick:
            for _ in range(5):  # retry a few times if the pick is seen / empty
                z = rng.choice(n_topics, p=pref)
                ix = by_topic[z]
                lo = np.searchsorted(pub[ix], t - max_age_days)
                hi = np.searchsorted(pub[ix], t)
                cand = ix[lo:hi]
                if len(cand) == 0:
                    continue
                age = t - pub[cand]
                w = quality[cand] * 0.5 ** (age / life_half_days)
                it = int(cand[rng.choice(len(cand), p=w / w.sum())])
                if it in seen:
                    continue
                seen.add(it)
                rows_u.append(u); rows_i.append(it)
                rows_t.append(int(T0 + t * DAY))
                break
    return pd.DataFrame({"user_id": rows_u, "item_id": rows_i, "timestamp": rows_t})


def describe(df: pd.DataFrame) -> str:
    pairs = df[["user_id", "item_id"]].drop_duplicates()
    ic = df["item_id"].value_counts()
    top1 = ic.iloc[: max(1, len(ic) // 100)].sum() / len(df)
    return (f"rows {len(df):,}, users {df.user_id.nunique():,}, items {df.item_id.nunique():,}, "
            f"distinct pairs {len(pairs):,} ({1 - len(pairs) / len(df):.1%} repeated rows), "
            f"rows/user median {df.groupby('user_id').size().median():.0f}, "
            f"top-1% items' share of rows {top1:.1%}, "
            f"time span {(df.timestamp.max() - df.timestamp.min()) / DAY:.1f} days")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("shape", choices=["ecom", "news"])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--users", type=int, default=None,
                    help="number of users (default: the shape's, 20,000 ecom, 12,000 news)")
    ap.add_argument("--items", type=int, default=None,
                    help="catalogue size (default: the shape's, 8,000 ecom, 6,000 news); "
                         "items nobody picks do not appear in the log")
    a = ap.parse_args()
    for name in ("users", "items"):
        if getattr(a, name) is not None and getattr(a, name) < 1:
            ap.error(f"--{name} must be a positive integer, got {getattr(a, name)}")
    size = {k: v for k, v in (("n_users", a.users), ("n_items", a.items)) if v is not None}
    t = time.time()
    df = gen_ecom(a.seed, **size) if a.shape == "ecom" else gen_news(a.seed, **size)
    # shuffle file order so that nothing depends on row order
    df = df.sample(frac=1.0, random_state=a.seed).reset_index(drop=True)
    df.to_csv(a.out, index=False)
    print(f"{a.shape} seed {a.seed}: {describe(df)}; wrote {a.out} in {time.time() - t:.1f} s")


if __name__ == "__main__":
    main()
