"""Probe: the service's title search (``GET /v1/items?search=``) on a large catalogue: the
Python scan of every lower-cased title it used before against ``ServedModel.items_matching``
(one pyarrow ``match_substring`` over the titles in popularity order, as UTF-8 bytes:
``ServedModel.title_index``), same titles, same
queries, in one run. The titles are random words with a year, like MovieLens titles.

Usage: python benchmarks/probes/title_search.py [--items 315000]
Output of the run quoted in docs/serving.md: results/probe-title-search-20261205.txt
"""
import argparse
import timeit
import types

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=315_000)
    args = ap.parse_args()
    from twotower.service.state import ServedModel

    rng = np.random.default_rng(0)
    words = np.array([f"w{i:04d}" for i in range(5000)] + ["the", "star", "love", "night"])
    n = args.items
    titles = [f"{' '.join(rng.choice(words, rng.integers(1, 5)))} ({1920 + i % 100})".title()
              for i in range(n)]
    popular = rng.permutation(n)
    lower = [t.lower() for t in titles]
    served = types.SimpleNamespace(popular=popular,
                                   titles_by_pop=ServedModel.title_index(titles, popular))

    def old(q: str) -> list[int]:
        return [i for i in popular.tolist() if q in lower[i]]

    def new(q: str) -> list[int]:
        return ServedModel.items_matching(served, q).tolist()

    print(f"{n:,} titles; best of 5 runs of 5 calls, ms per call")
    print(f"{'query':>12} {'hits':>8} {'python scan':>12} {'pyarrow':>9} {'ratio':>6}")
    for q in ["star", "the", "(1977)", "w0042", "zzz", "e"]:
        assert old(q) == new(q), q
        t_old = min(timeit.repeat(lambda: old(q), number=5, repeat=5)) / 5 * 1e3
        t_new = min(timeit.repeat(lambda: new(q), number=5, repeat=5)) / 5 * 1e3
        print(f"{q:>12} {len(new(q)):>8,} {t_old:>12.2f} {t_new:>9.2f} {t_old / t_new:>5.1f}x")


if __name__ == "__main__":
    main()
