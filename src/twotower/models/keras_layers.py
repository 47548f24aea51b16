"""A trained ``TwoTower`` as one self-contained Keras model (``TwoTower.to_keras``).

The model is a functional ``keras.Model`` of the layers below: user ids in, the top-k
scores and item ids out, with every table it needs (queries, candidates, the items never
trained, each user's seen items) stored as its weights, so ``model.save("x.keras")`` writes
one file that ``keras.saving.load_model`` rebuilds. Keras needs these classes to rebuild it:
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


@keras.saving.register_keras_serializable(package="twotower")
class TopKRetrieval(keras.layers.Layer):
    """User rows ``[B]`` int32 -> ``(scores [B, k] float32, item rows [B, k] int32)``, best
    first, by exact inner product of the user's stored query with every candidate.

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
            b = ops.shape(seen)[0]
            batch = ops.repeat(ops.expand_dims(ops.arange(b, dtype="int32"), 1),
                               self.seen_width, axis=1)
            coords = ops.reshape(ops.stack([batch, seen], axis=-1), (-1, 2))
            hits = ops.scatter(coords, ops.ones((b * self.seen_width,), "float32"),
                               (b, self.n_items + 1))
            keep = ops.logical_and(keep, hits[:, 1:] <= 0)
        scores = ops.where(keep, scores, float("-inf"))
        top, idx = ops.top_k(scores, self.k)
        idx = ops.where(top > float("-inf"), ops.cast(idx, "int32"), PAD)
        return top, idx

    def compute_output_spec(self, users: Any) -> Any:
        shape = (users.shape[0], self.k)
        return (keras.KerasTensor(shape, dtype="float32"),
                keras.KerasTensor(shape, dtype="int32"))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_users": self.n_users, "n_items": self.n_items,
                "dim": self.dim, "k": self.k, "seen_width": self.seen_width}

    # the vocabularies: not weights (text ids have no tensor type on JAX)
    def save_assets(self, dir_path: str) -> None:
        for name in ("user_ids", "item_ids"):
            ids = getattr(self, name)
            if ids is not None:
                ids = ids if ids.dtype.kind in "iu" else ids.astype(str)
                np.save(Path(dir_path) / f"{name}.npy", ids, allow_pickle=False)

    def load_assets(self, dir_path: str) -> None:
        for name in ("user_ids", "item_ids"):
            path = Path(dir_path) / f"{name}.npy"
            if path.is_file():
                setattr(self, name, np.load(path, allow_pickle=False))


#: users whose queries are computed at once when the model is exported
_QUERY_BATCH = 4096
_INT32 = np.iinfo(np.int32)
#: the largest seen-items table (``[n_users, most items of a user]`` int32) exported: it is
#: as wide as the longest history, and a few heavy users make it mostly padding
_SEEN_BYTES = 1 << 31


def _fits_int32(ids: np.ndarray) -> bool:
    return ids.dtype.kind in "iu" and (not len(ids) or (
        int(ids.min()) >= _INT32.min and int(ids.max()) <= _INT32.max))


def _seen_table(seen: Any) -> np.ndarray:
    """``[n_users, w]`` int32 each user's seen items (CSR rows) as rows + 1, 0 = padding."""
    counts = np.diff(seen.indptr)
    width = int(counts.max(initial=0))
    table = np.zeros((seen.shape[0], width), dtype=np.int32)
    if width:
        slot = np.arange(seen.nnz) - np.repeat(seen.indptr[:-1], counts)
        table[np.repeat(np.arange(seen.shape[0]), counts), slot] = seen.indices + 1
    return table


def build_keras_model(model: Any, k: int, exclude_seen: bool, ids: str) -> keras.Model:
    """``TwoTower.to_keras``'s model (arguments checked there)."""
    from twotower.errors import ConfigError
    n_users, n_items = len(model.user_vocab), len(model.item_vocab)
    user_ids, item_ids = model.user_vocab.ids, model.item_vocab.ids
    if ids == "external":
        for what, v in (("user", user_ids), ("item", item_ids)):
            if not _fits_int32(v):
                kind = "text" if v.dtype.kind not in "iu" else "integers beyond int32"
                raise ConfigError(
                    f"to_keras: ids='external' takes integer ids that fit int32 (JAX has no "
                    f"text tensors, and Keras' StringLookup needs TensorFlow); this model's "
                    f"{what} ids are {kind} (e.g. {v[0]!r}): use ids='indices' and map ids "
                    "with the vocabularies the model carries (user_ids, item_ids of its "
                    "'retrieval' layer)")
    queries = np.concatenate([model.query_embeddings(np.arange(s, min(s + _QUERY_BATCH,
                                                                      n_users)))
                              for s in range(0, n_users, _QUERY_BATCH)])
    candidates = np.asarray(model.item_embeddings, dtype=np.float32)
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
    output = IdOutput(n_items, name="item_ids") if ids == "external" else None
    out_name = "item_ids" if ids == "external" else "item_indices"
    outputs = {"scores": scores, out_name: output(items) if output is not None else items}
    net = keras.Model(user, outputs, name="twotower_retrieval")

    retrieval.queries.assign(queries)
    retrieval.servable.assign((~model.untrained_users()).astype(np.float32))
    retrieval.candidates.assign(candidates)
    retrieval.listable.assign((~model.untrained_items()).astype(np.float32))
    if retrieval.seen is not None:
        retrieval.seen.assign(seen)
    retrieval.user_ids, retrieval.item_ids = user_ids, item_ids
    if lookup is not None:
        lookup.set_vocabulary(user_ids)
        output.ids.assign(item_ids.astype(np.int32))
    return net
