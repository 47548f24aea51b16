"""Evaluate a saved run on its held-out split, optionally beside the baselines."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from twotower.data.interactions import Interactions
from twotower.errors import DataError
from twotower.evaluation.baselines import (BASELINE_GRIDS, EASE, LARGE_KNN_GRID, ItemKNN,
                                           MostPop, recency_settings, tune, tune_ease)
from twotower.evaluation.metrics import _check_ks, recommend_and_evaluate

#: Above this catalogue size EASE is skipped (it holds a dense [n_items, n_items] matrix)
#: and ItemKNN (sparse) is tuned on ``LARGE_KNN_GRID`` instead of ``BASELINE_GRIDS``.
DENSE_BASELINE_MAX_ITEMS = 20_000


def train_interactions(model: Any) -> Interactions:
    """The training interactions of a fitted/loaded model (its seen-item matrix).

    Raises:
        DataError: the model keeps none (``fit_stream(seen=False)``): its lists cannot be
            judged with seen items excluded, the protocol every method is scored by.
    """
    seen = model._seen.tocoo()
    if not seen.nnz:
        raise DataError("the model keeps no training interactions (fit_stream(seen=False)):"
                        " it cannot be evaluated with its users' seen items excluded; "
                        "train with seen=True")
    return Interactions(users=seen.row.astype(np.int64), items=seen.col.astype(np.int64),
                        user_vocab=model.user_vocab, item_vocab=model.item_vocab)


def held_out_pairs(model: Any, x: Interactions
                   ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The (users, items) index arrays of a held-out log ``x`` (its own vocabularies) in
    ``model``'s index space, for ``evaluate_run``. Pairs whose user or item the model never
    saw, or that it trained on, cannot be judged and are left out; the third value counts
    them (``unknown``, ``trained``). Text ids match an int run's ids as a metadata file's
    do (``26.0`` is 26: a CSV written from floats; ``026`` is no int id)."""
    import pandas as pd

    from twotower.data.readers import catalogue_keys

    def keys(own: Any, theirs: Any, idx: np.ndarray) -> np.ndarray:
        ids = own.ids
        if theirs.is_int and not own.is_int:
            ids = catalogue_keys(pd.Index(ids), theirs.ids).to_numpy()
        return theirs.lookup_or(ids[idx])
    users = keys(x.user_vocab, model.user_vocab, x.users)
    items = keys(x.item_vocab, model.item_vocab, x.items)
    known = (users >= 0) & (items >= 0)
    users, items = users[known], items[known]
    trained = (np.asarray(model._seen[users, items]).reshape(-1) > 0 if len(users)
               else np.zeros(0, dtype=bool))
    left = {"unknown": int((~known).sum()), "trained": int(trained.sum())}
    return users[~trained].astype(np.int64), items[~trained].astype(np.int64), left


class ExactRanking:
    """A model's own ranking: its scores by an exact scan, whatever index its run serves
    from. An HNSW or IVF index answers a request for 100 items better than one for 10 (its
    walk is wider), so recall@10 read off a list of 100 is neither the model's nor what
    is served; ``evaluate_run`` scores this, and the served index per cut-off beside it."""

    def __init__(self, model: Any) -> None:
        from twotower.index import IndexConfig, make_index
        self._model = model
        self.user_vocab, self.item_vocab = model.user_vocab, model.item_vocab
        self._index = make_index(IndexConfig(kind="exact")).build(model.item_embeddings)
        # the items the model never trained are in none of its lists (``recommend``)
        ids = model._untrained_item_cache()[1]
        self._deny = None if ids is None else self._index.prepare_deny(ids)

    def recommend(self, users: np.ndarray, k: int, exclude: Any = None
                  ) -> tuple[np.ndarray, np.ndarray]:
        return self._index.search(self._model.query_embeddings(users), k, exclude=exclude,
                                  deny=self._deny)


def served_metrics(model: Any, train: Interactions, held: Interactions, ks: Sequence[int]
                   ) -> dict[str, Any]:
    """``recommend_and_evaluate``'s metrics of ``model`` as its index serves it: each
    cut-off K from a request for K items (one search per cut-off)."""
    out: dict[str, Any] = {}
    for k in ks:
        res = recommend_and_evaluate(model, train, held, ks=(k,))
        out.update(res)
    return out


def model_rows(model: Any, train: Interactions, held: Interactions, ks: Sequence[int]
               ) -> dict[str, dict[str, Any]]:
    """The table rows of a model: ``model``, its own ranking (an exact scan); and for a
    run served by HNSW or IVF also ``model (<kind> index)``, what that index returns for
    a request of each cut-off."""
    kind = getattr(getattr(model, "_index", None), "kind", "exact")
    ranking = model if kind == "exact" else ExactRanking(model)
    rows = {"model": recommend_and_evaluate(ranking, train, held, ks=ks)}
    if kind != "exact":
        rows[f"model ({kind} index)"] = served_metrics(model, train, held, ks)
    return rows


def held_out_rows(model: Any, train: Interactions, held: Interactions, ks: Sequence[int]
                  ) -> tuple[dict[str, dict[str, Any]], dict[str, Any], str | None]:
    """What ``twotower train`` reports on its held-out split: ``model_rows``, MostPop's
    metrics on the same split (fitted on ``train``: one pass over it), and
    ``trails_popular``'s warning (None when the model is not behind).

    Returns:
        (the model's rows, MostPop's metrics, the warning or None).
    """
    rows = model_rows(model, train, held, ks)
    popular = recommend_and_evaluate(MostPop().fit(train), train, held, ks=ks)
    return rows, popular, trails_popular(rows["model"], popular, _check_ks(ks)[0])


def trails_popular(model: dict[str, Any], popular: dict[str, Any], k: int = 10
                   ) -> str | None:
    """A warning when the model's recall@``k`` is below MostPop's on the same split (a list
    of the most popular items, the same for every user, finds more): the model learnt less
    than popularity, e.g. an objective whose learning rate or temperature barely moved the
    tables (README, Quality). None when it is not behind, or either figure is missing
    (no user to score).

    Args:
        model, popular: ``recommend_and_evaluate``'s metrics of the model and of MostPop.
        k: the cut-off compared (``recall@k`` must be in both).
    """
    ours, theirs = model.get(f"recall@{k}"), popular.get(f"recall@{k}")
    if ours is None or theirs is None or not np.isfinite(ours) or not np.isfinite(theirs) \
            or not ours < theirs:
        return None
    return (f"the model scores below the most-popular list on this split: recall@{k} "
            f"{ours:.4f} against MostPop's {theirs:.4f} (the same popular items for every "
            "user would find more); its objective's settings may have barely trained it "
            "(learning rate, temperature, epochs): see README, Quality ('Below MostPop')")


def _recency_ordered(train: Interactions, history: np.ndarray) -> Interactions:
    """``train`` with timestamps that order each user's items as ``history`` does (column
    0 the latest; items past its length count as the oldest), for a temporal split: a run
    saved before runs kept each pair's recency (``seen_recency``)."""
    import scipy.sparse as sp
    n_users, length = history.shape
    rows, rank = np.nonzero(history)
    recency = sp.csr_matrix(((length - rank).astype(np.int64), (rows, history[rows, rank] - 1)),
                            shape=(n_users, train.n_items))
    ts = np.asarray(recency[train.users, train.items]).reshape(-1).astype(np.int64)
    return Interactions(users=train.users, items=train.items, user_vocab=train.user_vocab,
                        item_vocab=train.item_vocab, timestamps=ts)


def chosen_settings(knn: Any, plain: Any = None, weighted: Any = None,
                    knn_grid: dict[str, list[float]] | None = None) -> str:
    """The baselines' tuned settings in one line, each at an edge of its grid said so (a
    better value may lie beyond it). ``plain`` None: no EASE (above
    ``DENSE_BASELINE_MAX_ITEMS`` items); ``knn_grid``: ItemKNN's grid (default
    ``BASELINE_GRIDS``')."""
    def edge(value: float, grid: Sequence[float]) -> str:
        grid = sorted(grid)
        return (" (the grid's smallest)" if value == grid[0] and len(grid) > 1 else
                " (the grid's largest)" if value == grid[-1] and len(grid) > 1 else "")
    g = BASELINE_GRIDS
    kg = g["ItemKNN"] if knn_grid is None else knn_grid
    parts = [f"ItemKNN neighbors {knn.neighbors}"
             f"{edge(knn.neighbors, kg['neighbors'])}, shrink {knn.shrink:g}"]
    if plain is not None:
        parts.append(f"EASE lambda {plain.lambda_:g}"
                     f"{edge(plain.lambda_, g['EASE']['lambda_'])}")
    if weighted is not None:
        query = (f"half-life {weighted.half_life:g}, floor {weighted.floor:g}"
                 if weighted.half_life and weighted.floor < 1 else "unweighted query")
        parts.append(f"EASE+recency lambda {weighted.lambda_:g}"
                     f"{edge(weighted.lambda_, g['EASE']['lambda_'])}, {query}")
    return "; ".join(parts)


def evaluate_run(model: Any, test: tuple[np.ndarray, np.ndarray], ks: Sequence[int] = (10, 100),
                 baselines: bool = False, seed: int | None = None,
                 log: Callable[[str], None] | None = None, split: str | None = None
                 ) -> tuple[dict[str, dict[str, float]], dict[str, dict[int, float]]]:
    """Metrics of ``model`` (and MostPop; with ``baselines`` also ItemKNN and EASE tuned on a
    validation split of train (above ``DENSE_BASELINE_MAX_ITEMS`` items ItemKNN alone, on
    ``LARGE_KNN_GRID``: EASE's dense matrix is out of reach there), and on a temporal split
    ``EASE+recency``, EASE with the
    recency-weighted query of the default model's EASE part, tuned with plain EASE in one
    search over lambda, half-life and floor: ``tune_ease``) on a held-out split given as
    (users, items) index arrays.
    The validation split is carved with ``seed`` (None: the run's own seed, else its
    model's, as the model's EASE part was tuned), and is of the run's own kind (``split``; default: the one the run
    was saved with): ``temporal`` takes each user's latest items by the order the run
    keeps (each training pair's recency; a run saved before it was kept: its history
    table), and is ``random`` when the run keeps no order (a streamed run).
    ``log`` receives a line as each stage starts (tuning EASE on a large catalogue takes
    minutes), and, while the baselines are tuned, a progress line every 10 s from a
    background thread (``models.progress.Ticker``). A cut-off in ``ks`` beyond the
    catalogue is scored on the whole ranked catalogue (as ``recommend_and_evaluate`` does).

    Returns:
        (table: method -> metric -> value, curves: method -> {K: recall@K}).

    Raises:
        ConfigError: ``ks`` empty or not positive integers.
    """
    t0 = time.perf_counter()
    ks = _check_ks(ks)  # each asked for is in the table: none left out unsaid

    def say(what: str) -> None:
        if log is not None:
            log(f"{what} ({time.perf_counter() - t0:.0f} s so far)")

    train = train_interactions(model)
    held = Interactions(users=np.asarray(test[0], dtype=np.int64),
                        items=np.asarray(test[1], dtype=np.int64),
                        user_vocab=model.user_vocab, item_vocab=model.item_vocab)
    curve_ks = sorted({k for k in (1, 5, 10, 20, 50, 100) if k <= model.n_items} | set(ks))
    methods: dict[str, Any] = {"model": model, "MostPop": MostPop().fit(train)}
    large = model.n_items > DENSE_BASELINE_MAX_ITEMS
    if baselines and large:
        import warnings
        warnings.warn(f"baselines: EASE skipped: {model.n_items:,} items is more than "
                      f"{DENSE_BASELINE_MAX_ITEMS:,} (it holds a dense item x item matrix); "
                      f"ItemKNN (sparse) is tuned on a smaller grid", stacklevel=2)
    if baselines:
        kind = split or (getattr(model, "data_source", None) or {}).get("split")
        history = getattr(model, "_history", None)
        recency = getattr(model, "_seen_recency", None)  # runs saved before: None
        timed = kind in ("temporal", "global-temporal")
        on = ("temporal" if timed and (recency is not None or history is not None)
              else "random")
        tuning = train if on == "random" else (
            _recency_ordered(train, history) if recency is None else
            Interactions(users=train.users, items=train.items, user_vocab=train.user_vocab,
                         item_vocab=train.item_vocab,  # (train: the seen matrix's order)
                         timestamps=(int(recency.max()) - recency).astype(np.int64)))
        why = (" (the run keeps no order of its training items)" if timed and on == "random"
               else " (each user's latest: the run keeps the order of its training items, "
               "not their times)" if kind == "global-temporal" else "")
        knn_grid = LARGE_KNN_GRID if large else BASELINE_GRIDS["ItemKNN"]
        n_knn = int(np.prod([len(v) for v in knn_grid.values()]))
        names = ("ItemKNN (" + "; ".join(f"{k} " + ", ".join(f"{v:g}" for v in vs)
                                         for k, vs in knn_grid.items())
                 + f": {n_knn} settings, the grid above {DENSE_BASELINE_MAX_ITEMS:,}"
                 " items)" if large else
                 "ItemKNN, EASE and EASE+recency" if on == "temporal" else "ItemKNN and EASE")
        say(f"tuning {names} on a {on}{why} validation split of train "
            f"({model.n_items:,} items)")
        # the run's seed, as the model's own EASE part carved its validation split with it
        run_seed = (getattr(model, "data_source", None) or {}).get("seed")
        if seed is not None:
            carve = seed
        elif isinstance(run_seed, (int, float)) and not isinstance(run_seed, bool) \
                and float(run_seed).is_integer():
            carve = int(run_seed)
        else:  # the seed the model's EASE part was tuned with
            carve = int(getattr(getattr(model, "config", None), "seed", 0) or 0)
        from contextlib import nullcontext

        from twotower.models._ticker import Ticker
        # a line every 10 s while they are tuned (minutes at several thousand items)
        # on the clock of the lines around it (the evaluation's, not the tuning's)
        with (Ticker("tuning baselines", 10.0, emit=log, since=t0) if log is not None
              else nullcontext()) as tick:
            def stager(name: str) -> Callable[[str], None]:
                def stage(what: str) -> None:
                    if tick is not None:
                        tick.stage = f"{name}, {what}"
                return stage
            t_knn = time.perf_counter()
            knn = tune(ItemKNN, tuning, knn_grid, carve, split=on,
                       stage=stager("ItemKNN")).best_config
            t_knn = time.perf_counter() - t_knn
            plain = weighted = None
            if not large:
                # judged on what users do next (a temporal split): also EASE with the
                # recency-weighted query of the default model's EASE part, same tune
                own = getattr(model, "config", None)
                recency = (recency_settings(getattr(own, "ease_half_lives", None),
                                            getattr(own, "ease_floors", None))
                           if on == "temporal" else ())
                plain, weighted = tune_ease(tuning, carve, split=on, recency=recency,
                                            stage=stager("EASE and EASE+recency" if recency
                                                         else "EASE"))
        say("tuned: " + chosen_settings(knn, plain, weighted, knn_grid)
            + (f" (ItemKNN's {n_knn} settings in {t_knn:.0f} s)" if large else ""))
        # each baseline is fitted on all of train just before it is scored, and let go
        # after: one [n_items, n_items] matrix in memory at a time (the plain EASE's is
        # reused for EASE+recency at the same lambda). `tuning`: the same pairs as train,
        # in the run's order
        last: dict[str, Any] = {}

        def ease(cfg: Any) -> Any:
            held_fit = last.pop("EASE", None)
            if held_fit is not None and held_fit.config.lambda_ == cfg.lambda_:
                return held_fit.with_query(cfg)
            del held_fit
            last["EASE"] = EASE(cfg).fit(tuning)
            return last["EASE"]

        methods["ItemKNN"] = lambda: ItemKNN(knn).fit(tuning)
        if plain is not None:
            methods["EASE"] = lambda: ease(plain)
        if weighted is not None:
            methods["EASE+recency"] = lambda: ease(weighted)
    table: dict[str, dict[str, float]] = {}
    curves: dict[str, dict[int, float]] = {}
    for name in list(methods):
        rec = methods.pop(name)
        if not hasattr(rec, "recommend"):  # a baseline fitted now, scored, let go
            # (only the baselines branch above makes these; it imported Ticker, nullcontext)
            say(f"fitting {name} on all of train")
            with (Ticker("baselines", 10.0, emit=log, since=t0) if log is not None
                  else nullcontext()) as tick:
                if tick is not None:
                    tick.stage = f"fitting {name} on all of train"
                rec = rec()
        say(f"evaluating {name}")
        rows = (model_rows(rec, train, held, curve_ks) if name == "model"
                else {name: recommend_and_evaluate(rec, train, held, ks=curve_ks)})
        del rec
        for row, res in rows.items():
            table[row] = {k: v for k, v in res.items()
                          if k == "users" or int(k.split("@")[1]) in ks}
            curves[row] = {k: res[f"recall@{k}"] for k in curve_ks}
    return table, curves
