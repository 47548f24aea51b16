"""Approximate search with faiss: an HNSW graph or inverted lists (IVF), same contract.

Inner-product search can be reduced to L2 nearest neighbours (``mips_to_l2``; default on
for IVF, off for HNSW, as measured):
items become ``[x, sqrt(M^2 - |x|^2)]`` with ``M`` the largest item norm and queries
``[q M / |q|, 0]``, so ``|q' - x'|^2 = 2 M^2 - 2 (M / |q|) q.x`` ranks exactly like ``q.x``
while the graph / coarse quantiser sees a proper metric (HNSW and IVF degrade when item
norms differ), the same whatever the query's norm. Cosine search over a catalogue with zero
vectors uses the same reduction (``M`` = 1), so a zero vector scores as cosine 0.

Filters are applied inside faiss: the global allow/deny lists as an ``IDSelectorBitmap``,
the per-query exclusions by over-fetching ``k + len(longest exclusion list)`` candidates
and dropping excluded ids. Candidates are re-scored with exact float32 inner products, so
scores are comparable across index kinds. A row that still has fewer than ``k`` results
while more items qualify (a very selective filter) is answered by exact search, so a
result is never short when enough candidates qualify.

Under inner product, every query first scores the 2,048 largest-norm items exactly; one
whose k-th best there beats ``|q|`` times every other item's norm has its exact results
and skips the index (on trained catalogues, where popular items have long vectors, most
queries do).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from twotower.errors import ConfigError
from twotower.index._base import PAD_ID, Index, _Files, register, row_norms
from twotower.index.exact import _CPUS, _PREFIX, _select, _settled_prefix, topk_exact
from twotower.index.filters import Filters, first_rows, take_rows

_NEG = np.float32(-np.inf)
EXACT_BELOW = 4096
"""Allow-lists of at most this many items are searched exactly (faster and exact)."""


def _faiss() -> Any:
    import faiss  # imported lazily: exact search does not need it
    return faiss


class _FaissIndex(Index):
    """Shared machinery of the faiss-backed kinds."""

    @staticmethod
    def _bitmap(allowed: np.ndarray, groups: Any) -> tuple[int, np.ndarray]:
        """The global filter as faiss' bitmap over the graph's nodes, and its length."""
        nodes = allowed if groups is None else groups.any_member(allowed)
        return len(nodes), np.packbits(nodes, bitorder="little")

    def _threads(self) -> None:
        _faiss().omp_set_num_threads(self.config.threads or _CPUS)

    default_mips_to_l2 = False

    def _wants_augment(self, x: np.ndarray | None) -> bool:
        """Whether items get the extra coordinate (``mips_to_l2``): inner product with
        the reduction on; cosine when some item is a zero vector (``x``), which would
        otherwise sit at L2 distance 1 from every unit query, as close as cosine 0.5;
        with the extra coordinate it sits at sqrt(2), exactly cosine 0."""
        if self.config.metric == "ip":
            mips = self.config.mips_to_l2
            return self.default_mips_to_l2 if mips is None else mips
        return x is not None and bool((~x.any(axis=1)).any())

    def _metric(self) -> int:
        faiss = _faiss()
        if self.config.metric == "ip" and not self._augment:
            return faiss.METRIC_INNER_PRODUCT
        return faiss.METRIC_L2  # cosine: unit vectors, L2 ranks like inner product

    def _items(self, x: np.ndarray) -> np.ndarray:
        self._max_norm = 0.0
        self._augment = self._wants_augment(x)
        if not self._augment:
            return x
        norms2 = np.einsum("ij,ij->i", x, x, dtype=np.float64)
        self._max_norm = float(np.sqrt(norms2.max()))
        extra = np.sqrt(np.maximum(norms2.max() - norms2, 0.0)).astype(np.float32)
        return np.ascontiguousarray(np.hstack([x, extra[:, None]]))

    def _queries(self, q: np.ndarray) -> np.ndarray:
        if not self._augment:
            return np.ascontiguousarray(q)
        # Items lie on the sphere of radius M in the augmented space. Every query goes to
        # that sphere too: |q' - x'|^2 = 2 M^2 - 2 q'.x ranks like q.x at any |q|, but the
        # coarse quantiser's centroids lie inside the sphere at different norms, and a
        # query of another norm would pick lists by their centroids' norms (IVF recall
        # 0.34 at |q| x 1e-6, 0.78 at x 1e6, against 1.0 as given).
        norms = np.linalg.norm(q.astype(np.float64), axis=1, keepdims=True)  # no underflow
        # (a zero query keeps scale 1: no division by its 1e-300 floor, which overflowed)
        scale = self._max_norm / np.where(norms > 0, norms, self._max_norm or 1.0)
        return np.hstack([(q * scale).astype(np.float32), np.zeros((len(q), 1), np.float32)])

    def _build(self, x: np.ndarray) -> None:
        self._threads()
        xt = self._items(x)
        self._groups = None
        if self.kind == "hnsw" and self._metric() == _faiss().METRIC_L2:
            # an L2 graph over repeated points loses its way: one node per distinct vector
            self._groups = _VectorGroups.find(x)
            if self._groups is not None:
                xt = np.ascontiguousarray(xt[self._groups.reps])
        self._faiss = self._make(xt)
        self._vectors = x
        self._attach_vectors(x)
        self._make_prefix()

    def _attach_vectors(self, x: np.ndarray) -> None:
        self._vectors = x

    def _exact_args(self) -> tuple[int, int, int]:
        c = self.config
        return c.batch_size, c.chunk_size, c.threads

    # ------------------------------------------------------------------ search
    def _search(self, q: np.ndarray, k: int, f: Filters) -> tuple[np.ndarray, np.ndarray]:
        b = q.shape[0]
        if f.n_allowed == 0:
            return (np.full((b, k), _NEG, dtype=np.float32),
                    np.full((b, k), PAD_ID, dtype=np.int64))
        if f.allowed is not None and f.n_allowed <= EXACT_BELOW:
            return topk_exact(self._vectors, q, k, f, *self._exact_args())
        pre = self._settled(q, k, f)
        if pre is not None:
            s, i, done = pre
            rest = np.flatnonzero(~done)
            if len(rest) == 0:
                return s, i
            if len(rest) < b:  # the index searches only the queries left
                s[rest], i[rest] = self._index_search(q[rest], k, take_rows(f, rest))
                return s, i
        return self._index_search(q, k, f)

    def _make_prefix(self) -> None:
        """The ``_PREFIX`` largest-norm items in decreasing-norm order, and the largest
        norm of the rest (inner product only: under cosine every norm is 1)."""
        self._prefix = self._prefix_vectors = self._prefix_pos = None
        n = len(self._vectors)
        if self.config.metric != "ip" or n <= _PREFIX:
            return
        norms = row_norms(self._vectors)
        top = np.argpartition(-norms, _PREFIX)[:_PREFIX + 1]
        top = top[np.argsort(-norms[top], kind="stable")]
        self._prefix, self._prefix_beyond = top[:_PREFIX], float(norms[top[-1]])
        self._prefix_vectors = np.ascontiguousarray(self._vectors[self._prefix])
        self._prefix_pos = np.full(n, -1, dtype=np.int32)
        self._prefix_pos[self._prefix] = np.arange(_PREFIX, dtype=np.int32)

    def _settled(self, q: np.ndarray, k: int, f: Filters
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(scores, ids, settled) from the largest-norm items alone, exactly: a query
        whose k-th best there beats ``|q|`` times every other norm has its exact results
        and needs no index search (on a trained catalogue, most queries). None when there
        is no such prefix or ``k`` is too large for it."""
        if self._prefix is None or not self.config.norm_bound or 16 * k > _PREFIX:
            return None
        batch_size, chunk_size, threads = self._exact_args()
        s, pi, done = _settled_prefix(self._prefix_vectors, q, k,
                                      first_rows(f, len(q), _PREFIX, self._prefix_pos,
                                                 self._prefix),
                                      self._prefix_beyond, batch_size=batch_size,
                                      chunk_size=chunk_size, threads=threads)
        return s, np.where(pi >= 0, self._prefix[np.maximum(pi, 0)], PAD_ID), done

    def _index_search(self, q: np.ndarray, k: int, f: Filters, own: bool = False
                      ) -> tuple[np.ndarray, np.ndarray]:
        """One call for the batch, fetching ``k`` plus the most any query excludes,
        except for the queries ``_own_selector_rows`` picks; those (``own``) are walked
        one by one, each as wide as its own exclusions ask, which a selector keeps out
        of its results."""
        faiss = _faiss()
        b, n = q.shape[0], self._n
        out_s = np.full((b, k), _NEG, dtype=np.float32)
        out_i = np.full((b, k), PAD_ID, dtype=np.int64)
        kk = min(k, f.n_allowed)
        keys, counts = _exclusion_keys(f, b, n)
        most = 0 if counts is None else int(counts.max(initial=0))
        groups = self._groups
        if not own and counts is not None:
            # a query whose exclusions leave the walk to return over half of the items it
            # may list: a scan is as cheap, and exact (an HNSW walk asked for 2,999 of
            # 3,000 returned 2,173, and missed the best of the two items left)
            scan = np.flatnonzero(kk + counts > f.n_allowed // 2)
            if len(scan):
                out_s[scan], out_i[scan] = topk_exact(self._vectors, q[scan], k,
                                                      take_rows(f, scan), *self._exact_args())
                rest = np.setdiff1d(np.arange(b), scan)
                if len(rest):
                    out_s[rest], out_i[rest] = self._index_search(q[rest], k,
                                                                  take_rows(f, rest))
                return out_s, out_i
        if not own and counts is not None and groups is None:
            heavy = self._own_selector_rows(counts, kk)
            if len(heavy):
                light = np.setdiff1d(np.arange(b), heavy)
                if len(light):
                    out_s[light], out_i[light] = self._index_search(q[light], k,
                                                                    take_rows(f, light))
                out_s[heavy], out_i[heavy] = self._index_search(
                    q[heavy], k, take_rows(f, heavy), own=True)
                return out_s, out_i
        if not own and counts is not None:
            # each query walks as wide as its own exclusions ask, as it does alone: one
            # that excludes a few more than ef_search no longer widens (and changes) the
            # walk of every other query of its batch
            widths = self._walk_widths(np.minimum(kk + counts, f.n_allowed))
            if widths is not None and len(np.unique(widths)) > 1:
                for w in np.unique(widths):
                    rows = np.flatnonzero(widths == w)
                    out_s[rows], out_i[rows] = self._index_search(q[rows], k,
                                                                  take_rows(f, rows))
                return out_s, out_i
        fetch = min(kk + (0 if own else most), f.n_allowed)
        bitmap = sel = None
        if f.allowed is not None:
            size, bitmap = f.derived(("bitmap", id(groups)),
                                     lambda: self._bitmap(f.allowed, groups))
            sel = faiss.IDSelectorBitmap(size, faiss.swig_ptr(bitmap))
        self._threads()
        nodes = self._faiss.ntotal
        m = min(fetch, nodes)
        if own:  # ids are nodes here (no vector groups)
            qq = self._queries(q)
            I = np.empty((b, m), dtype=np.int64)
            bounds = np.searchsorted(keys, np.arange(b + 1, dtype=np.int64) * n)
            for r in range(b):
                ex = np.ascontiguousarray(keys[bounds[r]:bounds[r + 1]] - r * n)
                not_ex = faiss.IDSelectorNot(faiss.IDSelectorBatch(len(ex), faiss.swig_ptr(ex)))
                both = not_ex if sel is None else faiss.IDSelectorAnd(sel, not_ex)
                # as wide as its own over-fetch was (narrower lost recall: 0.45 against
                # 0.70 where the seen items were the query's nearest), for no other query
                width = min(kk + len(ex), nodes)
                I[r:r + 1] = self._faiss.search(qq[r:r + 1], m,
                                                params=self._params(width, both))[1]
                del not_ex, both, ex
        else:
            _, I = self._faiss.search(self._queries(q), m, params=self._params(m, sel))
        del sel, bitmap
        if groups is not None:  # each distinct vector's node -> its allowed items
            I = groups.expand(I, fetch, f.allowed)
        valid = I >= 0
        S = np.einsum("bkd,bd->bk", self._vectors[np.where(valid, I, 0)], q)
        S[~valid] = _NEG
        if keys is not None:
            S[_excluded(I, keys, n)] = _NEG
        extra = self._extra_candidates(q, kk, f, I, S)
        if extra is not None:
            S = np.concatenate([S, extra[0]], axis=1)
            I = np.concatenate([I, extra[1]], axis=1)
        s, pos = _select(S, kk)
        out_s[:, :kk] = s
        out_i[:, :kk] = np.take_along_axis(I, pos, axis=1)
        out_i[out_s == _NEG] = PAD_ID
        got = np.count_nonzero(out_i[:, :kk] >= 0, axis=1)
        short = np.flatnonzero(got < kk)
        if len(short):
            need = np.array([min(kk, f.qualifying(r)) for r in short], dtype=np.int64)
            short = short[got[short] < need]
        if len(short):  # rare: a selective filter starved the graph walk / probed lists
            fs, fi = topk_exact(self._vectors, q[short], k, take_rows(f, short),
                                *self._exact_args())
            out_s[short], out_i[short] = fs, fi
        return out_s, out_i

    def _extra_candidates(self, q: np.ndarray, kk: int, f: Filters, I: np.ndarray,
                          S: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        return None

    def _own_selector_rows(self, excluded: np.ndarray, kk: int) -> np.ndarray:
        """The queries (of ``excluded`` distinct ids each) to walk alone with their own
        selector rather than over-fetch for: none here."""
        return np.zeros(0, dtype=np.int64)

    def _walk_widths(self, fetch: np.ndarray) -> np.ndarray | None:
        """How wide each query's search is when it fetches ``fetch`` candidates (queries
        of one width are searched together); None when that does not depend on
        ``fetch``."""
        return None

    # ------------------------------------------------------------------ persistence
    def _save(self, directory: Path) -> dict[str, Any]:
        try:
            _faiss().write_index(self._faiss, str(directory / "index.faiss"))
        except RuntimeError as exc:  # faiss reports a failed write (a full disk) this way
            import errno
            code = errno.ENOSPC if "No space left" in str(exc) else errno.EIO
            raise OSError(code, f"cannot write {directory / 'index.faiss'}: "
                                f"{str(exc).splitlines()[-1][:200]}") from None
        state = {"max_norm": self._max_norm, "augmented": self._augment,
                 **self._save_state(directory)}
        if self._groups is not None:  # each item's node (distinct vector)
            np.save(directory / "groups.npy", self._groups.node_of)
            state["groups"] = "groups.npy"
        return state

    def _save_state(self, directory: Path) -> dict[str, Any]:
        return {}

    def _files(self, state: dict[str, Any]) -> list[str]:
        groups = state.get("groups")
        return ["index.faiss", *self._vector_files(), *([groups] if groups else [])]

    def _vector_files(self) -> list[str]:
        return []

    def _load(self, files: _Files, n: int, d: int, state: dict[str, Any]) -> None:
        if not files.exists("index.faiss"):
            raise ValueError(f"{files / 'index.faiss'} is missing")
        faiss = _faiss()
        self._faiss = files.faiss("index.faiss")
        want_type = {"hnsw": faiss.IndexHNSWFlat, "ivf": faiss.IndexIVFFlat}[self.kind]
        held = type(faiss.downcast_index(self._faiss))
        if not issubclass(held, want_type):
            raise ValueError(f"index.faiss holds a {held.__name__}, not the "
                             f"{want_type.__name__} of kind {self.kind!r}")
        self._max_norm = float(state.get("max_norm", 0.0))
        # indexes saved before "augmented" was kept: as the config decides
        self._augment = bool(state.get("augmented", self._wants_augment(None)))
        if self._augment and "max_norm" not in state:  # queries would go to a sphere of 0
            raise ValueError("index.json's state lacks max_norm, which an index over "
                             "augmented vectors (mips_to_l2, or cosine with zero vectors) needs")
        self._groups = None
        if "groups" in state:
            name = state["groups"]
            if not isinstance(name, str) or Path(name).name != name:
                raise ValueError(f"state.groups must be a file name, got {name!r}")
            self._groups = _VectorGroups(files.npy(name), n)
        want = d + 1 if self._augment else d
        nodes = n if self._groups is None else len(self._groups.reps)
        if self._faiss.ntotal != nodes or self._faiss.d != want:
            raise ValueError(f"index.faiss holds {self._faiss.ntotal} vectors of dimension "
                             f"{self._faiss.d}, expected {nodes} of dimension {want}")
        self._load_vectors(files, n, d)
        self._make_prefix()

    # ------------------------------------------------------------------ per kind
    def _make(self, xt: np.ndarray) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _params(self, fetch: int, sel: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load_vectors(self, files: _Files, n: int, d: int) -> None:
        raise NotImplementedError  # pragma: no cover - abstract


def _exclusion_keys(f: Filters, b: int, n: int
                    ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The exclusions as sorted distinct keys ``row * n + id`` (None when there are none),
    and the distinct ids each query excludes (its ``max``: what the search over-fetches; a
    raw log repeats items, and the raw list length made a search 40x slower)."""
    if f.ex_ptr is None or f.ex_ptr[-1] == 0:
        return None, None
    rows = np.repeat(np.arange(b, dtype=np.int64), np.diff(f.ex_ptr))
    keys = np.unique(rows * n + f.ex_ids)
    return keys, np.bincount(keys // n, minlength=b)


#: HNSW: a query whose ``k`` plus distinct exclusions exceed this many times ``ef_search``
#: is walked alone with its exclusions as a selector (None: never)
OWN_SELECTOR_EF: float | None = 2.0

#: The share of items whose vector another item repeats from which an HNSW graph on L2
#: distances is built over distinct vectors only (``_VectorGroups``)
DUPLICATE_SHARE = 0.1


class _VectorGroups:
    """Items grouped by identical vectors, for an HNSW graph on L2 distances (cosine, or
    ``mips_to_l2``): there identical points fill each other's neighbour lists and recall
    collapses (under cosine 0.98, 0.54 and 0.36 with 10%, 30% and 50% of 8,000 items one
    vector: ``benchmarks/probes/ann_duplicates.py``). The graph holds one node per
    distinct vector (``reps``: its smallest id); a search expands each node it returns
    into that vector's items, which share its score.

    ``node_of``: ``[n]`` each item's node; ``reps``: ``[u]`` each node's first item;
    ``members[ptr[g]:ptr[g + 1]]``: node ``g``'s items, increasing.
    """

    def __init__(self, node_of: np.ndarray, n: int) -> None:
        node_of = np.asarray(node_of)
        if node_of.shape != (n,) or node_of.dtype.kind not in "iu" or (
                n and (node_of.min() < 0 or node_of.max() >= n)):
            raise ValueError(f"groups.npy must hold {n} node numbers in [0, {n})")
        self.node_of = node_of.astype(np.int64, copy=False)
        u = int(self.node_of.max()) + 1 if n else 0
        counts = np.bincount(self.node_of, minlength=u)
        if (counts == 0).any():
            raise ValueError("groups.npy leaves a node without items")
        self.ptr = np.zeros(u + 1, dtype=np.int64)
        np.cumsum(counts, out=self.ptr[1:])
        self.members = np.argsort(self.node_of, kind="stable")
        self.reps = self.members[self.ptr[:-1]]
        self.sizes = counts

    @classmethod
    def find(cls, x: np.ndarray) -> _VectorGroups | None:
        """The groups of ``x`` when ``DUPLICATE_SHARE`` or more of its items repeat another
        item's vector; None otherwise (the graph takes every item). One hash per row (a
        random projection in float64, in blocks: no float64 copy of the catalogue), each
        match confirmed on the vectors themselves: ~0.3 s at 1M items."""
        n = len(x)
        if n < 2:
            return None
        r = np.random.default_rng(0).standard_normal(x.shape[1])
        h = np.concatenate([x[i:i + 65_536].astype(np.float64) @ r
                            for i in range(0, n, 65_536)])
        _, inv, counts = np.unique(h, return_inverse=True, return_counts=True)
        if int(counts[counts > 1].sum()) < DUPLICATE_SHARE * n:
            return None
        first = np.empty(len(counts), dtype=np.int64)
        first[inv[::-1]] = np.arange(n - 1, -1, -1)  # each hash's smallest id
        rep = first[inv]
        for i in range(0, n, 65_536):  # a hash collision keeps its item apart
            same = (x[i:i + 65_536] == x[rep[i:i + 65_536]]).all(axis=1)
            rep[i:i + 65_536] = np.where(same, rep[i:i + 65_536],
                                         np.arange(i, min(n, i + 65_536)))
        _, node_of = np.unique(rep, return_inverse=True)  # nodes in order of first item
        groups = cls(node_of.reshape(-1), n)
        if int(groups.sizes[groups.sizes > 1].sum()) < DUPLICATE_SHARE * n:
            return None  # hash collisions, not repeats
        return groups

    def any_member(self, allowed: np.ndarray) -> np.ndarray:
        """``[u]`` bool: nodes with at least one allowed item."""
        return np.logical_or.reduceat(allowed[self.members], self.ptr[:-1])

    def expand(self, nodes: np.ndarray, most: int, allowed: np.ndarray | None = None
               ) -> np.ndarray:
        """``[b, m]`` node numbers (-1: none), best first -> ``[b, most]`` item ids: each
        node's items in its place (only those ``allowed`` lets through, when given), until
        the row holds ``most`` (it needs no more: ``k`` plus its exclusions); padded with
        ``PAD_ID``. A group's filtered items never crowd out its allowed ones."""
        ptr, members, sizes = self.ptr, self.members, self.sizes
        if allowed is not None:  # each node's allowed items (no node is empty: reduceat)
            keep = allowed[self.members]
            members = self.members[keep]
            sizes = np.add.reduceat(keep.astype(np.int64), self.ptr[:-1])
            ptr = np.zeros(len(sizes) + 1, dtype=np.int64)
            np.cumsum(sizes, out=ptr[1:])
        b = nodes.shape[0]
        most = max(most, 1)
        valid = nodes >= 0
        g = np.where(valid, nodes, 0)
        take = np.where(valid, sizes[g], 0)
        before = np.cumsum(take, axis=1) - take  # the row's items from earlier nodes
        take = np.clip(most - before, 0, take)  # the row stops at `most`
        out = np.full((b, most), PAD_ID, dtype=np.int64)
        counts = take.sum(axis=1)
        total = int(counts.sum())
        if total == 0:
            return out
        flat = take.reshape(-1)
        starts = np.repeat(ptr[g.reshape(-1)], flat)
        within = np.arange(total) - np.repeat(np.cumsum(flat) - flat, flat)
        rows = np.repeat(np.arange(b), counts)
        cols = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        out[rows, cols] = members[starts + within]
        return out


def _excluded(I: np.ndarray, keys: np.ndarray, n: int) -> np.ndarray:
    """``[b, m]`` bool: which candidate ids are in their query's exclusions (``keys``:
    ``_exclusion_keys``)."""
    b = I.shape[0]
    cand = np.arange(b, dtype=np.int64)[:, None] * n + I
    pos = np.minimum(np.searchsorted(keys, cand), len(keys) - 1)
    return (keys[pos] == cand) & (I >= 0)


@register
class HNSWIndex(_FaissIndex):
    """faiss HNSW graph (``IndexHNSWFlat``); ``ef_search`` trades speed for recall.

    Example:
        >>> import numpy as np
        >>> from twotower.index import IndexConfig
        >>> items = np.random.default_rng(0).standard_normal((500, 16)).astype("float32")
        >>> index = HNSWIndex(IndexConfig(kind="hnsw")).build(items)
        >>> index.search(items[:3], k=10)[1].shape
        (3, 10)
    """

    kind = "hnsw"

    def _make(self, xt: np.ndarray) -> Any:
        faiss = _faiss()
        index = faiss.IndexHNSWFlat(xt.shape[1], self.config.hnsw_m, self._metric())
        index.hnsw.efConstruction = self.config.ef_construction
        index.hnsw.efSearch = self.config.ef_search
        index.add(xt)
        return index

    def _attach_vectors(self, x: np.ndarray) -> None:
        # Read the vectors straight out of faiss' storage: no second copy in memory.
        faiss = _faiss()
        storage = faiss.downcast_index(self._faiss.storage)
        n, dd = self._faiss.ntotal, self._faiss.d
        flat = faiss.rev_swig_ptr(storage.get_xb(), n * dd).reshape(n, dd)
        self._vectors = flat[:, :x.shape[1]] if dd != x.shape[1] else flat
        if self._groups is not None:  # one node per distinct vector: each item's own
            self._vectors = np.ascontiguousarray(self._vectors[self._groups.node_of])
        self._make_head()

    def _make_head(self) -> None:
        """The largest-norm items, searched exactly next to the graph (inner product).

        An inner-product graph walk misses high-norm "hub" items that top many queries'
        lists; scoring the top ``hnsw_exact_head`` fraction of items by norm exactly is
        a small matmul beside the walk that lifts recall@10 at 1M items
        (``benchmarks/probes/ann_seeds.py``, docs/search.md).
        """
        self._head = self._head_pos = self._head_vectors = self._head_norms = None
        n = len(self._vectors)
        h = int(round(self.config.hnsw_exact_head * n))
        if self.config.metric != "ip" or self._augment or h < 1:
            return
        h = min(h, n)
        norms = row_norms(self._vectors)
        head = np.argpartition(-norms, h - 1)[:h] if h < n else np.arange(n)
        # in decreasing-norm order: a query needs only the head rows whose norm bound can
        # beat what the graph walk found (``_extra_candidates``)
        head = head[np.argsort(-norms[head], kind="stable")]
        self._head = head
        self._head_vectors = np.ascontiguousarray(self._vectors[head])
        self._head_norms = norms[head]
        self._head_pos = np.full(n, -1, dtype=np.int32 if n < 2**31 else np.int64)
        self._head_pos[head] = np.arange(h)

    def _extra_candidates(self, q: np.ndarray, kk: int, f: Filters, I: np.ndarray,
                          S: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        if self._head is None:
            return None
        hpos = self._head_pos
        # The walk's kk-th best (every one a real, allowed, not excluded item) bounds the
        # final kk-th best from below: head rows whose |q| |x| (with a float32 margin)
        # falls short of it cannot enter. The head is in decreasing-norm order, so that
        # leaves a prefix of it.
        floor = (np.partition(S, S.shape[1] - kk, axis=1)[:, S.shape[1] - kk]
                 if S.shape[1] >= kk else np.full(len(q), _NEG, np.float32))
        S[(hpos[np.maximum(I, 0)] >= 0) & (I >= 0)] = _NEG  # the head answers for these
        qn = row_norms(q) * (1 + 1e-4)
        m = int(np.max(np.searchsorted(-self._head_norms, -(floor / np.maximum(qn, 1e-300)),
                                       side="right"), initial=0))
        m = max(m, min(kk, len(self._head)))
        head = self._head[:m]
        hs, hi = topk_exact(self._head_vectors[:m], q, min(kk, len(head)),
                            first_rows(f, len(q), m, hpos, self._head),
                            *self._exact_args())
        return hs, np.where(hi >= 0, head[np.maximum(hi, 0)], PAD_ID)

    def _load_vectors(self, files: _Files, n: int, d: int) -> None:
        self._attach_vectors(np.empty((0, d), np.float32))

    def _own_selector_rows(self, excluded: np.ndarray, kk: int) -> np.ndarray:
        """Queries whose over-fetch would widen the walk past ``OWN_SELECTOR_EF`` times
        ``ef_search``: one user who had seen 2,000 items made the walk of every query in
        the batch 2,010 wide (a batch of 1,024 took 1.4-2.1 s, 0.34 s now:
        ``benchmarks/probes/heavy_exclusions.py``). Each is walked alone."""
        if OWN_SELECTOR_EF is None:
            return np.zeros(0, dtype=np.int64)
        # the walk is at least k wide anyway: only exclusions widen it past that
        heavy = (excluded > 0) & (kk + excluded > OWN_SELECTOR_EF * max(self.config.ef_search,
                                                                        kk))
        if len(heavy) == 1:  # a query alone is walked alone anyway
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(heavy)

    def _walk_widths(self, fetch: np.ndarray) -> np.ndarray:
        # a walk never needs more candidates than the graph has nodes
        return np.minimum(np.maximum(self.config.ef_search, fetch),
                          np.maximum(self._faiss.ntotal, fetch))

    def _params(self, fetch: int, sel: Any) -> Any:
        ef = int(self._walk_widths(np.array(fetch)))
        return _faiss().SearchParametersHNSW(efSearch=ef, sel=sel)


@register
class IVFIndex(_FaissIndex):
    """faiss inverted lists (``IndexIVFFlat``); ``nprobe`` trades speed for recall.

    Example:
        >>> import numpy as np
        >>> from twotower.index import IndexConfig
        >>> items = np.random.default_rng(0).standard_normal((2000, 16)).astype("float32")
        >>> index = IVFIndex(IndexConfig(kind="ivf")).build(items)
        >>> index.search(items[:3], k=10)[1].shape
        (3, 10)
    """

    kind = "ivf"
    default_mips_to_l2 = True

    @staticmethod
    def auto_nlist(n: int) -> int:
        return max(1, min(int(4 * math.sqrt(n)), n // 39))

    @property
    def nlist(self) -> int:
        self._require_built()
        return self._faiss.nlist

    @property
    def nprobe(self) -> int:
        self._require_built()
        # more than the lists there are probes every list (and is reported as that)
        return min(self._faiss.nlist, self.config.nprobe or max(32, self._faiss.nlist // 32))

    def _make(self, xt: np.ndarray) -> Any:
        faiss = _faiss()
        n, d = xt.shape
        nlist = self.config.nlist or self.auto_nlist(n)
        if nlist > n:  # faiss' k-means would stop with a bare RuntimeError
            raise ConfigError(f"IndexConfig.nlist (--nlist) must be at most the number of "
                              f"items indexed, {n:,} (k-means needs an item per list), got "
                              f"{nlist:,}; 0 (the default) picks {self.auto_nlist(n):,} here")
        metric = self._metric()
        quantizer = faiss.IndexFlatL2(d) if metric == faiss.METRIC_L2 else faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, metric)
        index.cp.seed = self.config.seed
        index.cp.max_points_per_centroid = 64  # k-means on a sample: minutes -> seconds at 1M
        index.cp.min_points_per_centroid = 1
        index.train(xt)
        index.add(xt)
        return index

    def _params(self, fetch: int, sel: Any) -> Any:
        return _faiss().SearchParametersIVF(nprobe=self.nprobe, sel=sel)

    def _save_state(self, directory: Path) -> dict[str, Any]:
        np.save(directory / "vectors.npy", np.ascontiguousarray(self._vectors))
        return {"vectors": "vectors.npy"}

    def _vector_files(self) -> list[str]:
        return ["vectors.npy"]

    def _load_vectors(self, files: _Files, n: int, d: int) -> None:
        v = files.npy("vectors.npy")
        if v.shape != (n, d) or v.dtype != np.float32:
            raise ValueError(f"vectors.npy holds {v.dtype} {v.shape}, expected float32 {(n, d)}")
        self._vectors = v
