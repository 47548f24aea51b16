"""A trained ``TwoTower`` as one self-contained Keras model (``TwoTower.to_keras``).

The model is a functional ``keras.Model`` of the layers below: user ids in, the top-k
scores and item ids out, with every table it needs (queries, candidates, the items never
trained, each user's seen items) stored as its weights, so ``model.save("x.keras")`` writes
one file that ``keras.saving.load_model`` rebuilds. ``to_keras(history=True)`` builds the
other model: padded item histories in (new users), the query pooled in the graph from the
trained history tables (``HistoryRetrieval``). Keras needs these classes to rebuild it:
import this module first (``import twotower.models.keras_layers``).

Why own layers rather than keras-rs' ``BruteForceRetrieval``: in keras-rs 0.4.0 it does not
save its candidates, its ``get_config`` saves a method in place of ``return_scores``
(keras-team/keras-rs#207) and it takes no mask (seen items, untrained items). Why not
``StringLookup``/``IntegerLookup``: on JAX they need TensorFlow installed; ``IdLookup`` is
a sorted-array search in ``keras.ops``, for integer ids (JAX has no string tensors).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np
from keras import ops

#: the item id (or index) and score of a list's unfilled places
PAD = -1


@keras.saving.register_keras_serializable(package="twotower")
class IdLookup(keras.layers.Layer):
    """External integer ids ``[B]`` -> row indices ``[B]`` int32, ``-1`` for an id not in
    the vocabulary. The vocabulary is stored as weights (sorted ids and their rows), found
    by binary search.

    Args:
        size: number of ids in the vocabulary.
    """

    def __init__(self, size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = int(size)

    def build(self, input_shape: Any = None) -> None:
        self.sorted_ids = self.add_weight(shape=(self.size,), dtype="int32", trainable=False,
                                          initializer="zeros", name="sorted_ids")
        self.rows = self.add_weight(shape=(self.size,), dtype="int32", trainable=False,
                                    initializer="zeros", name="rows")
        self.built = True

    def set_vocabulary(self, ids: np.ndarray) -> None:
        """Store ``ids`` (row i = the i-th id; integers that fit int32)."""
        order = np.argsort(ids, kind="stable")
        self.sorted_ids.assign(np.asarray(ids)[order].astype(np.int32))
        self.rows.assign(order.astype(np.int32))

    def call(self, ids: Any) -> Any:
        ids = ops.cast(ids, "int32")
        pos = ops.minimum(ops.searchsorted(self.sorted_ids, ids), self.size - 1)
        found = ops.take(self.sorted_ids, pos) == ids
        return ops.where(found, ops.take(self.rows, pos), PAD)

    def compute_output_spec(self, ids: Any) -> Any:
        return keras.KerasTensor(ids.shape, dtype="int32")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size}


@keras.saving.register_keras_serializable(package="twotower")
class IdOutput(keras.layers.Layer):
    """Row indices ``[B, k]`` -> external integer ids ``[B, k]`` int32 (``-1`` stays
    ``-1``), from a stored ``[size]`` table of ids.

    Args:
        size: number of ids.
    """

    def __init__(self, size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = int(size)

    def build(self, input_shape: Any = None) -> None:
        self.ids = self.add_weight(shape=(self.size,), dtype="int32", trainable=False,
                                   initializer="zeros", name="ids")
        self.built = True

    def call(self, rows: Any) -> Any:
        rows = ops.cast(rows, "int32")
        return ops.where(rows >= 0, ops.take(self.ids, ops.maximum(rows, 0)), PAD)

    def compute_output_spec(self, rows: Any) -> Any:
        return keras.KerasTensor(rows.shape, dtype="int32")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size}


class _Vocabularies:
    """The vocabularies a retrieval layer carries (any id type) as file assets, one
    ``NAME.npy`` per attribute of ``_VOCABULARIES`` that is set: not weights, as text ids
    have no tensor type on JAX."""

    _VOCABULARIES: tuple[str, ...] = ("user_ids", "item_ids")

    def save_assets(self, dir_path: str) -> None:
        for name in self._VOCABULARIES:
            ids = getattr(self, name)
            if ids is not None:
                ids = ids if ids.dtype.kind in "iu" else ids.astype(str)
                np.save(Path(dir_path) / f"{name}.npy", ids, allow_pickle=False)

    def load_assets(self, dir_path: str) -> None:
        for name in self._VOCABULARIES:
            path = Path(dir_path) / f"{name}.npy"
            if path.is_file():
                setattr(self, name, np.load(path, allow_pickle=False))


def _top_k(scores: Any, keep: Any, k: int) -> tuple[Any, Any]:
    """``(scores [B, k], rows [B, k] int32)`` of the best kept items, padded with
    ``-inf`` / ``-1``."""
    top, idx = ops.top_k(ops.where(keep, scores, float("-inf")), k)
    return top, ops.where(top > float("-inf"), ops.cast(idx, "int32"), PAD)


def _hits(rows: Any, n_items: int) -> Any:
    """``[B, n_items]`` bool: which items each row of ``rows`` (``[B, w]`` item rows + 1,
    0 = none) holds."""
    b, w = ops.shape(rows)[0], ops.shape(rows)[1]
    batch = ops.repeat(ops.expand_dims(ops.arange(b, dtype="int32"), 1), w, axis=1)
    coords = ops.reshape(ops.stack([batch, rows], axis=-1), (-1, 2))
    hits = ops.scatter(coords, ops.ones((b * w,), "float32"), (b, n_items + 1))
    return hits[:, 1:] > 0


@keras.saving.register_keras_serializable(package="twotower")
class TopKRetrieval(_Vocabularies, keras.layers.Layer):
    """User rows ``[B]`` int32 -> ``(scores [B, k] float32, item rows [B, k] int32)``, best
    first, by exact inner product of the user's stored query with every candidate (both
    stored unit length for a run whose index compares by cosine).

    A list leaves out the items never trained (``TwoTower.untrained_items``) and, when the
    layer keeps them (``seen_width > 0``), the user's training items; it is padded with
    score ``-inf`` and row ``-1`` when fewer than ``k`` items remain. A user row outside
    ``[0, n_users)`` (``-1``: an unknown id) or of a user the model never trained on gets
    an all-padding list.

    The user and item vocabularies (any id type) ride along as file assets:
    ``user_ids`` and ``item_ids`` (numpy arrays, row i = the i-th id).

    Args:
        n_users: rows of the query table.
        n_items: rows of the candidate table.
        dim: width of both tables.
        k: list length, 1 to ``n_items``.
        seen_width: most training items a user has (0: no seen-item exclusion).
    """

    def __init__(self, n_users: int, n_items: int, dim: int, k: int, seen_width: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_users, self.n_items, self.dim = int(n_users), int(n_items), int(dim)
        self.k, self.seen_width = int(k), int(seen_width)
        self.user_ids: np.ndarray | None = None
        self.item_ids: np.ndarray | None = None

    def build(self, input_shape: Any = None) -> None:
        def table(name: str, shape: tuple[int, ...], dtype: str = "float32") -> Any:
            return self.add_weight(shape=shape, dtype=dtype, trainable=False,
                                   initializer="zeros", name=name)
        # [n_users, dim] each user's query (the served one: towers, bias column, EASE part)
        self.queries = table("queries", (self.n_users, self.dim))
        # [n_users] 1 for a user the model trained on, else 0 (an untrained query)
        self.servable = table("servable", (self.n_users,))
        # [n_items, dim] the candidates; [n_items] 1 for an item a list may hold
        self.candidates = table("candidates", (self.n_items, self.dim))
        self.listable = table("listable", (self.n_items,))
        # [n_users, seen_width] each user's training items, as rows + 1 (0 = padding)
        self.seen = (table("seen", (self.n_users, self.seen_width), "int32")
                     if self.seen_width else None)
        self.built = True

    def call(self, users: Any) -> tuple[Any, Any]:
        users = ops.cast(users, "int32")
        known = ops.logical_and(users >= 0, users < self.n_users)  # (take would clamp)
        rows = ops.where(known, users, 0)
        q = ops.take(self.queries, rows, axis=0)
        scores = ops.matmul(q, ops.transpose(self.candidates))
        keep = ops.expand_dims(self.listable > 0, 0)
        keep = ops.logical_and(keep, ops.expand_dims(
            ops.logical_and(known, ops.take(self.servable, rows) > 0), 1))
        if self.seen is not None:
            seen = ops.take(self.seen, rows, axis=0)  # [B, w] rows + 1, 0 = padding
            keep = ops.logical_and(keep, ops.logical_not(_hits(seen, self.n_items)))
        return _top_k(scores, keep, self.k)

    def compute_output_spec(self, users: Any) -> Any:
        shape = (users.shape[0], self.k)
        return (keras.KerasTensor(shape, dtype="float32"),
                keras.KerasTensor(shape, dtype="int32"))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_users": self.n_users, "n_items": self.n_items,
                "dim": self.dim, "k": self.k, "seen_width": self.seen_width}


@keras.saving.register_keras_serializable(package="twotower")
class HistoryRetrieval(_Vocabularies, keras.layers.Layer):
    """Histories ``[B, T]`` int32 item rows, oldest first, ``-1`` (``PAD``) for padding ->
    ``(scores [B, k] float32, item rows [B, k] int32)``, best first: what
    ``TwoTower.recommend_from_history`` answers with the exact index, the query built
    in the graph from the trained tables.

    As ``history_query_embeddings`` builds it: an item given more than once counts once,
    at its latest place; items no training row has are left out, and so is a row outside
    ``[0, n_items)`` (``-1``: padding, or an id the vocabulary lacks), which
    ``recommend_from_history`` refuses; the ``length`` latest items that remain are
    pooled with recency weights (rank 0 = the latest), normalised by ``pooling``, then the
    ``activation``; a 1 for the item bias column and the EASE part (the same items with
    its own recency weights, through its query table) are appended when the model has
    them. A history left empty gives the query of no history (the item bias alone, or
    zeros). With ``exclude``, every item of the history (not only the pooled ones) is
    left out of its list, as ``recommend_from_history(h, k, exclude=h)`` does; the items
    never trained are in no list; padding as ``TopKRetrieval``'s.

    The item vocabulary (any id type) rides along as the file asset ``item_ids``.

    Args:
        n_items: rows of the candidate table.
        dim: width of the candidates and of the query.
        k: list length, 1 to ``n_items``.
        length: most history items pooled (``ModelConfig.history_length``).
        pool_dim: width of the history embeddings (``embedding_dim``).
        ease_dim: width of the EASE part's query table (0: none).
        pooling: ``sqrt``, ``mean`` or ``sum`` (``ModelConfig.pooling``).
        activation: ``linear`` or ``tanh`` (``ModelConfig.history_activation``).
        bias: whether the query has the item bias column (a 1).
        exclude: leave each history's items out of its list.
        cosine: scale the query to unit length (a zero query stays zero) before the
            inner product, as a cosine index does (its candidates are stored unit).
    """

    _VOCABULARIES = ("item_ids",)

    def __init__(self, n_items: int, dim: int, k: int, length: int, pool_dim: int,
                 ease_dim: int = 0, pooling: str = "sqrt", activation: str = "linear",
                 bias: bool = False, exclude: bool = True, cosine: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_items, self.dim, self.k = int(n_items), int(dim), int(k)
        self.length, self.pool_dim, self.ease_dim = int(length), int(pool_dim), int(ease_dim)
        self.pooling, self.activation = str(pooling), str(activation)
        self.bias, self.exclude, self.cosine = bool(bias), bool(exclude), bool(cosine)
        self.item_ids: np.ndarray | None = None

    def build(self, input_shape: Any = None) -> None:
        def table(name: str, shape: tuple[int, ...]) -> Any:
            return self.add_weight(shape=shape, dtype="float32", trainable=False,
                                   initializer="zeros", name=name)
        n = self.n_items
        # [n + 1, d] the history tower's table (row i + 1 = item i) and its [length]
        # recency weights; [n] 1 for an item a history may hold (it has training rows)
        self.history_table = table("history_table", (n + 1, self.pool_dim))
        self.pool_weights = table("pool_weights", (self.length,))
        self.poolable = table("poolable", (n,))
        # the EASE part's [n + 1, r] query table and its own recency weights
        self.ease_table = (table("ease_table", (n + 1, self.ease_dim))
                           if self.ease_dim else None)
        self.ease_weights = table("ease_weights", (self.length,)) if self.ease_dim else None
        self.candidates = table("candidates", (n, self.dim))
        self.listable = table("listable", (n,))
        self.built = True

    def call(self, history: Any) -> tuple[Any, Any]:
        n = self.n_items
        history = ops.cast(history, "int32")
        b, t = ops.shape(history)[0], ops.shape(history)[1]
        item = ops.logical_and(history >= 0, history < n)  # (take would clamp)
        usable = ops.logical_and(item, ops.take(self.poolable, ops.where(item, history, 0)) > 0)
        col = ops.where(usable, history + 1, 0)  # [B, T] table rows, 0 = not pooled
        # an item's latest place, row by row: a stable sort of each row by table row puts
        # an item's places side by side, oldest first, and the last of each run is the
        # latest. (Not one segment per (row, item): its int32 id, row * (n + 1) + col,
        # passed 2**31 once B x (n + 1) did.) ops.argsort is stable on JAX (jnp.argsort)
        # and torch (Keras asks for it).
        order = ops.argsort(col, axis=1)
        run = ops.take_along_axis(col, order, axis=1)
        ends = ops.concatenate([ops.not_equal(run[:, 1:], run[:, :-1]),
                                ops.ones((b, min(t, 1)), "bool")], axis=1)
        last = ops.take_along_axis(ends, ops.argsort(order, axis=1), axis=1)
        last = ops.cast(ops.logical_and(usable, last), "int32")
        # rank 0 = the latest distinct item: how many distinct items come after this one
        rank = ops.sum(last, axis=1, keepdims=True) - ops.cumsum(last, axis=1)
        pooled = ops.logical_and(last > 0, rank < self.length)
        rank = ops.minimum(rank, self.length - 1)

        def pool(weights: Any, table: Any) -> tuple[Any, Any]:
            w = ops.where(pooled, ops.take(weights, rank), 0.0)  # [B, T]
            v = ops.take(table, col, axis=0)  # [B, T, d]
            return ops.sum(ops.expand_dims(w, -1) * v, axis=1), w

        q, w = pool(self.pool_weights, self.history_table)
        count = ops.maximum(ops.sum(w, axis=1, keepdims=True), 1.0)
        if self.pooling == "mean":
            q = q / count
        elif self.pooling == "sqrt":
            q = q / ops.sqrt(count)
        if self.activation == "tanh":
            q = ops.tanh(q)
        parts = [q]
        if self.bias:
            parts.append(ops.ones((b, 1), "float32"))
        if self.ease_table is not None:
            parts.append(pool(self.ease_weights, self.ease_table)[0])
        q = ops.concatenate(parts, axis=1) if len(parts) > 1 else q
        if self.cosine:
            norm = ops.sqrt(ops.sum(ops.square(q), axis=1, keepdims=True))
            q = q / ops.where(norm > 0, norm, 1.0)
        scores = ops.matmul(q, ops.transpose(self.candidates))
        keep = ops.repeat(ops.expand_dims(self.listable > 0, 0), b, axis=0)
        if self.exclude:
            keep = ops.logical_and(keep, ops.logical_not(
                _hits(ops.where(item, history + 1, 0), n)))
        return _top_k(scores, keep, self.k)

    def compute_output_spec(self, history: Any) -> Any:
        shape = (history.shape[0], self.k)
        return (keras.KerasTensor(shape, dtype="float32"),
                keras.KerasTensor(shape, dtype="int32"))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_items": self.n_items, "dim": self.dim,
                "k": self.k, "length": self.length, "pool_dim": self.pool_dim,
                "ease_dim": self.ease_dim, "pooling": self.pooling,
                "activation": self.activation, "bias": self.bias, "exclude": self.exclude,
                "cosine": self.cosine}


#: users whose queries are computed at once when the model is exported
_QUERY_BATCH = 4096
_INT32 = np.iinfo(np.int32)
#: the largest seen-items table (``[n_users, most items of a user]`` int32) exported: it is
#: as wide as the longest history, and a few heavy users make it mostly padding
_SEEN_BYTES = 1 << 31


def _fits_int32(ids: np.ndarray) -> bool:
    return ids.dtype.kind in "iu" and (not len(ids) or (
        int(ids.min()) >= _INT32.min and int(ids.max()) <= _INT32.max))


def _int32_misfit(ids: np.ndarray) -> tuple[str, Any]:
    """Why ``ids`` do not fit int32 (``text`` or ``integers beyond int32``) and an id that
    does not, as Python writes it (``3298534883328``, not ``np.int64(...)``)."""
    if ids.dtype.kind not in "iu":
        first = ids[0]
        return "text", first.item() if isinstance(first, np.generic) else first
    bad = (ids < _INT32.min) | (ids > _INT32.max)
    return "integers beyond int32", ids[int(np.argmax(bad))].item()


def _seen_table(seen: Any) -> np.ndarray:
    """``[n_users, w]`` int32 each user's seen items (CSR rows) as rows + 1, 0 = padding."""
    counts = np.diff(seen.indptr)
    width = int(counts.max(initial=0))
    table = np.zeros((seen.shape[0], width), dtype=np.int32)
    if width:
        slot = np.arange(seen.nnz) - np.repeat(seen.indptr[:-1], counts)
        table[np.repeat(np.arange(seen.shape[0]), counts), slot] = seen.indices + 1
    return table


def _check_external_ids(model: Any, history: bool) -> None:
    """ConfigError unless the ids an ``ids='external'`` model takes and gives fit int32:
    user and item ids, or item ids only for a history model."""
    from twotower.errors import ConfigError
    vocabs = (("item", model.item_vocab.ids),) if history else (
        ("user", model.user_vocab.ids), ("item", model.item_vocab.ids))
    for what, v in vocabs:
        if not _fits_int32(v):
            kind, example = _int32_misfit(v)
            raise ConfigError(
                f"to_keras: ids='external' takes integer ids that fit int32 (JAX has no "
                f"text tensors, and Keras' StringLookup needs TensorFlow); this model's "
                f"{what} ids are {kind} (e.g. {example!r}): use ids='indices' and map ids "
                "with the vocabularies the model carries (user_ids, item_ids of its "
                "'retrieval' layer)")
    if history and (model.item_vocab.ids == PAD).any():
        raise ConfigError(
            f"to_keras: with history=True and ids='external', {PAD} pads a history and "
            f"marks a list's unfilled places, but it is one of this model's item ids: use "
            "ids='indices' and map ids with the vocabulary the model carries (item_ids of "
            "its 'retrieval' layer)")


def _compared(model: Any, v: np.ndarray) -> np.ndarray:
    """``v`` (query or candidate rows) as the run's index compares them: a float32 copy,
    scaled to unit length under a cosine index (``IndexConfig.metric``)."""
    v = np.array(v, dtype=np.float32)
    if model.index_config.metric == "cosine":
        from twotower.index._base import normalise
        normalise(v)
    return v


def _item_output(model: Any, ids: str, items: Any) -> dict[str, Any]:
    if ids != "external":
        return {"item_indices": items}
    output = IdOutput(len(model.item_vocab), name="item_ids")
    out = output(items)
    output.ids.assign(model.item_vocab.ids.astype(np.int32))
    return {"item_ids": out}


def build_history_model(model: Any, k: int, exclude_seen: bool, ids: str) -> keras.Model:
    """``TwoTower.to_keras(history=True)``'s model (arguments checked there, and that the
    model's query reads a history)."""
    from twotower.models.linear import floor_weights
    if ids == "external":
        _check_external_ids(model, history=True)
    cfg, lin, n_items = model.config, model._linear, len(model.item_vocab)
    length = cfg.history_length
    candidates = _compared(model, model.item_embeddings)
    history = keras.Input(shape=(None,), dtype="int32", name="history")
    lookup = IdLookup(n_items, name="item_lookup") if ids == "external" else None
    rows = lookup(history) if lookup is not None else history
    retrieval = HistoryRetrieval(
        n_items, candidates.shape[1], k, length, model.history_embeddings.shape[1],
        0 if lin is None else lin.query_table.shape[1], cfg.pooling, cfg.history_activation,
        bool(cfg.item_bias), exclude_seen, model.index_config.metric == "cosine",
        name="retrieval")
    scores, items = retrieval(rows)
    net = keras.Model(history, {"scores": scores, **_item_output(model, ids, items)},
                      name="twotower_history_retrieval")

    retrieval.history_table.assign(np.asarray(model.history_embeddings, np.float32))
    retrieval.pool_weights.assign(model._pool_weights(length))
    retrieval.poolable.assign((np.asarray(model.item_popularity) > 0).astype(np.float32))
    if lin is not None:
        retrieval.ease_table.assign(np.asarray(lin.query_table, np.float32))
        retrieval.ease_weights.assign(floor_weights(length, lin.half_life, lin.floor))
    retrieval.candidates.assign(candidates)
    retrieval.listable.assign((~model.untrained_items()).astype(np.float32))
    retrieval.item_ids = model.item_vocab.ids
    if lookup is not None:
        lookup.set_vocabulary(model.item_vocab.ids)
    return net


def build_keras_model(model: Any, k: int, exclude_seen: bool, ids: str) -> keras.Model:
    """``TwoTower.to_keras``'s model (arguments checked there)."""
    from twotower.errors import ConfigError
    n_users, n_items = len(model.user_vocab), len(model.item_vocab)
    user_ids, item_ids = model.user_vocab.ids, model.item_vocab.ids
    if ids == "external":
        _check_external_ids(model, history=False)
    queries = np.concatenate([_compared(model, model.query_embeddings(
        np.arange(s, min(s + _QUERY_BATCH, n_users)))) for s in range(0, n_users, _QUERY_BATCH)])
    candidates = _compared(model, model.item_embeddings)
    if exclude_seen:
        width = int(np.diff(model._seen.indptr).max(initial=0))
        if n_users * width * 4 > _SEEN_BYTES:
            raise ConfigError(
                f"to_keras: the seen-items table would take {n_users * width * 4 / 2**20:,.1f} "
                f"MiB ({n_users:,} users x {width:,}, the most items one user has): pass "
                "exclude_seen=False and leave out seen items after the model's call")
    seen = _seen_table(model._seen) if exclude_seen else np.zeros((n_users, 0), np.int32)

    name = "user_id" if ids == "external" else "user_index"
    user = keras.Input(shape=(), dtype="int32", name=name)
    lookup = IdLookup(n_users, name="user_lookup") if ids == "external" else None
    rows = lookup(user) if lookup is not None else user
    retrieval = TopKRetrieval(n_users, n_items, queries.shape[1], k, seen.shape[1],
                              name="retrieval")
    scores, items = retrieval(rows)
    net = keras.Model(user, {"scores": scores, **_item_output(model, ids, items)},
                      name="twotower_retrieval")

    retrieval.queries.assign(queries)
    retrieval.servable.assign((~model.untrained_users()).astype(np.float32))
    retrieval.candidates.assign(candidates)
    retrieval.listable.assign((~model.untrained_items()).astype(np.float32))
    if retrieval.seen is not None:
        retrieval.seen.assign(seen)
    retrieval.user_ids, retrieval.item_ids = user_ids, item_ids
    if lookup is not None:
        lookup.set_vocabulary(user_ids)
    return net
