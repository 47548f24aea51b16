"""Classical baselines that every two-tower result is compared against.

``MostPop``, ``ItemKNN`` and ``EASE`` share one contract with ``TwoTower``:
``fit(train) -> self``, ``recommend(users, k, exclude) -> (scores, ids)`` and
``recommend_from_history(histories, k, exclude)`` for users absent from training. Each
scores a user from their binary history row ``x`` (``[n_items]``): popularity,
``x @ S`` with a pruned cosine item-item similarity, or ``x @ B`` with EASE's closed-form
item-item weights. EASE holds a dense ``[n_items, n_items]`` float32 matrix; ItemKNN a sparse
one of at most ``neighbors`` entries per item, so it also runs on catalogues of 100k items
and more.

``tune`` picks hyperparameters on a validation split carved out of the training data only.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple, Self

import numpy as np
import scipy.sparse as sp

from twotower.config import Config, check_range
from twotower.data.interactions import Interactions
from twotower.data.splits import _check_fraction, random_split, temporal_split
from twotower.errors import ConfigError, DataError, NotFittedError

#: Rows scored per dense ``[batch, n_items]`` block inside ``recommend``.
SCORE_BATCH_SIZE = 4096


@dataclasses.dataclass(frozen=True)
class MostPopConfig(Config):
    """MostPop has no hyperparameters."""


@dataclasses.dataclass(frozen=True)
class ItemKNNConfig(Config):
    """ItemKNN settings.

    Attributes:
        neighbors: similar items kept per target item (0 = keep all).
        shrink: added to the cosine denominator; damps similarities from few co-occurrences.
    """

    neighbors: int = 100
    shrink: float = 0.0

    def validate(self) -> None:
        check_range("ItemKNNConfig", "neighbors", self.neighbors, 0, None, integer=True)
        check_range("ItemKNNConfig", "shrink", self.shrink, 0.0, None)


@dataclasses.dataclass(frozen=True)
class EASEConfig(Config):
    """EASE settings.

    Attributes:
        lambda_: L2 regularisation added to the Gram matrix diagonal (> 0).
        half_life, floor: recency weights of the query, as the default model's EASE part
            weighs it (``ModelConfig.ease_half_lives``, ``ease_floors``): a user's ``r``-th
            most recent distinct item (``r = 0``: the latest) counts ``floor + (1 - floor)
            * 0.5 ** (r / half_life)`` in the history row that is scored, instead of 1.
            ``half_life`` 0 or ``floor`` 1 (the defaults): the plain binary row.
    """

    lambda_: float = 500.0
    half_life: float = 0.0
    floor: float = 1.0

    def validate(self) -> None:
        check_range("EASEConfig", "lambda_", self.lambda_, 0.0, None)
        if self.lambda_ <= 0:
            raise ConfigError(f"EASEConfig.lambda_ must be greater than 0, got {self.lambda_!r}")
        check_range("EASEConfig", "half_life", self.half_life, 0.0, None)
        check_range("EASEConfig", "floor", self.floor, 0.0, 1.0)

    @property
    def weighted(self) -> bool:
        """Whether the query is recency-weighted (else the binary history row)."""
        return bool(self.half_life) and self.floor < 1.0

    def weights(self, rank: np.ndarray) -> np.ndarray:
        """The query weight of items at recency ``rank`` (0 = a user's latest)."""
        return recency_weights(rank, self.half_life, self.floor)


def recency_weights(rank: np.ndarray, half_life: float, floor: float) -> np.ndarray:
    """float32 weights ``floor + (1 - floor) * 0.5 ** (rank / half_life)`` of items at
    recency ``rank`` (0 = a user's latest); all 1 for ``half_life`` 0 or ``floor`` 1. The
    default model's EASE part weighs its query the same (``linear.floor_weights``)."""
    if not half_life or floor >= 1.0:
        return np.ones(len(rank), dtype=np.float32)
    return (floor + (1.0 - floor) * 0.5 ** (np.asarray(rank, dtype=np.float64) / half_life)
            ).astype(np.float32)


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ConfigError(f"`k` must be an integer, got {k!r}")
    if k < 1:
        raise ConfigError(f"`k` must be at least 1, got {k}")
    return int(k)


def topk_excluding(scores: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` columns of each row of ``scores``, never an excluded one.

    Ties are broken by the lower item index (a stable sort). When fewer than ``k`` items
    qualify, or ``k`` exceeds the catalogue, rows are padded with id ``-1``, score ``-inf``.

    Args:
        scores: ``[b, n_items]`` float scores (modified in place when ``exclude`` is given).
        k: list length, at least 1.
        exclude: ``b`` arrays of item indices to leave out, or None.

    Returns:
        scores ``[b, k]`` float32 and ids ``[b, k]`` int64, best first.

    Raises:
        DataError: a NaN score (found before any exclusion).
    """
    k = _check_k(k)
    b, n = scores.shape
    nan = np.isnan(scores)
    if nan.any():  # NaN compares as neither better nor worse: its place would be arbitrary
        r, c = (int(v[0]) for v in np.nonzero(nan))
        raise DataError(f"scores hold NaN (row {r}, item index {c}): a recommender's scores "
                        "must be numbers (-inf for an item it never recommends)")
    if exclude is not None:
        if len(exclude) != b:
            raise DataError(f"`exclude` has {len(exclude)} lists for {b} queries")
        lens = np.fromiter((len(e) for e in exclude), dtype=np.int64, count=b)
        if lens.sum():
            cols = np.concatenate([np.asarray(e, dtype=np.int64).ravel() for e in exclude])
            ok = (cols >= 0) & (cols < n)  # an unknown index cannot be recommended anyway
            rows = np.repeat(np.arange(b), lens)
            scores[rows[ok], cols[ok]] = -np.inf
    kk = min(k, n)
    if kk < n:
        # O(n) selection that is still tie-exact: everything above the k-th score, then the
        # lowest-indexed items tied with it (unique integer keys make argpartition exact).
        kth = np.partition(scores, n - kk, axis=1)[:, n - kk:n - kk + 1]
        rank_key = np.where(scores > kth, 0, np.where(scores == kth, 1, 2)).astype(np.int64)
        rank_key = rank_key * n + np.arange(n, dtype=np.int64)
        cand = np.argpartition(rank_key, kk - 1, axis=1)[:, :kk]
        cand_scores = np.take_along_axis(scores, cand, axis=1)
        inner = np.lexsort((cand, -cand_scores), axis=1)
        order = np.take_along_axis(cand, inner, axis=1)
    else:
        order = np.argsort(-scores, axis=1, kind="stable")
    top_scores = np.take_along_axis(scores, order, axis=1).astype(np.float32)
    ids = order.astype(np.int64)
    invalid = ~np.isfinite(top_scores) & (top_scores < 0)
    ids[invalid] = -1
    top_scores[invalid] = -np.inf
    if kk < k:
        ids = np.pad(ids, ((0, 0), (0, k - kk)), constant_values=-1)
        top_scores = np.pad(top_scores, ((0, 0), (0, k - kk)), constant_values=-np.inf)
    return top_scores, ids


class _Baseline:
    """Shared fit/recommend plumbing: subclasses implement ``_fit`` and ``_score``."""

    config_cls: ClassVar[type[Config]]
    name: ClassVar[str]
    #: settings that only the query reads (not the fit): ``tune`` fits once for all their
    #: values and derives the others with ``with_query``
    query_params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Config | None = None, **params: Any) -> None:
        if config is None:
            config = self.config_cls(**params)
        elif params:
            config = config.replace(**params)
        if not isinstance(config, self.config_cls):
            raise ConfigError(f"{type(self).__name__} takes a {self.config_cls.__name__}, "
                              f"got {type(config).__name__}")
        self.config = config
        self._seen: sp.csr_matrix | None = None

    # -- training ---------------------------------------------------------------------
    def fit(self, train: Interactions) -> Self:
        """Learn from the binary user-item matrix of ``train``; returns self."""
        if len(train) == 0:
            raise DataError(f"{type(self).__name__}.fit: train has no interactions")
        x = train.to_csr()
        self._fit(x)
        self._seen = x
        return self

    def _fit(self, x: sp.csr_matrix) -> None:
        raise NotImplementedError

    def _score(self, x: sp.csr_matrix) -> np.ndarray:
        """``[b, n_items]`` float32 scores for binary history rows ``x``."""
        raise NotImplementedError

    def _require_fitted(self) -> sp.csr_matrix:
        if self._seen is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit first")
        return self._seen

    @property
    def n_items(self) -> int:
        return self._require_fitted().shape[1]

    @property
    def n_users(self) -> int:
        return self._require_fitted().shape[0]

    # -- serving ----------------------------------------------------------------------
    def seen_items(self, users: np.ndarray) -> list[np.ndarray]:
        """Training items of each user index (the usual ``exclude`` lists)."""
        m = self._require_fitted()
        users = self._check_users(users)
        return [m.indices[m.indptr[u]:m.indptr[u + 1]].astype(np.int64) for u in users]

    def _check_users(self, users: Any) -> np.ndarray:
        u = np.asarray(users)
        if u.ndim != 1 or (u.size and u.dtype.kind not in "iu"):
            raise DataError(f"`users` must be a 1-D array of user indices, got shape {u.shape} "
                            f"dtype {u.dtype}")
        u = u.astype(np.int64)
        if u.size and (u.min() < 0 or u.max() >= self.n_users):
            bad = u[(u < 0) | (u >= self.n_users)][0]
            raise DataError(f"user index {bad} is out of range [0, {self.n_users}) "
                            f"(users seen in training)")
        return u

    def _rank(self, x: sp.csr_matrix, k: int, exclude: Sequence[np.ndarray] | None
              ) -> tuple[np.ndarray, np.ndarray]:
        k = _check_k(k)
        if exclude is not None and len(exclude) != x.shape[0]:
            raise DataError(f"`exclude` has {len(exclude)} lists for {x.shape[0]} queries")
        out_s, out_i = [], []
        for lo in range(0, x.shape[0], SCORE_BATCH_SIZE):
            hi = lo + SCORE_BATCH_SIZE
            s = np.array(self._score(x[lo:hi]), dtype=np.float32)
            ex = None if exclude is None else exclude[lo:hi]
            a, b = topk_excluding(s, k, ex)
            out_s.append(a)
            out_i.append(b)
        if not out_s:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        return np.concatenate(out_s), np.concatenate(out_i)

    def recommend(self, users: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for training users.

        Args:
            users: ``[b]`` int64 user indices seen in training.
            k: list length (padded with ``-1`` / ``-inf`` beyond the catalogue).
            exclude: ``b`` arrays of item indices never to return (e.g. ``seen_items``).

        Returns:
            scores ``[b, k]`` float32 and item indices ``[b, k]`` int64, best first.
        """
        m = self._require_fitted()
        return self._rank(m[self._check_users(users)], k, exclude)

    def recommend_from_history(self, histories: Sequence[np.ndarray], k: int,
                               exclude: Sequence[np.ndarray] | None = None
                               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for users described only by item-index histories (oldest first, as
        ``TwoTower.recommend_from_history`` reads them; only a recency-weighted EASE
        reads the order)."""
        return self._rank(self._history_rows(histories), k, exclude)

    def _history_rows(self, histories: Sequence[np.ndarray]) -> sp.csr_matrix:
        """``[len(histories), n_items]`` binary rows of item-index histories.

        Raises:
            DataError: an index outside ``[0, n_items)``.
        """
        n_items = self.n_items
        lens = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
        cols = (np.concatenate([np.asarray(h, dtype=np.int64).ravel() for h in histories])
                if lens.sum() else np.zeros(0, dtype=np.int64))
        if cols.size and (cols.min() < 0 or cols.max() >= n_items):
            raise DataError(f"history item indices must be in [0, {n_items}), got "
                            f"{int(cols.min())}..{int(cols.max())}")
        x = sp.csr_matrix((np.ones(cols.size, np.float32),
                           (np.repeat(np.arange(len(lens)), lens), cols)),
                          shape=(len(lens), n_items))
        x.sum_duplicates()
        x.data[:] = 1.0
        return x

    def with_query(self, config: Config) -> Self:
        """This fit with ``config``, which differs from its own only in ``query_params``
        (no second fit; the two share the fitted state)."""
        raise NotImplementedError(f"{type(self).__name__} has no query-only settings")

    def __repr__(self) -> str:
        state = "fitted" if self._seen is not None else "unfitted"
        return f"{type(self).__name__}({self.config!r}, {state})"


class MostPop(_Baseline):
    """Recommend the items the most users interacted with in training (the same list for
    all; a user who interacted with an item several times counts once, where
    ``TwoTower.item_popularity`` counts every interaction).

    Example:
        >>> from twotower import Interactions
        >>> x = Interactions.from_ids([1, 1, 2, 3], [10, 20, 10, 30])
        >>> MostPop().fit(x).recommend(np.array([1]), k=2)[1].tolist()
        [[0, 1]]
    """

    config_cls = MostPopConfig
    name = "MostPop"

    def _fit(self, x: sp.csr_matrix) -> None:
        self._popularity = np.asarray(x.sum(axis=0), dtype=np.float32).ravel()
        n = len(self._popularity)  # most popular first, ties by the lower index
        self._order = np.lexsort((np.arange(n), -self._popularity))

    def _score(self, x: sp.csr_matrix) -> np.ndarray:
        return np.broadcast_to(self._popularity, (x.shape[0], len(self._popularity)))

    def _rank(self, x: sp.csr_matrix, k: int, exclude: Sequence[np.ndarray] | None
              ) -> tuple[np.ndarray, np.ndarray]:
        """``topk_excluding`` of the shared list without scoring the whole catalogue per
        user: each row keeps the first k of the ``k + len(its exclusions)`` most popular
        items that it does not exclude (the same lists; O(b x (k + seen)), not
        O(b x n_items), which took minutes on 100k items)."""
        k = _check_k(k)
        b, n = x.shape[0], len(self._popularity)
        if exclude is not None and len(exclude) != b:
            raise DataError(f"`exclude` has {len(exclude)} lists for {b} queries")
        lens = (np.zeros(b, dtype=np.int64) if exclude is None else
                np.fromiter((len(e) for e in exclude), dtype=np.int64, count=b))
        m = min(n, k + int(lens.max(initial=0)))
        head = self._order[:m]
        at = np.full(n, -1, dtype=np.int64)  # each item's place in the head, or -1
        at[head] = np.arange(m)
        out_s = np.full((b, k), -np.inf, dtype=np.float32)
        out_i = np.full((b, k), -1, dtype=np.int64)
        for lo in range(0, b, SCORE_BATCH_SIZE):
            hi = min(b, lo + SCORE_BATCH_SIZE)
            keep = np.ones((hi - lo, m), dtype=bool)
            if exclude is not None and lens[lo:hi].sum():
                cols = np.concatenate([np.asarray(e, dtype=np.int64).ravel()
                                       for e in exclude[lo:hi]])
                rows = np.repeat(np.arange(hi - lo), lens[lo:hi])
                ok = (cols >= 0) & (cols < n)  # an unknown index cannot be recommended
                pos = at[cols[ok]]
                keep[rows[ok][pos >= 0], pos[pos >= 0]] = False
            rank = np.cumsum(keep, axis=1)
            r, c = np.nonzero(keep & (rank <= k))
            out_i[lo + r, rank[r, c] - 1] = head[c]
            out_s[lo + r, rank[r, c] - 1] = self._popularity[head[c]]
        return out_s, out_i


class ItemKNN(_Baseline):
    """Item-based nearest neighbours on the binary matrix (cosine similarity).

    ``S[i, j] = |U_i ∩ U_j| / (sqrt(|U_i| |U_j|) + shrink)``, diagonal zero; for each
    target item ``j`` only its ``neighbors`` most similar items ``i`` are kept (ties to the
    lower index ``i``); a user's score for ``j`` is ``sum_{i in history} S[i, j]``.

    ``S`` is a sparse ``[n_items, n_items]`` float32 CSR matrix of at most ``neighbors``
    entries per target item: the fit computes ``XᵀX`` a block of target columns at a time
    (about ``KNN_BLOCK_ENTRIES`` co-occurrence entries) and keeps each column's top
    ``neighbors`` before the next block, and ``recommend`` ranks a block of users at a
    time on their sparse scores (about ``KNN_BLOCK_ENTRIES`` of them), or on a dense
    ``[rows, n_items]`` slab of that size where most items get a score
    (``KNN_DENSE_SHARE``), so memory grows with ``nnz(S)`` and the block, never with
    ``n_items²``. The lists are those of ranking every item's score
    (``topk_excluding``): best first, ties and the zero-score items after the scored ones
    by the lower index.

    Example:
        >>> from twotower import Interactions
        >>> x = Interactions.from_ids([1, 1, 2, 2, 3], [10, 20, 10, 20, 10])
        >>> ItemKNN(neighbors=5).fit(x).recommend(np.array([2]), k=1,
        ...                                        exclude=[np.array([0])])[1].tolist()
        [[1]]
    """

    config_cls = ItemKNNConfig
    name = "ItemKNN"

    def _fit(self, x: sp.csr_matrix) -> None:
        n = x.shape[1]
        x = x.astype(np.float32)
        xt = x.T.tocsr()  # [n_items, n_users]: row j holds the users of item j
        norms = np.sqrt(np.diff(xt.indptr).astype(np.float32))  # sqrt(diag(XᵀX))
        shrink = np.float32(self.config.shrink)
        nb = self.config.neighbors
        prune = 0 < nb < n - 1
        # entries of column j of XᵀX: at most the summed history lengths of j's users
        row_len = np.diff(x.indptr)
        bound = np.minimum(np.bincount(x.indices, weights=np.repeat(row_len, row_len),
                                       minlength=n), n)
        cum = np.concatenate([[0.0], np.cumsum(bound)])
        srcs, tgts, vals = [], [], []
        lo = 0
        while lo < n:
            hi = int(np.searchsorted(cum, cum[lo] + KNN_BLOCK_ENTRIES, side="right")) - 1
            hi = min(max(hi, lo + 1), n)
            g = xt[lo:hi] @ x  # [hi - lo, n_items]: co-occurrences of targets lo..hi-1
            tgt = np.repeat(np.arange(lo, hi, dtype=np.int64), np.diff(g.indptr))
            src = g.indices.astype(np.int64)
            off = src != tgt  # no item its own neighbour
            tgt, src, cnt = tgt[off], src[off], g.data[off]
            del g
            # the float32 operations of the dense formula, entry by entry
            val = cnt / (norms[src] * norms[tgt] + shrink + 1e-12)
            if prune:
                tgt, src, val = _top_per_group(tgt, src, val, nb)
            srcs.append(src.astype(np.int32))
            tgts.append(tgt.astype(np.int32))
            vals.append(val.astype(np.float32))
            lo = hi
        self._sim = sp.csr_matrix((np.concatenate(vals) if vals else np.zeros(0, np.float32),
                                   (np.concatenate(srcs) if srcs else np.zeros(0, np.int32),
                                    np.concatenate(tgts) if tgts else np.zeros(0, np.int32))),
                                  shape=(n, n))
        # per source item, its kept entries: a user's count of candidate scores is at most
        # the sum over their history (sizes the scoring blocks)
        self._row_nnz = np.diff(self._sim.indptr).astype(np.float64)

    def _rank(self, x: sp.csr_matrix, k: int, exclude: Sequence[np.ndarray] | None
              ) -> tuple[np.ndarray, np.ndarray]:
        k = _check_k(k)
        b, n = x.shape[0], self._sim.shape[1]
        if exclude is not None and len(exclude) != b:
            raise DataError(f"`exclude` has {len(exclude)} lists for {b} queries")
        out_s = np.full((b, k), -np.inf, dtype=np.float32)
        out_i = np.full((b, k), -1, dtype=np.int64)
        x = x.tocsr().astype(np.float32)
        bound = np.minimum(x @ self._row_nnz, n) + k
        cum = np.concatenate([[0.0], np.cumsum(bound)])
        lo = 0
        while lo < b:
            hi = int(np.searchsorted(cum, cum[lo] + KNN_BLOCK_ENTRIES, side="right")) - 1
            hi = min(max(hi, lo + 1), b, lo + SCORE_BATCH_SIZE)
            # where most of a block's items get a score (a small or dense catalogue), one
            # dense [rows, n_items] slab ranks faster than the sparse scores (the same lists)
            dense = cum[hi] - cum[lo] >= KNN_DENSE_SHARE * (hi - lo) * n
            if dense:
                hi = min(hi, lo + max(1, KNN_BLOCK_ENTRIES // max(n, 1)))
            ex = None if exclude is None else exclude[lo:hi]
            p = x[lo:hi] @ self._sim
            out_s[lo:hi], out_i[lo:hi] = (topk_excluding(p.toarray(), k, ex) if dense
                                          else _topk_sparse(p, k, ex))
            lo = hi
        return out_s, out_i


#: Co-occurrence entries ``ItemKNN``'s fit computes at once (a block of target items'
#: columns of ``XᵀX``), and candidate scores its ``recommend`` ranks at once (a block of
#: users): its memory beyond the kept similarity (4M entries, about 60 bytes each while a
#: block is worked on: some 250 MB).
KNN_BLOCK_ENTRIES = 1 << 22
#: ``ItemKNN.recommend`` ranks a block of users on a dense ``[rows, n_items]`` slab (at most
#: ``KNN_BLOCK_ENTRIES`` scores) when their candidate items (bounded by their histories'
#: kept similarity entries) are at least this share of it, else on the sparse scores.
KNN_DENSE_SHARE = 0.5


def _desc_key(group: np.ndarray, val: np.ndarray) -> np.ndarray:
    """int64 keys ordering by ``group`` ascending, then ``val`` (float32, >= 0) descending:
    a non-negative float's bits order as the float does."""
    bits = np.ascontiguousarray(val, dtype=np.float32).view(np.int32).astype(np.int64)
    return (group.astype(np.int64) << 32) | (0x7FFFFFFF - bits)


def _group_rank(group: np.ndarray) -> np.ndarray:
    """Each entry's place in its run of equal values of a sorted ``group`` (0, 1, ...)."""
    if not len(group):
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    return np.arange(len(group)) - np.repeat(starts, np.diff(np.r_[starts, len(group)]))


def _floors(starts: np.ndarray, lens: np.ndarray, val: np.ndarray, keep: Any
            ) -> np.ndarray:
    """Per group (the entries ``starts[g]`` to ``starts[g] + lens[g]`` of ``val``), a value
    at most its ``keep``-th largest (``keep``: one for all or one per group), -inf where the
    group is no longer than ``2 * keep``; O(entries), so that only the entries at or above
    it need sorting. The group is cut into ``keep`` runs: the smallest of their maxima
    (``keep`` distinct entries) is at most the ``keep``-th largest."""
    keep = np.broadcast_to(np.asarray(keep, dtype=np.int64), lens.shape)
    floor = np.full(len(lens), -np.inf, dtype=np.float32)
    big = np.flatnonzero(lens > 2 * keep)
    if not big.size:
        return floor
    runs = keep[big]
    first = np.cumsum(runs) - runs
    seg_of = np.repeat(np.arange(len(big)), runs)
    run_start = (starts[big][seg_of]
                 + (lens[big] // runs)[seg_of] * (np.arange(len(seg_of)) - first[seg_of]))
    ends = (starts + lens)[big]
    ends = ends[ends < len(val)]  # a group's last run stops at its end, not the next run
    # ends first, so that where an end is also the next run's start the run's segment is
    # the later (non-empty) one of the two
    marks = np.r_[ends, run_start]
    order = np.argsort(marks, kind="stable")
    seg_max = np.maximum.reduceat(val, marks[order])
    floor[big] = np.minimum.reduceat(seg_max[order >= len(ends)], first)
    return floor


def _above_floor(group: np.ndarray, val: np.ndarray, keep: int) -> np.ndarray:
    """A mask that keeps every entry that can be among the ``keep`` best of its group
    (``_floors``), and drops most others. ``group`` ascending."""
    n = len(group)
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    lens = np.diff(np.r_[starts, n])
    return val >= np.repeat(_floors(starts, lens, val, keep), lens)


def _top_per_group(group: np.ndarray, idx: np.ndarray, val: np.ndarray, keep: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``keep`` best entries of each group, best first (``val`` >= 0 descending, ties
    to the lower ``idx``), groups ascending. ``group`` must come ascending (grouped).

    ``_above_floor`` drops the entries that cannot make a group's best; one sort by
    (group, value) of the rest; then the exact order (ties by ``idx``) of the few that can:
    a group's first ``keep`` and any tied with the ``keep``-th (sorting every entry by
    index as well took most of the time)."""
    if not len(group):
        return group, idx, val
    ok = _above_floor(group, val, keep)
    if not ok.all():
        group, idx, val = group[ok], idx[ok], val[ok]
    base = group[0]
    order = np.argsort(_desc_key(group, val), kind="stable")  # timsort: rows come grouped
    g_s, v_s = group[order], val[order]
    rank = _group_rank(g_s)
    kth = np.full(int(g_s[-1] - base) + 1, -np.inf, dtype=np.float32)
    last = rank == keep - 1
    kth[g_s[last] - base] = v_s[last]
    sub = order[(rank < keep) | (v_s == kth[g_s - base])]
    sub = sub[np.lexsort((idx[sub], -val[sub], group[sub]))]
    sub = sub[_group_rank(group[sub]) < keep]
    return group[sub], idx[sub], val[sub]


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique`` of an int array by one sort (numpy 2's hashing ``unique`` took seconds
    where this takes milliseconds)."""
    a = np.sort(a)
    return a[np.r_[True, a[1:] != a[:-1]]] if len(a) else a


def _topk_sparse(scores: sp.csr_matrix, k: int, exclude: Sequence[np.ndarray] | None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``topk_excluding`` of non-negative sparse scores without a dense row: the stored
    positive scores best first (ties to the lower index), then the zero-score items by
    index, never an excluded one; ``-1`` / ``-inf`` past the items that qualify.

    Args:
        scores: ``[b, n_items]`` CSR of scores >= 0 (absent entries score 0).
        k: list length, at least 1.
        exclude: ``b`` arrays of item indices to leave out, or None.

    Returns:
        scores ``[b, k]`` float32 and ids ``[b, k]`` int64, as ``topk_excluding``'s.
    """
    b, n = scores.shape
    scores = scores.tocsr()
    elens = (np.zeros(b, dtype=np.int64) if exclude is None else
             np.fromiter((len(e) for e in exclude), dtype=np.int64, count=b))
    # only entries that can be among a row's best k once its exclusions are gone: at or
    # above its (k + len(exclusions))-th largest score (a stored zero ranks with the absent
    # ones, by index)
    lens = np.diff(scores.indptr)
    vals = scores.data
    floor = _floors(scores.indptr[:-1], lens, vals, k + elens)
    sel = np.flatnonzero((vals >= np.repeat(floor, lens)) & (vals > 0))
    rows = np.searchsorted(scores.indptr, sel, side="right") - 1
    cols = scores.indices[sel].astype(np.int64)
    vals = vals[sel].astype(np.float32)
    if exclude is not None and elens.sum():
        ecols = np.concatenate([np.asarray(e, dtype=np.int64).ravel() for e in exclude])
        erows = np.repeat(np.arange(b, dtype=np.int64), elens)
        ok = (ecols >= 0) & (ecols < n)  # an unknown index cannot be recommended anyway
        ekey = _sorted_unique(erows[ok] * n + ecols[ok])
    else:
        ekey = np.zeros(0, dtype=np.int64)
    key = rows * n + cols
    if ekey.size:  # (np.isin sorted the candidates too: seconds per block)
        keep = ekey[np.minimum(np.searchsorted(ekey, key), len(ekey) - 1)] != key
        rows, cols, vals, key = rows[keep], cols[keep], vals[keep], key[keep]
    out_s = np.full((b, k), -np.inf, dtype=np.float32)
    out_i = np.full((b, k), -1, dtype=np.int64)
    r, c, v = _top_per_group(rows, cols, vals, k)
    place = _group_rank(r)
    out_i[r, place] = c
    out_s[r, place] = v
    # rows with fewer than k scored items: the lowest-indexed items neither scored nor
    # excluded, score 0. The q-th integer missing from a sorted set {u_0 < u_1 < ...} is
    # q + #{t : u_t - t <= q}.
    have = np.bincount(rows, minlength=b)
    short = np.flatnonzero(have < k)
    if short.size:
        # sorted (row, item) keys of the short rows' scored or excluded items
        is_short = have < k
        taken = _sorted_unique(np.concatenate([key[is_short[key // n]],
                                               ekey[is_short[ekey // n]]]))
        t_rows = taken // n
        first = np.searchsorted(t_rows, np.arange(b + 1), side="left")
        gap = taken % n - (np.arange(len(taken)) - first[t_rows])  # u_t - t, per row
        comb = t_rows * (n + 1) + gap  # ascending: rows, then gap (non-decreasing in a row)
        n_taken = first[1:] - first[:-1]
        need = np.minimum(k - have[short], n - n_taken[short])
        need = np.maximum(need, 0)
        fr = np.repeat(short, need)
        q = np.arange(len(fr)) - np.repeat(np.cumsum(need) - need, need)
        m = q + (np.searchsorted(comb, fr * (n + 1) + q, side="right") - first[fr])
        at = np.minimum(have[fr], k) + q
        out_i[fr, at] = m
        out_s[fr, at] = 0.0
    return out_s, out_i


def ease_weights(gram: np.ndarray, lambda_: float, dtype: Any = np.float64) -> np.ndarray:
    """EASE's ``B`` (float32) from a dense Gram matrix ``XᵀX``: ``P = (XᵀX + λI)⁻¹`` by
    Cholesky (LAPACK ``potrf``/``potri``, in ``dtype``), ``B = I - P / diag(P)``."""
    from scipy.linalg import lapack
    g = np.array(gram, dtype=dtype, order="F")  # a copy: potrf/potri overwrite it
    g[np.diag_indices_from(g)] += lambda_
    potrf, potri = ((lapack.dpotrf, lapack.dpotri) if g.dtype == np.float64
                    else (lapack.spotrf, lapack.spotri))
    c, info = potrf(g, lower=False, overwrite_a=True)
    if info == 0:
        c, info = potri(c, lower=False, overwrite_c=True)
    if info != 0:
        raise DataError(f"EASE: the Gram matrix plus lambda = {lambda_:g} is not positive "
                        f"definite (LAPACK info {info}); use a larger lambda")
    p = np.triu(c) + np.triu(c, 1).T
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


class EASE(_Baseline):
    """Embarrassingly Shallow Autoencoder (Steck, 2019), closed form.

    ``P = (XᵀX + λI)⁻¹``, ``B = I - P · diag(1 / diag(P))`` (so ``diag(B) = 0``); a user's
    scores are ``x @ B``.

    Example:
        >>> from twotower import Interactions
        >>> x = Interactions.from_ids([1, 1, 2, 2, 3], [10, 20, 10, 20, 10])
        >>> EASE(lambda_=1.0).fit(x).recommend(np.array([2]), k=1,
        ...                                    exclude=[np.array([0])])[1].tolist()
        [[1]]
    """

    config_cls = EASEConfig
    name = "EASE"
    query_params = ("half_life", "floor")

    def fit(self, train: Interactions) -> Self:
        """Fit ``B`` on the binary matrix of ``train``; a recency-weighted query
        (``half_life``, ``floor``) also reads the order of each user's items (timestamps,
        else row order)."""
        super().fit(train)
        # each user's items by recency: sorted once when a weighted query first needs them,
        # for this fit and every ``with_query`` copy of it (the dict is shared)
        self._order = {"train": train}
        self._query = self._weighted_rows()
        return self

    def _weighted_rows(self) -> sp.csr_matrix | None:
        """Every training user's recency-weighted history row; None: the binary rows.
        (Every item of the history counts; the default model's query keeps the latest
        ``history_length``, 1,000 by default.)"""
        if not self.config.weighted:
            return None
        if "ranks" not in self._order:
            self._order["ranks"] = self._order["train"].recency_ranks()
        users, items, rank = self._order["ranks"]
        return sp.csr_matrix((self.config.weights(rank), (users, items)),
                             shape=self._require_fitted().shape)

    def with_query(self, config: Config) -> Self:
        def fit_settings(c: Config) -> dict[str, Any]:
            return {k: v for k, v in c.to_dict().items() if k not in self.query_params}
        if not isinstance(config, EASEConfig) or fit_settings(config) != fit_settings(
                self.config):
            raise ConfigError(f"EASE.with_query: only {', '.join(self.query_params)} may "
                              f"change (this fit's lambda_ is {self.config.lambda_:g})")
        self._require_fitted()
        other = copy.copy(self)
        other.config = config
        other._query = other._weighted_rows()
        return other

    def recommend(self, users: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        m = self._require_fitted()
        q = m if self._query is None else self._query
        return self._rank(q[self._check_users(users)], k, exclude)

    def _history_rows(self, histories: Sequence[np.ndarray]) -> sp.csr_matrix:
        x = super()._history_rows(histories)  # checked
        if not self.config.weighted:
            return x
        rows, cols, rank = [], [], []
        for r, h in enumerate(histories):
            recent = np.asarray(h, dtype=np.int64).ravel()[::-1]  # the latest first
            ids, first = np.unique(recent, return_index=True)  # repeats: the latest counts
            rows.append(np.full(len(ids), r))
            cols.append(ids)
            rank.append(np.argsort(np.argsort(first)))  # 0: the latest distinct item
        if not rows:
            return x
        return sp.csr_matrix((self.config.weights(np.concatenate(rank)),
                              (np.concatenate(rows), np.concatenate(cols))), shape=x.shape)

    def _fit(self, x: sp.csr_matrix) -> None:
        self._weights = ease_weights((x.T @ x).toarray(), self.config.lambda_, np.float64)

    def _score(self, x: sp.csr_matrix) -> np.ndarray:
        return np.asarray(x @ self._weights)


BASELINES: dict[str, type[_Baseline]] = {c.name: c for c in (MostPop, ItemKNN, EASE)}

#: The settings ``twotower evaluate --baselines`` and ``benchmarks/quality.py`` tune the
#: baselines over (one grid, so the CLI's baselines are the README's). EASE's lambda starts
#: at 20: logs of item sequences want a weak prior (the best was about 20 on the
#: session-shaped log of ``benchmarks/sessions.py``; MovieLens 100k's is 200-500).
BASELINE_GRIDS: dict[str, dict[str, list[float]]] = {
    "ItemKNN": {"neighbors": [50, 100, 200], "shrink": [0.0, 10.0]},
    "EASE": {"lambda_": [20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0]},
}

#: The ItemKNN grid ``twotower evaluate --baselines`` tunes above
#: ``evaluation.run.DENSE_BASELINE_MAX_ITEMS`` items (EASE is skipped there): each setting
#: is a fit on the validation split's train part and a scoring of its users (the two took
#: 35 s on 111,706 items and 1M rows, a shared host: ``benchmarks/probes/knn_large.py``,
#: ``results/probe-knn-large-20261207-001934.txt``).
LARGE_KNN_GRID: dict[str, list[float]] = {"neighbors": [100], "shrink": [0.0, 10.0]}


def recency_settings(half_lives: Sequence[float] | None = None,
                     floors: Sequence[float] | None = None) -> list[tuple[float, float]]:
    """The distinct ``(half_life, floor)`` query weights of these half-lives and floors,
    the unweighted ``(0, 1)`` first (so it wins ties), as the default model's EASE part
    orders them (``None``: its ``ease_half_lives`` and ``ease_floors`` defaults)."""
    from twotower.models.config import ModelConfig
    half_lives = ModelConfig.ease_half_lives if half_lives is None else half_lives
    floors = ModelConfig.ease_floors if floors is None else floors
    return sorted({(float(h), float(f)) if h and f < 1.0 else (0.0, 1.0)
                   for h in half_lives for f in floors})


def tune_ease(train: Interactions, seed: int = 0, *, split: str = "random",
              recency: Sequence[tuple[float, float]] = (),
              lambdas: Sequence[float] | None = None,
              stage: Callable[[str], None] | None = None
              ) -> tuple[EASEConfig, EASEConfig | None]:
    """The best plain EASE (binary query) and, with ``recency`` settings, the best EASE
    with a recency-weighted query (``EASE+recency``), from one ``tune`` over every lambda
    (``BASELINE_GRIDS``) and setting: one fit per lambda, as many validation scorings as
    settings. Chosen by recall@10 + ndcg@10, ties (and NaN: nothing to score) to the first:
    the unweighted query at the first lambda given. On a temporal split that is
    ``len(lambdas) * len(settings)`` validation scorings (7 x 13 = 91 by default) against
    the plain EASE's 7: more tuning time, not more fits.

    Returns:
        ``(plain, weighted)``; ``weighted`` is None without ``recency``, and may itself be
        unweighted where no weighting scored better.

    Raises:
        ConfigError: ``lambdas`` given but empty.
    """
    lambdas = list(BASELINE_GRIDS["EASE"]["lambda_"] if lambdas is None else lambdas)
    if not lambdas:
        raise ConfigError("tune_ease: `lambdas` is empty (None: BASELINE_GRIDS['EASE'])")
    if not recency:
        return tune(EASE, train, {"lambda_": lambdas}, seed, split=split,
                    stage=stage).best_config, None
    # each distinct query once, the plain one first (it wins ties)
    settings = [(0.0, 1.0)] + [(float(h), float(f)) for h, f in dict.fromkeys(recency)
                               if h and f < 1.0]
    grid = [{"lambda_": lam, "half_life": h, "floor": f} for lam in lambdas
            for h, f in settings]
    res = tune(EASE, train, grid, seed, split=split, stage=stage)
    if not res.results:  # nothing to validate on: the first setting, plain
        return res.best_config, res.best_config
    plain = best = None
    plain_v = best_v = -np.inf
    for row in res.results:
        cfg = EASEConfig.from_dict(row["config"])
        value = row["metrics"]["recall@10"] + row["metrics"]["ndcg@10"]
        best = best or cfg
        if value > best_v:
            best, best_v = cfg, value
        if not cfg.weighted:
            plain = plain or cfg
            if value > plain_v:
                plain, plain_v = cfg, value
    return plain, best


class TuneResult(NamedTuple):
    """``best_config`` and one row per grid point: ``{"config": {...}, "metrics": {...}}``."""

    best_config: Config
    results: list[dict[str, Any]]


def _grid_points(grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]
                 ) -> list[dict[str, Any]]:
    if isinstance(grid, Mapping):
        names = list(grid)
        values = [list(grid[n]) if isinstance(grid[n], (list, tuple)) else [grid[n]]
                  for n in names]
        return [dict(zip(names, combo)) for combo in itertools.product(*values)]
    return [dict(g) for g in grid]


def tune(baseline_cls: type[_Baseline], train: Interactions,
         grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]] | None = None,
         seed: int = 0, *, validation_fraction: float = 0.2, split: str = "random",
         metric: str | Sequence[str] = ("recall@10", "ndcg@10"), ks: Sequence[int] = (10,),
         stage: Callable[[str], None] | None = None) -> TuneResult:
    """Pick hyperparameters by ``metric`` on a validation split carved from ``train`` only.

    Args:
        baseline_cls: ``MostPop``, ``ItemKNN`` or ``EASE`` (any ``_Baseline`` subclass).
        train: the training interactions; the test set is never touched.
        grid: ``{"lambda_": [100, 500]}`` (all combinations) or a list of config dicts;
            None or empty tunes nothing (default config).
        seed: seed of the validation split (``random`` kind).
        validation_fraction: share of ``train`` rows held out for validation.
        split: ``"random"`` (row-level, seeded) or ``"temporal"`` (each user's latest).
        metric: the key of ``recommend_and_evaluate`` to maximise, or several whose sum is;
            ties keep the first. The default, recall@10 + NDCG@10, is the rule the default
            model's own EASE part is tuned by (``models.linear``): the baselines and the
            model are chosen alike.
        ks: cut-offs evaluated on the validation split (must include ``metric``'s K).
        stage: told which setting is being fitted and scored as each starts (progress:
            an EASE fit inverts an ``[n_items, n_items]`` matrix, minutes at 20k items).

    Returns:
        ``TuneResult(best_config, results)``.

    Example:
        >>> best, rows = tune(EASE, train, {"lambda_": [100.0, 500.0]}, seed=0)  # doctest: +SKIP
    """
    from twotower.evaluation.metrics import recommend_and_evaluate

    points = _grid_points(grid or {})
    if not points:
        points = [{}]
    configs = [baseline_cls.config_cls.from_dict(p) for p in points]
    # checked before any fit (one EASE fit takes minutes at 20k items)
    keys = [metric] if isinstance(metric, str) else list(metric)
    from twotower.evaluation.metrics import METRICS, _check_ks
    known = [f"{name}@{k}" for k in _check_ks(ks) for name in METRICS]
    missing = [k for k in keys if k not in known]
    if missing or not keys:
        raise ConfigError(f"`metric` {missing[0] if missing else metric!r} is not among "
                          f"{sorted(known)} (the metrics at `ks` {tuple(ks)})")
    _check_fraction(validation_fraction, "validation_fraction")
    if split == "random":
        parts = random_split(train, validation_fraction, seed)
    elif split == "temporal":
        parts = temporal_split(train, validation_fraction)
    else:
        raise ConfigError(f"`split` must be 'random' or 'temporal', got {split!r}")
    from twotower.evaluation.metrics import warm_part
    # validation users whose every row fell in validation cannot be scored (left out by
    # recommend_and_evaluate); none left (a log of one-row users): the first config
    held = warm_part(parts.train, parts.test)
    if not len(held):
        return TuneResult(configs[0], [])
    results: list[dict[str, Any]] = []
    best_i, best_v = 0, -np.inf
    # settings that differ only in what the query reads share one fit (the last one kept)
    fitted: tuple[dict[str, Any], _Baseline] | None = None
    for i, cfg in enumerate(configs):
        if stage is not None:
            shown = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in points[i].items())
            stage(f"setting {i + 1} of {len(configs)}" + (f" ({shown})" if shown else ""))
        fit_key = {k: v for k, v in cfg.to_dict().items()
                   if k not in baseline_cls.query_params}
        if fitted is not None and fitted[0] == fit_key:
            rec = fitted[1].with_query(cfg)
        else:
            rec = fitted = None  # one fit in memory at a time: the last one freed first
            rec = baseline_cls(cfg).fit(parts.train)
            if baseline_cls.query_params:
                fitted = (fit_key, rec)
        metrics = recommend_and_evaluate(rec, parts.train, held, ks)
        value = float(sum(metrics[k] for k in keys))
        results.append({"config": cfg.to_dict(), "metrics": metrics})
        if value > best_v:
            best_i, best_v = i, value
    return TuneResult(configs[best_i], results)


__all__ = ["BASELINES", "BASELINE_GRIDS", "EASE", "EASEConfig", "ItemKNN", "ItemKNNConfig", "MostPop",
           "MostPopConfig", "SCORE_BATCH_SIZE", "TuneResult", "recency_settings",
           "topk_excluding", "tune", "tune_ease"]
