"""``IndexConfig``: which search index to build and its knobs, as data."""

from __future__ import annotations

import dataclasses

from twotower.config import Config, check_choice, check_range
from twotower.errors import ConfigError

KINDS = ("exact", "hnsw", "ivf")
METRICS = ("ip", "cosine")


#: Largest ``ef_search`` / ``ef_construction`` accepted (a walk is also capped at the
#: graph's size when searching)
MAX_EF = 1 << 20


@dataclasses.dataclass(frozen=True)
class IndexConfig(Config):
    """Settings of a search index. Switching index is a change of ``kind``.

    Args:
        kind: ``"exact"`` (blocked matmul + partial sort), ``"hnsw"`` (faiss HNSW graph) or
            ``"ivf"`` (faiss inverted lists).
        metric: ``"ip"`` (inner product, the two-tower score) or ``"cosine"`` (vectors and
            queries are normalised; used for "similar items").
        batch_size: exact search: queries scored per block (one block per worker thread
            at a time).
        chunk_size: exact search: catalogue rows scored per block. Memory for scores is
            ``batch_size * chunk_size * 4`` bytes per worker thread (4 MiB by default;
            rows of a multiple of 512 padded by 16 floats) whatever the catalogue size.
            A search for ``k`` results scores chunks of at least ``16 * k`` rows (or the
            whole catalogue), with as many fewer queries per block: shorter chunks cost a
            merge of the running top-k every few rows.
        norm_bound: exact search over catalogues of at least 65,536 items (stored in
            decreasing-norm order): skip the chunks whose bound ``|q| * max |x|`` cannot
            beat the query's running k-th best score. Exact (Cauchy-Schwarz); it saves
            the most on skewed norms, as trained embeddings have. False scores every
            item (the plain matmul kernel, e.g. to measure it). HNSW and IVF with
            ``metric="ip"``: score the 2,048 largest-norm items first, and answer a query
            that the bound settles there without the index; False always searches the
            index.
        hnsw_m: HNSW: graph neighbours per node (48: on clustered 1M catalogues of
            other seeds than the benchmark's, 32 missed items the walk never reached).
        ef_construction: HNSW: candidate list size while building.
        ef_search: HNSW: candidate list size while searching (raised to ``k`` plus the
            longest exclusion list when smaller). Higher is slower and more accurate.
        hnsw_exact_head: HNSW with ``metric="ip"``: fraction of the items, those with the
            largest norms, scored exactly beside the graph walk (0 turns it off). A graph
            on inner products misses high-norm items; this raised recall@10 at 1M items
            (``benchmarks/probes/ann_seeds.py``).
        nlist: IVF: number of inverted lists, at most the number of items (``build``
            raises ConfigError otherwise); 0 picks ``min(4 * sqrt(n), n / 39)`` at build
            (at least 39 items a list for k-means).
        nprobe: IVF: lists visited per query; 0 picks ``max(32, nlist // 32)`` (at 1M
            clustered items: 125 of 4,000 lists, recall@10 ~0.99 at ~14x exact QPS).
        mips_to_l2: ANN kinds with ``metric="ip"``: index ``[x, sqrt(M^2 - |x|^2)]`` under
            L2 (the standard MIPS-to-nearest-neighbour reduction). None (default) picks what
            measured better on clustered, skewed-norm catalogues: on for IVF (an
            inner-product coarse quantiser favours high-norm lists), off for HNSW (the extra
            coordinate puts every query far from the graph; HNSW on inner products reached
            recall@10 0.98 at ef_search 64 where the reduction needed ef_search 512).
        threads: faiss threads, and exact-search worker threads over query blocks;
            0 uses every core.
        seed: seed of the IVF k-means.

    Example:
        >>> cfg = IndexConfig(kind="hnsw", ef_search=64)
        >>> IndexConfig.from_json(cfg.to_json()) == cfg
        True
    """

    kind: str = "exact"
    metric: str = "ip"
    batch_size: int = 512
    chunk_size: int = 2048
    norm_bound: bool = True
    hnsw_m: int = 48
    ef_construction: int = 100
    ef_search: int = 128
    hnsw_exact_head: float = 0.05
    nlist: int = 0
    nprobe: int = 0
    mips_to_l2: bool | None = None
    threads: int = 0
    seed: int = 0

    def validate(self) -> None:
        owner = "IndexConfig"
        check_choice(owner, "kind", self.kind, KINDS)
        check_choice(owner, "metric", self.metric, METRICS)
        check_range(owner, "batch_size", self.batch_size, 1, None, integer=True)
        check_range(owner, "chunk_size", self.chunk_size, 1, None, integer=True)
        check_range(owner, "hnsw_m", self.hnsw_m, 2, 512, integer=True)
        # a graph walk never needs more than its nodes; faiss allocates for ef up front
        # (an ef of 2e9 grew the process without bound, deaf to Ctrl-C)
        check_range(owner, "ef_construction", self.ef_construction, 1, MAX_EF, integer=True)
        check_range(owner, "ef_search", self.ef_search, 1, MAX_EF, integer=True)
        check_range(owner, "hnsw_exact_head", self.hnsw_exact_head, 0.0, 1.0)
        check_range(owner, "nlist", self.nlist, 0, None, integer=True)
        check_range(owner, "nprobe", self.nprobe, 0, None, integer=True)
        check_range(owner, "threads", self.threads, 0, None, integer=True)
        check_range(owner, "seed", self.seed, 0, None, integer=True)
        if not isinstance(self.norm_bound, bool):
            raise ConfigError(f"IndexConfig.norm_bound must be true or false, got "
                              f"{self.norm_bound!r}")
        if self.mips_to_l2 is not None and not isinstance(self.mips_to_l2, bool):
            raise ConfigError(f"IndexConfig.mips_to_l2 must be true, false or null (auto), "
                              f"got {self.mips_to_l2!r}")
        if self.nlist and self.nprobe > self.nlist:
            raise ConfigError(f"IndexConfig.nprobe must be at most nlist ({self.nlist}), "
                              f"got {self.nprobe}")
