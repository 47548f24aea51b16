"""Probe: items never trained on (no training row, no item feature) in recommendation
lists, and what leaving them out costs.

Such an item keeps the vector it was initialised with; ``TwoTower.recommend`` denies it
(``untrained_items``) since this probe. Two parts, each side by side in one run:

1. MovieLens 100k, the tutorial preset (id towers, no item features), seeds 0-2 on the
   random, per-user temporal and global-temporal 80/20 splits: the share of users whose
   top 10 held such an item, and Recall@10/@100 (seen items excluded, the evaluation
   protocol) with the index searched as before (nothing denied) and as the model now
   searches it.
2. ``benchmarks/search.py``'s trained catalogue (300k items, the long tail that no
   interaction reached keeps its initial vector): batch-1 latency of each index kind with
   no deny list, with the untrained items as a plain array (compiled on every search) and
   prepared once by the index as the model does (``Index.prepare_deny``).

Usage: TWOTOWER_ML100K_DIR=... python benchmarks/probes/untrained_items.py [--items 300000]
Output: results/probe-untrained-items-<date>.txt (the printed lines)
"""
import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def lists_part(data_dir: str) -> None:
    import twotower as tt
    from twotower.evaluation.metrics import recommend_and_evaluate

    class AsBefore:  # the index searched without the model's deny list
        def __init__(self, model):
            self.m = model

        def recommend(self, users, k, exclude=None):
            return self.m._index.search(self.m.query_embeddings(users), k, exclude=exclude)

    x = tt.read_movielens_100k(data_dir)
    print("MovieLens 100k, tutorial preset; 'share': users whose top 10 (seen items "
          "excluded) held an untrained item")
    print(f"{'split':16s} {'seed':>4s} {'untrained':>9s} {'share before':>12s} "
          f"{'after':>6s} {'R@10 before':>11s} {'after':>7s} {'R@100 before':>12s} "
          f"{'after':>7s}")
    for kind in ("random", "temporal", "global-temporal"):
        for seed in (0, 1, 2):
            sp = tt.make_split(x, kind, 0.2, seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = tt.TwoTower(tt.ModelConfig.preset("tutorial", seed=seed)).fit(
                    sp.train, verbose=0)
            un = m.untrained_items()
            users = np.flatnonzero(~m.untrained_users())
            ex = m.seen_exclusions(users)
            before = un[AsBefore(m).recommend(users, 10, ex)[1]].any(axis=1).mean()
            after = un[m.recommend(users, 10, ex)[1]].any(axis=1).mean()
            a = recommend_and_evaluate(AsBefore(m), sp.train, sp.test, (10, 100))
            b = recommend_and_evaluate(m, sp.train, sp.test, (10, 100))
            print(f"{kind:16s} {seed:4d} {int(un.sum()):9d} {before:12.3f} {after:6.3f} "
                  f"{a['recall@10']:11.4f} {b['recall@10']:7.4f} {a['recall@100']:12.4f} "
                  f"{b['recall@100']:7.4f}", flush=True)


def cost_part(n_items: int, n_queries: int) -> None:
    from search import trained, trained_seen

    from twotower.index import IndexConfig, make_index, recall_at_k

    V, Q = trained(n_items, 64, n_queries=n_queries)
    seen = trained_seen(n_items, 64)[:n_queries]
    untrained = np.flatnonzero(np.abs(V).max(axis=1) <= 0.05)  # Keras' uniform(-.05, .05)
    exact = make_index(IndexConfig(kind="exact")).build(V)
    ref = exact.search(Q, 10, exclude=seen)[1]
    print(f"\ntrained catalogue {n_items:,} x 64: {len(untrained):,} items keep their initial "
          f"vector; they hold {np.isin(ref, untrained).mean():.4f} of the exact top-10 "
          f"slots of {n_queries} users (seen items excluded); {os.cpu_count()} CPUs")
    ref_denied = exact.search(Q, 10, exclude=seen, deny=untrained)[1]
    print(f"{'index':6s} {'deny list':10s} {'p50 ms':>7s} {'p99 ms':>7s} {'recall@10':>9s}")
    for kind in ("exact", "hnsw", "ivf"):
        index = exact if kind == "exact" else make_index(IndexConfig(kind=kind)).build(V)
        for name, deny in (("none", None), ("plain", untrained),
                           ("prepared", index.prepare_deny(untrained))):
            index.search(Q[:1], 10, exclude=seen[:1], deny=deny)  # a prepared list's first
            ts = []
            for r in range(len(Q)):
                t0 = time.perf_counter()
                index.search(Q[r:r + 1], 10, exclude=seen[r:r + 1], deny=deny)
                ts.append(time.perf_counter() - t0)
            got = index.search(Q, 10, exclude=seen, deny=deny)[1]
            rec = recall_at_k(ref if deny is None else ref_denied, got)
            print(f"{kind:6s} {name:10s} {np.median(ts) * 1e3:7.3f} "
                  f"{np.percentile(ts, 99) * 1e3:7.3f} {rec:9.3f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--items", type=int, default=300_000)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--skip-lists", action="store_true")
    a = p.parse_args()
    data = os.environ.get("TWOTOWER_ML100K_DIR")
    if not a.skip_lists:
        if not data:
            raise SystemExit("set TWOTOWER_ML100K_DIR to the ml-100k directory")
        lists_part(data)
    cost_part(a.items, a.queries)


if __name__ == "__main__":
    main()
