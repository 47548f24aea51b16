"""The closed-form part of a two-tower model: EASE, recency-weighted, at low rank.

EASE (Steck, 2019) scores a user's items as ``x @ B`` with ``B`` a closed-form item-item
matrix. Truncated to rank ``r`` (``B ~ P Qᵀ``), it is a two-tower model: the query is the
user's history pooled through ``P`` (``x @ P``, with ``x`` the recency-weighted multi-hot of
the history) and the candidate is the item's row of ``Q``. ``TwoTower`` appends these parts
to its trained towers, so one inner product (and so every search index) serves the sum::

    score(u, i) = (1 - w) * trained(u, i) / s_trained + w * ease(u, i) / s_ease

``w`` is ``ModelConfig.ease_weight``; the ``s`` are the standard deviations of each part's
scores over training users, so ``w`` means the same on any data set. EASE's ``lambda`` and
the recency floor of its query are tuned on a validation split carved from the training
data (``ModelConfig.ease_split``), the same way ``twotower.evaluation.tune`` tunes the EASE
baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from twotower.data.interactions import Interactions


@dataclass
class LinearPart:
    """A fitted closed-form part.

    Attributes:
        query_table: ``[n_items + 1, r]`` float32; row ``i + 1`` is item ``i``'s row of
            ``P`` (row 0, the history padding, is zero).
        item_table: ``[n_items, r]`` float32: ``Q``, already multiplied by ``w / s_ease``.
        model_scale: ``(1 - w) / s_trained``, the factor of the trained part's item vectors.
        half_life: recency half-life of the query's history weights, in items.
        floor: recency floor of the query's history weights (1.0: unweighted).
        lambda_: EASE's L2 strength.
        trained_recency: ``(half_life, floor)`` of the trained part's query pooling when
            chosen with the blend weight (``ModelConfig.query_recency_choice``); None: the
            configuration's ``recency_half_life`` and ``recency_floor``, as trained.
    """

    query_table: np.ndarray
    item_table: np.ndarray
    model_scale: float
    half_life: float
    floor: float
    lambda_: float
    trained_recency: tuple[float, float] | None = None


def history_matrix(hist: np.ndarray, weights: np.ndarray, n_cols: int,
                   repeats: str = "sum") -> sp.csr_matrix:
    """``[b, n_cols]`` sparse: row ``u`` holds ``weights[j]`` at column ``hist[u, j]`` for
    the non-zero entries of a history table (items + 1, most recent first, 0 = padding).

    An item that occurs more than once in a history (a log with repeated interactions) gets
    the ``sum`` of its weights (the trained tower's pooling) or only its most recent one,
    ``latest`` (the EASE part: EASE is fitted on the binary user-item matrix).
    """
    rows, pos = np.nonzero(hist)
    cols = hist[rows, pos]
    if repeats == "latest" and len(rows):
        # nonzero() is row-major, so within a row the most recent occurrence comes first
        key = rows.astype(np.int64) * n_cols + cols
        _, first = np.unique(key, return_index=True)
        rows, pos, cols = rows[first], pos[first], cols[first]
    return sp.csr_matrix((weights[pos].astype(np.float32), (rows, cols)),
                         shape=(hist.shape[0], n_cols))


def fill_cold_rows(q: np.ndarray, features: sp.csr_matrix | None, cold: np.ndarray
                   ) -> np.ndarray:
    """``q`` (``[n_items, r]`` EASE item factors) with the rows of ``cold`` items (bool
    ``[n_items]``: no training interactions) set to the mean row of the other items sharing
    their feature values (``features``: the ``[n_items, n_features]`` item-feature matrix):
    per feature value, the mean of the rows of the items with training interactions that
    have it (weighted by their feature weights), then per cold item the weighted mean over
    its values that such items have. EASE has no row for an item no user had (it scores 0
    for every user), which put a cold item mid-catalogue in the blend whatever its
    features said; with the fill it scores as its feature-mates do on average
    (``benchmarks/probes/cold_items.py``). A cold item none of whose values a trained
    item has keeps its zero row (it is in no list anyway)."""
    if features is None or not features.shape[1] or not cold.any() or cold.all():
        return q
    warm = features[np.flatnonzero(~cold)]
    weight = np.asarray(warm.sum(axis=0), dtype=np.float64).ravel()
    known = weight > 0
    means = np.asarray(warm.T @ q[~cold], dtype=np.float64) / np.maximum(weight, 1e-12)[:, None]
    rows = features[np.flatnonzero(cold)].multiply(known[None, :]).tocsr()
    total = np.asarray(rows.sum(axis=1), dtype=np.float64).ravel()
    out = q.copy()
    out[cold] = (np.asarray(rows @ means) / np.maximum(total, 1e-12)[:, None]).astype(q.dtype)
    return out


def floor_weights(length: int, half_life: float, floor: float) -> np.ndarray:
    """``[length]`` recency weights ``floor + (1 - floor) * 0.5 ** (rank / half_life)``
    of ranks ``0 .. length - 1`` (``baselines.recency_weights``)."""
    from twotower.evaluation.baselines import recency_weights
    return recency_weights(np.arange(length), half_life, floor)


def low_rank(b: np.ndarray, rank: int, seed: int = 0, power_iterations: int = 4
             ) -> tuple[np.ndarray, np.ndarray]:
    """``(P, Q)`` with ``P @ Q.T`` the best rank-``rank`` approximation of ``b`` (randomized
    range finder with power iterations, Halko, Martinsson & Tropp 2011, algorithm 4.4).

    Hand-written because SciPy's truncated SVDs measured slower at rank 128 on a dense
    4,000 x 4,000 matrix (``benchmarks/probes/low_rank_svd.py``): ``svds`` with PROPACK
    1.33 s and ARPACK 7.72 s (both exact), ``interpolative.svd`` 3.78 s (25% more error),
    this 0.71 s (0.3% more error than the exact truncation). Exact (``numpy.linalg.svd``)
    when ``rank`` is at least half the size.
    """
    n = b.shape[0]
    r = min(rank, n)
    if 2 * r >= n:
        u, s, vt = np.linalg.svd(b, full_matrices=False)
        return (u[:, :r] * s[:r]).astype(np.float32), vt[:r].T.astype(np.float32)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(b @ rng.standard_normal((n, r + 16)).astype(b.dtype))
    for _ in range(power_iterations):
        q, _ = np.linalg.qr(b.T @ q)
        q, _ = np.linalg.qr(b @ q)
    u, s, vt = np.linalg.svd(q.T @ b, full_matrices=False)
    return ((q @ u[:, :r]) * s[:r]).astype(np.float32), vt[:r].T.astype(np.float32)


def user_items(x: Interactions, weighted: bool) -> sp.csr_matrix:
    """The user-item matrix EASE is fitted on: binary, or with ``weighted`` each pair's
    weight (``retriever.pair_weights``)."""
    if not weighted:
        return x.to_csr()
    from twotower.models.retriever import pair_weights
    return pair_weights(x)


def _inner_split(train: Interactions, kind: str, seed: int):
    from twotower.data.splits import random_split, temporal_split
    if kind == "temporal" and train.timestamps is not None:
        return temporal_split(train, 0.2)
    return random_split(train, 0.2, seed)


#: users whose validation metrics choose EASE's lambda and floor (a sample when more)
VALIDATION_USERS = 5_000

#: score cells (users x items) per batch of those validation metrics: the batch's dense
#: ``[users, n_items]`` float32 scores and the top-k selection's temporaries (several times
#: the scores' 4 bytes a cell: ``benchmarks/probes/svd_form_cost.py`` prints it) stay near a
#: gigabyte at any catalogue size, where ``recommend_and_evaluate``'s fixed 1,024 users
#: grow with the catalogue (tens of GB at a million items)
VALIDATION_CELLS = 2 ** 25


def validation_batch(n_items: int) -> int:
    """Users per batch of the validation metrics: at most 1,024, and at most
    ``VALIDATION_CELLS`` score cells (at least one user)."""
    return max(1, min(1024, VALIDATION_CELLS // max(int(n_items), 1)))


def scale_users(train: Interactions, seed: int) -> np.ndarray:
    """The sorted sample of (at most 1,024) users on which each part's score spread is
    measured, so that a blend weight means the same on any data: users with rows in
    ``train`` (one without has an empty EASE query and an untrained id vector: on a
    global-temporal MovieLens split a fifth of the users, which skewed both spreads)."""
    pool = np.flatnonzero(np.bincount(np.asarray(train.users), minlength=train.n_users))
    if not len(pool):
        pool = np.arange(train.n_users)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pool, size=min(1024, len(pool)), replace=False))


@dataclass
class Factored:
    """An item-item matrix held as ``B = V diag(g) Vᵀ`` (``V`` ``[n_items, r]``, ``g``
    ``[r]``, float32): the low-rank closed form above ``ease_max_items``, never ``n x n``."""

    v: np.ndarray
    g: np.ndarray

    def cut(self, rank: int) -> tuple[np.ndarray, np.ndarray]:
        """``(P, Q)`` of its leading ``rank`` directions (``B_rank = P Qᵀ``)."""
        return self.v[:, :rank] * self.g[:rank], self.v[:, :rank]


def _times(q: Any, b: np.ndarray | Factored) -> np.ndarray:
    """``q @ b`` for a dense ``b`` or a ``Factored`` one (through its factors)."""
    if isinstance(b, Factored):
        return np.asarray((q @ b.v) * b.g, dtype=np.float32) @ b.v.T
    return np.asarray(q @ b, dtype=np.float32)


def sparse_svd(x: sp.csr_matrix, rank: int, seed: int = 0, power_iterations: int = 2
               ) -> tuple[np.ndarray, np.ndarray]:
    """``(s, V)``: the leading ``rank`` singular values (``[r]``) and right singular vectors
    (``[n_cols, r]``) of a sparse ``x``, float32, by the randomized range finder of
    ``low_rank`` applied to ``x`` itself: memory ``O((n_rows + n_cols) * rank)`` besides
    ``x``, never ``n_cols x n_cols``."""
    n_rows, n_cols = x.shape
    r = max(1, min(rank, n_rows, n_cols))
    x = x.astype(np.float32)
    if 2 * r >= min(n_rows, n_cols):
        _, s, vt = np.linalg.svd(x.toarray(), full_matrices=False)
        return s[:r].astype(np.float32), vt[:r].T.astype(np.float32)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(x @ rng.standard_normal((n_cols, r + 16)).astype(np.float32))
    for _ in range(power_iterations):
        q, _ = np.linalg.qr(np.asarray(x.T @ q))
        q, _ = np.linalg.qr(np.asarray(x @ q))
    _, s, vt = np.linalg.svd(np.asarray((x.T @ q).T), full_matrices=False)
    return s[:r].astype(np.float32), vt[:r].T.astype(np.float32)


def ridge_gains(s: np.ndarray, lambda_: float) -> np.ndarray:
    """``s² / (s² + lambda)``: the low-rank ridge regression of ``X`` on itself,
    ``B = V diag(s² / (s² + lambda)) Vᵀ`` (a linear autoencoder; EASE without its zero
    diagonal, on the leading singular directions)."""
    s2 = s.astype(np.float64) ** 2
    return (s2 / (s2 + lambda_)).astype(np.float32)


#: The closed forms ``tune_and_fit`` fits: ``ease`` (dense ``n x n`` inverse, up to
#: ``ModelConfig.ease_max_items``) and ``svd`` (the low-rank ridge of ``ridge_gains`` from a
#: randomized SVD of the sparse user-item matrix, above it).
FORMS = ("ease", "svd")


class _Scores:
    """A ``Recommender`` scoring ``a_e * queries[users] @ b``, plus ``a_t * trained(users)``
    when given a trained part (for the validation metrics)."""

    def __init__(self, queries: sp.csr_matrix, b: np.ndarray | Factored,
                 trained: Callable[[np.ndarray], np.ndarray] | None = None,
                 a_t: float = 0.0, a_e: float = 1.0) -> None:
        self.queries, self.b, self.trained, self.a_t, self.a_e = queries, b, trained, a_t, a_e

    def recommend(self, users, k, exclude=None):
        from twotower.evaluation.baselines import topk_excluding
        users = np.asarray(users)
        scores = _times(self.queries[users], self.b)
        if self.trained is not None:
            scores = np.float32(self.a_e) * scores + np.float32(self.a_t) * self.trained(users)
        return topk_excluding(scores, k, exclude)


#: The largest rank ``ease_rank = 0`` chooses (each rank adds a dimension to the served
#: vectors).
AUTO_RANK_MAX = 1024

#: The share of the full-rank EASE part's validation recall@10 + ndcg@10 a rank must keep
#: to be chosen (``tune_and_fit``'s ``ranks``).
RANK_KEEP = 0.99

#: ``ease_weight_choice = "rank_check"`` (and ``"auto"`` on a random split): the blend weight
#: is chosen on validation when the EASE part cut to ``embedding_dim`` keeps less than this
#: share of its full-rank score
#: (session logs 0.73-0.79, MovieLens 100k 0.97-1.04 over 7 random splits and the
#: temporal one: ``benchmarks/probes/weight_check.py``).
WEIGHT_CHECK_KEEP = 0.9


def _choose_rank(q: Any, b: np.ndarray | Factored, ranks: tuple[int, ...], seed: int,
                 train: Interactions, test: Interactions, full: dict[str, Any] | None = None
                 ) -> tuple[int, list[dict[str, Any]]]:
    """The smallest of ``ranks`` whose truncation of ``b`` keeps ``RANK_KEEP`` of the
    full ``b``'s validation recall@10 + ndcg@10 (a randomized SVD per rank tried, smallest
    first: the usual case stops at the first; a ``Factored`` ``b`` is cut to its leading
    directions)."""
    from twotower.evaluation.metrics import recommend_and_evaluate

    def quality(scorer: Any) -> dict[str, Any]:
        m = recommend_and_evaluate(scorer, train, test, (10,),
                                   batch_size=validation_batch(train.n_items))
        return {"recall@10": float(m["recall@10"]), "ndcg@10": float(m["ndcg@10"])}

    full = full or quality(_Scores(q, b))  # ``full``: as the search above measured it
    goal = RANK_KEEP * (full["recall@10"] + full["ndcg@10"])
    top = b.v.shape[1] if isinstance(b, Factored) else b.shape[0]
    ranks = tuple(sorted({min(int(r), top) for r in ranks}))
    tried = [{"rank": "full", **full}]
    for r in ranks:
        p, qt = b.cut(r) if isinstance(b, Factored) else low_rank(b, r, seed)
        m = quality(_Scores(np.asarray(q @ p), qt.T))
        tried.append({"rank": r, **m})
        if m["recall@10"] + m["ndcg@10"] >= goal:
            return r, tried
    return ranks[-1], tried


def tune_and_fit(train: Interactions, history_length: int, lambdas: tuple[float, ...],
                 half_lives: tuple[float, ...], floors: tuple[float, ...], rank: int,
                 split: str, seed: int, weights: tuple[float, ...] = (),
                 trained_scores: Callable[[Interactions], Callable[[np.ndarray], np.ndarray]]
                 | None = None, ranks: tuple[int, ...] = (),
                 stage: Callable[[str], None] | None = None, check_rank: int = 0,
                 joint: bool = False, query_recency: tuple[tuple[float, float], ...] = (),
                 form: str = "ease", weighted: bool = False
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Choose EASE's lambda and the query's recency weights (half-life, floor) on a
    validation split of ``train`` (best recall@10 + ndcg@10), then fit on all of ``train``
    at rank ``rank``. The search is by coordinates (lambda with the unweighted query, then
    the recency weights at that lambda), or with ``joint`` over every pair (the search fits
    EASE once per lambda either way; ``ModelConfig.ease_search``).

    With ``ranks`` (increasing), the rank is chosen on the same split instead: the smallest
    whose truncated EASE keeps ``RANK_KEEP`` of the full-rank EASE's recall@10 + ndcg@10
    (else the largest). An item-item matrix can be far from low rank (sequential logs:
    a rank-128 EASE part lost 20% of recall there), and the cut is invisible to the
    full-rank choices above.

    With ``weights`` (and ``trained_scores``: ``train' -> (users -> [len(users), n_items]
    scores)`` of the trained part fitted on the split's training part ``train'``), also
    choose the blend weight ``w`` on the same split: the score is ``(1 - w) * trained / sd
    + w * EASE / sd``, each part's spread measured on a sample of users, as
    ``TwoTower`` scales them (EASE at full rank here). With ``check_rank`` > 0, only when
    the EASE part cut to that rank keeps less than ``WEIGHT_CHECK_KEEP`` of its full-rank
    score on the split (``ModelConfig.ease_weight_choice = "rank_check"``, and ``"auto"``
    on a random split; the rank search's own measurement when it tried that rank). A weight
    is chosen only where the validation metrics are defined: when every one is NaN (each
    validation item was seen, a log of repeats) ``weight`` is left out and the given
    weight stays.

    With ``query_recency`` (``(half_life, floor)`` settings; ``trained_scores``' callable
    then also takes them as a second argument, None for its own), the trained part's query
    recency is chosen too, where the weight is chosen: the settings at the weight chosen
    with its own recency, then the weight again at the best setting (ties go to its own;
    ``query_recency`` and ``query_recency_tried`` in ``chosen``).

    With ``form = "svd"`` the closed form is the low-rank ridge ``V diag(s² / (s² +
    lambda)) Vᵀ`` of a randomized SVD of the sparse user-item matrix (``sparse_svd``,
    ``ridge_gains``) instead of EASE: nothing ``n_items x n_items`` is formed, so it serves
    catalogues above ``ModelConfig.ease_max_items``. Every choice above is made the same
    way, on the same split and grids, except that lambda and the recency weights are
    searched at the smallest of ``ranks`` (a setting costs validation users x n_items x
    rank), and the "full rank" the rank search then compares against is the largest of
    ``ranks`` (one SVD at that rank, cut for the smaller ones).

    With ``weighted`` (``ModelConfig.interaction_weights`` ``rating`` or ``event``), EASE
    is fitted on the Gram of the weighted user-item matrix (``retriever.pair_weights``:
    each pair its summed ratings, mean 1) rather than the binary one; the query (the
    recency-weighted history) and the validation metrics (pairs, binary) are as without.

    Returns:
        ``(P, Q, chosen)``; ``P`` is ``[n_items, r]``; ``chosen`` holds ``lambda``,
        ``half_life``, ``floor`` and ``tried`` (the validation metrics of every setting);
        with ``weights`` also ``weight`` and ``weights_tried`` when the weight was chosen,
        and with ``check_rank`` ``weight_check`` (``rank``, ``keep``, ``chose``).
        ``stage``: told what is being done as it starts (progress).
    """
    say = stage or (lambda _: None)
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    from twotower.evaluation.baselines import ease_weights, recency_settings
    from twotower.evaluation.metrics import recommend_and_evaluate
    from twotower.models.retriever import history_table

    n = train.n_items
    recency = recency_settings(half_lives, floors)
    rows: list[dict[str, float]] = []
    inner = _inner_split(train, split, seed)
    from twotower.evaluation.metrics import warm_part
    test = warm_part(inner.train, inner.test)  # users new to inner.train cannot be scored
    test_users = np.unique(test.users)
    if len(test_users) > VALIDATION_USERS:  # metrics of a sample of users: enough to choose
        keep = np.random.default_rng(seed).choice(test_users, VALIDATION_USERS, replace=False)
        test = test.take(np.flatnonzero(np.isin(test.users, keep)))
    unweighted = (0.0, 1.0)
    lam, (half_life, floor) = float(lambdas[0]), recency[0]
    choose_weight = bool(weights) and trained_scores is not None and len(test) > 0
    last: list[Any] = [None, None]  # the (lambda, B) in use: one B in memory at a time
    hist = gram = None
    top_rank = max(ranks) if ranks else rank
    # the svd form searches lambda and the recency weights at the smallest rank tried:
    # each validation setting costs users x n_items x rank (at the largest, 1,024, eight
    # times as much), then the rank search compares the ranks at the lambda chosen
    search_rank = min(ranks) if ranks else rank

    def closed_form(lam_: float, r: int = top_rank) -> np.ndarray | Factored:
        if form == "svd":
            return Factored(gram[1][:, :r], ridge_gains(gram[0][:r], lam_))
        return ease_weights(gram, lam_, np.float32)

    if choose_weight or (len(test) and (len(lambdas) > 1 or len(recency) > 1 or ranks)):
        hist = history_table(inner.train, history_length)
        x = user_items(inner.train, weighted)
        if form == "svd":  # (s, V): all that the low-rank ridge of any lambda needs
            say(f"a rank-{top_rank} SVD of a validation split ({n:,} items)")
            gram = sparse_svd(x, top_rank, seed)
        else:
            say(f"the item-item matrix of a validation split ({n:,} items)")
            gram = (x.T @ x).toarray()
    if len(test) and (len(lambdas) > 1 or len(recency) > 1):
        scores: dict[tuple[float, tuple[float, float]], float] = {}
        n_settings = (len(lambdas) * len(recency) if joint
                      else len(lambdas) + len(recency) - 1)

        def score(lam_: float, hf: tuple[float, float]) -> float:
            if (lam_, hf) not in scores:
                say(f"on the validation split, setting {len(scores) + 1} of at most "
                    f"{n_settings} (lambda {lam_:g})")
                if last[0] != lam_:
                    last[:] = [None, None]
                    last[:] = [lam_, closed_form(lam_, search_rank)]
                q = history_matrix(hist, floor_weights(history_length, *hf), n + 1,
                                   "latest")[:, 1:]
                m = recommend_and_evaluate(_Scores(q, last[1]), inner.train, test, (10,),
                                           batch_size=validation_batch(n))
                rows.append({"lambda": lam_, "half_life": hf[0], "floor": hf[1],
                             "recall@10": float(m["recall@10"]),
                             "ndcg@10": float(m["ndcg@10"])})
                scores[(lam_, hf)] = float(m["recall@10"] + m["ndcg@10"])
            return scores[(lam_, hf)]

        start = unweighted if unweighted in recency else recency[0]
        if joint:
            # every lambda with every recency weighting, one B at a time (lambda outer);
            # ties and NaN (nothing to score) go to the first: ``recency`` is sorted, so
            # the unweighted query (half-life 0) at the first lambda
            best, lam, (half_life, floor) = -np.inf, float(lambdas[0]), start
            for v in lambdas:
                for hf in recency:
                    s_ = score(float(v), hf)
                    if s_ > best:
                        best, lam, (half_life, floor) = s_, float(v), hf
        else:
            # coordinate search: lambda with the unweighted query, then the recency weights
            # at that lambda (len(lambdas) + len(recency) - 1 settings, not their product)
            lam = max((float(v) for v in lambdas), key=lambda v: score(v, start))
            half_life, floor = max(recency, key=lambda hf: score(lam, hf))
    extra: dict[str, Any] = {}
    check = choose_weight and check_rank > 0
    b_in = q_in = known = None
    if (ranks or choose_weight) and len(test):
        b_in = last[1] if last[0] == lam and form == "ease" else closed_form(lam)
        last[:] = [lam, b_in]
        gram = None  # read no more (1.6 GB at 20k items, through the second fit)
        q_in = history_matrix(hist, floor_weights(history_length, half_life, floor), n + 1,
                              "latest")[:, 1:]
        known = next(({k: r[k] for k in ("recall@10", "ndcg@10")} for r in rows
                      if (r["lambda"], r["half_life"], r["floor"]) == (lam, half_life, floor)),
                     None) if form == "ease" or search_rank == top_rank else None
        tried: list[dict[str, Any]] = []
        if ranks:
            say(f"choosing the rank among {', '.join(map(str, ranks))}")
            rank, tried = _choose_rank(q_in, b_in, ranks, seed, inner.train, test, known)
            extra.update(rank=rank, ranks_tried=tried)
        if check:
            # is the item-item structure far from what a trained part of this size holds?
            r = min(check_rank, n)
            at = next((t for t in tried[1:] if t["rank"] == r), None)
            if at is None:  # not measured by the rank search: one cut more
                say(f"checking the blend weight: EASE cut to rank {r}")
                _, more = _choose_rank(q_in, b_in, (r,), seed, inner.train, test,
                                       tried[0] if tried else known)
                tried, at = more, more[1]
            full = tried[0]["recall@10"] + tried[0]["ndcg@10"]
            # no score to keep a share of (NaN: every validation item was seen in training,
            # a log of repeats): no evidence against the weight given
            keep = (at["recall@10"] + at["ndcg@10"]) / full if full > 0 else None
            choose_weight = keep is not None and keep < WEIGHT_CHECK_KEEP
            extra["weight_check"] = {"rank": r, "keep": None if keep is None else round(keep, 4),
                                     "chose": choose_weight}
    if choose_weight and known is not None \
            and not np.isfinite(known["recall@10"] + known["ndcg@10"]):
        choose_weight = False  # nothing to score a weight by: no second fit for it
    if choose_weight:
        last[:] = []
        say("training the model on the validation split's training part (for the blend "
            "weight)")
        trained = trained_scores(inner.train)
        sample = scale_users(inner.train, seed)
        sd_t = max(float(trained(sample).std()), 1e-12)
        sd_e = max(float(_times(q_in[sample], b_in).std()), 1e-12)

        def blend(part: Callable[[np.ndarray], np.ndarray], sd: float, w: float
                  ) -> dict[str, float]:
            m = recommend_and_evaluate(_Scores(q_in, b_in, part, (1 - w) / sd, w / sd_e),
                                       inner.train, test, (10,), batch_size=validation_batch(n))
            return {"recall@10": float(m["recall@10"]), "ndcg@10": float(m["ndcg@10"])}

        def total(r: dict[str, Any]) -> float:
            return r["recall@10"] + r["ndcg@10"]

        by_weight = [{"weight": float(w), **blend(trained, sd_t, w)} for w in weights]
        scored = [r for r in by_weight if np.isfinite(total(r))]
        if scored:  # none (NaN: every validation item was seen, a log of repeats): kept
            best = max(scored, key=total)
            extra.update(weight=best["weight"])
            if query_recency:
                say("choosing the trained part's query recency on the validation split")
                tried_r = [{"half_life": None, "floor": None, "weight": best["weight"],
                            "recall@10": best["recall@10"], "ndcg@10": best["ndcg@10"]}]
                top: Any = (None, trained, sd_t, best)  # its own recency wins ties
                for hf in query_recency:
                    def part(u: np.ndarray, hf: tuple[float, float] = hf) -> np.ndarray:
                        return trained(u, hf)  # type: ignore[call-arg]
                    sd = max(float(part(sample).std()), 1e-12)
                    r = {"half_life": hf[0], "floor": hf[1], "weight": best["weight"],
                         **blend(part, sd, best["weight"])}
                    tried_r.append(r)
                    if np.isfinite(total(r)) and total(r) > total(top[3]):
                        top = (hf, part, sd, r)
                hf, part, sd, _ = top
                if hf is not None:  # a better query than its own: the weight again
                    again = [{"weight": float(w), "half_life": hf[0], "floor": hf[1],
                              **blend(part, sd, w)} for w in weights]
                    tried_r += again
                    final = max((r for r in again if np.isfinite(total(r))), key=total)
                    extra.update(weight=final["weight"], query_recency=[hf[0], hf[1]])
                extra.update(query_recency_tried=tried_r)
        extra.update(weights_tried=by_weight)
    del last[:]
    # free the [n_items, n_items] Gram and validation B before the final fit
    gram = hist = b_in = q_in = None
    say(f"fitting on all the training data (lambda {lam:g}, rank {rank})")
    x = user_items(train, weighted)
    if form == "svd":
        s, v = sparse_svd(x, rank, seed)
        p, q = Factored(v, ridge_gains(s, lam)).cut(rank)
    else:
        b = ease_weights((x.T @ x).toarray(), lam, np.float32)
        p, q = low_rank(b, rank, seed)
    return p, q, {"form": form, "lambda": lam, "half_life": half_life, "floor": floor,
                  "tried": rows, **extra}
