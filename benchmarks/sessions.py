"""A session-shaped interaction log: items in chains (series, playlists, episodes).

Items are arranged in ``--chains`` chains. Each user has 3 favourite chains and 2-11
sessions; a session starts (60%) at a random item of a favourite chain or (40%) at a
popular item (Zipf 1.2), and walks 2-7 steps, each (75%) to the next item of its chain or
to a popular item. The item-item matrix of such a log is far from low rank, unlike
MovieLens' (the EASE part's rank matters here: ``ModelConfig.ease_rank``). Written as CSV
``user_id,item_id,timestamp``.

    python benchmarks/sessions.py --out /tmp/sessions.csv
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd


def generate(users: int = 3000, items: int = 2000, chains: int = 200, seed: int = 99
             ) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    chain_of = rng.permutation(np.repeat(np.arange(chains), items // chains))
    pos = np.zeros(len(chain_of), int)
    members = [np.flatnonzero(chain_of == c) for c in range(chains)]
    for m in members:
        pos[m] = np.arange(len(m))
    pop = np.arange(1, len(chain_of) + 1) ** -1.2
    pop = pop[rng.permutation(len(chain_of))]
    pop /= pop.sum()
    rows = []
    for u in range(users):
        fav = rng.choice(chains, 3, replace=False)
        t = rng.integers(0, 10**6)
        for _ in range(rng.integers(2, 12)):
            if rng.random() < 0.6:
                m = members[rng.choice(fav)]
                cur = m[rng.integers(0, len(m))]
            else:
                cur = rng.choice(len(chain_of), p=pop)
            for _ in range(rng.integers(2, 8)):
                rows.append((u, cur, t))
                t += rng.integers(1, 100)
                if rng.random() < 0.75:
                    m = members[chain_of[cur]]
                    cur = m[(pos[cur] + 1) % len(m)]
                else:
                    cur = rng.choice(len(chain_of), p=pop)
            t += rng.integers(1000, 100000)
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--chains", type=int, default=200)
    ap.add_argument("--seed", type=int, default=99)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    df = generate(a.users, a.items, a.chains, a.seed)
    df.to_csv(a.out, index=False)
    print(f"{len(df):,} rows, {df.user_id.nunique():,} users, {df.item_id.nunique():,} items "
          f"-> {a.out}")


if __name__ == "__main__":
    main()
