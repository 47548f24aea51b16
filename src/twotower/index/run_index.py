"""Build an index for a saved run and measure its recall against exact search
(what ``twotower index RUN`` calls)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from twotower.index._base import make_index
from twotower.index.config import IndexConfig
from twotower.index.recall import recall_at_k


def build_run_index(run: str | os.PathLike[str], kind: str = "hnsw",
                    ef_search: int | None = None, nprobe: int | None = None,
                    sample: int = 1000, k: int = 10, seed: int = 0) -> dict[str, Any]:
    """Build a ``kind`` index over a run's item embeddings, save it as ``RUN/index-KIND``,
    and report build time, query speed and recall@k against exact search on up to
    ``sample`` of the run's users.

    Returns:
        A flat dict of what was measured (printable as ``key: value`` lines).
    """
    from twotower.artifacts import load_model

    changes: dict[str, Any] = {"kind": kind}
    if ef_search is not None:
        changes["ef_search"] = ef_search
    if nprobe is not None:
        changes["nprobe"] = nprobe
    config = IndexConfig(**changes)
    model = load_model(run)
    items = model.item_embeddings
    t0 = time.perf_counter()
    index = make_index(config).build(items)
    build_s = time.perf_counter() - t0
    n_users = len(model.user_vocab)
    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(n_users, min(sample, n_users), replace=False))
    queries = model.query_embeddings(users)
    exclude = model.seen_items(users)
    exact = make_index(IndexConfig(kind="exact")).build(items)
    t0 = time.perf_counter()
    ref = exact.search(queries, k, exclude=exclude)[1]
    exact_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = index.search(queries, k, exclude=exclude)[1]
    search_s = time.perf_counter() - t0
    saved = index.save(Path(run) / f"index-{kind}")
    return {"kind": kind, "config": config.to_json().replace("\n", " "),
            "items": index.ntotal, "dim": index.dim, "build_seconds": round(build_s, 3),
            "sample_users": len(users), f"recall@{k}": round(recall_at_k(ref, got), 4),
            "search_ms_per_query": round(1e3 * search_s / max(len(users), 1), 4),
            "exact_ms_per_query": round(1e3 * exact_s / max(len(users), 1), 4),
            "saved": str(saved)}
