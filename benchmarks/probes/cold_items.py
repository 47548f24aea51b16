"""Probe: items with side features but no training interactions ("cold": launched after the
cutoff) under each objective, with their id row, bias and cold-only feature rows kept as
training left them ("kept") and set to zero after training ("zeroed",
``TwoTower._clear_untouched_item_rows``; before 2026-12-06 it zeroed them only for ``mse``
and ``sampled_softmax``, the objectives that never touch such rows: the others train them,
as negatives only). Both variants come from the same seed, so they differ by the zeroing
alone; "kept" runs the method only for the objectives it covered before.

1. A generated log: 1,500 users, 600 items with 1-3 of 12 genres; each item's planted
   factors are 60% (of the variance) its genres' and 40% its own, each user draws 20-60
   items by softmax over planted affinity + item popularity. 10% of the items are held out
   of training entirely (all their rows are test rows); 20% of the other rows at random are
   test rows too. Recall@10/@100 of the cold items' test pairs, of the warm items' and of
   all (seen items excluded, as ``recommend_and_evaluate``), the median rank of a cold test
   pair in its user's full list, and the cold items' share of the top-100 slots. The
   default preset on seeds 0-2; ``softmax`` and ``bpr`` (id+history towers, item feature
   ``genres``) on seeds 0-1.
2. MovieLens 100k, default preset (``twotower train``'s EASE split: temporal on the
   temporal splits), random (seeds 0, 1: split and model), per-user temporal and global-
   temporal (seeds 0, 1: model) 80/20 splits: Recall@10, NDCG@10, Recall@100 from the
   product's ``recommend_and_evaluate``, and Recall@100 of the test pairs of items no
   training row has (cold) and of the others (warm).
3. Similar items on the same MovieLens models (the trained part's vectors, which end with
   the item-bias column): with that column and without it. Proxies: (a) item-to-item hit
   rate: for each test pair (u, i), one of u's training items j drawn at random; i in j's
   top 10 / top 50 cosine neighbours (j itself and untrained items left out); (b) the
   neighbour lists as a recommender: a user's score of an item is the summed cosine to the
   user's training items, seen items excluded, Recall@10 / NDCG@10 on the test split.

4. The items-file case (``twotower train --items``, ``ModelConfig.catalogue``): the log of
   part 1 without the cold items' rows, whose items file lists them. ``interactions``: the
   catalogue of the log (a model fitted on the warm items alone: a cold test pair is a
   miss); ``items``: the listed items kept, placed by their features, the EASE part
   scoring them 0 (before ``linear.fill_cold_rows``); ``items+fill``: their EASE rows filled
   with their feature-mates' mean (the library; the same fit as ``items``, the fill applied
   after it, as ``fit`` applies it: it is linear in the rows). Default preset, seeds
   ``--items-seeds``; metrics as in part 1, from the same top-100 lists.

Usage: TWOTOWER_ML100K_DIR=... python benchmarks/probes/cold_items.py [--skip-ml] [--skip-syn]
       python benchmarks/probes/cold_items.py --only-items-file [--items-seeds 0 1]
Output: results/probe-cold-items-<date>.txt (refuses to overwrite; --out names another)
"""
import argparse
import contextlib
import datetime
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("KERAS_BACKEND", "jax")

RESULTS = Path(__file__).resolve().parents[1] / "results"
OLD_OBJECTIVES = ("mse", "sampled_softmax")  # those the zeroing covered before


@contextlib.contextmanager
def variant(name: str):
    """``zeroed``: the library as it is; ``kept``: the zeroing only where it was before."""
    from twotower.models import TwoTower
    orig = TwoTower._clear_untouched_item_rows
    if name == "kept":
        def old(self, net):
            if self.config.objective in OLD_OBJECTIVES:
                orig(self, net)
        TwoTower._clear_untouched_item_rows = old
    try:
        yield
    finally:
        TwoTower._clear_untouched_item_rows = orig


def fit(cfg, train, name):
    from twotower.models import TwoTower
    t0 = time.perf_counter()
    with variant(name), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = TwoTower(cfg).fit(train, verbose=0)
    return m, time.perf_counter() - t0


def generated(seed: int):
    """(train, test, cold item indices) of the generated log described above."""
    from twotower.data import Interactions
    rng = np.random.default_rng(seed)
    n_users, n_items, n_genres, dim = 1500, 600, 12, 8
    genre_vec = rng.normal(size=(n_genres, dim))
    genres = [rng.choice(n_genres, rng.integers(1, 4), replace=False) for _ in range(n_items)]
    from_genres = np.stack([genre_vec[g].sum(axis=0) / np.sqrt(len(g)) for g in genres])
    own = rng.normal(size=(n_items, dim))
    items = np.sqrt(0.6) * from_genres + np.sqrt(0.4) * own
    pop = rng.normal(0.0, 0.7, n_items)
    users = rng.normal(size=(n_users, dim)) / np.sqrt(dim)
    logits = 2.0 * users @ items.T + pop
    rows_u, rows_i = [], []
    for u in range(n_users):
        p = np.exp(logits[u] - logits[u].max())
        picked = rng.choice(n_items, rng.integers(20, 61), replace=False, p=p / p.sum())
        rows_u.append(np.full(len(picked), u))
        rows_i.append(picked)
    u_ids, i_ids = np.concatenate(rows_u), np.concatenate(rows_i)
    info = pd.DataFrame({"genres": [[f"g{j}" for j in g] for g in genres],
                         "year": rng.integers(1990, 2020, n_items)},
                        index=pd.Index(np.arange(n_items)))
    x = Interactions.from_ids(u_ids, i_ids, timestamps=rng.permutation(len(u_ids)),
                              item_info=info)
    cold_ext = rng.choice(n_items, n_items // 10, replace=False)
    cold = np.asarray(x.item_vocab.lookup(cold_ext.tolist()))
    is_cold = np.isin(x.items, cold)
    to_test = is_cold | (rng.random(len(x)) < 0.2)
    return x.take(np.flatnonzero(~to_test)), x.take(np.flatnonzero(to_test)), cold


def part_metrics(m, train, test, cold):
    """Recall@10/@100 of all, cold and warm test pairs; median rank of the cold pairs; the
    cold items' share of the top-100 slots."""
    from twotower.evaluation import recommend_and_evaluate
    out = {}
    is_cold = np.isin(test.items, cold)
    for name, rows in (("all", np.ones(len(test), bool)), ("cold", is_cold),
                       ("warm", ~is_cold)):
        if rows.any():
            r = recommend_and_evaluate(m, train, test.take(np.flatnonzero(rows)), (10, 100))
            out[name] = (r["recall@10"], r["ndcg@10"], r["recall@100"])
    users = np.unique(test.users[is_cold])
    top = m.recommend(users, m.n_items, m.seen_exclusions(users))[1]
    pos = {}
    for r, u in enumerate(users):
        pos[u] = {int(i): p for p, i in enumerate(top[r]) if i >= 0}
    ranks = [pos[u].get(int(i), m.n_items) + 1 for u, i in zip(test.users[is_cold],
                                                                test.items[is_cold])]
    out["cold_rank"] = float(np.median(ranks)) if ranks else float("nan")
    out["cold_share100"] = float(np.isin(top[:, :100], cold).mean()) if len(users) else 0.0
    return out


def synthetic_part(seeds, other_seeds):
    print("1. generated log (1,500 users, 600 items, 60 cold); recall@10 / recall@100 of the "
          "cold items' test pairs, the warm items' and all; cold: median rank of a cold test "
          "pair in its user's list, the cold items' share of top-100 slots")
    print(f"{'objective':12s} {'seed':>4s} {'variant':7s} {'cold R@10':>9s} {'R@100':>6s} "
          f"{'rank':>5s} {'share':>5s} {'warm R@10':>9s} {'R@100':>6s} {'all R@10':>8s} "
          f"{'NDCG@10':>7s} {'R@100':>6s} {'fit s':>6s}")
    from twotower.models import ModelConfig
    runs = [("multinomial", s, ModelConfig.preset("default", seed=s)) for s in seeds]
    for obj in ("softmax", "bpr"):
        runs += [(obj, s, ModelConfig.from_dict(dict(
            query_tower="id+history", objective=obj, embedding_dim=32, epochs=10,
            batch_size=256, optimizer="adam", learning_rate=0.01, temperature=0.5,
            item_features=["genres"], seed=s))) for s in other_seeds]
    summary = {}
    for obj, seed, cfg in runs:
        train, test, cold = generated(seed)
        for name in ("kept", "zeroed"):
            m, secs = fit(cfg, train, name)
            r = part_metrics(m, train, test, cold)
            summary.setdefault((obj, name), []).append(r)
            print(f"{obj:12s} {seed:4d} {name:7s} {r['cold'][0]:9.4f} {r['cold'][2]:6.4f} "
                  f"{r['cold_rank']:5.0f} {r['cold_share100']:5.3f} {r['warm'][0]:9.4f} "
                  f"{r['warm'][2]:6.4f} {r['all'][0]:8.4f} {r['all'][1]:7.4f} "
                  f"{r['all'][2]:6.4f} {secs:6.1f}", flush=True)
    print("means over seeds:")
    for (obj, name), rs in summary.items():
        mean = lambda f: float(np.mean([f(r) for r in rs]))  # noqa: E731
        print(f"{obj:12s} {'mean':>4s} {name:7s} {mean(lambda r: r['cold'][0]):9.4f} "
              f"{mean(lambda r: r['cold'][2]):6.4f} {mean(lambda r: r['cold_rank']):5.0f} "
              f"{mean(lambda r: r['cold_share100']):5.3f} {mean(lambda r: r['warm'][0]):9.4f} "
              f"{mean(lambda r: r['warm'][2]):6.4f} {mean(lambda r: r['all'][0]):8.4f} "
              f"{mean(lambda r: r['all'][1]):7.4f} {mean(lambda r: r['all'][2]):6.4f}")


def top100_metrics(top, test, users, cold):
    """Recall@10/@100 of all, cold and warm test pairs from ``top`` (``[len(users), 100]``
    item indices of ``test``'s vocabulary, -1 padding) and the cold items' share of the
    top-100 slots."""
    from twotower.evaluation import evaluate_topk
    out = {}
    is_cold = np.isin(test.items, cold)
    for name, rows in (("all", np.ones(len(test), bool)), ("cold", is_cold),
                       ("warm", ~is_cold)):
        truth = test.take(np.flatnonzero(rows)).to_csr()[users]
        keep = np.asarray(truth.sum(axis=1)).ravel() > 0
        r = evaluate_topk(top[keep], truth[keep], (10, 100))
        out[name] = (r["recall@10"], r["recall@100"])
    out["share100"] = float(np.isin(top, cold).mean())
    return out


def items_file_part(seeds):
    import dataclasses

    from twotower.data import Interactions
    from twotower.models import ModelConfig, TwoTower
    from twotower.models import linear
    print("\n4. the items-file case: part 1's log without the cold items' rows, its items file "
          "listing them; default preset; recall@10 / recall@100 of the cold items' test "
          "pairs, the warm items' and all; the cold items' share of the top-100 slots")
    print(f"{'catalogue':12s} {'seed':>4s} {'cold R@10':>9s} {'R@100':>6s} {'warm R@10':>9s} "
          f"{'R@100':>6s} {'all R@10':>8s} {'R@100':>6s} {'share':>5s} {'fit s':>6s}")
    summary = {}
    for seed in seeds:
        train, test, cold = generated(seed)
        users = np.unique(test.users)
        cfg = ModelConfig.preset("default", seed=seed)
        rows = []
        # interactions: the log's catalogue (the cold items are in no row of it)
        ids = train.item_vocab.ids
        logged = Interactions.from_ids(train.user_vocab.ids[train.users], ids[train.items],
                                       timestamps=train.timestamps,
                                       user_vocab=train.user_vocab,
                                       item_info=train.item_info.set_index("id"))
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = TwoTower(cfg).fit(logged, verbose=0)
        secs = time.perf_counter() - t0
        top = m.recommend(users, 100, m.seen_exclusions(users))[1]
        full = np.where(top >= 0, np.asarray(train.item_vocab.lookup(
            m.item_vocab.ids[np.maximum(top, 0)].ravel().tolist())).reshape(top.shape), -1)
        rows.append(("interactions", top100_metrics(full, test, users, cold), secs))
        # items: the same catalogue as part 1 (cold items listed), without the fill
        orig = linear.fill_cold_rows
        linear.fill_cold_rows = lambda q, features, cold_rows: q
        try:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = TwoTower(cfg).fit(train, verbose=0)
            secs = time.perf_counter() - t0
        finally:
            linear.fill_cold_rows = orig
        top = m.recommend(users, 100, m.seen_exclusions(users))[1]
        rows.append(("items", top100_metrics(top, test, users, cold), secs))
        lin = m._linear
        filled = orig(lin.item_table, m._item_features, np.asarray(m.item_popularity) == 0)
        m._linear = dataclasses.replace(lin, item_table=filled)
        m.item_embeddings = np.concatenate(
            [m.item_embeddings[:, :-filled.shape[1]], filled], axis=1)
        m._build_indexes()
        top = m.recommend(users, 100, m.seen_exclusions(users))[1]
        rows.append(("items+fill", top100_metrics(top, test, users, cold), 0.0))
        for name, r, secs in rows:
            summary.setdefault(name, []).append(r)
            print(f"{name:12s} {seed:4d} {r['cold'][0]:9.4f} {r['cold'][1]:6.4f} "
                  f"{r['warm'][0]:9.4f} {r['warm'][1]:6.4f} {r['all'][0]:8.4f} "
                  f"{r['all'][1]:6.4f} {r['share100']:5.3f} {secs:6.1f}", flush=True)
    print("means over seeds:")
    for name, rs in summary.items():
        mean = lambda f: float(np.mean([f(r) for r in rs]))  # noqa: E731
        print(f"{name:12s} {'mean':>4s} {mean(lambda r: r['cold'][0]):9.4f} "
              f"{mean(lambda r: r['cold'][1]):6.4f} {mean(lambda r: r['warm'][0]):9.4f} "
              f"{mean(lambda r: r['warm'][1]):6.4f} {mean(lambda r: r['all'][0]):8.4f} "
              f"{mean(lambda r: r['all'][1]):6.4f} {mean(lambda r: r['share100']):5.3f}")


def similar_proxies(m, train, test, seed):
    """Item-to-item hit rates @10/@50 and the neighbour-sum recommender's Recall@10 /
    NDCG@10, for the similar-items vectors with and without the bias column."""
    from twotower.evaluation import evaluate_topk
    from twotower.evaluation.baselines import topk_excluding
    full = np.asarray(m._trained_items(), dtype=np.float64)
    assert full.shape[1] == m.config.embedding_dim + 1, "expected the item-bias column last"
    deny = m.untrained_items()
    rng = np.random.default_rng(seed)
    seen = train.to_csr()
    # one training item of the test pair's user, drawn at random
    starts, ends = seen.indptr[test.users], seen.indptr[test.users + 1]
    ok = ends > starts
    src = seen.indices[starts[ok] + (rng.random(ok.sum()) * (ends - starts)[ok]).astype(int)]
    dst = test.items[ok]
    users = np.unique(test.users[ok])
    truth = test.take(np.flatnonzero(ok)).to_csr()[users]
    out = {}
    for name, v in (("with bias", full), ("without", full[:, :-1])):
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        sim = v @ v.T
        sim[:, deny] = -np.inf
        np.fill_diagonal(sim, -np.inf)
        order = np.argsort(-sim, axis=1, kind="stable")[:, :50]
        if name == "with bias":  # the proxy compares what similar_items serves
            check = np.arange(0, m.n_items, 97)
            check = check[~deny[check]]
            served = m.similar_items(check, 10)[0]  # scores: near-ties swap in float32
            assert np.allclose(served, np.take_along_axis(sim[check], order[check, :10], 1),
                               atol=1e-5), "the proxy's vectors are not similar_items'"
        hit10 = float((order[src, :10] == dst[:, None]).any(axis=1).mean())
        hit50 = float((order[src] == dst[:, None]).any(axis=1).mean())
        knn = np.where(np.isfinite(sim), sim, 0.0)
        scores = np.asarray(seen[users] @ knn)
        scores[:, deny] = -np.inf
        rows = seen[users]
        top = topk_excluding(scores, 10, [rows.indices[rows.indptr[r]:rows.indptr[r + 1]]
                                          for r in range(len(users))])[1]
        r = evaluate_topk(top, truth, (10,))
        out[name] = (hit10, hit50, r["recall@10"], r["ndcg@10"])
    return out


def ml_part(data_dir, seeds, kinds):
    import twotower as tt
    from twotower.evaluation import recommend_and_evaluate
    x = tt.read_movielens_100k(data_dir)
    print("\n2. MovieLens 100k, default preset; product metrics (seen items excluded); cold: "
          "test pairs of items no training row has")
    print(f"{'split':16s} {'seed':>4s} {'cold pairs':>10s} {'variant':7s} {'R@10':>7s} "
          f"{'NDCG@10':>7s} {'R@100':>7s} {'cold R@100':>10s} {'warm R@100':>10s} "
          f"{'fit s':>6s}")
    sims, example = [], None
    for kind in kinds:
        for seed in seeds:
            sp = tt.make_split(x, kind, 0.2, seed)
            cfg = tt.ModelConfig.preset("default", seed=seed)
            if kind != "random":  # as `twotower train --split temporal` tunes its EASE part
                cfg = cfg.replace(ease_split="temporal")
            cold = np.flatnonzero(sp.train.item_popularity() == 0)
            is_cold = np.isin(sp.test.items, cold)
            for name in ("kept", "zeroed"):
                m, secs = fit(cfg, sp.train, name)
                r = recommend_and_evaluate(m, sp.train, sp.test, (10, 100))
                parts = []
                for rows in (is_cold, ~is_cold):
                    if rows.any():
                        parts.append(recommend_and_evaluate(
                            m, sp.train, sp.test.take(np.flatnonzero(rows)), (100,)
                        )["recall@100"])
                    else:
                        parts.append(float("nan"))
                print(f"{kind:16s} {seed:4d} {int(is_cold.sum()):10d} {name:7s} "
                      f"{r['recall@10']:7.4f} {r['ndcg@10']:7.4f} {r['recall@100']:7.4f} "
                      f"{parts[0]:10.4f} {parts[1]:10.4f} {secs:6.1f}", flush=True)
                if name == "zeroed":
                    sims.append((kind, seed, similar_proxies(m, sp.train, sp.test, seed)))
                    if kind == "random" and seed == seeds[0]:
                        example = (kind, seed, m)
    print("\n3. similar items (the zeroed models above): item-to-item hit rate of a test "
          "pair's item in the top 10 / 50 neighbours of one of the user's training items; "
          "neighbour-sum recommender Recall@10 / NDCG@10")
    print(f"{'split':16s} {'seed':>4s} {'vectors':10s} {'hit@10':>7s} {'hit@50':>7s} "
          f"{'R@10':>7s} {'NDCG@10':>7s}")
    for kind, seed, res in sims:
        for name in ("with bias", "without"):
            h10, h50, rec, nd = res[name]
            print(f"{kind:16s} {seed:4d} {name:10s} {h10:7.4f} {h50:7.4f} {rec:7.4f} {nd:7.4f}")
    if example is not None:
        kind, seed, m = example
        star = np.asarray(m.item_vocab.lookup([50]))
        full = np.asarray(m._trained_items(), dtype=np.float64)
        titles = m.item_info["title"].to_numpy()
        for name, v in (("with bias", full), ("without", full[:, :-1])):
            v = v / np.linalg.norm(v, axis=1, keepdims=True)
            s = v @ v[star[0]]
            s[star[0]] = -np.inf
            s[m.untrained_items()] = -np.inf
            top = np.argsort(-s, kind="stable")[:5]
            print(f"Star Wars (1977), {kind} seed {seed}, {name}: "
                  + "; ".join(f"{titles[i]} ({s[i]:.3f})" for i in top))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--skip-ml", action="store_true")
    p.add_argument("--skip-syn", action="store_true")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--other-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--ml-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--ml-splits", nargs="+", default=["random", "temporal", "global-temporal"])
    p.add_argument("--items-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--only-items-file", action="store_true",
                   help="part 4 alone (parts 1-3 skipped)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    if a.only_items_file:
        a.skip_ml = a.skip_syn = True
    data = os.environ.get("TWOTOWER_ML100K_DIR")
    if not a.skip_ml and not data:
        raise SystemExit("set TWOTOWER_ML100K_DIR to the ml-100k directory (or --skip-ml)")
    out = a.out or RESULTS / f"probe-cold-items-{datetime.date.today():%Y%m%d}.txt"
    if out.exists():
        raise SystemExit(f"{out} exists: pass --out to write another file")
    import jax
    import keras
    with open(out, "x") as fh:
        class Tee:
            def write(self, s):
                sys.__stdout__.write(s)
                fh.write(s)

            def flush(self):
                sys.__stdout__.flush()
                fh.flush()
        sys.stdout = Tee()
        print(f"# python benchmarks/probes/cold_items.py {' '.join(sys.argv[1:])}")
        print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
              f"{platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}, "
              f"keras {keras.__version__}, jax {jax.__version__}")
        t0 = time.perf_counter()
        if not a.skip_syn:
            synthetic_part(a.seeds, a.other_seeds)
        if not a.skip_ml:
            ml_part(data, a.ml_seeds, a.ml_splits)
        items_file_part(a.items_seeds)
        print(f"# {time.perf_counter() - t0:.0f} s")
        sys.stdout = sys.__stdout__


if __name__ == "__main__":
    main()
