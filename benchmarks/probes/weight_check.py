"""Probe: how much of the full-rank EASE part's validation score its cut to
``embedding_dim`` keeps, on the logs the project measures (``ease_weight_choice =
"rank_check"`` chooses the blend weight on validation below ``WEIGHT_CHECK_KEEP``).

For each training part (MovieLens 100k: random 80/20 splits of seeds 0-5 and 42, the CLI's,
and the temporal one; the session-shaped log and the small-release-shaped synthetic log:
seed 42 random and temporal), ``tune_and_fit`` as the default preset runs it, the rank
searched: prints the share kept at rank 128 and the rank chosen. No test part is read.

Usage: python benchmarks/sessions.py --out /tmp/sessions.csv
       python benchmarks/synthetic.py --rows 100_000 --users 610 --items 9_742 \\
           --out /tmp/synsmall.parquet
       KERAS_BACKEND=jax python benchmarks/probes/weight_check.py
Output: results/probe-weight-check-20261205.txt
"""
import os

os.environ.setdefault("KERAS_BACKEND", "jax")
from twotower.data import (read_interactions, read_movielens_100k, random_split,  # noqa: E402
                           temporal_split)
from twotower.models import ModelConfig  # noqa: E402
from twotower.models.linear import AUTO_RANK_MAX, WEIGHT_CHECK_KEEP, tune_and_fit  # noqa: E402

cfg = ModelConfig.preset("default")


def keep(train, kind):
    ranks = tuple(min(cfg.embedding_dim * m, AUTO_RANK_MAX) for m in (1, 2, 4, 8))
    _, _, ch = tune_and_fit(train, cfg.history_length, cfg.ease_lambdas, cfg.ease_half_lives,
                            cfg.ease_floors, cfg.embedding_dim, kind, cfg.seed, ranks=ranks)
    both = [r["recall@10"] + r["ndcg@10"] for r in ch["ranks_tried"][:2]]
    return f"keeps {both[1] / both[0]:.3f} at rank {cfg.embedding_dim}; rank chosen {ch['rank']}"


logs = [("MovieLens 100k", read_movielens_100k(os.environ.get("ML100K") or __import__(
            "twotower.data.fetch", fromlist=["x"]).fetch_movielens_100k()), (0, 1, 2, 3, 4, 5, 42)),
        ("session log", read_interactions("/tmp/sessions.csv", time_col="timestamp"), (42,)),
        ("small-release log", read_interactions("/tmp/synsmall.parquet", rating_col="rating"),
         (42,))]
print(f"threshold (WEIGHT_CHECK_KEEP): {WEIGHT_CHECK_KEEP}")
for name, data, seeds in logs:
    for s in seeds:
        print(f"{name}, random split seed {s}: {keep(random_split(data, 0.2, s).train, 'random')}",
              flush=True)
    if data.timestamps is not None:
        print(f"{name}, temporal split: {keep(temporal_split(data, 0.2).train, 'temporal')}",
              flush=True)
