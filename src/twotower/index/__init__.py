"""One search contract, exact and approximate implementations, and filters.

Every index answers ``search(queries, k, exclude=None, allow=None, deny=None) ->
(scores [b, k] float32, ids [b, k] int64)``, best first, padded with ``PAD_ID`` (-1) and
``-inf``. Switching index is a change of ``IndexConfig.kind``::

    from twotower.index import IndexConfig, make_index
    index = make_index(IndexConfig(kind="hnsw")).build(item_embeddings)
    scores, ids = index.search(user_embeddings, k=10, exclude=seen_items)
"""

from __future__ import annotations

from twotower.index._base import PAD_ID, Index, load_index, make_index
from twotower.index.config import IndexConfig
from twotower.index.exact import ExactIndex
from twotower.index.faiss_ann import HNSWIndex, IVFIndex
from twotower.index.filters import Denied, Exclusions
from twotower.index.recall import recall_at_k, tune_recall

__all__ = [
    "PAD_ID",
    "Denied",
    "ExactIndex",
    "Exclusions",
    "HNSWIndex",
    "IVFIndex",
    "Index",
    "IndexConfig",
    "load_index",
    "make_index",
    "recall_at_k",
    "tune_recall",
]
