"""Probe: what excluding the seen items costs a TwoTower's batch recommendations, by form.

Fits the tutorial preset on MovieLens 100k (the tutorial's 80/20 random split, seed 42;
1,682 items, so exact search is one chunk and the catalogue is not norm-ordered), then
times ``model.recommend`` for 943 users at once (every user, in a random order):
- no exclusions (the reference);
- ``seen_items(users)``: one array per user;
- ``seen_rows(users)``: scipy CSR rows, picked on each call;
- ``seen_exclusions(users)``: rows of the table prepared once for the index (what
  ``recommend_ids``, ``twotower recommend`` and the batch endpoint pass).
Each form's time includes picking the users' rows. Back-to-back runs of 30 calls, the
forms alternated, 7 rounds; medians. Then, for the prepared table's whole-row gather, the
time of 512 rows alone: scipy's compiled ``csr_row_index`` (``Exclusions._gather``)
against ``csr[rows]``, which adds Python checks around the same call. Last, the bytes a
prepared table holds: for the model's table, and for one over a 70,000-item catalogue
stored in norm order.

Usage: python benchmarks/probes/seen_forms.py [/path/to/ml-100k]   # else as the product
finds it: TWOTOWER_ML100K_DIR, its cache, or a download
Output of the run quoted in docs/search.md: results/probe-seen-forms-20261130.txt
"""
import statistics
import sys
import time

import numpy as np


def steady(fns: dict, rounds: int = 7, calls: int = 30) -> dict:
    acc: dict = {k: [] for k in fns}
    for r in range(rounds):
        order = list(fns) if r % 2 == 0 else list(fns)[::-1]
        for k in order:
            fns[k]()
            t0 = time.perf_counter()
            for _ in range(calls):
                fns[k]()
            acc[k].append((time.perf_counter() - t0) / calls)
    return {k: statistics.median(v) for k, v in acc.items()}


def main(data_dir: str | None) -> None:
    from twotower import ModelConfig, TwoTower, load_movielens_100k, random_split
    split = random_split(load_movielens_100k(data_dir), test_fraction=0.2, seed=42)
    t0 = time.perf_counter()
    model = TwoTower(ModelConfig.preset("tutorial")).fit(split.train, verbose=0)
    print(f"tutorial preset fitted in {time.perf_counter() - t0:.1f} s; "
          f"{model.n_items} items")
    users = np.random.default_rng(0).permutation(len(model.user_vocab))
    seen = model.seen_rows(users)
    print(f"{len(users)} users, {seen.nnz / len(users):.1f} seen items each on average")
    forms = {
        "none": lambda: model.recommend(users, 10),
        "seen_items (arrays)": lambda: model.recommend(users, 10, model.seen_items(users)),
        "seen_rows (CSR)": lambda: model.recommend(users, 10, model.seen_rows(users)),
        "seen_exclusions (prepared)":
            lambda: model.recommend(users, 10, model.seen_exclusions(users)),
    }
    want = forms["seen_items (arrays)"]()[1]
    for k in list(forms)[2:]:
        assert np.array_equal(forms[k]()[1], want), k
    for run in range(3):
        t = steady(forms)
        print(f"run {run + 1}: no exclusions {t['none'] * 1e6:.0f} µs; " + "; ".join(
            f"{k} {t[k] / t['none'] - 1:+.1%}" for k in list(forms)[1:]))

    from twotower.index import filters
    table = model.seen_exclusions(users)._csr  # the prepared table
    rows = users[:512]
    picked = model.seen_exclusions(rows)
    got = picked._gather(0, len(rows))
    assert np.array_equal(got[1], table[rows].indices)
    t = steady({"compiled": lambda: picked._gather(0, len(rows)),
                "csr[rows]": lambda: table[rows]}, calls=200)
    print(f"512 rows gathered alone: csr_row_index {t['compiled'] * 1e6:.1f} µs, "
          f"csr[rows] {t['csr[rows]'] * 1e6:.1f} µs "
          f"(compiled gather in use: {filters._csr_row_index is not None})")

    # what a prepared table holds, beyond the model's own seen-items table
    prepared = model.seen_exclusions(users[:1])
    print("prepared table, MovieLens 100k (ids kept in item order):",
          table_bytes(prepared, model._seen.indices, model._seen.nnz, len(users)))
    from twotower.index import IndexConfig, make_index
    rng = np.random.default_rng(0)
    n = 70_000  # above 65,536: exact search stores it in norm order
    index = make_index(IndexConfig(kind="exact")).build(
        rng.standard_normal((n, 8)).astype(np.float32))
    rows = [rng.choice(n, 100, replace=False) for _ in range(1000)]
    print("prepared table, 70,000 items in norm order, 1,000 rows of 100:",
          table_bytes(index.prepare_exclusions(rows), None, 100_000, 1000))


def table_bytes(e, shared, nnz: int, n_rows: int) -> str:
    """Bytes per excluded item and per row of a prepared table (``Exclusions``), leaving
    out ids shared with ``shared`` (the caller's own table)."""
    per_item = e._csr.data.nbytes + (0 if shared is not None and np.shares_memory(
        e._ids, shared) else e._ids.nbytes)
    per_row = e._ptr.nbytes + e._csr.indptr.nbytes + (
        0 if e._heads is None else e._heads.nbytes)
    return f"{per_item / nnz:.2f} bytes per excluded item, {per_row / n_rows:.1f} per row"


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)  # None: TWOTOWER_ML100K_DIR, the cache
    # or a download, as the product finds it
