"""Top-K ranking metrics and the evaluation protocol shared by every recommender.

Definitions (binary relevance; ``R_u`` = the user's relevant test items, ``L_u@K`` = the
first ``K`` entries of their list, ``-1`` entries are padding and never hit):

- ``recall@K``  = ``|L_u@K ∩ R_u| / |R_u|`` (the standard definition: it cannot reach 1
  when ``|R_u| > K``).
- ``ndcg@K``    = DCG / ideal DCG, ``DCG = sum_{hit at rank r (0-based)} 1 / log2(r + 2)``,
  ideal DCG over ``min(K, |R_u|)`` hits at the top.
- ``hit_rate@K`` = 1 if any of ``L_u@K`` is relevant, else 0.
- ``mrr@K``     = ``1 / (rank + 1)`` of the first hit within ``K`` (0 if none).
- ``coverage@K`` = distinct items in the evaluated users' ``L_u@K`` / ``n_items``.

Users with no relevant items are left out of every average (and of coverage); ``users`` in
the result counts those evaluated. An item repeated within one list counts at its first
position only. Everything is vectorised: no per-user Python loop in the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp

from twotower.data.interactions import Interactions
from twotower.errors import ConfigError, DataError

#: Metric names, in the order they appear in results and tables.
METRICS = ("recall", "ndcg", "hit_rate", "mrr", "coverage")

Truth = sp.spmatrix | sp.sparray | Sequence[np.ndarray]


@runtime_checkable
class Recommender(Protocol):
    """What ``recommend_and_evaluate`` needs; baselines and ``TwoTower`` satisfy it.

    ``recommend`` returns scores ``[b, k]`` float32 and item indices ``[b, k]`` int64, best
    first, padded with ``-inf`` / ``-1``; items in ``exclude[row]`` never appear in ``row``.
    """

    def fit(self, train: Interactions) -> Recommender: ...

    def recommend(self, users: np.ndarray, k: int,
                  exclude: Sequence[np.ndarray] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]: ...


@runtime_checkable
class HistoryRecommender(Recommender, Protocol):
    """A recommender that also serves users absent from training, from their item history.

    ``histories[row]`` holds item indices, oldest first.
    """

    def recommend_from_history(self, histories: Sequence[np.ndarray], k: int,
                               exclude: Sequence[np.ndarray] | None = None
                               ) -> tuple[np.ndarray, np.ndarray]: ...


def _check_ks(ks: Any, width: int | None = None) -> tuple[int, ...]:
    if isinstance(ks, (int, np.integer)):
        ks = (ks,)
    try:
        ks = tuple(ks)  # (read twice below: a generator's values once)
        # int() of 1.7 or True is 1: such a K is refused, not scored as K = 1
        if any(isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer))
               for k in ks):
            raise TypeError
        out = tuple(sorted({int(k) for k in ks}))
    except (TypeError, ValueError):
        raise ConfigError(f"`ks` must be positive integers, got {ks!r}") from None
    if not out or out[0] < 1:
        raise ConfigError(f"`ks` must be non-empty positive integers, got {ks!r}")
    if width is not None and out[-1] > width:
        raise ConfigError(f"`ks` asks for K={out[-1]} but the lists have only {width} columns; "
                          f"request at least max(ks) items per user")
    return out


def as_truth_csr(truth: Truth, n_items: int | None = None) -> sp.csr_matrix:
    """Ground truth as a binary ``[n_users_eval, n_items]`` CSR with sorted, unique indices.

    Args:
        truth: a scipy sparse matrix (any stored non-zero is relevant) or one int array of
            relevant item indices per user.
        n_items: catalogue size; required with a list of arrays (a guess from the largest
            relevant index would refuse listed items beyond it and skew coverage).

    Raises:
        DataError: list truth without ``n_items``, a row that is not integers (a float or
            bool row, e.g. a dense 0/1 matrix), indices outside ``[0, n_items)``, or a
            sparse matrix whose column count is not ``n_items``.
    """
    if sp.issparse(truth):
        m = sp.csr_matrix(truth, dtype=np.float32, copy=True)
        m.eliminate_zeros()
        m.sum_duplicates()
        m.data[:] = 1.0
        if n_items is not None and m.shape[1] != n_items:
            raise DataError(f"truth has {m.shape[1]} columns but n_items is {n_items}")
        return m
    rows = [np.asarray(t) for t in truth]
    for u, r in enumerate(rows):
        if r.dtype.kind == "O" and all(isinstance(v, int | np.integer)
                                       and not isinstance(v, bool | np.bool_)
                                       for v in r.ravel()):
            rows[u] = r = r.astype(np.int64)  # integers held as objects: read as before
        # an item index is an integer: float or bool rows were cast (1.9 -> item 1), and
        # a dense 0/1 relevance row read as the item indices 0 and 1
        if r.size and r.dtype.kind not in "iu":
            raise DataError(f"truth row {u} must hold integer item indices, got dtype "
                            f"{r.dtype}; for a dense [users, n_items] relevance matrix pass "
                            "scipy.sparse.csr_matrix(matrix)")
    if (isinstance(truth, np.ndarray) and truth.ndim == 2 and n_items is not None
            and n_items > 2 and truth.shape[1] == n_items and truth.size
            and truth.min() >= 0 and truth.max() <= 1):
        # rows of indices as wide as the catalogue holding only items 0 and 1: a dense
        # relevance matrix of integers, which read as indices scored items 0 and 1
        raise DataError(f"truth is a [{truth.shape[0]}, {n_items}] array of 0s and 1s: a "
                        "dense relevance matrix, not item indices per user; pass "
                        "scipy.sparse.csr_matrix(matrix)")
    rows = [r.astype(np.int64).ravel() for r in rows]
    lens = np.array([len(r) for r in rows], dtype=np.int64)
    cols = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    if n_items is None:
        raise DataError("truth given as one array of item indices per user needs `n_items` "
                        "(the catalogue size), or pass a sparse [users, n_items] matrix")
    if cols.size and (cols.min() < 0 or cols.max() >= n_items):
        raise DataError(f"truth item indices must be in [0, {n_items}), got "
                        f"{int(cols.min())}..{int(cols.max())}")
    m = sp.csr_matrix((np.ones(cols.size, dtype=np.float32),
                       (np.repeat(np.arange(len(rows)), lens), cols)),
                      shape=(len(rows), n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def hit_matrix(top_ids: np.ndarray, truth: Truth, n_items: int | None = None) -> np.ndarray:
    """``[n, W]`` bool: ``top_ids[u, r]`` is relevant to user ``u`` (first occurrence only).

    Args:
        top_ids: ``[n, W]`` int item indices, best first, ``-1`` = padding.
        truth: relevant items, rows aligned with ``top_ids`` (see ``as_truth_csr``).
        n_items: catalogue size (default: a sparse ``truth``'s column count; required
            when ``truth`` is a list of arrays).
    """
    top = np.asarray(top_ids)
    if top.ndim != 2:
        raise DataError(f"`top_ids` must be 2-D [n_users, K], got shape {top.shape}")
    if top.dtype.kind not in "iu":
        raise DataError(f"`top_ids` must hold integer item indices, got dtype {top.dtype}")
    top = top.astype(np.int64, copy=False)
    m = as_truth_csr(truth, n_items)
    n, width = top.shape
    if m.shape[0] != n:
        raise DataError(f"`top_ids` has {n} rows but truth has {m.shape[0]}")
    n_cols = m.shape[1]
    if top.size and (top.min() < -1 or top.max() >= n_cols):
        raise DataError(f"`top_ids` must be item indices in [0, {n_cols}) or -1 (padding), "
                        f"got values {int(top.min())}..{int(top.max())}")
    # One sorted key per (row, relevant item); membership by binary search.
    keys = np.repeat(np.arange(n, dtype=np.int64), np.diff(m.indptr)) * n_cols + m.indices
    query = np.arange(n, dtype=np.int64)[:, None] * n_cols + top
    if keys.size == 0:
        return np.zeros((n, width), dtype=bool)
    pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    hits = (keys[pos] == query) & (top >= 0)
    if width > 1:
        # A repeated item counts once, at its first position.
        order = np.argsort(top, axis=1, kind="stable")
        s = np.take_along_axis(top, order, axis=1)
        later = np.zeros_like(hits)
        np.put_along_axis(later, order[:, 1:], s[:, 1:] == s[:, :-1], axis=1)
        hits &= ~later
    return hits


def per_user_metrics(top_ids: np.ndarray, truth: Truth, ks: Sequence[int] | int = (10, 100),
                     n_items: int | None = None) -> dict[str, np.ndarray]:
    """Per-user metrics: ``{"recall@10": [n] float64, ...}`` plus ``"n_relevant"`` ``[n]``.

    Users with no relevant items get NaN. Coverage is a list-level metric and is not here.

    Args:
        top_ids: ``[n, W]`` int64 item indices, best first, ``-1`` = padding.
        truth: ``[n, n_items]`` sparse matrix, or one array of relevant items per row.
        ks: cut-offs, each at most ``W``.
        n_items: catalogue size (default: a sparse ``truth``'s column count; required
            when ``truth`` is a list of arrays).
    """
    m = as_truth_csr(truth, n_items)
    hits = hit_matrix(top_ids, m)
    n, width = hits.shape
    ks = _check_ks(ks, width)
    n_rel = np.diff(m.indptr).astype(np.int64)
    has = n_rel > 0
    discount = 1.0 / np.log2(np.arange(width, dtype=np.float64) + 2.0)
    cum_hits = np.cumsum(hits, axis=1, dtype=np.float64)
    cum_dcg = np.cumsum(hits * discount, axis=1)
    ideal = np.cumsum(discount)
    any_hit = hits.any(axis=1)
    first = np.where(any_hit, np.argmax(hits, axis=1), width)
    safe_rel = np.maximum(n_rel, 1)
    out: dict[str, np.ndarray] = {"n_relevant": n_rel}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in ks:
            h = cum_hits[:, k - 1] if width else np.zeros(n)
            dcg = cum_dcg[:, k - 1] if width else np.zeros(n)
            idcg = ideal[np.minimum(k, safe_rel) - 1]
            out[f"recall@{k}"] = np.where(has, h / safe_rel, np.nan)
            out[f"ndcg@{k}"] = np.where(has, dcg / idcg, np.nan)
            out[f"hit_rate@{k}"] = np.where(has, (h > 0).astype(np.float64), np.nan)
            out[f"mrr@{k}"] = np.where(has, np.where(first < k, 1.0 / (first + 1.0), 0.0),
                                       np.nan)
    return out


def coverage(top_ids: np.ndarray, n_items: int, k: int | None = None,
             rows: np.ndarray | None = None) -> float:
    """Distinct items among ``top_ids[rows, :k]`` (``-1`` ignored) divided by ``n_items``."""
    if n_items < 1:
        raise DataError(f"`n_items` must be at least 1, got {n_items}")
    top = np.asarray(top_ids)
    if rows is not None:
        top = top[rows]
    if k is not None:
        top = top[:, :k]
    items = top[top >= 0]
    return float(np.unique(items).size / n_items)


def evaluate_topk(top_ids: np.ndarray, truth: Truth, ks: Sequence[int] | int = (10, 100),
                  n_items: int | None = None) -> dict[str, float]:
    """Mean top-K metrics over the users that have at least one relevant item.

    Args:
        top_ids: ``[n_users_eval, W]`` int64 item indices, best first, ``-1`` = padding.
        truth: ``[n_users_eval, n_items]`` scipy sparse matrix (rows aligned with
            ``top_ids``; any stored non-zero is relevant) or one array of relevant item
            indices per row.
        ks: cut-offs, each at most ``W`` (one top-100 list serves K = 10 and 100).
        n_items: catalogue size for coverage (default: a sparse ``truth``'s column
            count; required when ``truth`` is a list of arrays).

    Returns:
        ``{"recall@10", "ndcg@10", "hit_rate@10", "mrr@10", "coverage@10", ..., "users"}``;
        metrics are NaN when no user has a relevant item.

    Raises:
        DataError: shapes disagree or ids are out of range. ConfigError: bad ``ks``.

    Example:
        >>> r = evaluate_topk(np.array([[3, 1, -1]]), [np.array([1, 2])], ks=(2,), n_items=4)
        >>> round(r["recall@2"], 3), r["mrr@2"], r["users"]
        (0.5, 0.5, 1.0)
    """
    m = as_truth_csr(truth, n_items)
    n_items = m.shape[1]
    per = per_user_metrics(top_ids, m, ks)
    has = per["n_relevant"] > 0
    n_eval = int(has.sum())
    out: dict[str, float] = {}
    for k in _check_ks(ks):
        for name in METRICS:
            key = f"{name}@{k}"
            if name == "coverage":
                out[key] = coverage(top_ids, n_items, k, has) if n_eval else float("nan")
            else:
                out[key] = float(per[key][has].mean()) if n_eval else float("nan")
    out["users"] = float(n_eval)
    return out


def _time_ordered_items(x: Interactions, users: np.ndarray) -> list[np.ndarray]:
    """Each requested user's distinct items, oldest first (row order when untimed); a
    repeated item at its latest interaction, as ``Interactions.recency_ranks``, the
    history table and ``TwoTower.history_query_embeddings`` place it (at its first, a
    held-out user's recency-weighted query weighed it as old)."""
    order = (np.lexsort((np.arange(len(x)), x.timestamps, x.users))
             if x.timestamps is not None else np.lexsort((np.arange(len(x)), x.users)))
    u, it = x.users[order], x.items[order]
    bounds = np.searchsorted(u, users), np.searchsorted(u, users, side="right")
    out = []
    for lo, hi in zip(*bounds):  # building ragged inputs, not scoring
        seq = it[lo:hi]
        _, first_from_end = np.unique(seq[::-1], return_index=True)
        out.append(seq[np.sort(len(seq) - 1 - first_from_end)])
    return out


def warm_part(train: Interactions, test: Interactions) -> Interactions:
    """``test`` without its users that have no items in ``train`` (the ones
    ``recommend_and_evaluate`` leaves out); empty when every test user is new."""
    counts = np.bincount(np.asarray(train.users), minlength=max(test.n_users, train.n_users))
    return test.take(np.flatnonzero(counts[np.asarray(test.users)] > 0))


def recommend_and_evaluate(recommender: Recommender, train: Interactions, test: Interactions,
                           ks: Sequence[int] | int = (10, 100),
                           history: Interactions | None = None, *, batch_size: int = 1024,
                           return_lists: bool = False) -> dict[str, Any]:
    """Recommend for every user in ``test`` (seen items excluded) and score the lists.

    Known users (``history`` None): ``recommender.recommend(users, k, exclude=train items)``.
    Held-out users (``history`` given, e.g. ``Split.history``):
    ``recommender.recommend_from_history(histories, k, exclude=histories)``, histories
    oldest first. Test items that are also excluded (seen) cannot be recommended and are
    dropped from the ground truth. Test users with no training (or history) items are left
    out (``warm_part`` keeps the others): a recommender can only answer them with a fallback
    that is not its own (MostPop's list, as ``--fallback popular`` serves; a
    history-based method would rank from nothing, breaking ties by index), so they
    would compare fallbacks, not methods.

    Args:
        recommender: a fitted ``Recommender`` (``HistoryRecommender`` when ``history`` given).
        train: the training interactions (the seen items of known users).
        test: held-out interactions; each distinct user is evaluated once.
        ks: cut-offs; ``max(ks)`` items are requested per user (capped at the catalogue).
        history: held-out users' visible items, or None.
        batch_size: users per ``recommend`` call.
        return_lists: also return ``"users"`` indices ``[n]`` and ``"top_ids"`` ``[n, K]``
            under ``"lists"``.

    Returns:
        ``evaluate_topk``'s dict (plus ``"lists"`` when asked).

    Raises:
        DataError: empty test set, mismatched vocabularies, or malformed recommender output.
    """
    ks = _check_ks(ks)
    if len(test) == 0:
        raise DataError("test has no interactions to evaluate")
    if batch_size < 1:
        raise ConfigError(f"`batch_size` must be at least 1, got {batch_size}")
    seen_source = history if history is not None else train
    if seen_source.n_items != test.n_items or train.n_items != test.n_items:
        raise DataError(f"train/history and test disagree on the catalogue size "
                        f"({seen_source.n_items} vs {test.n_items})")
    # indices are only comparable over the same vocabularies (held-out users: the history's);
    # a model that keeps its vocabularies (TwoTower) is checked too
    users_from = "history" if history is not None else "train"
    checks = [("train", "item", train), (users_from, "user", seen_source),
              ("the model", "item", recommender)]
    if history is not None:
        checks.append(("history", "item", history))
    else:
        checks.append(("the model", "user", recommender))
    for name, what, part in checks:
        mine, theirs = getattr(part, f"{what}_vocab", None), getattr(test, f"{what}_vocab")
        if mine is not None and mine != theirs:
            raise DataError(f"{name} and test must use the same {what} vocabulary (an index "
                            f"would name different {what}s in each): {len(mine):,} vs "
                            f"{len(theirs):,} {what} ids; take them from one split")
    if history is not None and not hasattr(recommender, "recommend_from_history"):
        raise ConfigError(f"{type(recommender).__name__} cannot serve held-out users: "
                          f"it has no recommend_from_history")
    n_items = test.n_items
    users = np.unique(warm_part(seen_source, test).users)  # the docstring: no cold users
    if not len(users):
        raise DataError(f"no test user has {users_from} items to recommend from: each of "
                        f"the {len(np.unique(test.users)):,} is new to {users_from}")
    kmax = ks[-1]
    k_req = min(kmax, n_items)
    if history is not None:
        seen = _time_ordered_items(history, users)
        seen_csr = as_truth_csr(seen, n_items)
    else:
        seen_csr = as_truth_csr(train.to_csr()[users], n_items)
        seen = [seen_csr.indices[seen_csr.indptr[r]:seen_csr.indptr[r + 1]].astype(np.int64)
                for r in range(len(users))]
    truth = test.to_csr()[users]
    truth = truth - truth.multiply(seen_csr)  # seen test items are unreachable
    top = np.full((len(users), kmax), -1, dtype=np.int64)
    for lo in range(0, len(users), batch_size):
        hi = min(lo + batch_size, len(users))
        excl = seen[lo:hi]
        if history is not None:
            _, ids = recommender.recommend_from_history(seen[lo:hi], k_req, exclude=excl)
        else:
            _, ids = recommender.recommend(users[lo:hi], k_req, exclude=excl)
        ids = np.asarray(ids)
        if ids.ndim != 2 or ids.shape[0] != hi - lo or ids.shape[1] > kmax:
            raise DataError(f"{type(recommender).__name__}.recommend returned ids of shape "
                            f"{ids.shape}, expected ({hi - lo}, k) with k at most {kmax}")
        top[lo:hi, :ids.shape[1]] = ids
    result: dict[str, Any] = dict(evaluate_topk(top, truth, ks, n_items=n_items))
    if return_lists:
        result["lists"] = {"users": users, "top_ids": top}
    return result


__all__ = ["METRICS", "HistoryRecommender", "Recommender", "as_truth_csr", "coverage",
           "evaluate_topk", "hit_matrix", "per_user_metrics", "recommend_and_evaluate",
           "warm_part"]
