"""Synthetic interaction logs with planted structure, written as Parquet in row groups.

Each user has a latent preference over ``topics`` (a softmax of a random vector), each item
belongs to one topic and has a power-law popularity; an interaction of user ``u`` picks item
``i`` with probability ``softmax_i(beta * <f_u, g_i> + log pop_i)`` (``g_i`` the item's one-hot
topic), i.e. preference mixed with popularity. Generated in chunks: memory is bounded by the
chunk and the factor tables, never by ``--rows``.

    python benchmarks/synthetic.py --rows 20_000_000 --users 200_000 --items 1_000_000 \\
        --out /tmp/synthetic-20m.parquet

The planted model (``Planted``) can sample fresh interactions and give the true top-K, so
a trained model's quality can be checked (``planted_recall``).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

USER_ID0, ITEM_ID0 = 1_000_000_000, 2_000_000_000  # external ids: offset indices


@dataclass
class Planted:
    """The planted model of a synthetic data set (rebuilt from its parameters and seed)."""

    users: int
    items: int
    topics: int = 32
    alpha: float = 1.1   # item popularity ~ rank^-alpha
    beta: float = 4.0    # preference strength (0: popularity only)
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.item_topic = rng.integers(0, self.topics, self.items)
        pop = (np.arange(1, self.items + 1, dtype=np.float64)) ** -self.alpha
        self.pop = pop[rng.permutation(self.items)]
        # items of each topic, with the cumulative popularity inside the topic
        order = np.argsort(self.item_topic, kind="stable")
        self.topic_items = order
        self.topic_start = np.searchsorted(self.item_topic[order], np.arange(self.topics + 1))
        self.topic_cum = np.zeros(self.items)
        self.topic_mass = np.zeros(self.topics)
        for t in range(self.topics):
            s, e = self.topic_start[t], self.topic_start[t + 1]
            c = np.cumsum(self.pop[order[s:e]])
            self.topic_mass[t] = c[-1] if len(c) else 0.0
            self.topic_cum[s:e] = c / max(c[-1], 1e-300) if len(c) else c
        f = rng.normal(size=(self.users, self.topics))
        logits = self.beta * f + np.log(np.maximum(self.topic_mass, 1e-300))
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        self.user_topic_cum = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
        self.user_activity = rng.pareto(1.5, self.users) + 1.0  # heavy-tailed activity
        self.user_activity /= self.user_activity.sum()

    def sample(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        """One item index per user index, from the planted distribution."""
        r = rng.random(len(users))
        topic = np.minimum((self.user_topic_cum[users] < r[:, None]).sum(axis=1),
                           self.topics - 1)
        r2 = rng.random(len(users))
        s, e = self.topic_start[topic], self.topic_start[topic + 1]
        pos = np.empty(len(users), dtype=np.int64)
        for t in np.unique(topic):  # searchsorted inside each topic's cumulative popularity
            m = topic == t
            pos[m] = s[m] + np.searchsorted(self.topic_cum[s[m][0]:e[m][0]], r2[m])
        return self.topic_items[np.minimum(pos, e - 1)]

    def chunk(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        users = rng.choice(self.users, n, p=self.user_activity)
        items = self.sample(rng, users)
        # a rating that grows with the user's liking of the item's topic, plus noise
        t = self.item_topic[items]
        cum = self.user_topic_cum[users]
        like = cum[np.arange(n), t] - np.where(t > 0, cum[np.arange(n), np.maximum(t - 1, 0)],
                                               0.0)
        rating = np.clip(np.round(1 + 4 * np.sqrt(like) + rng.normal(0, 0.7, n)), 1, 5)
        return {"user_id": users + USER_ID0, "item_id": items + ITEM_ID0,
                "rating": rating.astype(np.float32)}


def write(path: str | Path, rows: int, planted: Planted, *, row_group: int = 1_000_000,
          chunk: int = 1_000_000, seed: int = 1) -> dict:
    """Write ``rows`` planted interactions to Parquet, chunk by chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    schema = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()),
                        ("rating", pa.float32())])
    with pq.ParquetWriter(tmp, schema) as w:
        done = 0
        while done < rows:
            n = min(chunk, rows - done)
            w.write_table(pa.table(planted.chunk(rng, n), schema=schema),
                          row_group_size=row_group)
            done += n
    tmp.replace(path)
    return {"rows": rows, "seconds": time.perf_counter() - t0, "path": str(path)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=lambda s: int(s.replace("_", "")), default=20_000_000)
    p.add_argument("--users", type=lambda s: int(s.replace("_", "")), default=200_000)
    p.add_argument("--items", type=lambda s: int(s.replace("_", "")), default=1_000_000)
    p.add_argument("--topics", type=int, default=32)
    p.add_argument("--alpha", type=float, default=1.1)
    p.add_argument("--beta", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--row-group", type=int, default=1_000_000)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    planted = Planted(a.users, a.items, a.topics, a.alpha, a.beta, a.seed)
    print(json.dumps(write(a.out, a.rows, planted, row_group=a.row_group, seed=a.seed + 1)))


if __name__ == "__main__":
    main()
