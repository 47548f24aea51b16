"""Exact search: one BLAS matmul per block of queries and catalogue rows, then a partial
sort, with the filters applied to the scores before the sort.

Memory is bounded by ``batch_size * chunk_size`` scores per worker thread whatever the
catalogue size. Over a catalogue larger than one chunk, each query keeps its running top-k
and its k-th best score: after the matmul, a chunk costs one row-max reduction, and only
queries whose maximum beats their threshold pass their (few) winning scores to the merge.
Large catalogues are stored in decreasing-norm order so that the thresholds rise early,
and a query stops scoring chunks once its k-th best score beats ``|q|`` times the largest
norm left (Cauchy-Schwarz: exact; on trained embeddings most of the catalogue is skipped).
Worker threads (one per core) each run single-threaded BLAS on their own blocks.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from twotower.index import _blas
from twotower.index._base import PAD_ID, Index, _Files, register, row_norms
from twotower.index import filters as _filters
from twotower.index.filters import Filters, first_rows

_NEG = np.float32(-np.inf)
_LOWEST = np.finfo(np.float32).min  # the lowest finite score: "at or above" it is "not -inf"
# Catalogues at least this large are stored in decreasing-norm order (see ``_build``).
_ORDER_MIN = 65536
# Rows of the first chunk, whose top-k seeds each query's threshold (``_seed``); later
# chunks cost a row-max pass. On a trained 1M catalogue most queries find their top 10
# early in the norm order, and 2,048 seed rows made the partial sort a large part of a
# 1,024-query call: 512 took the batch from 220k to 332k queries/s
# (benchmarks/results/search-20261129T135933Z and T150904Z); the clustered catalogue, which
# scans further, did not change.
_FIRST = 512
# Rows of a norm-ordered catalogue that one query scores first, in one matrix-vector product
# (``_settled_prefix``): on a trained catalogue its top 10 usually lie there, and the norm
# bound proves it without the chunked scan's set-up. (For 2 to 16 queries this gained
# nothing in a scratch timing: a matmul of a few rows costs more than a matrix-vector
# product, and the chunked scan's set-up is shared by them.)
_PREFIX = 2048


def _select(S: np.ndarray, kk: int, rank: np.ndarray | None = None, offset: int = 0
            ) -> tuple[np.ndarray, np.ndarray]:
    """Top ``kk`` columns of each row of S, best first, equal scores in tie order (``_best``:
    the lower ``rank[offset + column]``, or column when ``rank`` is None, first; so is the
    ``kk``-th place): (scores, columns + ``offset``); from group maxima (``_seed``) where
    that pays, else a partial sort."""
    nr, m = S.shape
    seeded = _seed(S, kk) if kk < m else None
    if seeded is not None:  # every entry at or above the kk-th best, ties included
        return _best(seeded[0], seeded[1] + offset if offset else seeded[1], kk, rank)
    if kk >= m:
        return _best(S, np.broadcast_to(np.arange(offset, offset + m), S.shape), kk, rank)
    # kth m - kk - 1 puts the (kk + 1)-th best before the top kk: an entry left out that
    # equals the kk-th best shows as that entry's score (then the row is taken again,
    # every entry at or above it, rare outside duplicated vectors)
    part = np.argpartition(S, m - kk - 1, axis=1)
    p = part[:, m - kk:]
    s = np.take_along_axis(S, p, axis=1)
    edge = np.take_along_axis(S, part[:, m - kk - 1:m - kk], axis=1)[:, 0]
    tied = np.flatnonzero((s.min(axis=1) == edge) & (edge > _NEG))
    s, p = _best(s, p + offset, kk, rank)
    if len(tied):
        ts, ti = _pack(S[tied], edge[tied], inclusive=True)
        s[tied], p[tied] = _best(ts, ti + offset, kk, rank)
    return s, p


def _best(s: np.ndarray, i: np.ndarray, kk: int, rank: np.ndarray | None
          ) -> tuple[np.ndarray, np.ndarray]:
    """The best ``kk`` of each row of ``(s, i)`` (scores, storage rows; ``PAD_ID`` with
    -inf), best first: higher score, then for equal scores the lower tie order, the
    caller's id (``rank[i]``: storage row -> id), or ``i`` itself when ``rank`` is None.
    One order for every path, so ties come out alike whatever the blocks and chunks.

    Rows of more than ``4 kk`` entries are cut to their best ``kk`` first (``_top``); then
    a stable sort by score, and a row where two of its first ``kk + 1`` scores are equal
    is sorted again by (score, tie order). (Ad hoc, on the ~13 candidates a row of a
    1,682-item block of 512 queries: a lexsort of every row cost about twice the sort, and
    a partial sort before it doubled it.)"""
    if s.shape[1] > 4 * kk:
        s, i = _top(s, i, kk, rank)
    rows = np.arange(s.shape[0])[:, None]
    o = np.argsort(-s, axis=1, kind="stable")
    s, i = s[rows, o], i[rows, o]
    m = min(s.shape[1], kk + 1)
    tied = np.flatnonzero((s[:, 1:m] == s[:, :m - 1]).any(axis=1))
    if len(tied):
        ts, ti = s[tied], i[tied]
        key = ti if rank is None else rank.take(ti, mode="wrap")  # PAD_ID: -inf, last
        o = np.lexsort((key, -ts), axis=1)
        s[tied], i[tied] = ts[rows[:len(tied)], o], ti[rows[:len(tied)], o]
    return s[:, :kk], i[:, :kk]


def _top(s: np.ndarray, i: np.ndarray, kk: int, rank: np.ndarray | None
         ) -> tuple[np.ndarray, np.ndarray]:
    """The entries of ``_best`` in no order (a running list between chunks). A partial
    sort with kths ``w - kk - 1`` and ``w - kk`` places the (kk + 1)-th best and the
    kk-th; a row where they tie is sorted whole (rare outside duplicated vectors). (A
    lexsort of every row cost 3-4 times the partial sort, ad hoc: 512 rows of 40.)"""
    w = s.shape[1]
    if w <= kk:
        return s, i
    part = np.argpartition(s, (w - kk - 1, w - kk), axis=1)
    rows = np.arange(s.shape[0])[:, None]  # (fancy indexing: cheaper than take_along_axis)
    p = part[:, w - kk:]
    ts, ti = s[rows, p], i[rows, p]
    # the (kk + 1)-th best and the kk-th (the smallest of the top kk)
    edge = s[rows, part[:, w - kk - 1:w - kk + 1]]
    tied = np.flatnonzero(edge[:, 0] == edge[:, 1])
    if len(tied):
        tied = tied[edge[tied, 0] > _NEG]  # -inf: padding, in any order
    if len(tied):
        s, i = s[tied], i[tied]
        key = i if rank is None else rank.take(i, mode="wrap")
        o = np.lexsort((key, -s), axis=1)[:, :kk]
        ts[tied], ti[tied] = np.take_along_axis(s, o, axis=1), np.take_along_axis(i, o, axis=1)
    return ts, ti


def _seed(S: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Candidates for the top ``kk`` columns of each row of S: (scores, columns) of every
    entry at or above a bound no higher than the row's ``kk``-th best (so every entry tied
    with it too), at least ``kk`` a row, packed left, padded with -inf and ``PAD_ID``; or
    None when a partial sort is the cheaper way: fewer than 32 rows, or fewer than ``16
    kk`` columns.

    The ``kk``-th largest of a row's group maxima (groups of 8 strided columns) is reached
    by ``kk`` distinct entries, so it is at most the row's ``kk``-th best: only the entries
    at or above it are candidates, usually few more than ``kk``. For the top 10 of the
    first 512 rows of the trained 1M catalogue (``benchmarks/probes/first_chunk.py``):
    318 against 700 µs for 512 queries, 67 against 98 µs for 64, but 42 against 33 µs for
    16, where the partial sort's fewer numpy calls win."""
    nr, c = S.shape
    if nr < 32 or c < 16 * kk:
        return None
    g = c // 8  # groups of 8 strided columns: j, j + g, ..., j + 7g
    v = S[:, :8 * g].reshape(nr, 8, g)
    gm = np.maximum(v[:, 0], v[:, 1])
    for j in range(2, 8):  # elementwise over contiguous rows: vectorised, unlike max(axis=1)
        np.maximum(gm, v[:, j], out=gm)
    bound = np.partition(gm, g - kk, axis=1)[:, g - kk]
    got = _candidates(S, bound, inclusive=True)
    if got is None or got[0].shape[1] < kk:  # flat rows (e.g. most masked): sort instead
        return None
    return got


def _candidates(S: np.ndarray, floor: np.ndarray, *, inclusive: bool = False,
                offset: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """Each row's scores above its ``floor`` (at or above with ``inclusive``), packed left
    into ``[rows, width]`` arrays: (scores, columns + ``offset``), padded with -inf and
    ``PAD_ID``. None when more than a quarter of a row passes: a partial sort is cheaper.
    (``flatnonzero`` + ``divmod``: several times faster than a 2-D ``np.nonzero``.)"""
    return _pack(S, floor, inclusive=inclusive, offset=offset, most=S.shape[1] // 4)


def _pack(S: np.ndarray, floor: np.ndarray, *, inclusive: bool = False, offset: int = 0,
          most: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """``_candidates`` without its limit (or with ``most`` entries a row: None beyond)."""
    nr, c = S.shape
    hit = S >= floor[:, None] if inclusive else S > floor[:, None]
    r, cols = np.divmod(np.flatnonzero(hit), c)
    cnt = np.bincount(r, minlength=nr)
    width = int(cnt.max(initial=0))
    if most is not None and width > most:
        return None
    pos = np.arange(len(r)) - (np.cumsum(cnt) - cnt)[r]
    cs = np.full((nr, width), _NEG, dtype=np.float32)
    ci = np.full((nr, width), PAD_ID, dtype=np.int64)
    cs[r, pos] = S[r, cols]
    ci[r, pos] = cols + offset
    return cs, ci


def _merge(bs: np.ndarray, bi: np.ndarray, cs: np.ndarray, ci: np.ndarray,
           rank: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Keep the best ``bs.shape[1]`` of the running and candidate (score, id) rows, in tie
    order at the last place (``_top``), in no order."""
    return _top(np.concatenate([bs, cs], axis=1), np.concatenate([bi, ci], axis=1),
                bs.shape[1], rank)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False  # kept and shared by the searches of a prepared filter
    return a


class _Mask:
    """The global filter in the cheapest form for scores: blocked columns or a -inf bias."""

    def __init__(self, allowed: np.ndarray | None, chunk: int) -> None:
        self.blocked = self.bias = None
        if allowed is not None:
            n_blocked = allowed.size - int(np.count_nonzero(allowed))
            if n_blocked * 16 <= min(allowed.size, chunk):
                self.blocked = np.flatnonzero(~allowed)
            elif n_blocked:
                self.bias = np.where(allowed, np.float32(0), _NEG).astype(np.float32)

    def apply(self, S: np.ndarray, c0: int, c1: int) -> None:
        if self.blocked is not None:
            lo, hi = np.searchsorted(self.blocked, (c0, c1))
            if hi > lo:
                S[:, self.blocked[lo:hi] - c0] = _NEG
        elif self.bias is not None:
            np.add(S, self.bias[c0:c1], out=S)


# Exclusions are binned by storage row in bands of 2**_BAND_SHIFT rows (``ex_band``).
_BAND_SHIFT = 11
#: ``_near_exclusions`` reads the whole band in sequence before its look-ups only when they
#: are at least one per this many band entries: fewer ids touch few of its cache lines, and
#: the read costs more than it saves (ad hoc, the cache evicted before each try: 1M entries
#: and 1,000 ids, 50 µs alone against 143 µs with the read; 10M and 10,000 ids, 144 against
#: 588 µs; about even at one id per 16-64 entries; the probe's trained-1M case, one id per
#: 20 entries, gained)
_BAND_READ_PER_ID = 32
#: The largest k for which a single query's top k over one chunk comes from the compiled
#: insertion (``_kernels.top_one``: a compare per score, a shift per entry that enters);
#: larger k take numpy's partition and sort
_TOP_ONE_MAX = 64
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_in_worker = threading.local()
_CPUS = os.cpu_count() or 1  # read once: each os.cpu_count() call takes microseconds


def _forget_pool() -> None:
    # A forked child inherits the pool object but not its threads: it would queue work
    # that no thread runs. It starts a pool of its own instead.
    global _pool, _pool_lock, _pool_size
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _run(fn, tasks: list, workers: int) -> None:
    """``fn(t)`` for every task, on a process-wide pool of worker threads when that helps
    (one pool for all calls, rather than threads started per call). A task that itself
    searches (inside a worker) runs its tasks inline rather than wait on the pool."""
    global _pool, _pool_size
    if min(workers, len(tasks)) <= 1 or getattr(_in_worker, "on", False):
        for t in tasks:
            fn(t)
        return

    def run(t):
        _in_worker.on = True
        try:
            fn(t)
        finally:
            _in_worker.on = False

    with _pool_lock:
        if _pool is None or _pool_size < workers:
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="twotower-exact")
            _pool_size = workers
        pool = _pool
    futures = [pool.submit(run, t) for t in tasks]
    try:
        for fut in futures:
            fut.result()
    except BaseException:
        # interrupted (Ctrl-C) or a task failed: the tasks not started yet are dropped,
        # not left to run on the pool (and to hold up the interpreter's exit)
        for fut in futures:
            fut.cancel()
        raise


class _Exclusions:
    """One query block's excluded items, found chunk by chunk in storage rows.

    ``head``: (query rows, storage rows) of the exclusions before storage row ``near``
    (the first chunks, where a norm-bounded scan often stops; ``_near_exclusions``, or a
    prepared table's heads); a chunk's are picked by a mask (a scan reads few chunks: a
    sort by storage row per block cost more than it saved). A scan that goes
    beyond ``near`` maps (through ``ex_map``, unless None) and sorts all of the block's
    once, from ``load()``: its CSR ``(ptr, ids)``, or None when it has none; then finds
    each chunk's by binary search.
    """

    def __init__(self, near: int, head: tuple[np.ndarray, np.ndarray], load: Any,
                 ex_map: np.ndarray | None) -> None:
        self.near, self.load, self.ex_map = near, load, ex_map
        self.head_row, self.head_col = head
        if self.head_col is not None:  # int64 for the compiled ``mask``
            self.head_row = self.head_row.astype(np.int64, copy=False)
            self.head_col = self.head_col.astype(np.int64, copy=False)
        self.rows = self.cols = None  # all of them, sorted by storage row, once needed

    def mask(self, S: np.ndarray, c0: int, c1: int, rows: np.ndarray | None,
             bq: int) -> None:
        """Set the scores of this block's exclusions in storage rows [c0, c1) to -inf in
        ``S`` (one chunk's scores; ``rows``: the block's queries it holds, in order, or
        None for all ``bq``). Where the loops are built, one compiled pass over the pairs
        (a few numpy calls on a few hundred pairs cost tens of µs a chunk, with the other
        worker waiting on the GIL): below ``near`` the whole head, beyond it the chunk's
        own (``within``)."""
        loops = _filters._kernels
        pos = None
        if rows is not None:  # query -> its row of S (-1: not scored in this chunk)
            pos = np.full(bq, -1, dtype=np.int64)
            pos[rows] = np.arange(len(rows))
        if c1 <= self.near and loops is not None:
            loops.mask_head(S, self.head_row, self.head_col, c0, pos, _NEG)
            return
        er, ec = self.within(c0, c1)
        if len(er) and loops is not None:
            loops.mask_head(S, er, ec, c0, pos, _NEG)
        elif len(er):
            ec = ec - c0
            if pos is not None:  # exclusion rows into this chunk's row numbers
                er = pos[er]
                ec = ec[er >= 0]
                er = er[er >= 0]
            S[er, ec] = _NEG

    def within(self, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        """(query rows, storage rows) of the exclusions in storage rows [c0, c1)."""
        if c1 <= self.near:
            here = (self.head_col >= c0) & (self.head_col < c1)
            return self.head_row[here], self.head_col[here]
        if self.cols is None:
            got = self.load()
            if got is None:
                self.rows = self.cols = np.empty(0, dtype=np.int64)
            else:
                ptr, ids = got
                rows = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
                cols = (ids if self.ex_map is None else self.ex_map[ids]).astype(
                    np.int64, copy=False)  # int64 for the compiled ``mask``
                order = np.argsort(cols, kind="stable")
                self.rows, self.cols = rows[order], cols[order]
        e0, e1 = np.searchsorted(self.cols, (c0, c1))
        return self.rows[e0:e1], self.cols[e0:e1]


def _near_bits(ex_band: np.ndarray, n: int, lim: int, ex_bits: dict[int, np.ndarray]
               ) -> np.ndarray:
    """Bit ``x`` (little-endian in each byte) set where id ``x`` lies in a band below
    ``lim``: 1 bit per id (128 KiB for 1M ids) for the compiled loops, against the band's
    byte; made once per ``lim`` and kept in the index's ``ex_bits``."""
    bits = ex_bits.get(lim)
    if bits is None:
        bits = np.packbits(ex_band[:n] < lim, bitorder="little")
        bits.flags.writeable = False
        ex_bits[lim] = bits  # another thread making the same one at once is harmless
    return bits


def _near_in_place(ex_map: np.ndarray | None, ex_band: np.ndarray | None,
                   ex_bits: dict[int, np.ndarray] | None, near: int) -> bool:
    """Whether ``_near_exclusions`` takes the compiled pass (``ex_bits``) for ``near``."""
    return (ex_bits is not None and _filters._kernels is not None and ex_map is not None
            and ex_band is not None and -(-near // (1 << _BAND_SHIFT)) < 255)


def _near_exclusions(ptr: np.ndarray, ids: np.ndarray | None, ex_map: np.ndarray | None,
                     ex_band: np.ndarray | None, near: int,
                     lists: tuple[np.ndarray, ...] | None = None,
                     ex_bits: dict[int, np.ndarray] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(query rows, storage rows) of the CSR exclusions ``(ptr, ids)`` whose storage row
    (``ex_map[id]``; the id itself when None) is below ``near``, by query row: with
    ``ex_band``, only those are mapped through ``ex_map``; the others cost one byte read
    each. With ``ex_bits`` (and the compiled loops: ``_near_in_place``), the same by one
    pass of ``_kernels``, over the flat ``ids`` (int64, or a CSR matrix's own int32) or
    the caller's arrays ``lists`` in place (``ids`` is then None)."""
    lim = -(-near // (1 << _BAND_SHIFT))  # bands holding rows below `near`
    if _near_in_place(ex_map, ex_band, ex_bits, near):
        bits = _near_bits(ex_band, len(ex_map), lim, ex_bits)
        if lists is not None:
            return _filters._kernels.near_rows(lists, ptr, bits, ex_map, near, len(ex_map))
        return _filters._kernels.near_flat(ptr, ids, bits, ex_map, near, len(ex_map))
    if ex_map is None:
        sel = np.flatnonzero(ids < near)
    elif ex_band is not None and lim < 255:  # band 255 also holds every row past it
        if len(ids) * _BAND_READ_PER_ID >= len(ex_band):
            # Many ids: one sequential read of the band first (a reduction over it as
            # uint64 words): the last call's matmuls evicted it, and streamed in, it costs
            # less than the cache misses of the random reads below
            # (benchmarks/probes/array_exclusions.py)
            ex_band.view(np.uint64).max()
        # the ids are checked (``exclusions``): "wrap" skips take's bounds check per id
        sel = np.flatnonzero(np.take(ex_band, ids, mode="wrap") < lim)
    else:
        sel = None
    if sel is None:
        rows = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
        cols = ex_map[ids]
    else:
        rows = np.searchsorted(ptr, sel, side="right") - 1
        cols = ids[sel] if ex_map is None else ex_map[ids[sel]]
    keep = cols < near
    return rows[keep], cols[keep]


def topk_exact(V: np.ndarray, Q: np.ndarray, k: int, f: Filters, batch_size: int = 512,
               chunk_size: int = 2048, threads: int = 0, norms: np.ndarray | None = None,
               ex_map: np.ndarray | None = None, ex_band: np.ndarray | None = None,
               rank: np.ndarray | None = None,
               ex_bits: dict[int, np.ndarray] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products of ``Q [b, d]`` against ``V [n, d]`` under filters ``f``.

    Equal scores come in tie order, the lower first, at the ``k``-th place too: ``rank``
    gives each row of ``V`` its place in that order (its caller's id, when the rows are
    stored in another order), or None for the row's own number. Every path (one query,
    blocks, chunks, parts of a split scan, filters) keeps it (``_best``).

    The work is split into tasks (a block of up to ``batch_size`` queries against a range
    of the catalogue) run on ``threads`` worker threads, each with single-threaded BLAS
    (see ``_blas``): one core per task, and no BLAS thread synchronisation on small blocks.
    ``norms``: the row norms of ``V`` when its rows are in decreasing-norm order; then a
    query skips every chunk whose largest norm times its own cannot beat its running k-th
    best score (Cauchy-Schwarz; exact). ``ex_map``: row of ``V`` of each excluded id
    (``f.ex_ids`` are ids in another order); the ids below ``near`` (the first chunks)
    are found and mapped for the whole batch at once, on the calling thread, before the
    workers start (``_near_exclusions``). ``ex_band``: ``uint8`` per id,
    ``min(255, ex_map >> _BAND_SHIFT)``, padded with zeros to a multiple of 8 entries (it
    is read as uint64 words), a 1-byte-per-id map that finds the exclusions near the start
    of the storage order without reading ``ex_map`` for the others (the scan often stops
    after the first chunks). ``ex_bits``: the index's cache of ``_near_bits`` (the
    compiled loops' form of the band), or None. With ``norms``, a single query first
    tries the first ``_PREFIX`` rows alone (``_settled_prefix``).

    Per-query arrays the compiled loops checked (``f.lists``) are read in place where a
    loop reads them (the ids below ``near``; one chunk's scores); otherwise flattened.

    Returns:
        scores ``[b, k]`` float32, ids ``[b, k]`` int64, best first, padded.
    """
    n = V.shape[0]
    b = Q.shape[0]
    if f.allowed is not None and f.n_allowed * 4 <= n:  # rows reordered: no norm order
        if ex_map is not None and f.ex_ids is not None:
            f = f.with_exclusions(f.ex_ptr, ex_map[f.ex_ids])
        return _topk_subset(V, Q, k, f, batch_size, chunk_size, threads, rank)
    batch_size, chunk_size = _chunk_for_k(n, k, batch_size, chunk_size)
    # Memory is bounded by batch_size * chunk_size scores per worker: fewer queries, longer
    # chunks (one query scans up to batch_size * chunk_size items in a matrix-vector).
    grown = max(chunk_size, batch_size * chunk_size // min(b, batch_size))
    # with norms, chunks stay small enough for the scan to stop early
    chunk_size = grown if norms is None else max(chunk_size, min(grown, 1 << 14))
    chunk_size = min(chunk_size, max(n, 1))  # a chunk's buffer is never beyond the catalogue
    small = b == 1 or n <= chunk_size
    if ex_map is not None and small and f.ex_ids is not None:
        f = f.with_exclusions(f.ex_ptr, ex_map[f.ex_ids])  # small: map now
        ex_map = None
    if b == 1 and n <= chunk_size:
        return _topk_one(V, Q[0], k, f, rank)
    pre = None
    if b == 1 and norms is not None and n > _PREFIX and 16 * k <= _PREFIX:
        # the first rows alone, when the norm bound shows they hold the top k (ids are
        # storage rows already: mapped above); if not, they seed the scan of the rest
        s, i, settled = _settled_prefix(V[:_PREFIX], Q, k, first_rows(f, 1, _PREFIX),
                                        norms[_PREFIX],
                                        rank=None if rank is None else rank[:_PREFIX])
        if settled[0]:
            return s, i
        pre = s, i
    out_s = np.full((b, k), _NEG, dtype=np.float32)
    out_i = np.full((b, k), PAD_ID, dtype=np.int64)
    kk = min(k, n)
    # a prepared deny list's mask is made once per chunk size (``Filters.derived``)
    mask = f.derived(("mask", chunk_size), lambda: _Mask(f.allowed, chunk_size))
    # a prepared table's rows: each block reads its own (with norms, only their heads)
    # (one chunk: each block's worker gathers its own rows, in parallel)
    prepared = (f.prepared if (norms is not None and not small) or (n <= chunk_size and b > 1)
                else None)
    workers = max(1, threads or _CPUS)
    starts = list(range(0, b, batch_size))
    # Fewer query blocks than workers: split the catalogue too, merge the parts after.
    # Part p takes every parts-th chunk, so each part starts at large norms.
    parts = 1
    if len(starts) < workers and n > chunk_size:
        parts = min(-(-workers // len(starts)), -(-n // chunk_size))
    # a short first chunk seeds thresholds (a single query's prefix, already scored)
    first = _PREFIX if pre is not None else min(n, chunk_size, max(_FIRST, 16 * kk))
    edges = [0, *range(first, n, chunk_size), n]
    spans = list(zip(edges[:-1], edges[1:]))
    tasks = [(r0, p) for r0 in starts for p in range(parts)]
    results: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    near = spans[min(8, len(spans)) - 1][1]  # exclusions before this row: found eagerly
    # otherwise flat CSR arrays (per-query lists: flattened once by ``compile_filters``);
    # each block's worker takes its slice; or the caller's arrays, checked and read in
    # place by the compiled loops: the ids below ``near`` of a norm-ordered catalogue, or
    # a single chunk's scores (flattened for any other use, at most once: ``f.ex_ids``);
    # a CSR matrix's int32 ids likewise, and sliced as they are for any other use
    lists = flat32 = None
    if prepared is None and ((n <= chunk_size and b > 1) or (
            n > chunk_size and _near_in_place(ex_map, ex_band, ex_bits, near))):
        lists, flat32 = f.lists, f.flat32
    ptr, ids = ((None, None) if prepared is not None
                else (f.ex_ptr, None if lists is not None or flat32 is not None
                      else f.ex_ids))

    def block_rows(r0: int, r1: int) -> tuple[np.ndarray, np.ndarray] | None:
        """CSR ``(ptr, ids)`` of the exclusions of queries [r0, r1); None when none."""
        if prepared is not None:
            return prepared._gather(r0, r1)
        if ptr is not None and ptr[r1] > ptr[r0]:
            # a CSR matrix's own int32 ids, or ``lists`` flattened, once
            flat = ids if ids is not None else flat32 if flat32 is not None else f.ex_ids
            return ptr[r0:r1 + 1] - ptr[r0], flat[ptr[r0]:ptr[r1]]
        return None

    # each query block's exclusions below `near`, found once: a prepared table's heads,
    # by the block's worker (None: it keeps none that far; all of them are gathered when
    # needed); otherwise ``_near_exclusions``: by each block's worker where the compiled
    # pass runs (it releases the GIL: the workers find their blocks' at once; CSR rows on
    # trained 1M, 1,024 queries of 100 ids: +17.3 to +22.3% over the plain search when
    # found here for the whole batch, +10.6 to +12.6% by the workers,
    # benchmarks/results/probe-array-exclusions-20261207-225051.txt); here for the whole
    # batch before the workers start on the numpy path (one look-up per block, by the
    # workers, cost more CPU and gained no wall time there: the numpy look-ups hold the
    # GIL; 362 against 273 µs of CPU per call,
    # benchmarks/results/probe-array-exclusions-20261207-051128.txt) or when fewer
    # blocks than workers split the catalogue (a block's parts would each find them)
    heads: dict[int, tuple[np.ndarray, np.ndarray] | None] = {}
    per_block = (prepared is None and ptr is not None and n > chunk_size and parts == 1
                 and _near_in_place(ex_map, ex_band, ex_bits, near))
    if prepared is None and ptr is not None and n > chunk_size and not per_block:
        # (one chunk: no block_ex)
        near_rows, near_cols = _near_exclusions(
            ptr, ids if flat32 is None else flat32, ex_map, ex_band, near, lists, ex_bits)
        cut = np.searchsorted(near_rows, [*starts, b]).tolist()  # rows are in order
        for j, r0 in enumerate(starts):
            heads[r0] = near_rows[cut[j]:cut[j + 1]] - r0, near_cols[cut[j]:cut[j + 1]]

    def block_head(r0: int, r1: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The exclusions of queries [r0, r1) below ``near`` (``heads``' entry)."""
        if not per_block:
            return prepared.head(r0, r1, near)
        a0, a1 = int(ptr[r0]), int(ptr[r1])
        flat = ids if flat32 is None else flat32
        return _near_exclusions(ptr[r0:r1 + 1] - a0, None if flat is None else flat[a0:a1],
                                ex_map, ex_band, near,
                                None if lists is None else lists[r0:r1], ex_bits)

    def block_ex(r0: int, r1: int) -> _Exclusions | None:
        """The exclusions of queries [r0, r1), a fresh ``_Exclusions`` for each caller."""
        if prepared is None and (ptr is None or ptr[r1] == ptr[r0]):
            return None  # this block excludes nothing
        if r0 not in heads:
            heads[r0] = block_head(r0, r1)
        head = heads[r0]
        if head is None:
            return _Exclusions(0, (None, None), lambda: block_rows(r0, r1), None)
        return _Exclusions(near, head, lambda: block_rows(r0, r1),
                           None if prepared is not None else ex_map)

    seeds: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    done: set[int] = set()  # query blocks the first chunk settled
    if pre is not None:
        seeds[0] = pre
    if norms is not None and (parts > 1 or seeds):
        # Split over parts, each part would start on a chunk that no threshold bounds yet
        # (the second part's first chunk is a whole one). Score the short first chunk once,
        # here (a single query's prefix is already scored): every part then starts from
        # its thresholds (part 0 also from its entries), and a part whose chunks cannot
        # win stops at once.
        with _blas.single_threaded():
            for r0 in starts:
                r1 = min(b, r0 + batch_size)
                if r0 not in seeds:
                    seeds[r0] = _chunked(V, Q[r0:r1], kk, mask, block_ex(r0, r1),
                                         chunk_size, spans[:1], rank, norms)
        spans = spans[1:]
        # blocks where some query's bound still beats its k-th best need the parts; the
        # others are done (a trained catalogue's single query usually is; a bound equal
        # to the k-th best, 0 over zero rows, may still tie with it: busy)
        c0 = spans[0][0]
        busy = {r0 for r0, (s0, _) in seeds.items()
                if np.any(row_norms(Q[r0:r0 + batch_size]) * (1 + 1e-4) * norms[c0]
                          >= s0[:, -1])}
        done = set(starts) - busy
        results.update({(r0, 0): seeds[r0] for r0 in done})
        tasks = [(r0, p) for r0, p in tasks if r0 in busy]

    def task(key: tuple[int, int]) -> None:
        r0, p = key
        r1 = min(b, r0 + batch_size)
        with _blas.single_threaded():
            if n <= chunk_size:
                ld = _row_stride(n)
                buf = np.empty((r1 - r0, ld), dtype=np.float32)
                S = buf[:, :n]
                np.matmul(Q[r0:r1], V.T, out=S)
                mask.apply(S, 0, n)
                if lists is not None:  # the caller's arrays, read in place
                    _filters._kernels.scatter_rows(lists, ptr, r0, r1, buf, n, _NEG)
                got = None if lists is not None else block_rows(r0, r1)
                if (got is not None and _filters._kernels is not None
                        and got[1].dtype in (np.int32, np.int64)
                        and got[1].flags.c_contiguous):
                    ptr_b, ids_b = got  # flat rows (a CSR's, a prepared table's): in C
                    _filters._kernels.scatter_flat(ptr_b.astype(np.int64, copy=False),
                                                   ids_b, buf, n, _NEG)
                    got = None
                if got is not None:  # one flat index each (row * ld + id): cheaper than 2-D
                    at = np.repeat(np.arange(0, (r1 - r0) * ld, ld, dtype=np.int64),
                                   np.diff(got[0]))
                    at += got[1]
                    buf.reshape(-1)[at] = _NEG
                results[key] = _select(S, kk, rank)
                return
            init = floor = None
            if seeds:
                init = seeds[r0] if p == 0 else None
                floor = seeds[r0][0][:, -1]  # each query's k-th best so far
            results[key] = _chunked(V, Q[r0:r1], kk, mask, block_ex(r0, r1), chunk_size,
                                    spans[p::parts], rank, norms, init, floor)

    _run(task, tasks, workers)
    for r0 in starts:
        r1 = min(b, r0 + batch_size)
        s, i = results[(r0, 0)]
        if parts > 1 and r0 not in done:
            s, i = _best(np.concatenate([results[(r0, p)][0] for p in range(parts)], axis=1),
                         np.concatenate([results[(r0, p)][1] for p in range(parts)], axis=1),
                         kk, rank)
        out_s[r0:r1, :kk] = s
        out_i[r0:r1, :kk] = i
    out_i[out_s == _NEG] = PAD_ID
    return out_s, out_i


def _row_stride(c: int) -> int:
    """Row length, in float32s, of a buffer for score blocks of up to ``c`` columns: ``c``,
    one 64-byte cache line longer when ``c`` is a multiple of 512 (rows of a multiple of
    2 KiB). With the default 2,048 columns (8 KiB rows) every row of a block starts in the
    same cache sets, and the matmul writing the block and the passes reading it evict
    their own rows: single threaded, 512 x 2,048 blocks of a d = 64 scan went from 77 to
    91 GFLOP/s for the matmul and from 70 to 88 with the row-max pass after it
    (``benchmarks/results/probe-score-stride-20261207-131029.txt``). Other lengths stay
    as they are: 768 gained nothing there, and 1,682 padded to a whole odd number of
    lines (1,712) made the one-chunk search of 1,024 queries about 3% slower (ad hoc)."""
    return c + 16 if c % 512 == 0 else c


#: Catalogue rows per chunk for each result kept: a chunk of fewer than ``_CHUNK_PER_K * k``
#: rows makes the scan merge each query's running top-k (k entries) for a few new scores,
#: and the first chunk, the group-max seed and the candidate packing all assume chunks of
#: about 16 k or more (``_FIRST``, ``_seed``, ``_candidates``)
_CHUNK_PER_K = 16


def _chunk_for_k(n: int, k: int, batch_size: int, chunk_size: int) -> tuple[int, int]:
    """``(batch_size, chunk_size)`` for a top-``k`` scan of ``n`` rows: as configured when
    chunks hold at least ``_CHUNK_PER_K * k`` rows (or the whole catalogue); else longer
    chunks and as many fewer queries per block, keeping ``batch_size * chunk_size`` scores
    per worker. (``IndexConfig(chunk_size=3)`` with k = 1,990 of 2,000 items took 146 s
    for 1,000 queries, merging the running top 1,990 every 3 rows; ``k`` = 20,000 of
    100,000 at the default 2,048 took 22 s.)"""
    want = min(n, _CHUNK_PER_K * min(k, n))
    if chunk_size >= want:
        return batch_size, chunk_size
    return max(1, batch_size * chunk_size // want), want


def _settled_prefix(V: np.ndarray, Q: np.ndarray, k: int, f: Filters, beyond: float,
                   **exact: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top ``k`` of ``Q`` over ``V``, the first rows of a catalogue in decreasing-norm
    order, and which queries that settles: those whose ``k``-th best score beats ``|q|``
    times ``beyond``, the largest norm of the rows not in ``V`` (Cauchy-Schwarz, with a
    float32 margin: no row beyond can enter their top ``k``, nor tie with it; exact;
    strictly: a bound of 0, over zero rows, ties with a k-th best of 0).

    ``f``: filters in ``V``'s row numbers. ``exact``: ``topk_exact``'s block arguments.
    Returns: scores, ids (rows of ``V``) and ``settled`` ``[b]`` bool.
    """
    s, i = topk_exact(V, Q, k, f, **exact)
    bound = row_norms(Q) * (1 + 1e-4) * float(beyond)
    return s, i, s[:, k - 1] > bound  # -inf (fewer than k rows qualify) never settles


def _topk_one(V: np.ndarray, q: np.ndarray, k: int, f: Filters,
              rank: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One query against one chunk: the serving hot path, in as few numpy calls as can be.
    Equal scores in tie order (``_best``), as ``_select`` gives them to a batch."""
    n = V.shape[0]
    s = V @ q
    if f.allowed is not None:
        s[~f.allowed] = _NEG
    if f.lists is not None:  # the caller's array, checked: set from it in place
        _filters._kernels.scatter_rows(f.lists, f.ex_ptr, 0, 1, s[None, :], n, _NEG)
    elif f.ex_ids is not None:
        s[f.ex_ids] = _NEG
    if _filters._kernels is not None and k <= _TOP_ONE_MAX:  # one compiled pass
        scores, ids = _filters._kernels.top_one(s, k, rank)
    else:
        edge = None
        if k < n:
            part = np.argpartition(s, n - k - 1)  # the (k + 1)-th best just before the top k
            p = part[n - k:]
            edge = s[part[n - k - 1]]
        else:
            p = np.arange(n)
        top = s[p]
        # equal scores: the lower row (or rank) first (on 10 entries, as cheap as an argsort)
        o = np.lexsort((p if rank is None else rank[p], -top))
        scores, ids = top[o], p[o]
        if edge is not None and scores[-1] == edge > _NEG:
            # an entry left out ties with the k-th best (rare outside duplicated vectors):
            # every entry at or above it, in tie order
            c = np.flatnonzero(s >= edge)
            scores, ids = (a[0] for a in _best(s[c][None], c[None], k, rank))
    if k > n:
        scores = np.concatenate([scores, np.full(k - n, _NEG, np.float32)])
        ids = np.concatenate([ids, np.full(k - n, PAD_ID, np.int64)])
    if scores[-1] == _NEG:
        ids[scores == _NEG] = PAD_ID
    return scores[None, :], ids.astype(np.int64, copy=False)[None, :]


def _chunked(V: np.ndarray, Qb: np.ndarray, kk: int, mask: _Mask, ex: _Exclusions | None,
             chunk: int, spans: list[tuple[int, int]], rank: np.ndarray | None = None,
             norms: np.ndarray | None = None,
             init: tuple[np.ndarray, np.ndarray] | None = None,
             floor: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top ``kk`` of ``Qb`` over the catalogue rows of ``spans`` (``[(c0, c1)]``, each at
    most ``chunk`` rows, in increasing order), chunk by chunk, best first.

    After the first chunk seeds each query's k-th best score (``thr``), a chunk costs
    its matmul plus one row-max reduction: only the queries whose maximum beats their
    threshold are looked at again, and in those only the scores above it are merged.
    (A transposed ``[items, queries]`` block, whose per-query max is a reduction over
    rows, measured no faster.) With ``norms`` (rows in decreasing-norm order) a chunk is
    scored only for the queries whose bound ``|q| * norms[c0]`` beats their threshold,
    and the scan stops when no query's bound does. ``init``: running top-``kk`` lists
    ``(scores, ids)`` to start from (an earlier chunk's); ``floor``: thresholds to start
    from without entries (a score no result below which can make the final top-k, e.g.
    another part's k-th best).

    Ties: a score equal to a query's threshold still passes (the rows are not in tie
    order when stored by norm: a later row may rank before the k-th so far), and the
    running lists keep the best in tie order (``_merge``). Thresholds are at least the
    lowest float32, so an all -inf row (filtered out) never passes.
    """
    bq = Qb.shape[0]
    # score blocks, their rows padded (``_row_stride``), in one buffer for every chunk; a
    # span of up to ``chunk`` rows pads to at most ``chunk + 16`` (one of 512 rows to 528,
    # past chunks of 520: a buffer of the chunk's own stride was too short)
    buf = np.empty(bq * (chunk + 16), dtype=np.float32)
    bs = bi = thr = None
    if init is not None:
        bs, bi = init[0].copy(), init[1].copy()
        thr = np.maximum(bs.min(axis=1), _LOWEST)
    elif floor is not None:
        bs = np.full((bq, kk), _NEG, dtype=np.float32)
        bi = np.full((bq, kk), PAD_ID, dtype=np.int64)
        thr = np.maximum(floor.astype(np.float32), _LOWEST)
    # |q| with a margin for float32 rounding of the dot products (relative error of a
    # d-term dot product is far below 1e-4 of |q| |x|)
    qn = None if norms is None else row_norms(Qb) * (1 + 1e-4)
    moved = np.zeros(bq, dtype=bool)  # rows merged since sorted (``_merge``: no order)
    for j, (c0, c1) in enumerate(spans):
        c = c1 - c0
        rows = None  # the queries scored in this chunk (None: all of them)
        if qn is not None and thr is not None:
            live = qn * norms[c0] >= thr  # equal: 0 over zero rows, a tie
            nl = int(np.count_nonzero(live))
            if nl == 0:
                break  # later chunks have smaller norms, thresholds only rise
            if nl * 8 < bq * 7:
                rows = np.flatnonzero(live)
        Qc = Qb if rows is None else Qb[rows]
        nr = Qc.shape[0]
        ld = _row_stride(c)  # rows packed at their own stride: a short first chunk
        # stays compact (a span longer than ``chunk``, which no caller makes, gets its own)
        S = (buf[:nr * ld].reshape(nr, ld) if c <= chunk
             else np.empty((nr, ld), dtype=np.float32))[:, :c]
        np.matmul(Qc, V[c0:c1].T, out=S)
        mask.apply(S, c0, c1)
        if ex is not None:
            ex.mask(S, c0, c1, rows, bq)
        if bs is None:
            cs, ci = _select(S, min(kk, c), rank, c0)
            if cs.shape[1] < kk:  # a first chunk smaller than k: pad the running lists
                pad = kk - cs.shape[1]
                cs = np.concatenate([cs, np.full((bq, pad), _NEG, np.float32)], axis=1)
                ci = np.concatenate([ci, np.full((bq, pad), PAD_ID, np.int64)], axis=1)
            bs, bi = cs, ci
            thr = np.maximum(bs.min(axis=1), _LOWEST)
            continue
        tr = thr if rows is None else thr[rows]
        loc = np.flatnonzero(S.max(axis=1) >= tr)  # rows of S
        if len(loc) == 0:
            continue
        if len(loc) * 2 > nr:
            loc, sub = np.arange(nr), S
        else:
            sub = S[loc]
        qs = loc if rows is None else rows[loc]  # the same rows in Qb
        got = _candidates(sub, thr[qs], inclusive=True, offset=c0)
        if got is None:  # most scores pass (a weak threshold): partial sort instead
            cs, ci = _select(sub, min(kk, c), rank, c0)
        else:
            cs, ci = got
        ms, mi = _merge(bs[qs], bi[qs], cs, ci, rank)
        bs[qs], bi[qs] = ms, mi
        moved[qs] = True
        thr[qs] = np.maximum(thr[qs], ms.min(axis=1))  # a floor never drops
    # the others are in order still: ``_select``'s, ``init``'s, or -inf (``floor``)
    moved = np.flatnonzero(moved)
    if len(moved):
        bs[moved], bi[moved] = _best(bs[moved], bi[moved], kk, rank)
    return bs, bi


def _topk_subset(V: np.ndarray, Q: np.ndarray, k: int, f: Filters, batch_size: int,
                 chunk_size: int, threads: int, rank: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """A small allow-list: score only the allowed rows, then map ids back."""
    b = Q.shape[0]
    sub = np.flatnonzero(f.allowed)
    if len(sub) == 0:
        return (np.full((b, k), _NEG, dtype=np.float32),
                np.full((b, k), PAD_ID, dtype=np.int64))
    ptr = ids = None
    if f.ex_ptr is not None:
        pos = np.full(V.shape[0], -1, dtype=np.int64)
        pos[sub] = np.arange(len(sub))
        mapped = pos[f.ex_ids]
        keep = mapped >= 0
        rows = np.repeat(np.arange(b), np.diff(f.ex_ptr))[keep]
        ptr = np.zeros(b + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=b), out=ptr[1:])
        ids = mapped[keep]
    # rows of V[sub] in tie order as their rows of V are (``sub`` is increasing)
    s, i = topk_exact(np.ascontiguousarray(V[sub]), Q, k, Filters(ptr, ids, None, len(sub)),
                      batch_size, chunk_size, threads,
                      rank=None if rank is None else rank[sub])
    return s, np.where(i >= 0, sub[np.maximum(i, 0)], PAD_ID)


@register
class ExactIndex(Index):
    """Exact inner-product (or cosine) search: blocked BLAS matmul + partial sort.

    Example:
        >>> import numpy as np
        >>> items = np.random.default_rng(0).standard_normal((100, 8)).astype("float32")
        >>> index = ExactIndex().build(items)
        >>> scores, ids = index.search(items[:2], k=5, exclude=[[0], [1]])
        >>> ids.shape, bool((ids[:, 0] != [0, 1]).all())
        ((2, 5), True)
    """

    kind = "exact"

    def _build(self, x: np.ndarray) -> None:
        self._order = self._inverse = self._norms = self._band = None
        self._bits: dict[int, np.ndarray] = {}  # ``_near_bits``, made when first needed
        if x.shape[0] >= _ORDER_MIN:
            # Rows by decreasing norm: the large scores come early, each query's running
            # k-th best rises fast, and later chunks rarely need more than the row-max pass
            # (at 1M clustered items, 2-4% of (query, chunk) pairs instead of 9%).
            norms = row_norms(x)
            order = np.argsort(-norms, kind="stable")
            x = x[order]
            # the row norms in storage order (decreasing): each chunk's largest norm
            self._norms = norms[order]
            index_dtype = np.int32 if x.shape[0] < 2**31 else np.int64
            self._order = order.astype(index_dtype)
            self._inverse = np.empty_like(self._order)
            self._inverse[self._order] = np.arange(x.shape[0], dtype=index_dtype)
            # padded to whole uint64 words, read as such to bring it into cache
            # (``_near_exclusions``); ids index only its first n entries
            self._band = np.zeros(-(-x.shape[0] // 8) * 8, dtype=np.uint8)
            np.minimum(self._inverse >> _BAND_SHIFT, 255, out=self._band[:x.shape[0]],
                       casting="unsafe")
        self._vectors = x

    def _rows_of(self) -> np.ndarray | None:
        return self._inverse

    @property
    def vectors(self) -> np.ndarray:
        """The indexed ``[n, d]`` float32 vectors in id order (normalised under cosine);
        read-only (a copy for catalogues stored in norm order)."""
        self._require_built()
        v = self._vectors.view() if self._order is None else self._vectors[self._inverse]
        v.flags.writeable = False
        return v

    def _search(self, q: np.ndarray, k: int, f: Filters) -> tuple[np.ndarray, np.ndarray]:
        if self._order is not None and f.allowed is not None:
            # filters into storage order (excluded ids: by topk_exact's workers, ex_map);
            # ids back to id order below
            order = self._order  # a prepared deny list's is reordered once
            f = f.with_allowed(f.derived(("stored", id(order)), lambda: _frozen(
                f.allowed[order])))
        # prepared exclusions (``in_layout``) are storage rows already: nothing to map
        # equal scores: the lower id first, whatever the storage order (``rank``)
        s, i = topk_exact(self._vectors, q, k, f, self.config.batch_size,
                          self.config.chunk_size, self.config.threads,
                          self._norms if self.config.norm_bound else None,
                          None if f.in_layout else self._inverse,
                          None if f.in_layout else self._band, self._order,
                          None if f.in_layout else self._bits)
        if self._order is not None:
            i = np.where(i >= 0, self._order[np.maximum(i, 0)], PAD_ID).astype(np.int64)
        return s, i

    def _save(self, directory: Path) -> dict[str, Any]:
        np.save(directory / "vectors.npy", self.vectors)  # id order, whatever the storage
        return {"vectors": "vectors.npy"}

    def _files(self, state: dict[str, Any]) -> list[str]:
        return [state.get("vectors", "vectors.npy")]

    def _load(self, files: _Files, n: int, d: int, state: dict[str, Any]) -> None:
        v = files.npy(state.get("vectors", "vectors.npy"))
        if v.shape != (n, d) or v.dtype != np.float32:
            raise ValueError(f"vectors.npy holds {v.dtype} {v.shape}, expected float32 {(n, d)}")
        self._build(np.ascontiguousarray(v))
