"""``TwoTower``: the public retrieval model (train, recommend, similar items).

Keras trains the towers; serving runs on numpy copies of the learned tables and a
``twotower.index`` search index, so it never touches donated JAX buffers.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np

from twotower.data.interactions import Interactions
from twotower.data.vocabulary import Vocabulary, other_form_hint, plain_id
from twotower.errors import (ConfigError, DataError, NotFittedError, TrainingError,
                             TwoTowerError, UnknownIdError)
from twotower.index import PAD_ID, IndexConfig, make_index
from twotower.models.config import ModelConfig


def _check_k(k: Any, n: int, name: str = "k", what: str = "the catalogue size") -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ConfigError(f"`{name}` must be an integer, got {k!r}")
    if not 1 <= int(k) <= n:
        raise ConfigError(f"`{name}` must be between 1 and {n} ({what}), got {k}")
    return int(k)


def _not_tuned(index: Any, target_recall: float, t0: float, why: str) -> dict[str, Any]:
    """``tune_index``'s report when there is no recall to measure: the knob left as it is,
    ``skipped`` saying why."""
    from twotower.index.recall import _TUNED
    knob = _TUNED[index.kind][0]
    value = index.nprobe if knob == "nprobe" else index.config.ef_search
    return {"knob": knob, "target_recall": target_recall, "calibration_queries": 0,
            "recall_tried": {}, "value": value, "reached": False,
            "skipped": f"{why}: {knob} left at {value}",
            "seconds": round(time.perf_counter() - t0, 4)}


def filtered_order(order: np.ndarray, n_items: int, allow: np.ndarray | None = None,
                   deny: np.ndarray | None = None) -> np.ndarray:
    """``order`` (item indices, e.g. ``popularity_order``) less the ``deny`` items and
    within the ``allow`` items (item indices; None: no such list), order kept: the popular
    fallback under the same lists as the search (``twotower recommend`` and the service)."""
    if allow is None and deny is None:
        return order
    keep = np.zeros(n_items, dtype=bool) if allow is not None else np.ones(n_items, dtype=bool)
    if allow is not None:
        keep[allow] = True
    if deny is not None:
        keep[deny] = False
    return order[keep[order]]


def _check_indices(idx: np.ndarray, n: int, name: str, what: str) -> None:
    """DataError unless every entry of ``idx`` is an integer in [0, n): one min/max, no
    loop (floats and bools would index silently: 0.9 as 0, True as 1)."""
    if idx.ndim != 1:
        hint = f" (use [{idx.item()!r}] for one)" if idx.ndim == 0 else ""
        raise DataError(f"`{name}` must be a 1-D array of internal {what} ids, got shape "
                        f"{idx.shape}{hint}")
    if not idx.size:
        return
    if idx.dtype.kind not in "iu":
        raise DataError(f"`{name}` must be internal {what} ids (integers), got an array of "
                        f"{idx.dtype}")
    lo, hi = idx.min(), idx.max()
    if lo < 0 or hi >= n:
        bad = lo if lo < 0 else hi
        raise DataError(f"`{name}` must be internal {what} ids in [0, {n}), got {bad}")


def check_streamable(cfg: ModelConfig, rating_col: str | None, *,
                     event_col: str | None = None,
                     event_weights: dict[str, float] | None = None) -> None:
    """ConfigError/DataError unless ``fit_stream`` can train ``cfg`` on a stream of these
    columns (``StreamConfig``'s ``rating_col``, ``event_col``, ``event_weights``; checked
    before the file's scan, which can take a while)."""
    kind = cfg.interaction_weights
    if kind == "rating" and rating_col is None:
        raise ConfigError("fit_stream: model.interaction_weights 'rating' weighs each row by "
                          "its rating, and the stream reads no rating column: name it "
                          "(StreamConfig.rating_col, --rating-col COL)")
    if kind == "event" and event_col is None:
        raise ConfigError("fit_stream: model.interaction_weights 'event' weighs each row by "
                          "its event name's weight, and the stream reads no event column: "
                          "name it (StreamConfig(event_col=, event_weights=), --event-col "
                          "COL)")
    if kind == "event" and dict(event_weights or {}) != cfg.event_weights:
        raise ConfigError(f"fit_stream: the stream maps event names to weights by "
                          f"{dict(event_weights or {})} (StreamConfig.event_weights), and "
                          f"the model is configured with {cfg.event_weights} "
                          "(model.event_weights): give both the same table")
    if kind != "event" and event_col is not None:
        raise ConfigError(f"fit_stream: the stream reads event column {event_col!r} as "
                          f"each row's weight (StreamConfig.event_col), and "
                          f"model.interaction_weights is {kind!r}: set it to 'event' with "
                          "the same event_weights, or leave the stream's event_col out")
    cfg.check_used()
    how = ("(`[model]` settings in a --config file; `twotower train --stream --preset "
           "tutorial` (ratings) or `--preset clicks` (clicks) trains the id tower)")
    if cfg.query_tower != "id":
        raise ConfigError(f"fit_stream: model.query_tower must be 'id' (a history tower "
                          f"needs each user's whole history in memory), got "
                          f"{cfg.query_tower!r} {how}")
    if cfg.item_features or cfg.user_features:
        raise ConfigError("fit_stream: side features are not streamed; set "
                          f"model.item_features and model.user_features to [] {how}")
    if cfg.objective == "multinomial":
        raise ConfigError("fit_stream: objective 'multinomial' trains per user and is "
                          f"not streamed; use mse, sampled_softmax, softmax or bpr {how}")
    if cfg.objective == "mse" and rating_col is None:
        raise DataError("objective 'mse' needs ratings: name the rating column "
                        "(--rating-col, StreamConfig.rating_col), or, for a log without "
                        "ratings, another objective: `--preset clicks` (sampled_softmax, "
                        "ModelConfig.preset(\"clicks\"))")


def _single_id(value: Any) -> bool:
    """Whether ``value`` is one id as given (text, an integer, an integral float), not a
    list of them and not something no id is (None, a bool, a mapping)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    return isinstance(value, (str, bytes, int, float, np.integer, np.floating)) and \
        not isinstance(value, (bool, np.bool_))


def _check_id_list(ids: Any, name: str, what: str, ordered: bool = True) -> None:
    """DataError for a single id where a list of ids is expected (a string would otherwise
    be read as a list of its characters). ``ordered=False`` (a set of ids, as allow/deny
    lists are): a set is fine, a mapping still is not (it iterates over its keys)."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable) or (
            isinstance(ids, np.ndarray) and ids.ndim == 0):
        if not _single_id(ids):  # None, True, an object: no id either ("pass [None]")
            raise DataError(f"`{name}` must be a list of {what} ids, got {ids!r}")
        raise DataError(f"`{name}` must be a list of {what} ids, got the single id {ids!r}; "
                        f"pass [{ids!r}]")
    # containers whose iteration is no list of ids: a DataFrame gives its column names, a
    # 2-D array its rows, a dict its keys and a set no order (the answers' rows follow it)
    if hasattr(ids, "columns") and hasattr(ids, "iloc"):
        raise DataError(f"`{name}` must be a 1-D list of {what} ids, got a DataFrame (it "
                        f"iterates over its column names): pass one column, "
                        f"df[\"{what}_id\"]")
    if getattr(ids, "ndim", 1) != 1:
        raise DataError(f"`{name}` must be a 1-D list of {what} ids, got an array of shape "
                        f"{getattr(ids, 'shape', '?')}")
    if isinstance(ids, Mapping):  # (ordered or not: the keys are no list of ids)
        raise DataError(f"`{name}` must be a list of {what} ids, got a {type(ids).__name__} "
                        "(it iterates over its keys): pass a list")
    if ordered and isinstance(ids, (set, frozenset)):
        raise DataError(f"`{name}` must be a list of {what} ids, got a "
                        f"{type(ids).__name__} (the answers' rows follow the list's order): "
                        "pass a list")


def _same_vocabularies(part: Interactions, user_vocab: Vocabulary, item_vocab: Vocabulary,
                       name: str) -> None:
    """DataError unless ``part`` indexes users and items with these vocabularies."""
    for what, mine, theirs in (("user", part.user_vocab, user_vocab),
                               ("item", part.item_vocab, item_vocab)):
        if mine != theirs:
            raise DataError(f"`{name}` must use the training {what} vocabulary (its indices "
                            f"would name other {what}s): it has {len(mine):,} {what} ids, "
                            f"training {len(theirs):,}; build it with "
                            f"Interactions.from_ids(..., user_vocab=train.user_vocab, "
                            f"item_vocab=train.item_vocab) or take it from the same split")


def _check_ratings_vary(lo: float, hi: float) -> None:
    """``mse`` rescales ratings to [0, 1] by their range: equal ratings all become 0 and
    the model learns nothing."""
    if lo == hi:
        raise DataError(f"objective 'mse' needs ratings that vary (all ratings are {lo}); "
                        f"for an implicit log (no ratings) use an objective like "
                        f"sampled_softmax")


def _split_over_processes(variables: Any) -> bool:
    """Whether any of ``variables`` (Keras variables) is split over several processes: held
    in parts by devices of other processes, so no one process can read it whole."""
    return not all(getattr(v.value, "is_fully_replicated", True)
                   or getattr(v.value, "is_fully_addressable", True) for v in variables)


def _to_host(value: Any) -> np.ndarray:
    """A float32 numpy copy of a (possibly distributed) array. A table split over several
    processes is gathered first, a collective every process joins (they all run the same
    ``fit``)."""
    if hasattr(value, "value"):  # a Keras variable
        value = value.value
    if not getattr(value, "is_fully_addressable", True):
        from jax.experimental import multihost_utils
        value = multihost_utils.process_allgather(value, tiled=True)
    return np.array(value, dtype=np.float32)


_DIGEST_BYTES = 16


def _data_digest(*parts: Any) -> np.ndarray:
    """A 128-bit digest (``uint32[4]``) of ``parts``: numpy arrays (dtype, shape and
    bytes), vocabularies (their ids) and plain values."""
    import hashlib
    h = hashlib.blake2b(digest_size=_DIGEST_BYTES)
    for part in parts:
        if hasattr(part, "ids") and not isinstance(part, np.ndarray):  # a Vocabulary
            part = np.asarray(part.ids)
        if isinstance(part, np.ndarray):
            if part.dtype.kind in "OUS":  # string ids: their text, one per line
                h.update("\n".join(map(str, part.tolist())).encode("utf-8", "surrogatepass"))
            else:
                h.update(f"{part.dtype.str}{part.shape}".encode())
                h.update(np.ascontiguousarray(part).view(np.uint8).reshape(-1))
        else:
            h.update(repr(part).encode())
        h.update(b"\x00")
    return np.frombuffer(h.digest(), dtype=np.uint32).copy()


def _sparse_parts(matrix: Any) -> tuple[Any, ...]:
    """A side-feature matrix (CSR) as the parts ``_data_digest`` takes: its shape and the
    arrays that hold it."""
    return (matrix.shape, matrix.indptr, matrix.indices, matrix.data)


_SETTING_SLOTS = 128


def _settings_digest(settings: dict[str, Any] | None) -> np.ndarray:
    """``uint32[_SETTING_SLOTS]``: setting ``i`` (in key order) hashed into slot ``i %
    _SETTING_SLOTS``, so the processes of a job can name the settings they differ in."""
    import hashlib
    out = np.zeros(_SETTING_SLOTS, dtype=np.uint32)
    for i, key in enumerate(sorted(settings or {})):
        h = hashlib.blake2b(f"{key}={settings[key]!r}".encode("utf-8", "surrogatepass"),
                            digest_size=4)
        out[i % _SETTING_SLOTS] ^= np.frombuffer(h.digest(), dtype=np.uint32)[0]
    return out


def _same_data_on_every_process(what: str, *parts: Any,
                                failure: BaseException | None = None,
                                settings: dict[str, Any] | None = None) -> None:
    """In a multi-process job, check that every process trains on the same data (the
    product's multi-process training has every process read the same rows and feed its
    part of each batch). Processes given different data would otherwise wait on each other
    for ever at the first collective whose shapes or step counts differ. A collective
    itself: every process of the job must call it. Nothing in a single process.

    ``failure``: this process could not read its data (the error, raised here once every
    process knows): the others then stop too, rather than wait for it.

    ``settings``: the training's settings (the model config, the stream's), compared too:
    processes given other epochs or seeds waited on each other for ever, or failed inside
    JAX blaming a process that had not stopped.

    Raises:
        ConfigError: on every process, naming the settings some process has otherwise
            than process 0 (and this process's values of them).
        DataError: on every process, naming the processes whose data differ from process
            0's, or that could not read theirs (those raise their own error).
    """
    import jax
    if jax.process_count() == 1:
        if failure is not None:
            raise failure
        return
    from jax.experimental import multihost_utils
    flag = np.array([failure is not None], dtype=np.uint32)
    mine = np.concatenate([flag, np.zeros(_DIGEST_BYTES // 4, np.uint32) if failure is not None
                           else _data_digest(*parts), _settings_digest(settings)])
    every = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, mine.size)
    failed = [p for p in range(len(every)) if every[p, 0]]
    if failure is not None:
        raise failure
    if failed:
        names = ", ".join(map(str, failed))
        raise DataError(f"{what}: process(es) {names} could not read their data (their own "
                        "error says why); every process of the job stops")
    slots = every[:, 1 + _DIGEST_BYTES // 4:]
    odd = np.flatnonzero((slots != slots[0]).any(axis=0))
    if len(odd) and settings:
        odd_slots = set(odd.tolist())
        keys = [k for i, k in enumerate(sorted(settings)) if i % _SETTING_SLOTS in odd_slots]
        procs = [p for p in range(1, len(slots)) if not np.array_equal(slots[p], slots[0])]
        values = ", ".join(f"{k} {settings[k]!r}" for k in keys)
        raise ConfigError(
            f"the training settings differ between the processes of this job: process(es) "
            f"{', '.join(map(str, procs))} have other {', '.join(keys)} than process 0 "
            f"(this process, {jax.process_index()}: {values}). Every process must be started "
            "with the same flags and --config but --process-id")
    every = every[:, 1:1 + _DIGEST_BYTES // 4]
    differ = [p for p in range(1, len(every)) if not np.array_equal(every[p], every[0])]
    if differ:
        names = ", ".join(map(str, differ))
        raise DataError(f"{what} differ between the processes of this job: process(es) "
                        f"{names} read other data than process 0. Every process must train "
                        "on the same data (the same --data file and reading flags, the same "
                        "--split and --seed); each feeds its own part of every batch")


def _data_parallel_devices() -> int:
    """Devices the current Keras distribution splits a batch over (1: none set)."""
    import keras

    dist = keras.distribution.distribution()
    if dist is None:
        return 1
    mesh = dist.device_mesh
    name = getattr(dist, "batch_dim_name", None)
    if name not in mesh.axis_names:
        return 1
    return int(mesh.shape[mesh.axis_names.index(name)])


def _whole_batches(x: dict[str, np.ndarray], batch_size: int, seed: int | None,
                   skip: int = 0) -> Any:
    """Endless stream of whole batches (the remainder dropped); reshuffled each pass when
    ``seed`` is given, in order otherwise; ``skip``: passes (epochs) done before a resume,
    whose orders are drawn and not read, so the next pass is the one an uninterrupted run
    reads. With several processes (``jax.distributed``) every process draws the same
    batches from the same ``x`` and yields its own part of each (``process_part``): Keras
    reads each process's batch as its local share."""
    from twotower.training.loop import current_mesh, process_part
    n = len(next(iter(x.values())))
    rng = np.random.default_rng(seed) if seed is not None else None
    for _ in range(skip if rng is not None else 0):
        rng.permutation(n)
    mesh = current_mesh()  # here: Keras may read this generator from another thread

    def batches() -> Any:
        while True:
            order = rng.permutation(n) if rng is not None else np.arange(n)
            for start in range(0, n - batch_size + 1, batch_size):
                rows = order[start:start + batch_size]
                if mesh is not None:
                    rows = process_part(rows, mesh)
                yield ({k: v[rows] for k, v in x.items()},)
    return batches()


def _fit_whole_batches(net: Any, x: dict[str, np.ndarray], val: Any, cfg: ModelConfig,
                       split: int, verbose: Any, callbacks: list[Any], done: int = 0) -> Any:
    """``net.fit`` under data parallelism: every batch holds ``batch_size`` rows, so it splits
    evenly over the ``split`` devices (the last partial batch of each epoch is dropped).
    ``done``: the epochs a resumed checkpoint holds (its callback starts Keras there)."""
    n = len(next(iter(x.values())))
    steps = n // cfg.batch_size
    if cfg.batch_size % split or steps == 0:
        raise ConfigError(f"batch_size {cfg.batch_size} must be a multiple of the {split} "
                          f"data-parallel devices and at most the {n:,} training examples")
    kwargs: dict[str, Any] = {}
    if val is not None:
        n_val = len(next(iter(val[0].values())))
        if n_val >= cfg.batch_size:
            kwargs = dict(validation_data=_whole_batches(val[0], cfg.batch_size, None),
                          validation_steps=n_val // cfg.batch_size,
                          validation_freq=cfg.validation_freq)
    return net.fit(_whole_batches(x, cfg.batch_size, cfg.seed, done), steps_per_epoch=steps,
                   epochs=cfg.epochs, shuffle=False, verbose=verbose,
                   callbacks=callbacks, **kwargs)


def _start_checkpoint(checkpoint: Any, fingerprint: dict[str, Any]) -> Any:
    """``checkpoint`` (a directory or ``Checkpoint``) bound to the training that
    ``fingerprint`` tells (``Checkpoint.start``), or None."""
    if checkpoint is None:
        return None
    from twotower.models.config import ModelConfig
    from twotower.training.checkpoint import Checkpoint
    ck = Checkpoint.of(checkpoint)
    # a model setting a checkpoint of an older version lacks: as that version trained it
    ck.start(fingerprint, defaults={"config": ModelConfig().to_dict()})
    return ck


def _blocks_devices() -> int:
    """Devices of a ``shard_tables="blocks"`` distribution in effect (0: none)."""
    import keras
    dist = keras.distribution.distribution()
    if dist is None or getattr(dist, "shard_tables", None) != "blocks":
        return 0
    mesh = dist.device_mesh
    return int(mesh.shape[mesh.axis_names.index("model")]) if "model" in mesh.axis_names else 0


def _row_wise(net: Any) -> bool:
    """Whether ``TwoTower.fit`` trains ``net`` with the product loop's row-wise updates:
    exact for its objective and optimizer (``sparse_reason``) and worth it, i.e. tables of
    at least ``SPARSE_MIN_RATIO`` x batch rows (below that, dense updates are as fast)."""
    from twotower.training.loop import SPARSE_MIN_RATIO, sparse_reason
    rows = net.n_users + net.n_items
    return (sparse_reason(net, net.optimizer) is None
            and rows >= SPARSE_MIN_RATIO * net.cfg.batch_size)


def history_table(x: Interactions, length: int) -> np.ndarray:
    """``[n_users, length]`` int32: each user's most recent distinct items + 1, 0-padded on
    the right. An item the user interacted with more than once appears once, at its most
    recent interaction (a history is a set ordered by recency, like the binary user-item
    matrix that evaluation and the baselines use)."""
    users, items, rank_from_end = x.recency_ranks()  # 0 = most recent
    keep = rank_from_end < length
    out = np.zeros((x.n_users, length), dtype=np.int32)
    out[users[keep], rank_from_end[keep]] = items[keep] + 1
    return out


def pair_weights(x: Interactions, kind: str = "rating") -> Any:
    """``[n_users, n_items]`` CSR of each (user, item) pair's weight
    (``ModelConfig.interaction_weights`` ``"rating"`` or ``"event"``, ``kind``): the sum of
    its rows' ratings (for ``event``, the rows' event weights that ``read_interactions``
    put there), scaled so that the mean over the pairs is 1 (a pair of weight 0 stays, an
    explicit zero).

    Raises:
        DataError: no ratings, a negative one (naming its row), or every weight 0.
    """
    if x.ratings is None:
        raise _no_weights(kind)
    check_weights(x.ratings, kind=kind)
    m = x.to_csr("rating")
    positive = m.data[m.data > 0]
    mean = float(positive.mean()) if len(positive) else 0.0
    if not mean > 0:
        raise _zero_weights(kind)
    m.data = (m.data / mean).astype(np.float32)
    return m


def _no_weights(kind: str, streamed: bool = False) -> DataError:
    how = ("its rating: the interactions have none (Interactions.ratings; --rating-col "
           "in the CLI names the weight column)" if kind == "rating" else
           "its event's weight: the interactions have none (Interactions.ratings, which "
           "read_interactions(event_col=, event_weights=) fills; --event-col in the CLI)")
    if streamed:
        how = ("its rating: the stream reads none (StreamConfig.rating_col; --rating-col in "
               "the CLI names the weight column)" if kind == "rating" else
               "its event's weight: the stream reads no event column "
               "(StreamConfig(event_col=, event_weights=); --event-col in the CLI)")
    return DataError(f"model.interaction_weights {kind!r} weighs each pair by {how}")


def _zero_weights(kind: str, what: str = "pair") -> DataError:
    give = ("give some rows a positive rating" if kind == "rating" else
            "give some event of the log a positive weight (model.event_weights)")
    return DataError(f"model.interaction_weights {kind!r}: every {what}'s weight is 0, "
                     f"nothing to learn from; {give}")


def weight_scale(positive_sum: float, positive_rows: int, kind: str) -> float:
    """The divisor of each row's weight in a per-pair objective (``softmax``,
    ``sampled_softmax``, ``bpr``): the mean of the positive row weights (their float64
    sum over their count), so that the mean positive row weight is 1, as ``pair_weights``
    scales pairs. ``fit`` and ``fit_stream`` compute it alike (``row_weights``,
    ``InteractionStream.model_inputs``).

    Raises:
        DataError: every weight 0.
    """
    mean = positive_sum / positive_rows if positive_rows else 0.0
    if not mean > 0:
        raise _zero_weights(kind, "row")
    return float(mean)


def row_weights(x: Interactions, kind: str = "rating", scale: float | None = None
                ) -> tuple[np.ndarray, float]:
    """``[n]`` float32: each row's weight (its rating; for ``event``, its event's weight
    that ``read_interactions`` put there) over ``scale`` (None: ``weight_scale`` of
    ``x``'s own weights), and the scale.

    Raises:
        DataError: no ratings, a negative one (naming its row), or every weight 0.
    """
    if x.ratings is None:
        raise _no_weights(kind)
    check_weights(x.ratings, kind=kind)
    r = np.asarray(x.ratings, dtype=np.float32)
    if scale is None:
        positive = r[r > 0]
        scale = weight_scale(float(np.sum(positive, dtype=np.float64)), len(positive), kind)
    return np.divide(r, scale, dtype=np.float32), scale


def check_weights(ratings: np.ndarray, where: Any = None, kind: str = "rating") -> None:
    """DataError naming the first negative weight (``where(row)``: the row as a file names
    it; else its 0-based row)."""
    bad = np.flatnonzero(~(np.asarray(ratings) >= 0))
    if len(bad):
        row = int(bad[0])
        at = where(row) if where is not None else f"row {row} (0-based)"
        raise DataError(f"model.interaction_weights {kind!r}: weights must be numbers >= 0 "
                        f"(0: the pair teaches nothing), got {float(ratings[row]):g} at "
                        f"{at}" + (f" (and {len(bad) - 1} more rows)" if len(bad) > 1
                                   else ""))


def history_weights(hist: np.ndarray, weights: Any) -> np.ndarray:
    """``[n_users, L]`` float32: ``weights[u, hist[u, j] - 1]`` (the CSR of
    ``pair_weights``) beside each non-padding entry of a history table, 0 at padding."""
    out = np.zeros(hist.shape, dtype=np.float32)
    rows, cols = np.nonzero(hist)
    if len(rows):
        out[rows, cols] = np.asarray(weights[rows, hist[rows, cols] - 1]).ravel()
    return out


def recency_weights(length: int, config: ModelConfig) -> np.ndarray:
    """``[length]`` float32 weights of history columns (column 0 = the latest item):
    ``floor + (1 - floor) * 0.5 ** (rank / half_life)``, all ones when the half-life is 0."""
    from twotower.models.linear import floor_weights
    return floor_weights(length, config.recency_half_life, config.recency_floor)


def seen_recency(train: Interactions, seen: Any) -> np.ndarray | None:
    """Each training pair's recency rank (0: the user's latest item; repeats at their
    latest, ``Interactions.recency_ranks``) aligned with ``seen``'s CSR entries: kept with
    a run, so that ``evaluate`` can carve each user's latest items for its baselines on any
    run (the history table holds a history tower's last ``history_length`` items only, and
    an id tower has none). None when the two do not align (not expected)."""
    import scipy.sparse as sp
    u, i, rank = train.recency_ranks()
    r = sp.csr_matrix(((rank + 1).astype(np.float64), (u, i)), shape=seen.shape)
    r.sort_indices()
    if r.nnz != seen.nnz or not np.array_equal(r.indices, seen.indices) \
            or not np.array_equal(r.indptr, seen.indptr):
        return None
    return (r.data - 1).astype(np.int32)


def untrained_user_error(user_id: Any) -> UnknownIdError:
    """The refusal of a user the model knows but never trained on (its query is as
    initialised), worded once for the library, the CLI and the service."""
    return UnknownIdError(f"user id {user_id!r} has no training interactions (the model "
                          "never trained its query)")


def untrained_item_error(item_id: Any) -> UnknownIdError:
    """The refusal of similar items of an item the model never trained
    (``TwoTower.untrained_items``), worded once for the library, the CLI and the service."""
    return UnknownIdError(f"item id {item_id!r} has no training interactions and no trained "
                          "item features: the model never trained its vector, so no item "
                          "is similar to it")


def _item_id_list(ids: Any, name: str) -> list[Any]:
    """``ids`` (external item ids, any iterable: a list, a set, an array, a Series) as a
    list; DataError for a single id or a container that iterates as no list of ids."""
    _check_id_list(ids, name, "item", ordered=False)
    return list(ids.tolist() if isinstance(ids, np.ndarray) else ids)


def _read_only(a: np.ndarray) -> np.ndarray:
    """``a`` (a view of the model's state, or a cached array) with writing turned off: a
    caller writing into what a method returned would change every later answer."""
    a.flags.writeable = False
    return a


class DeniedItems:
    """External item ids no list returns, mapped once to the model's items and prepared
    once per search index: ``TwoTower.prepare_deny``. For a fixed deny list used on many
    calls (items out of stock): pass it as ``deny=`` to ``recommend_ids``, ``similar_ids``,
    ``recommend``, ``recommend_from_history`` or ``similar_items``; each index then gets
    one prepared list (these items and the ones the model never trained), not an ``[n]``
    mask per call.

    Attributes:
        rows: ``[n_denied]`` int64, the denied items' internal indices (sorted, unique).
        n_unknown: how many of the given ids the catalogue does not hold (ignored: an
            item the model does not know is in no list anyway).

    Example:
        >>> out_of_stock = model.prepare_deny(["SKU-1", "SKU-2"])   # doctest: +SKIP
        >>> model.recommend_ids([42], k=10, deny=out_of_stock)       # doctest: +SKIP
    """

    __slots__ = ("rows", "n_unknown", "_vocab", "_cache")

    def __init__(self, rows: np.ndarray, n_unknown: int, vocab: Vocabulary) -> None:
        self.rows = rows
        self.rows.flags.writeable = False
        self.n_unknown = n_unknown
        self._vocab = vocab
        self._cache: dict[int, tuple[Any, ...]] = {}

    @property
    def n_denied(self) -> int:
        """How many catalogue items are denied (the known ids, each once)."""
        return len(self.rows)

    def __repr__(self) -> str:
        return f"DeniedItems(n_denied={self.n_denied}, n_unknown={self.n_unknown})"

    def _for(self, model: TwoTower, index: Any) -> Any:
        """This list with the model's untrained items, prepared for ``index`` (once per
        build of it); None when that denies nothing."""
        if model.item_vocab is not self._vocab and model.item_vocab != self._vocab:
            raise DataError("`deny` was prepared by another model (its items are other "
                            "items): prepare it with this model's prepare_deny")
        untrained = model._untrained_item_cache()[1]
        hit = self._cache.get(id(index))
        if hit is None or hit[0] is not index or hit[1] is not index._layout or \
                hit[2] is not untrained:
            ids = self.rows if untrained is None else np.union1d(self.rows, untrained)
            hit = (index, index._layout, untrained,
                   index.prepare_deny(ids) if len(ids) else None)
            # (a copy of the items first: requests may prepare it from several threads)
            for key in [k for k, v in list(self._cache.items())
                        if v[0] not in (model._index, model._similar)]:
                self._cache.pop(key, None)  # indexes the model no longer has
            self._cache[id(index)] = hit
        return hit[3]


class TwoTower:
    """A two-tower retrieval model over one interaction log.

    Args:
        config: model and training settings (``ModelConfig.preset("default")`` when None).
        index: search index settings (exact inner-product search when None).

    Example:
        >>> from twotower import TwoTower, ModelConfig
        >>> model = TwoTower(ModelConfig.preset("tutorial", epochs=1))  # doctest: +SKIP
        >>> model.fit(train)                                            # doctest: +SKIP
        >>> scores, items = model.recommend_ids([42], k=10)             # doctest: +SKIP
    """

    def __init__(self, config: ModelConfig | None = None, index: IndexConfig | None = None
                 ) -> None:
        if config is not None and not isinstance(config, ModelConfig):
            hint = (f'ModelConfig.preset("{config}")' if isinstance(config, str)
                    else "ModelConfig(**settings), or ModelConfig.preset(name, **overrides)")
            raise ConfigError(f"TwoTower: `config` must be a ModelConfig, got "
                              f"{type(config).__name__} {config!r:.60}; use {hint}")
        if index is not None and not isinstance(index, IndexConfig):
            raise ConfigError(f"TwoTower: `index` must be an IndexConfig (e.g. "
                              f'IndexConfig(kind="hnsw")), got {type(index).__name__}')
        self.config = config or ModelConfig.preset("default")
        self.index_config = index or IndexConfig(kind="exact")
        self.history: dict[str, list[float]] = {}
        self.fit_seconds: float | None = None
        self.trained_at: str | None = None  # UTC, ISO 8601: when the last fit ended
        self.rating_range: tuple[float, float] = (0.0, 1.0)
        self._net: Any = None
        self._fitted = False
        #: how the last ``fit`` trained: ``"model.fit"`` or the product loop (large tables)
        self.trained_with: str | None = None
        #: the closed-form EASE part (``ModelConfig.ease_weight``), when fitted
        self._linear: Any = None
        #: EASE's chosen lambda, half-life and floor, and the validation metrics of each
        #: setting tried
        self.ease_tuning: dict[str, Any] | None = None

    # ------------------------------------------------------------------ training
    def fit(self, train: Interactions, validation: Interactions | None = None, *,
            verbose: int | str = "auto", callbacks: Sequence[Any] = (),
            checkpoint: Any = None) -> TwoTower:
        """Train on ``train``; ``validation`` (same vocabularies) reports val loss.

        ``checkpoint``: a directory (or ``twotower.training.checkpoint.Checkpoint``) where
        the training keeps a checkpoint, and resumes from one left there by the same
        training (same config and data; another is refused) that stopped, and trains on
        as the uninterrupted run would have, to the same tables (``model.fit`` from the
        end of its last whole epoch). Removed once
        the model is trained, unless ``Checkpoint(keep=True)``. After a resume through
        ``model.fit`` (history towers, small catalogues) or the product loop, ``history``
        holds every epoch: those done before the stop, then those run since.

        Returns:
            self, with ``history`` holding per-epoch losses.

        Raises:
            DataError: empty data, ``mse`` without ratings or with all ratings equal, or
                ``validation`` on other vocabularies than ``train``.
        """
        import keras

        from twotower.models.net import TwoTowerNet

        cfg = self.config
        if not isinstance(train, Interactions):
            raise DataError(f"fit: `train` must be Interactions (Interactions.from_ids(users, "
                            f"items, ...) or read_interactions(path)), got "
                            f"{type(train).__name__}")
        cfg.check_used()
        # before any check that depends on the data: a process whose data fails one would
        # stop alone, and the others wait for it for ever
        _same_data_on_every_process(
            "the training interactions", train.user_vocab, train.item_vocab,
            train.users, train.items, train.ratings, train.timestamps,
            settings={**cfg.to_dict(), "streamed": False})
        if len(train) == 0:
            raise DataError("fit: the training interactions are empty")
        if cfg.objective == "mse" and train.ratings is None:
            raise DataError("objective 'mse' needs ratings (Interactions.ratings; --rating-col "
                            "in the CLI), or another objective: ModelConfig() is the "
                            "tutorial's mse model; ModelConfig.preset('default') (what "
                            "TwoTower() trains) needs no ratings")
        if cfg.objective == "mse":
            _check_ratings_vary(float(train.ratings.min()), float(train.ratings.max()))
        if validation is not None:
            _same_vocabularies(validation, train.user_vocab, train.item_vocab, "validation")
        t0 = time.perf_counter()
        # unfitted until this fit succeeds: one that fails or is interrupted half-way leaves
        # no mix of old and new parts to recommend from or save
        self._fitted = False
        self._linear, self.ease_tuning = None, None
        keras.utils.set_random_seed(cfg.seed)
        self.user_vocab, self.item_vocab = train.user_vocab, train.item_vocab
        self.item_info, self.user_info = train.item_info, train.user_info
        self._seen = train.to_csr()
        self._seen_recency = seen_recency(train, self._seen)
        untrained = int(np.count_nonzero(np.diff(self._seen.indptr) == 0))  # untrained_users
        if untrained:
            import warnings
            warnings.warn(f"{untrained} of {train.n_users} users have no training "
                          "interactions (e.g. every row of theirs went to the test split): "
                          "the model never trains their query, so recommend_ids, the CLI "
                          "and the service serve them as users it does not know (refused, "
                          "or the popular items with fallback=popular; recommend() by index "
                          "ranks from the untrained query); keep rows of theirs in training "
                          "to serve them by the model", stacklevel=2)
        self.item_popularity = train.item_popularity()
        if train.ratings is not None:
            self.rating_range = (float(train.ratings.min()), float(train.ratings.max()))
        else:
            self.rating_range = (0.0, 1.0)
        self._history = (history_table(train, cfg.history_length)
                         if cfg.query_tower != "id" else None)
        # interaction_weights "rating": each history entry's weight as a multinomial target
        weights = (history_weights(self._history, pair_weights(train, cfg.interaction_weights))
                   if cfg.interaction_weights != "none" and cfg.objective == "multinomial"
                   else None)
        if self._history is not None and cfg.recency_half_life and train.timestamps is None:
            import warnings
            warnings.warn("model.recency_half_life weights each user's history by row order: "
                          "the data has no time column (--time-col); if its rows are not in "
                          "time order, set recency_half_life = 0", stacklevel=2)

        from twotower.models.features import feature_matrix
        splitting = dict(multi_valued=cfg.multi_valued_features, sep=cfg.multi_value_sep)
        self._item_features, self.item_feature_names = feature_matrix(
            train.item_info, cfg.item_features, train.n_items, what="item", **splitting)
        self._user_features, self.user_feature_names = feature_matrix(
            train.user_info, cfg.user_features, train.n_users, what="user", **splitting)
        net = TwoTowerNet(train.n_users, train.n_items, cfg, history=self._history,
                          item_features=self._item_features,
                          user_features=self._user_features, target_weights=weights)
        net.build()
        x = self._inputs(train)
        scale = None
        if cfg.interaction_weights != "none" and cfg.objective != "multinomial":
            # a per-pair objective: each row's term weighed (the multinomial loss: per pair)
            x["weight"], scale = row_weights(train, cfg.interaction_weights)
        from twotower.models.config import make_optimizer
        net.compile(optimizer=make_optimizer(cfg, -(-len(x["user"]) // cfg.batch_size)))
        val = None
        # the multinomial loss reads the training items of each user: no validation loss
        if validation is not None and len(validation) and cfg.objective != "multinomial":
            val = (self._inputs(validation),)
            if scale is not None:  # on the training rows' scale
                val[0]["weight"] = row_weights(validation, cfg.interaction_weights, scale)[0]
        split = _data_parallel_devices()
        from twotower.models.progress import TrainProgress
        progress = [c for c in callbacks if isinstance(c, TrainProgress)]
        self.trained_with = "model.fit"
        # tables in blocks: only the product loop trains them, whatever the table size
        blocks = _blocks_devices() > 1
        loop_path = val is None and len(progress) == len(callbacks) and (blocks
                                                                         or _row_wise(net))
        if blocks and not loop_path:
            raise ConfigError(
                "distribution.shard_tables 'blocks' trains with the product loop, which "
                "takes no validation data and no Keras callbacks but a TrainProgress: "
                f"got {'validation data' if val is not None else 'other callbacks'}")
        ck = _start_checkpoint(checkpoint, {
            "trains": "TwoTower.fit", "path": "loop" if loop_path else "model.fit",
            "config": cfg.to_dict(), "rows": len(train),
            # tables in blocks: a resumed epoch skips the steps done in the blocks'
            # schedule, which the number of devices decides (nothing added otherwise:
            # older checkpoints resume)
            **({"blocks": {"devices": _blocks_devices()}} if blocks else {}),
            "data_digest": _data_digest(train.user_vocab, train.item_vocab, train.users,
                                        train.items, train.ratings, train.timestamps
                                        ).tobytes().hex(),
            "validation_digest": None if val is None else _data_digest(
                validation.users, validation.items, validation.ratings,
                validation.timestamps).tobytes().hex(),
            "features_digest": _data_digest(*_sparse_parts(self._item_features),
                                            *_sparse_parts(self._user_features)
                                            ).tobytes().hex()})
        done = None  # model.fit: the epochs a checkpoint resumed holds
        try:
            if ck is not None and not loop_path:
                done = ck.keras_epoch()
                if done is not None and (verbose or progress):
                    print(f"resuming from {ck.directory}: {done} of {cfg.epochs} epochs done",
                          file=(progress[0].out if progress else None) or sys.stderr, flush=True)
                keeper = ck.keras_callback()
                callbacks = [*callbacks, keeper]
            if loop_path:
                # a large catalogue that row-wise updates train exactly: the product loop
                # (the same update as model.fit, tested; 29-67x its speed at 1M items)
                from twotower.training import LoopConfig, TrainLoop
                # a TrainProgress given is honoured: its interval (0: every call of the
                # loop, which runs several steps per call), its stream and prefix
                every = progress[0].every_s if progress else (10.0 if verbose else 0.0)
                loop = TrainLoop(net, net.optimizer,
                                 LoopConfig(progress_every_s=every if every or not progress
                                            else 1e-9),
                                 progress_out=progress[0].out if progress else None,
                                 progress_prefix=progress[0].prefix if progress else "")
                self.history = loop.fit(x, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                        shuffle=True, seed=cfg.seed, checkpoint=ck)
                self.trained_with = ("TrainLoop (row-wise updates, tables in blocks over "
                                     f"{_blocks_devices()} devices)" if blocks
                                     else "TrainLoop (row-wise updates)")
            else:
                if split > 1:  # a distribution splits each batch over devices: whole batches
                    hist = _fit_whole_batches(net, x, val, cfg, split, verbose, list(callbacks),
                                              done=done or 0)
                else:
                    hist = net.fit(x, batch_size=cfg.batch_size, epochs=cfg.epochs, shuffle=True,
                                   validation_data=val, validation_freq=cfg.validation_freq,
                                   verbose=verbose, callbacks=list(callbacks))
                self.history = {k: [float(v) for v in vs] for k, vs in hist.history.items()}
                if ck is not None:  # the epochs done before a resume, then those run since
                    self.history = {k: [*keeper.history_before.get(k, []),
                                        *self.history.get(k, [])]
                                    for k in dict.fromkeys([*keeper.history_before,
                                                            *self.history])}
            self._net = net
            self._clear_untouched_item_rows(net)
            self._export_tables()
            if cfg.ease_weight > 0:
                from twotower.models.progress import Ticker
                every = (progress[0].every_s if progress
                         else 10.0 if verbose not in (0, "auto", False) else 0.0)
                if every > 0:  # a line now and then while it is tuned and fitted (minutes at 20k items)
                    with Ticker("EASE part", every, progress[0].out if progress else None,
                                progress[0].prefix if progress else "twotower: ") as tick:
                        self._fit_linear(train, tick)
                else:
                    self._fit_linear(train)
            self._check_trained()
            return self._trained(t0, ck)
        except BaseException:  # a stop or a failure: the directory is free again
            if ck is not None:
                ck.release()
            raise

    def _trained(self, t0: float, ck: Any) -> TwoTower:
        """The end of a successful fit: indexes built, times noted, the checkpoint gone
        (unless kept for the caller)."""
        self._build_indexes()
        self.fit_seconds = time.perf_counter() - t0
        self.trained_at = _utc_now()
        self._fitted = True
        # trained here: no longer the run it may have been loaded from (``save``)
        self.data_source, self._loaded_from = {}, None
        if ck is not None and not ck.keep:
            ck.remove()
        return self

    def fit_stream(self, stream: Any, *, item_info: Any = None, seen: bool = True,
                   progress_every_s: float = 10.0, checkpoint: Any = None) -> TwoTower:
        """Train on an ``InteractionStream`` (a Parquet/CSV file read in record batches)
        with the product's training loop: memory is bounded by the stream's buffers and the
        model, not by the file (``docs/scaling.md``).

        Scans the stream first unless it has been (vocabularies, item counts, rating range).
        Streams train the id query tower without side features, with any objective but
        ``multinomial`` (which trains per user). So there is no EASE part either: it
        needs a history tower (``ease_weight`` > 0 with the id tower is a ConfigError).
        ``interaction_weights`` weigh each row's loss term as ``fit`` does (the stream's
        ``rating_col``, or its ``event_col`` names mapped by ``event_weights``, which must
        be the model's).

        Args:
            stream: the ``twotower.training.InteractionStream`` to train on; its
                ``StreamConfig`` sets columns, shuffle buffer and seed.
            item_info: optional item metadata indexed by external item id, e.g.
                ``twotower.data.read_item_info`` (titles, genres).
            seen: also collect every user's items (one more pass) so recommendations
                exclude them; that table grows with the file (``seen_matrix``). False
                keeps none: nothing is excluded.
            progress_every_s: a progress line on stderr this often (0: silent).
            checkpoint: as in ``fit``; the stream's file is told by a digest of every row
                read (one more pass over the file), its size, vocabularies and row count.

        Returns:
            self, with ``history`` holding per-epoch losses.

        Raises:
            ConfigError: a query tower, side features or an objective that a stream
                cannot train (checked before the scan).
            DataError: an empty stream, or ``mse`` without a rating column or with all
                ratings equal.
        """
        import jax
        import keras
        import scipy.sparse as sp

        from twotower.data.interactions import _align, keyed_info
        from twotower.data.readers import match_info
        from twotower.models.config import make_optimizer
        from twotower.models.net import TwoTowerNet
        from twotower.training import LoopConfig, TrainLoop

        cfg = self.config
        check_streamable(cfg, stream.config.rating_col, event_col=stream.config.event_col,
                         event_weights=stream.config.event_weights)
        t0 = time.perf_counter()
        self._fitted = False  # until this fit succeeds (as in ``fit``)
        stats = stream.stats
        multi = jax.process_count() > 1
        digest = failure = None
        try:
            if stats is None:  # one pass over the file: announced, it can take a while
                if progress_every_s:
                    print(f"scanning {stream.path} (vocabularies, counts)", file=sys.stderr,
                          flush=True)
                # the rows' digest in the same pass where a check or a checkpoint needs it
                from twotower.models._ticker import ticking
                with ticking("scanning", progress_every_s, str(stream.path), prefix=""):
                    stats = stream.scan(digest=multi or checkpoint is not None)
                if progress_every_s:
                    print(f"scanned {stats.rows:,} interactions, {len(stats.user_vocab):,} "
                          f"users, {len(stats.item_vocab):,} items in "
                          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
            if multi:  # every process reads its file again, to compare
                digest = np.frombuffer(stream.content_digest(), dtype=np.uint8)
        except TwoTowerError as exc:  # e.g. a bad row in one process's file
            if not multi:
                raise
            failure = exc
        if multi:  # a collective (before the checks that depend on the data: see ``fit``)
            _same_data_on_every_process(
                f"the streamed data ({stream.path})",
                *(() if failure is not None else (stats.user_vocab, stats.item_vocab, digest)),
                failure=failure, settings={
                    **cfg.to_dict(), "streamed": True,
                    **{f"stream.{k}": v for k, v in dataclasses.asdict(stream.config).items()},
                    "stream.seen": seen})
        if stats.rows == 0:
            raise DataError(f"fit_stream: {stream.path} has no interactions")
        if cfg.objective == "mse" and stats.rating_range is not None:
            _check_ratings_vary(*stats.rating_range)
        # checks the objective, ratings and weights
        inputs = stream.model_inputs(cfg.objective, cfg.interaction_weights)
        keras.utils.set_random_seed(cfg.seed)
        self._linear, self.ease_tuning = None, None
        self.user_vocab, self.item_vocab = stats.user_vocab, stats.item_vocab
        if item_info is not None:
            item_info = match_info(keyed_info(item_info, "item"), self.item_vocab.ids)
        self.item_info, self.user_info = _align(item_info, self.item_vocab), None
        self.item_popularity = np.asarray(stats.item_counts, dtype=np.int64)
        self.rating_range = stats.rating_range or (0.0, 1.0)
        self._history = None
        n_users, n_items = len(self.user_vocab), len(self.item_vocab)
        from twotower.models.features import empty_features
        self._item_features = empty_features(n_items)
        self._user_features = empty_features(n_users)
        self.item_feature_names, self.user_feature_names = [], []
        net = TwoTowerNet(n_users, n_items, cfg)
        net.build()
        loop = TrainLoop(net, make_optimizer(cfg, -(-stats.rows // cfg.batch_size)),
                         LoopConfig(progress_every_s=progress_every_s))
        ck = None
        if checkpoint is not None:
            from twotower.training.blocks import STREAM_FEED
            from twotower.training.stream import shuffle_order
            ck = _start_checkpoint(checkpoint, {
                "trains": "TwoTower.fit_stream", "path": "loop", "config": cfg.to_dict(),
                "stream": stream.config.to_dict(),
                # how the buffer orders rows (a resume skips the batches done in that order)
                **({"shuffle_order": order} if (order := shuffle_order(
                    stream.config.shuffle_buffer)) else {}),
                # tables in blocks: a resume skips the steps done in the blocks' schedule
                **({"blocks": {"devices": devices, "feed": STREAM_FEED,
                               "buffer_rows": loop.config.blocks_buffer_rows}}
                   if (devices := _blocks_devices()) > 1 else {}),
                # every row read, not the file's path or time: a copy of the file (a
                # job's local disk) resumes (one more pass over the file)
                "file": {"size": os.path.getsize(stream.path),
                         "content_digest": stream.content_digest().hex()},
                "rows": stats.rows,
                "vocab_digest": _data_digest(stats.user_vocab, stats.item_vocab
                                             ).tobytes().hex()})
        try:
            from twotower.training.loop import current_mesh, process_parts
            mesh = current_mesh()  # here: the input thread cannot see the distribution

            def batches(epoch: int) -> Any:
                # every process reads the same shuffled stream; each feeds its part of a batch
                b = stream.batches(cfg.batch_size, epoch, inputs=inputs)
                return process_parts(b, mesh) if jax.process_count() > 1 else b
            self.history = loop.fit(batches, epochs=cfg.epochs, checkpoint=ck)
            self.trained_with = ("TrainLoop on a stream, tables in blocks over "
                                 f"{_blocks_devices()} devices" if _blocks_devices() > 1
                                 else "TrainLoop on a stream")
            self._net = net
            self._export_tables()
            self._check_trained()
            from twotower.models._ticker import ticking
            # one more pass over the file: each user's items (silent before)
            with ticking("reading every user's items", progress_every_s if seen else 0.0,
                         str(stream.path), prefix=""):
                self._seen = (stream.seen_matrix() if seen
                              else sp.csr_matrix((n_users, n_items), dtype=np.float32))
            self._seen_recency = None  # a stream keeps no order of its pairs
            return self._trained(t0, ck)
        except BaseException:  # a stop or a failure: the directory is free again
            if ck is not None:
                ck.release()
            raise

    def _check_trained(self) -> None:
        """Refuse a diverged training: NaN or inf in its losses or trained tables."""
        losses = np.asarray(self.history.get("loss", []), dtype=np.float64)
        tables = (self.item_embeddings, self.user_embeddings, self.history_embeddings)
        if np.isfinite(losses).all() and all(t is None or np.isfinite(t).all()
                                             for t in tables):
            return
        cfg = self.config
        where = "the trained tables hold NaN or inf"
        if not np.isfinite(losses).all():
            at = int(np.argmin(np.isfinite(losses)))
            where = f"the loss was {losses[at]} at epoch {at + 1} of {len(losses)}"
        raise TrainingError(
            f"training diverged: {where} (objective {cfg.objective!r}, optimizer "
            f"{cfg.optimizer!r}, learning_rate {cfg.learning_rate}); lower "
            "model.learning_rate (--learning-rate)")

    def _inputs(self, x: Interactions) -> dict[str, np.ndarray]:
        if self.config.objective == "multinomial":
            return {"user": np.unique(x.users).astype(np.int32)}
        lo, hi = self.rating_range
        out = {"user": x.users.astype(np.int32), "item": x.items.astype(np.int32)}
        if self.config.objective == "mse":
            out["rating"] = ((x.ratings - lo) / max(hi - lo, 1e-9)).astype(np.float32)
        if self.config.objective == "sampled_softmax":
            p = self.item_popularity / max(self.item_popularity.sum(), 1)
            out["logq"] = np.log(np.maximum(p[x.items], 1e-12)).astype(np.float32)
        return out

    def _fit_linear(self, train: Interactions, tick: Any = None) -> None:
        """Fit the EASE part (``twotower.models.linear``) and append it to both towers;
        ``tick``: a ``Ticker`` told each stage."""
        from twotower.evaluation.baselines import recency_settings
        from twotower.models.linear import (AUTO_RANK_MAX, LinearPart, fill_cold_rows,
                                            scale_users, tune_and_fit)
        cfg = self.config
        # above ease_max_items EASE's dense n x n inverse is out of reach: the low-rank
        # ridge of a sparse SVD takes its place (``linear.tune_and_fit``'s ``form``)
        large = train.n_items > cfg.ease_max_items
        if large and cfg.ease_large == "skip":
            import warnings
            warnings.warn(f"model.ease_weight: the EASE part is skipped: {train.n_items:,} "
                          f"items is more than model.ease_max_items = "
                          f"{cfg.ease_max_items:,} (model.ease_large = 'skip'; 'svd' fits a "
                          f"low-rank closed form instead)", stacklevel=3)
            return
        # ease_rank 0: chosen on the validation split, from embedding_dim up to 8 times it
        # (at most AUTO_RANK_MAX)
        ranks = () if cfg.ease_rank else tuple(
            min(cfg.embedding_dim * m, AUTO_RANK_MAX) for m in (1, 2, 4, 8))
        # "auto" on a temporal validation split: chosen with no check (ModelConfig); with
        # no time column the split is carved at random (``linear._inner_split``): checked
        on_time = (cfg.ease_weight_choice == "auto" and cfg.ease_split == "temporal"
                   and train.timestamps is not None)
        checked = cfg.ease_weight_choice in ("rank_check", "auto") and not on_time
        # the trained part's query recency, chosen with the weight on a temporal split
        # (its own weights were tuned on random and temporal splits together; next items
        # follow the latest few: ``benchmarks/probes/temporal_gap.py``)
        query_recency = (tuple(recency_settings(cfg.ease_half_lives, cfg.ease_floors))
                         if cfg.query_recency_choice == "temporal" and on_time
                         and cfg.ease_weight_grid and self.history_embeddings is not None
                         else ())
        p, q, chosen = tune_and_fit(
            train, cfg.history_length, cfg.ease_lambdas, cfg.ease_half_lives, cfg.ease_floors,
            cfg.ease_rank or cfg.embedding_dim, cfg.ease_split, cfg.seed,
            cfg.ease_weight_grid, self._trained_scores_on if cfg.ease_weight_grid else None,
            ranks=ranks, stage=None if tick is None else lambda s: setattr(tick, "stage", s),
            check_rank=cfg.embedding_dim if checked else 0,
            joint=cfg.ease_search == "joint", query_recency=query_recency,
            form="svd" if large else "ease",
            weighted=cfg.interaction_weights != "none")
        if on_time and cfg.ease_weight_grid:
            chosen["weight_check"] = {"split": "temporal", "chose": "weight" in chosen}
        half_life, floor = chosen["half_life"], chosen["floor"]
        trained_recency = (None if chosen.get("query_recency") is None
                           else (float(chosen["query_recency"][0]),
                                 float(chosen["query_recency"][1])))
        query_table = np.zeros((len(p) + 1, p.shape[1]), dtype=np.float32)
        query_table[1:] = p
        # each part's score spread over (a sample of) training users: w means the same on
        # any data
        users = scale_users(train, cfg.seed)
        trained = self._query_part(users, trained_recency) @ self.item_embeddings.T
        ease = self._ease_query(self._history[users], query_table, half_life, floor) @ q.T
        # after the scale (of the items EASE scores): a cold item's row, 0, as its
        # feature-mates' mean row (``fill_cold_rows``)
        q = fill_cold_rows(q, self._item_features, np.asarray(self.item_popularity) == 0)
        w = chosen.get("weight", cfg.ease_weight)
        self._linear = LinearPart(
            query_table=query_table,
            item_table=(q * (w / max(float(ease.std()), 1e-12))).astype(np.float32),
            model_scale=(1.0 - w) / max(float(trained.std()), 1e-12),
            half_life=half_life, floor=floor, lambda_=chosen["lambda"],
            trained_recency=trained_recency)
        self.ease_tuning = chosen
        self.item_embeddings = self._with_linear_items(self.item_embeddings)

    def _trained_scores_on(self, part: Interactions) -> Any:
        """The trained part fitted again, on ``part`` (a split of the training data, same
        vocabularies): ``users -> [len(users), n_items]`` scores, for choosing the blend
        weight on the rest (``ModelConfig.ease_weight_grid``); a second argument, a
        ``(half_life, floor)``, pools the query with those recency weights instead."""
        import warnings
        sub = TwoTower(dataclasses.replace(self.config, ease_weight=0.0, ease_weight_grid=()))
        with warnings.catch_warnings():  # about the split's part, not the user's data (said)
            warnings.simplefilter("ignore")
            sub.fit(part, verbose=0)
        items = sub.item_embeddings
        return lambda users, recency=None: np.asarray(sub._query_part(users, recency) @ items.T,
                                                      dtype=np.float32)

    def _with_linear_items(self, items: np.ndarray) -> np.ndarray:
        lin = self._linear
        if lin is None:
            return items
        return np.concatenate([items * np.float32(lin.model_scale), lin.item_table], axis=1)

    def _ease_query(self, hist: np.ndarray, table: np.ndarray, half_life: float,
                    floor: float) -> np.ndarray:
        from twotower.models.linear import floor_weights, history_matrix
        weights = floor_weights(hist.shape[1], half_life, floor)
        return np.asarray(history_matrix(hist, weights, len(table), "latest") @ table,
                          dtype=np.float32)

    def _with_linear_query(self, q: np.ndarray, hist: np.ndarray) -> np.ndarray:
        """The trained part's queries ``q`` with the EASE part's (from history table rows
        ``hist``) appended, when the model has one."""
        lin = self._linear
        if lin is None:
            return q
        return np.concatenate(
            [q, self._ease_query(hist, lin.query_table, lin.half_life, lin.floor)], axis=1)

    def _clear_untouched_item_rows(self, net: Any) -> None:
        """Zero the item rows no positive ever reached. An item with features but no training
        rows (one launched after a time cutoff) has an id row (and bias) that training set
        only by chance or against it: ``mse`` and ``sampled_softmax`` update only the rows of
        the items in a batch, so it kept its random initial value (two such items with the
        same features scored apart); ``multinomial``, ``softmax`` and ``bpr`` train every row,
        but this one only as a negative, so it was pushed away from every query and its bias
        down, and such items ranked below most of the catalogue whatever their features said
        (``benchmarks/probes/cold_items.py``). Those rows are set to zero, in the network
        too (saved and served alike): the features alone place such an item. So are the
        rows (and bias rows) of feature values only such items have (a brand launched after
        the cutoff), for the same reasons. Items without features are in no list anyway
        (``untrained_items``); a streamed fit takes no item features."""
        feats = getattr(self, "_item_features", None)
        if feats is None or not feats.shape[1]:
            return
        from keras import ops

        from twotower.models.features import features_of_rows, rows_with_features
        cold = np.asarray(self.item_popularity) == 0
        cold_rows = cold & rows_with_features(feats)
        cold_values = ~features_of_rows(feats, ~cold)
        tables = [(net.item_embedding.embeddings, cold_rows),
                  (net.item_feature_embedding, cold_values)]
        if net.item_bias is not None:
            tables.append((net.item_bias.embeddings, cold_rows))
        if net.item_feature_bias is not None:
            tables.append((net.item_feature_bias, cold_values))
        for table, rows in tables:
            if rows.any():
                keep = ops.convert_to_tensor((~rows).astype(table.dtype)[:, None])
                table.assign(ops.multiply(table, keep))

    def _export_tables(self) -> None:
        # Copy to numpy now: on JAX, predict() may donate (delete) these buffers later.
        net = self._net
        # the served tables fold in the side features: id + feature embeddings
        self.item_embeddings = _to_host(net.item_table())
        users = net.user_table()
        self.user_embeddings = None if users is None else _to_host(users)
        self.history_embeddings = (_to_host(net.history_embedding.embeddings)
                                   if net.history_embedding is not None else None)
        if net.item_bias is not None:
            # fold the item bias into the dot product: item [v, b] . query [q, 1]
            bias = _to_host(net.item_bias_vector()).reshape(-1, 1)
            self.item_embeddings = np.concatenate([self.item_embeddings, bias], axis=1)
        self.item_embeddings = self._with_linear_items(self.item_embeddings)

    def _build_indexes(self) -> None:
        self._index = make_index(self.index_config).build(self.item_embeddings)
        self._build_similar()

    def _build_similar(self, kind: str | None = None) -> None:
        """The cosine index of similar items, of the recommendation index's kind (or
        ``kind``): an HNSW or IVF run answers similar items approximately too (an exact
        cosine scan costs 20 ms a query at a million items), with the recommendation
        index's settings as a start (``_tune_similar`` tunes its own knob)."""
        kind = kind or self._index.kind
        config = (IndexConfig(kind="exact", metric="cosine") if kind == "exact" else
                  dataclasses.replace(self._index.config, kind=kind, metric="cosine"))
        self._similar = make_index(config).build(self._trained_items())

    def _similar_calibration(self) -> np.ndarray:
        """The items ``_tune_similar`` tunes on by default: up to 500 of those it answers
        for (not ``untrained_items``), drawn with seed 0."""
        pool = np.flatnonzero(~self.untrained_items())
        if not len(pool):
            pool = np.arange(self.n_items)
        return np.sort(np.random.default_rng(0).choice(pool, min(500, len(pool)),
                                                       replace=False))

    def _tune_similar(self, target_recall: float, *, items: np.ndarray | None = None
                      ) -> dict[str, Any] | None:
        """``tune_index`` for the similar-items index: its knob raised until recall@10
        against an exact cosine scan reaches ``target_recall`` on the items ``items``
        (default: up to 500 drawn with seed 0), each item itself excluded. None for an
        exact index."""
        from twotower.index import tune_recall
        if self._similar.kind == "exact" or self.n_items < 2:
            return None
        t0 = time.perf_counter()
        items = self._similar_calibration() if items is None else items
        queries, k = self._trained_items()[items], min(10, self.n_items - 1)
        exclude = [np.array([i]) for i in items]
        deny = self._untrained_item_cache()[1]  # as served: in no list
        ref = make_index(IndexConfig(kind="exact", metric="cosine")).build(
            self._trained_items()).search(queries, k, exclude=exclude, deny=deny)[1]
        if not (ref >= 0).any():  # no other item in any list: no recall to measure
            return _not_tuned(self._similar, target_recall, t0, "no item sampled has another "
                              "item to be similar to (the others are never trained)")
        tuned = tune_recall(self._similar, queries, ref, target_recall, k=k, exclude=exclude,
                            deny=self._untrained_denied(self._similar))
        tuned["seconds"] = round(time.perf_counter() - t0, 4)
        return tuned

    def _trained_items(self) -> np.ndarray:
        """The served item vectors without the EASE part's columns: what similar items
        compare (EASE's low-rank factors are not a similarity space: with them, Star Wars'
        nearest items were unrelated blockbusters)."""
        if self._linear is None:
            return self.item_embeddings
        return self.item_embeddings[:, :-self._linear.item_table.shape[1]]

    def set_index(self, config: IndexConfig, *, target_recall: float | None = None,
                  users: np.ndarray | None = None) -> dict[str, Any] | None:
        """Rebuild the recommendation index with other settings (e.g. HNSW), and the
        similar-items index of its kind; with ``target_recall``, then tune both
        (``tune_index``) and return the report, the similar-items index's under
        ``similar``.

        Unlike ``fit`` (which returns the model, to chain), this returns what the tuning
        found: ``twotower index`` prints it, and it is the only place that says whether
        the target was reached.

        Returns:
            None without ``target_recall`` or for exact search (nothing tuned); else
            ``tune_index``'s report: ``knob`` (``ef_search`` or ``nprobe``) and the
            ``value`` kept, ``target_recall``, ``calibration_queries``, ``recall_tried``
            (value -> recall@10), ``reached``, ``seconds``, ``skipped`` (only when no
            user had a recall to measure) and ``similar`` (the same for the
            similar-items index).

        Raises:
            ConfigError: ``target_recall`` outside (0, 1] (before anything is rebuilt;
                0 or None: no tuning).
            DataError: ``users`` not user indices (also before anything is rebuilt).
        """
        from twotower.index.recall import check_target
        self._require_fitted()
        if target_recall:
            check_target(target_recall, "target_recall", "; the index was left as it was")
        if target_recall and users is not None:  # also before anything is rebuilt
            self._check_calibration_users(users)
        self._index = make_index(config).build(self.item_embeddings)
        self.index_config = config
        self._build_similar()
        if not target_recall:
            return None
        tuned = self.tune_index(target_recall, users=users)
        similar = self._tune_similar(target_recall)
        if tuned is not None and similar is not None:
            tuned["similar"] = similar
        return tuned

    def _check_calibration_users(self, users: Any) -> None:
        """DataError unless ``users`` are user indices, at least one (none: the skip note
        would blame their seen items)."""
        _check_indices(np.asarray(users), len(self.user_vocab), "users", "user")
        if not np.size(users):
            raise DataError("`users` is empty: give the user indices to calibrate on, or "
                            "None for up to 500 of the trained users")

    def tune_index(self, target_recall: float, *, users: np.ndarray | None = None
                   ) -> dict[str, Any] | None:
        """Raise the HNSW or IVF index's search knob until recall@10 against exact search
        reaches ``target_recall`` on the queries of ``users`` (user indices; default: up
        to 500 of the users it trained on, drawn with seed 0), their seen items excluded
        (``twotower.index.tune_recall``); the model keeps the value. Returns that report,
        with the seconds it took; None for exact search. Users with nothing left to recommend (every item
        seen) are left out; when no user is left, nothing is tuned and the report says so
        under ``skipped`` (``recall_tried`` empty, ``reached`` False).

        Raises:
            ConfigError: ``target_recall`` not a recall in (0, 1] (as ``set_index``
                raises; for exact search too).
            DataError: ``users`` not user indices, or none.
        """
        from twotower.index import tune_recall
        from twotower.index.recall import check_target
        self._require_fitted()
        check_target(target_recall, "target_recall")
        if self._index.kind == "exact":
            return None
        t0 = time.perf_counter()
        if users is None:
            pool = self._trained_user_pool()
            users = np.sort(np.random.default_rng(0).choice(pool, min(500, len(pool)),
                                                            replace=False))
        else:
            self._check_calibration_users(users)
        queries, seen = self.query_embeddings(users), self.seen_items(users)
        k = min(10, self.n_items)
        deny = self._untrained_item_cache()[1]  # as served: in no list
        ref = make_index(IndexConfig(kind="exact")).build(self.item_embeddings).search(
            queries, k, exclude=seen, deny=deny)[1]
        left = (ref >= 0).any(axis=1)  # their recall is undefined (NaN)
        if not left.all():
            queries, ref = queries[left], ref[left]
            seen = [s for s, keep in zip(seen, left) if keep]
        if not len(ref):
            return _not_tuned(self._index, target_recall, t0, f"each of the {len(users):,} "
                              "users sampled has seen the whole catalogue: no recall to "
                              "measure")
        tuned = tune_recall(self._index, queries, ref, target_recall, k=k, exclude=seen,
                            deny=self._untrained_denied(self._index))
        self.index_config = self._index.config
        tuned["seconds"] = round(time.perf_counter() - t0, 4)
        return tuned

    def _load_net(self, weights: Any) -> None:
        from twotower.models.net import TwoTowerNet
        net = TwoTowerNet(len(self.user_vocab), len(self.item_vocab), self.config,
                          history=self._history,
                          item_features=getattr(self, "_item_features", None),
                          user_features=getattr(self, "_user_features", None))
        net.build()
        net.load_weights(weights)
        self._net = net

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise NotFittedError("this TwoTower model is not trained yet: call fit first "
                                 "(or TwoTower.load(run_dir))")

    # ------------------------------------------------------------------ queries
    @property
    def n_items(self) -> int:
        self._require_fitted()
        return len(self.item_vocab)

    def query_embeddings(self, users: np.ndarray) -> np.ndarray:
        """``[b, d]`` float32 query embeddings of user indices.

        Raises:
            DataError: a user index outside [0, n_users).
        """
        self._require_fitted()
        users = np.asarray(users)
        _check_indices(users, len(self.user_vocab), "users", "user")
        users = users.astype(np.int64, copy=False)
        q = self._query_part(users)
        return q if self._linear is None else self._with_linear_query(q, self._history[users])

    def _query_part(self, users: np.ndarray, recency: tuple[float, float] | None = None
                    ) -> np.ndarray:
        """The trained tower's query (with the bias column), without the EASE part;
        ``recency``: ``_pool``'s."""
        q = np.zeros((len(users), self.config.embedding_dim), dtype=np.float32)
        if self.user_embeddings is not None:
            q += self.user_embeddings[users]
        if self.history_embeddings is not None:
            q += self._pool(self._history[users], recency)
        return self._with_bias_column(q)

    def _with_bias_column(self, q: np.ndarray) -> np.ndarray:
        if not self.config.item_bias:
            return q
        return np.concatenate([q, np.ones((len(q), 1), dtype=np.float32)], axis=1)

    def _pool(self, hist: np.ndarray, recency: tuple[float, float] | None = None
              ) -> np.ndarray:
        """The pooled history embeddings of history table rows ``hist``, weighted by
        ``recency`` (``(half_life, floor)``), else the ones chosen with the blend weight
        (``ModelConfig.query_recency_choice``), else the configuration's."""
        # a sparse [b, n_items + 1] weight matrix times the table: no [b, L, d] gather
        from twotower.models.linear import history_matrix
        w = self._pool_weights(hist.shape[1], recency)
        weights = history_matrix(hist, w, len(self.history_embeddings))
        count = np.maximum(np.asarray(weights.sum(axis=1), dtype=np.float32), 1.0)
        norm = {"mean": count, "sqrt": np.sqrt(count)}.get(self.config.pooling, 1.0)
        pooled = np.asarray(weights @ self.history_embeddings, dtype=np.float32) / norm
        if self.config.history_activation == "tanh":
            pooled = np.tanh(pooled)
        return pooled.astype(np.float32)

    def _pool_weights(self, length: int, recency: tuple[float, float] | None = None
                      ) -> np.ndarray:
        """``[length]`` float32 recency weights ``_pool`` gives history columns (0 = the
        latest item): ``recency``'s, else the ones chosen with the blend weight, else the
        configuration's."""
        from twotower.models.linear import floor_weights
        lin = self._linear
        if recency is None and lin is not None:
            recency = lin.trained_recency
        return np.asarray(recency_weights(length, self.config) if recency is None
                          else floor_weights(length, *recency), dtype=np.float32)

    def history_query_embeddings(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Query embeddings from item-index histories, oldest first (users unseen in
        training); an item given more than once counts once, at its latest position. An
        item no training row has is left out: its history vector (the history table is by
        id, item features do not reach it) is as initialised, and would pull the query
        anywhere.

        Raises:
            DataError: an item index outside [0, n_items).
        """
        self._require_fitted()
        if self.history_embeddings is None or self.user_embeddings is not None and \
                self.config.query_tower == "id":
            raise ConfigError("this model's query tower is 'id': it cannot recommend from a "
                              "history; train with query_tower 'history' or 'id+history'")
        L, n = self.config.history_length, self.n_items
        if isinstance(histories, (str, bytes)) or not isinstance(histories, Sequence | np.ndarray):
            raise DataError(f"`histories` must be a list with one sequence of item indices "
                            f"per user, got {type(histories).__name__}")
        if len(histories) and np.ndim(histories[0]) == 0:  # e.g. [49, 171, 180]
            raise DataError(f"`histories` must hold one sequence of item indices per user, "
                            f"got a sequence of {len(histories):,} single indices; for one "
                            "user pass [history] (a list holding it)")
        pop = np.asarray(self.item_popularity)
        table = np.zeros((len(histories), L), dtype=np.int32)
        for row, h in enumerate(histories):
            recent = np.asarray(h)
            if recent.size and recent.dtype.kind not in "iu":
                _check_indices(recent, n, "histories", "item")  # floats: named, refused
            recent = recent.astype(np.int64, copy=False)[::-1]  # most recent first
            ids, first = np.unique(recent, return_index=True)  # repeats: the latest counts
            if len(ids) and (ids[0] < 0 or ids[-1] >= n):  # sorted: its min and max
                _check_indices(ids, n, "histories", "item")
            recent = recent[np.sort(first)]
            recent = recent[pop[recent] > 0][:L]
            table[row, :len(recent)] = recent + 1
        return self._with_linear_query(self._with_bias_column(self._pool(table)), table)

    def untrained_users(self) -> np.ndarray:
        """``[n_users]`` bool: users with no training interactions (a split can leave such
        users in the vocabulary; their query was never trained). All False when the model
        keeps no seen items (``fit_stream(seen=False)``). Computed once per training
        table (the service asks per request), so read-only: copy it to change it."""
        self._require_fitted()
        m, cached = self._seen, getattr(self, "_untrained", None)
        if cached is None or cached[0] is not m:
            mask = (np.zeros(m.shape[0], dtype=bool) if m.nnz == 0
                    else np.diff(m.indptr) == 0)
            cached = self._untrained = (m, _read_only(mask))
        return cached[1]

    def _trained_user_pool(self) -> np.ndarray:
        """The user indices a calibration or report draws its queries from: those the
        model trained on (not ``untrained_users``: they are served the fallback, never
        the index), or every user when there are none."""
        pool = np.flatnonzero(~self.untrained_users())
        return pool if len(pool) else np.arange(len(self.user_vocab))

    def untrained_items(self) -> np.ndarray:
        """``[n_items]`` bool: items no training row has and no trained item feature
        describes (a feature value counts when some item with training rows has it): a
        split can leave such items in the catalogue, e.g. ones seen only after a time
        cutoff. Their candidate vector is as initialised, so they are in no list the model
        ranks, and items "similar" to them are noise. Computed once per model, so
        read-only: copy it to change it."""
        return self._untrained_item_cache()[0]

    def _untrained_item_cache(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``untrained_items``'s mask, and its indices (None when there are none: what
        ``similar_items`` denies), computed once per model, not per request."""
        self._require_fitted()
        pop, cached = self.item_popularity, getattr(self, "_untrained_items", None)
        if cached is None or cached[0] is not pop:
            mask = np.asarray(pop) == 0
            feats = getattr(self, "_item_features", None)
            if feats is not None and feats.shape[1]:
                from twotower.models.features import features_of_rows, rows_with_any
                # a feature value only items without training rows have was never trained
                # either (a category launched after the cutoff): it describes nothing
                mask &= ~rows_with_any(feats, features_of_rows(feats, ~mask))
            ids = np.flatnonzero(mask)
            cached = self._untrained_items = (pop, _read_only(mask),
                                              _read_only(ids) if len(ids) else None)
        return cached[1], cached[2]

    def _untrained_denied(self, index: Any) -> Any:
        """``untrained_items`` prepared as ``index``'s deny list (``Index.prepare_deny``),
        once per build of it and per model (every list the model gives leaves them out);
        None when there are none."""
        ids = self._untrained_item_cache()[1]
        if ids is None:
            return None
        cache = self.__dict__.setdefault("_denied", {})
        hit = cache.get(id(index))
        if hit is None or hit[0] is not index or hit[1] is not index._layout or \
                hit[2] is not ids:
            hit = cache[id(index)] = (index, index._layout, ids, index.prepare_deny(ids))
            # (a copy of the items first: requests may prepare them from several threads)
            for key in [k for k, v in list(cache.items()) if v[0] not in (self._index,
                                                                          self._similar)]:
                cache.pop(key, None)  # indexes the model no longer has
        return hit[3]

    def servable_users(self, user_ids: Sequence[Any]) -> np.ndarray:
        """Indices of external user ids; -1 for ids the model does not know or never
        trained on (``untrained_users``), which are served as new users (e.g. the most
        popular items, ``popularity_order``)."""
        idx = self.user_vocab.lookup_or(user_ids, -1)
        idx[(idx >= 0) & self.untrained_users()[np.maximum(idx, 0)]] = -1
        return idx

    def popularity_order(self) -> np.ndarray:
        """Item indices, most interacted-with first (ties by index)."""
        return np.argsort(-np.asarray(self.item_popularity, np.float64), kind="stable")

    # ------------------------------------------------------------------ allow / deny
    def known_items(self, item_ids: Iterable[Any], name: str = "item_ids"
                    ) -> tuple[np.ndarray, int]:
        """The internal indices of the external item ids the catalogue holds (sorted,
        each once), and how many of the given ids it does not hold.

        Args:
            item_ids: external item ids, any iterable (a list, a set, an array).
            name: the argument's name in error messages.

        Raises:
            DataError: a single id, or a container that iterates as no list of ids.
        """
        self._require_fitted()
        ids = _item_id_list(item_ids, name)
        try:
            idx = self.item_vocab.lookup_or(ids, -1)
        except TypeError:  # an entry that can be no id (a list, a dict)
            bad = next(v for v in ids if not isinstance(v, (str, int, np.integer)))
            raise DataError(f"`{name}` must hold item ids (integers or text), got "
                            f"{bad!r}") from None
        known = idx[idx >= 0]
        return np.unique(known), int(len(idx) - len(known))

    def _allow_rows(self, allow: Iterable[Any], name: str = "allow"
                    ) -> tuple[np.ndarray, int]:
        """``allow``'s known items, and how many of its ids are unknown (ignored);
        DataError when none is known (an allow-list of nothing would answer empty lists)."""
        rows, unknown = self.known_items(allow, name)
        if len(rows):
            return rows, unknown
        if not unknown:
            raise DataError(f"`{name}` is empty: an allow-list of no item would leave every "
                            "list empty; leave it out (None) to allow every item")
        some = ", ".join(map(repr, self.item_vocab.ids[:3].tolist()))
        raise DataError(f"`{name}`: none of its {unknown:,} item ids is in the catalogue "
                        f"(ids are like {some}); unknown ids are ignored, and an "
                        "allow-list of no known item would leave every list empty")

    def prepare_deny(self, item_ids: Iterable[Any]) -> DeniedItems:
        """External item ids no list may return (e.g. items out of stock), mapped once and
        prepared once per search index (``DeniedItems``): pass the result as ``deny=``.
        Ids the catalogue does not hold are ignored (counted in ``n_unknown``): an item
        the model does not know is in no list anyway.

        Raises:
            DataError: a single id, or a container that iterates as no list of ids.
        """
        rows, unknown = self.known_items(item_ids, "item_ids")
        return DeniedItems(rows, unknown, self.item_vocab)

    def _external_filters(self, allow: Any, deny: Any) -> tuple[Any, Any]:
        """``allow``/``deny`` of external ids as internal indices (a ``DeniedItems`` is
        kept as it is)."""
        rows = None if allow is None else self._allow_rows(allow)[0]
        if deny is not None and not isinstance(deny, DeniedItems):
            deny = self.known_items(deny, "deny")[0]
        return rows, deny

    def _search_filters(self, index: Any, allow: Any, deny: Any) -> tuple[Any, Any]:
        """``index.search``'s ``allow`` and ``deny``: the caller's (internal indices, or a
        ``DeniedItems``), the items the model never trained denied too."""
        if allow is not None:
            allow = np.asarray(allow)
            _check_indices(allow, self.n_items, "allow", "item")
        if deny is None:
            return allow, self._untrained_denied(index)
        if isinstance(deny, DeniedItems):
            return allow, deny._for(self, index)
        deny = np.asarray(deny)
        _check_indices(deny, self.n_items, "deny", "item")
        untrained = self._untrained_item_cache()[1]
        if untrained is not None:
            deny = np.concatenate([deny.astype(np.int64, copy=False), untrained])
        return allow, deny

    def seen_items(self, users: np.ndarray) -> list[np.ndarray]:
        """Training items of each user index (the default exclusion lists), read-only views
        of the model's table (copy one to change it)."""
        self._require_fitted()
        users = np.asarray(users)
        _check_indices(users, len(self.user_vocab), "users", "user")
        m = self._seen
        return [_read_only(m.indices[m.indptr[u]:m.indptr[u + 1]]) for u in users]

    def seen_rows(self, users: np.ndarray) -> Any:
        """The same exclusions as ``seen_items``, as scipy CSR rows ``[len(users), n_items]``:
        the form an index reads without flattening one array per user (cheaper for many
        users)."""
        self._require_fitted()
        users = np.asarray(users)
        _check_indices(users, len(self.user_vocab), "users", "user")
        return self._seen[users.astype(np.int64, copy=False)]

    def seen_exclusions(self, users: np.ndarray) -> Any:
        """The same exclusions as ``seen_items``, in the form the model's index reads
        fastest: rows of the seen-items table, prepared once for the index
        (``Index.prepare_exclusions``: ids checked and laid out once, not on every call).
        The table is prepared on first use, and again after the index or the training
        data change."""
        self._require_fitted()
        return self._seen_exclusions_for(self._index, users)

    def _seen_exclusions_for(self, index: Any, users: np.ndarray) -> Any:
        """``seen_exclusions`` prepared for ``index`` (read once by the caller: another
        thread's ``set_index`` meanwhile does not mix two indexes in one call)."""
        cached = getattr(self, "_seen_prepared", None)
        if cached is None or cached[0] is not self._seen or cached[1]._owner is not \
                index._layout:
            cached = (self._seen, index.prepare_exclusions(self._seen))
            self._seen_prepared = cached
        users = np.asarray(users)
        _check_indices(users, len(self.user_vocab), "users", "user")
        return cached[1].rows(users.astype(np.int64, copy=False))

    def recommend(self, users: np.ndarray, k: int, exclude: Any = None, *,
                  allow: Any = None, deny: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices for user indices (the evaluation protocol). ``exclude``: one
        array of item indices per user (``seen_items``), CSR rows (``seen_rows``), or
        prepared rows (``seen_exclusions``, the cheapest for many users). ``allow``: 1-D
        item indices, the only ones any list may hold; ``deny``: 1-D item indices no
        list holds, or a ``DeniedItems`` (``prepare_deny``). The items the model never
        trained are denied in any case.

        Returns:
            scores ``[b, k]`` float32 and item indices ``[b, k]`` int64, best first,
            padded with -1 / -inf when fewer than k items remain after the filters.

        Raises:
            DataError: a user or item index outside its range.
        """
        self._require_fitted()  # (before the index is read: "call fit first")
        return self._recommend(self._index, users, k, exclude, allow, deny)

    def _recommend(self, index: Any, users: np.ndarray, k: int, exclude: Any, allow: Any,
                   deny: Any) -> tuple[np.ndarray, np.ndarray]:
        """``recommend`` on ``index``, read once by the caller: filters prepared for one
        index are never searched on another that a ``set_index`` put in meanwhile."""
        k = _check_k(k, self.n_items)
        allow, deny = self._search_filters(index, allow, deny)
        return index.search(self.query_embeddings(users), k, exclude=exclude,
                            allow=allow, deny=deny)

    def recommend_from_history(self, histories: Sequence[np.ndarray], k: int,
                               exclude: Sequence[np.ndarray] | None = None, *,
                               allow: Any = None, deny: Any = None
                               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices for users given only their item-index histories (one sequence
        per user). Nothing is excluded unless ``exclude`` says so (one sequence per user:
        pass ``histories`` to leave out what each had, as the service's by-history answer
        does by default). ``allow``/``deny``: as ``recommend``'s (item indices, or a
        ``DeniedItems``; map external ids with ``known_items``).

        Raises:
            DataError: an item index outside [0, n_items).
        """
        k = _check_k(k, self.n_items)
        index = self._index  # once (``_recommend``)
        allow, deny = self._search_filters(index, allow, deny)
        return index.search(self.history_query_embeddings(histories), k,
                            exclude=exclude, allow=allow, deny=deny)

    def recommend_from_history_ids(self, histories: Sequence[Sequence[Any]], k: int = 10, *,
                                   exclude_history: bool = True,
                                   allow: Iterable[Any] | None = None,
                                   deny: Iterable[Any] | DeniedItems | None = None
                                   ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k external item ids for new users given by their histories of external item
        ids (one list per user, oldest first), as the service's by-history answer gives
        them: ``recommend_from_history`` with the ids mapped at this boundary.

        Args:
            histories: one list of external item ids per user.
            k: list length, 1 to the catalogue size.
            exclude_history: leave each user's own history items out of their list.
            allow, deny: as ``recommend_ids``'.

        Returns:
            scores ``[b, k]`` float32 and item ids ``[b, k]`` (object), best first, padded
            with ``None`` (score ``-inf``) when fewer than ``k`` items qualify.

        Raises:
            ConfigError: the model's query tower reads no history (``query_tower="id"``).
            UnknownIdError: an item id the catalogue does not hold (named, with its user's
                position), or a history none of whose items has training interactions (the
                model has no query to build from it).
            DataError: ``histories`` is no list of lists of ids; an empty history (it
                gives no query either).
        """
        from twotower.errors import UnknownIdError
        self._require_fitted()
        if not isinstance(exclude_history, (bool, np.bool_)):
            raise DataError(f"`exclude_history` must be True or False, got "
                            f"{exclude_history!r}")
        if isinstance(histories, (str, bytes)) or not isinstance(histories, Sequence | np.ndarray):
            raise DataError(f"`histories` must be a list with one list of item ids per "
                            f"user, got {type(histories).__name__}")
        if len(histories) and _single_id(histories[0]):  # (another entry: named below)
            raise DataError(f"`histories` must hold one list of item ids per user, got a "
                            f"list of {len(histories):,} single ids (histories[0] is "
                            f"{histories[0]!r}); for one user pass [history] (a list "
                            "holding it)")
        if self.history_embeddings is None or self.config.query_tower == "id":
            self.history_query_embeddings([])  # its ConfigError names the query tower
        allow, deny = self._external_filters(allow, deny)
        pop = np.asarray(self.item_popularity)
        rows = []
        for user, h in enumerate(histories):
            _check_id_list(h, f"histories[{user}]", "item")
            try:
                items = self.item_vocab.lookup_or(list(h), -1)
            except TypeError:  # an entry that can be no id (a list, a dict)
                bad = next(v for v in h if not isinstance(v, (str, int, np.integer)))
                raise DataError(f"`histories[{user}]` must hold item ids (integers or "
                                f"text), got {bad!r}") from None
            if (items < 0).any():
                bad = list(h)[int(np.argmax(items < 0))]
                raise UnknownIdError(f"histories[{user}]: unknown item id {bad!r}"
                                     f"{other_form_hint(self.item_vocab, bad)}")
            if not len(items):  # pools nothing: the query of a history of untrained items
                raise DataError(f"histories[{user}]: an empty history gives the model no "
                                "query to build (nor does one of items without training "
                                "interactions); give the user's items, or serve them "
                                "another way, e.g. popularity_order")
            if not (pop[items] > 0).any():
                raise UnknownIdError(f"histories[{user}]: none of its {len(items):,} item "
                                     "ids has training interactions, so the model has no "
                                     "query to build from this history")
            rows.append(items)
        scores, idx = self.recommend_from_history(
            rows, k, rows if exclude_history else None, allow=allow, deny=deny)
        return scores, self._external(idx)

    def recommend_ids(self, user_ids: Sequence[Any], k: int = 10, *, exclude_seen: bool = True,
                      allow: Iterable[Any] | None = None,
                      deny: Iterable[Any] | DeniedItems | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k external item ids for external user ids.

        Args:
            user_ids: external user ids.
            k: list length, 1 to the catalogue size.
            exclude_seen: leave out each user's training items.
            allow: external item ids (any iterable), the only items a list may hold; ids
                the catalogue does not hold are ignored, but at least one must be known.
            deny: external item ids no list holds (any iterable; unknown ids are
                ignored), or a fixed list prepared once (``prepare_deny``).

        Returns:
            scores ``[b, k]`` float32 and item ids ``[b, k]`` (object), best first; a row
            is padded with ``None`` (score ``-inf``) when fewer than ``k`` items qualify.

        Raises:
            UnknownIdError: a user id the model never saw, or one it never trained on
                (``untrained_users``: its query is as initialised; serve such users
                another way, e.g. ``popularity_order``).
            DataError: a single id instead of a list of ids; an ``allow`` with no item
                of the catalogue.
        """
        self._require_fitted()
        _check_id_list(user_ids, "user_ids", "user")
        if not isinstance(exclude_seen, (bool, np.bool_)):  # "no" counted as True
            raise DataError(f"`exclude_seen` must be True or False, got {exclude_seen!r}")
        allow, deny = self._external_filters(allow, deny)
        users = self.user_vocab.lookup(user_ids)
        untrained = np.flatnonzero(self.untrained_users()[users])
        if len(untrained):
            raise untrained_user_error(plain_id(self.user_vocab.ids[users[untrained[0]]]))
        index = self._index  # once: its seen items and its search (``_recommend``)
        exclude = self._seen_exclusions_for(index, users) if exclude_seen else None
        scores, idx = self._recommend(index, users, k, exclude, allow, deny)
        return scores, self._external(idx)

    def _external(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty(idx.shape, dtype=object)
        valid = idx >= 0
        out[valid] = self.item_vocab.ids[idx[valid]]
        out[~valid] = None
        return out

    def similar_items(self, items: np.ndarray, k: int = 10, *, allow: Any = None,
                      deny: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Cosine-nearest item indices of item indices, never the item itself (on the
        trained candidate vectors, without the EASE part), nor an item never trained on
        (``untrained_items``: its vector is as initialised; the list is padded when fewer
        than ``k`` remain). ``allow``/``deny``: as ``recommend``'s; the item itself is
        never returned, even when ``allow`` holds it.

        Raises:
            DataError: an item index outside [0, n_items), or a one-item catalogue.
        """
        self._require_fitted()
        if self.n_items < 2:
            raise DataError("similar items: the catalogue has a single item, so there is no "
                            "other item to return")
        k = _check_k(k, self.n_items - 1, what="the items other than the one given")
        items = np.atleast_1d(np.asarray(items))
        _check_indices(items, self.n_items, "items", "item")
        items = items.astype(np.int64, copy=False)
        index = self._similar  # once (``_recommend``)
        allow, deny = self._search_filters(index, allow, deny)
        return index.search(self._trained_items()[items], k,
                            exclude=[np.array([i]) for i in items], allow=allow, deny=deny)

    def similar_ids(self, item_ids: Sequence[Any], k: int = 10, *,
                    allow: Iterable[Any] | None = None,
                    deny: Iterable[Any] | DeniedItems | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Cosine-nearest external item ids of external item ids, never the item itself
        (even when ``allow`` holds it). ``allow``/``deny``: as ``recommend_ids``'; rows
        are padded with ``None`` (score ``-inf``) when fewer than ``k`` items qualify.

        Raises:
            UnknownIdError: an item id not in the catalogue, or one the model never trained
                (``untrained_items``: nothing is similar to a vector as initialised).
            DataError: a single id instead of a list of ids; an ``allow`` with no item
                of the catalogue.
        """
        self._require_fitted()
        _check_id_list(item_ids, "item_ids", "item")
        allow, deny = self._external_filters(allow, deny)
        items = self.item_vocab.lookup(item_ids)
        untrained = np.flatnonzero(self.untrained_items()[items])
        if len(untrained):
            raise untrained_item_error(plain_id(self.item_vocab.ids[items[untrained[0]]]))
        scores, idx = self.similar_items(items, k, allow=allow, deny=deny)
        return scores, self._external(idx)

    def titles(self, idx: np.ndarray) -> np.ndarray:
        """Display names of item indices (title, else the external id); ``""`` for the
        padding ``PAD_ID`` of a short result row."""
        self._require_fitted()
        if self.item_info is not None and "title" in self.item_info:
            names = self.item_info["title"].fillna("").astype(str).to_numpy()
            names = np.where(names == "", self.item_vocab.ids.astype(str), names)
        else:
            names = self.item_vocab.ids.astype(str)
        idx = np.asarray(idx)
        pad = idx == PAD_ID
        _check_indices(idx[~pad], self.n_items, "idx", "item")
        return np.where(pad, "", names[np.where(pad, 0, idx)])

    def titles_of(self, item_ids: Any) -> np.ndarray:
        """Display names of external item ids, as ``recommend_ids`` and ``similar_ids``
        return them (any shape; ``None``, the padding of a short row, gives ``""``).

        Raises:
            UnknownIdError: an id the model does not know.
        """
        ids = np.asarray(item_ids, dtype=object)
        pad = np.array([v is None for v in ids.ravel()], dtype=bool).reshape(ids.shape)
        idx = np.full(ids.shape, PAD_ID, dtype=np.int64)
        if (~pad).any():
            idx[~pad] = self.item_vocab.lookup(ids[~pad].tolist())
        return self.titles(idx)

    def find_item(self, key: Any) -> int:
        """Item index of an external id or an exact title (spaces around it left out when
        nothing matches it with them).

        Raises:
            UnknownIdError: neither an id nor a title of the catalogue.
            DataError: a title that several items share (the message lists their ids).
        """
        self._require_fitted()
        if key in self.item_vocab:
            return self.item_vocab.index_of(key)
        if self.item_info is not None and "title" in self.item_info:
            hits = np.flatnonzero(self.item_info["title"].to_numpy() == key)
            if len(hits) > 1:
                ids = ", ".join(map(repr, self.item_vocab.ids[hits[:5]].tolist()))
                more = f" and {len(hits) - 5:,} more" if len(hits) > 5 else ""
                raise DataError(f"item title {key!r} is shared by {len(hits):,} items (ids "
                                f"{ids}{more}); give the id of the one you mean")
            if len(hits):
                return int(hits[0])
        if isinstance(key, str) and key.strip() != key:  # as ids are: spaces around left out
            return self.find_item(key.strip())
        raise UnknownIdError(f"{key!r} is neither an item id nor an item's exact title"
                             f"{self._near_items(key)}{other_form_hint(self.item_vocab, key)}")

    def _near_items(self, key: Any) -> str:
        """A hint for ``find_item``: titles containing ``key`` (case-insensitive), or the
        ids ``key`` names in another form (``00448`` for ``448``)."""
        text = str(key).strip()
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: argv of a terminal not in UTF-8
            return " (it is not UTF-8 text: was it typed in a terminal of another encoding?)"
        if self.item_info is not None and "title" in self.item_info and text:
            titles = self.item_info["title"].astype(str)
            near = np.flatnonzero(titles.str.contains(text, case=False, regex=False))
            if len(near):
                shown = ", ".join(repr(titles.iloc[i]) for i in near[:3])
                more = f" and {len(near) - 3:,} more" if len(near) > 3 else ""
                return f"; titles containing it: {shown}{more}"
        if text.isdigit() and not self.item_vocab.is_int:  # text ids: 00448 for 448
            ids = self.item_vocab.ids.astype(str)
            same = ids[np.char.lstrip(ids, "0") == text.lstrip("0")][:3]
            if len(same):
                return f"; ids written another way: {', '.join(map(repr, same.tolist()))}"
        some = ", ".join(map(repr, self.item_vocab.ids[:3].tolist()))
        return f" (ids are like {some})" if some else ""

    def raw_tutorial_top_ids(self, users: np.ndarray) -> np.ndarray:
        """The tutorial's list: ``model.predict`` through ``BruteForceRetrieval``, seen items
        included (for comparison only).

        Returns:
            ``[b, min(10, n_items)]`` int64 item indices, best first.

        Raises:
            DataError: a user index outside [0, n_users) (the network's lookup would clamp
                it, or fill it, and list another user's items or none in silence).
        """
        self._require_fitted()
        users = np.asarray(users)
        _check_indices(users, len(self.user_vocab), "users", "user")
        net = self._net_or_rebuild()
        if not users.size:  # (predict has no batch to run)
            return np.zeros((0, net.retrieval.k), dtype=np.int64)
        net.sync_retrieval()
        out = net.predict({"user": users.astype(np.int32)}, verbose=0)
        self._export_tables()  # predict may have donated the old buffers
        return np.asarray(out["top_ids"], dtype=np.int64)

    def export_embeddings(self, out: str | os.PathLike[str], what: str = "items", *,
                          vectors: str = "served", ids: Any = None,
                          chunk_rows: int = 65_536) -> dict[str, Any]:
        """Write the item (candidate) or user (query) vectors with their external ids to
        ``out``: Parquet (``.parquet``), CSV (``.csv``), JSON lines (``.jsonl``) or numpy
        (``.npz``), by its suffix (docs/serving.md, "Exporting embeddings").

        With ``vectors="served"`` the item vectors are the rows the run's index searches
        and the user vectors the queries ``recommend`` sends it: their dot product is
        ``recommend``'s score (the trained part, scaled, its item-bias column against a
        query's 1, and the EASE part's columns when the run has them; both sides
        normalised under a cosine index). ``"tower"``: the candidate and query towers'
        own ``[., embedding_dim]`` outputs, without bias, EASE part or blend scale.

        Items: one row per item of the catalogue, with ``listed`` False for the items
        in no list the run gives (``untrained_items``); users: one row per user the run
        trained on (``untrained_users`` are left out: their query was never trained).
        ``ids`` (external ids, any iterable; None: all of them): only these, in this order,
        each once (a repeat is written once, where it first stands); an id the model does
        not hold is refused, and so is a user it never trained on (as ``recommend_ids``
        refuses them), while an item never trained is written with ``listed`` False.
        Written ``chunk_rows`` rows at a time (Parquet, CSV, JSON lines: no second copy
        of the vectors in memory; ``.npz`` holds the matrix whole) to a temporary name,
        renamed into place when complete.

        Returns:
            ``{"what", "vectors", "rows", "dim", "path"}``, and ``"unlisted"`` (items in
            no list) or ``"untrained_left_out"`` (users).

        Raises:
            ConfigError: ``what``, ``vectors`` or ``chunk_rows`` out of their choices, or
                ``out`` with another suffix.
            DataError: ``ids`` is a single id or no list of ids, or holds none.
            UnknownIdError: an id of ``ids`` the model does not hold (or, users, never
                trained on), named.
            OSError: ``out`` cannot be written (``out`` is then unchanged).
        """
        from twotower.artifacts import write_embeddings
        self._require_fitted()
        if what not in ("items", "users"):
            raise ConfigError(f"`what` must be 'items' or 'users', got {what!r}")
        if vectors not in ("served", "tower"):
            raise ConfigError(f"`vectors` must be 'served' (what recommend scores) or "
                              f"'tower' (the towers' own outputs), got {vectors!r}")
        _check_k(chunk_rows, 1 << 31, "chunk_rows", "rows written at a time")
        report: dict[str, Any] = {"what": what, "vectors": vectors}
        chosen = None if ids is None else self._export_rows(ids, what)
        if what == "items":
            rows = np.arange(self.n_items) if chosen is None else chosen
            listed = ~self.untrained_items()[rows]
            report["unlisted"] = int(np.count_nonzero(~listed))
            vocab, one = self.item_vocab, self._item_vectors
        else:
            untrained = self.untrained_users()
            rows, listed = (np.flatnonzero(~untrained), None) if chosen is None else (
                chosen, None)
            report["untrained_left_out"] = (int(np.count_nonzero(untrained))
                                            if chosen is None else 0)
            vocab, one = self.user_vocab, self._user_vectors
        dim = one(rows[:1], vectors).shape[1]
        path = write_embeddings(out, what[:-1], vocab.ids[rows], listed,
                                lambda lo, hi: one(rows[lo:hi], vectors), dim, chunk_rows,
                                meta={"what": what, "vectors": vectors,
                                      "metric": self._index.config.metric})
        return {**report, "rows": len(rows), "dim": int(dim), "path": str(path)}

    def _export_rows(self, ids: Any, what: str) -> np.ndarray:
        """``export_embeddings(ids=...)``: the rows of the external ``ids``, each once in
        the order first given; unknown ids (and untrained users) refused, named."""
        kind = what[:-1]
        _check_id_list(ids, "ids", kind)
        given = list(ids.tolist() if isinstance(ids, np.ndarray) else ids)
        if not given:
            raise DataError(f"`ids`: expected some {kind} ids to export, got none")
        vocab = self.item_vocab if what == "items" else self.user_vocab
        rows = vocab.lookup(given)  # UnknownIdError names the first unknown id
        _, first = np.unique(rows, return_index=True)
        rows = rows[np.sort(first)]
        if what == "users":
            untrained = self.untrained_users()[rows]
            if untrained.any():
                raise untrained_user_error(vocab.ids[rows[np.argmax(untrained)]])
        return rows

    def _item_vectors(self, items: np.ndarray, vectors: str = "served") -> np.ndarray:
        """``[len(items), d]`` float32: the rows the index searches (``served``), or the
        candidate tower's outputs (``tower``: the served rows' first ``embedding_dim``
        columns, without the blend's scale)."""
        if vectors == "tower":
            v = self.item_embeddings[items, :self.config.embedding_dim]
            if self._linear is not None:  # (model_scale > 0: ease_weight is at most 0.99)
                v = (v / np.float64(self._linear.model_scale)).astype(np.float32)
            return np.array(v, dtype=np.float32)
        v = np.array(self.item_embeddings[items], dtype=np.float32)
        return self._as_searched(v)

    def _user_vectors(self, users: np.ndarray, vectors: str = "served") -> np.ndarray:
        """``[len(users), d]`` float32: the queries ``recommend`` searches with (``served``),
        or the query tower's outputs (``tower``: without the bias column's 1 and the EASE
        part)."""
        if vectors == "tower":
            return np.ascontiguousarray(self._query_part(users)[:, :self.config.embedding_dim])
        return self._as_searched(self.query_embeddings(users))

    def _as_searched(self, v: np.ndarray) -> np.ndarray:
        """``v`` (a fresh float32 array) as the index compares it: normalised in place
        under a cosine index."""
        if self._index.config.metric == "cosine":
            from twotower.index._base import normalise
            normalise(v)
        return v

    def _net_or_rebuild(self) -> Any:
        if getattr(self, "_net", None) is None:
            raise NotFittedError("the Keras network is not loaded; load the run with "
                                 "TwoTower.load(run_dir, keras=True)")
        return self._net

    # ------------------------------------------------------------------ artifacts
    def to_keras(self, k: int = 10, *, exclude_seen: bool = True,
                 ids: str = "external", history: bool = False) -> Any:
        """The trained retrieval as one self-contained ``keras.Model``: user ids in, top-k
        scores and item ids out, every table stored as weights, so ``model.save("x.keras")``
        writes one file that ``keras.saving.load_model`` rebuilds (after
        ``import twotower.models.keras_layers``, which registers its layers with Keras).

        It answers what ``recommend_ids`` answers with the exact index (by inner product,
        or by cosine when the run's index compares so), for the users the run knows: each user's query is computed here, whatever the query tower (an id
        tower's user embedding; a history tower's pooled training history, with the bias
        column and EASE part when the model has them), so every preset exports.

        With ``history=True`` it is the other model, for users the run does not know: the
        input is their histories and it answers what ``recommend_from_history`` answers
        with the exact index, the query pooled inside the graph by the trained tables
        (the history tower's pooling with its recency weights, the bias column, the EASE
        part's ``history @ P``). It holds no user's query: export both files to serve
        known users by id and new ones by history (one model with both inputs would need
        both on every call; the service, too, has one route for each).

        Args:
            k: list length, 1 to the catalogue size (fixed in the model).
            exclude_seen: store each user's training items and leave them out of the
                lists (as ``recommend_ids(exclude_seen=True)``); False stores none.
                With ``history=True``: leave each history's items out of its list (as
                ``recommend_from_history(h, k, exclude=h)`` and the service do).
            ids: ``"external"``: the input is ``[B]`` int32 user ids and the output's
                ``item_ids`` ``[B, k]`` int32 item ids (integer ids that fit int32 only);
                ``"indices"``: user indices in, ``item_indices`` out, mapped with the
                vocabularies the model carries (its ``retrieval`` layer's ``user_ids``
                and ``item_ids`` arrays, saved in the file) -- the way for text ids.
                With ``history=True`` the histories are item ids or item indices alike
                (only the item ids need to fit int32; the file carries ``item_ids``).
            history: the input is ``history``, ``[B, T]`` int32 item ids (indices with
                ``ids="indices"``) per user, oldest first, any ``T``, padded with ``-1``
                (``keras_layers.PAD``; JAX has no ragged tensors). An item given more
                than once counts at its latest place; an id the vocabulary lacks (or an
                index outside the catalogue), and an item no training row has, are left
                out of the query (``recommend_from_history`` refuses the first and leaves
                out the second); the ``history_length`` latest that remain are pooled, and
                none left gives the query of an empty history. Needs a history-reading
                query tower.

        Returns:
            a ``keras.Model`` whose call gives ``{"scores": [B, k] float32, "item_ids":
            [B, k] int32}`` (``"item_indices"`` with ``ids="indices"``), best first. A
            list is padded with score ``-inf`` and id ``-1`` when fewer than k items
            qualify; an unknown user id, or a user the model never trained on
            (``untrained_users``, which ``recommend_ids`` refuses), gets an all-padding
            list. The items never trained are in no list.

        Raises:
            NotFittedError: the model is not trained.
            ConfigError: ``ids`` is neither choice, or ``"external"`` for text ids or
                ones beyond int32 (or, with ``history=True``, an item id ``-1``); a
                seen-items table over 2 GiB (it is as wide as the longest training
                history: pass ``exclude_seen=False``); ``history=True`` for a model whose
                query tower is ``id``.
            DataError: ``k`` out of range, ``exclude_seen`` or ``history`` not a bool.

        Example:
            >>> net = model.to_keras(k=10)                         # doctest: +SKIP
            >>> net.save("movielens.keras")                        # doctest: +SKIP
            >>> net.predict(np.array([42, 7], "int32"))["item_ids"]  # doctest: +SKIP
            >>> new = model.to_keras(k=10, history=True)            # doctest: +SKIP
            >>> new.predict(np.array([[50, 172, 181], [1, -1, -1]], "int32"))  # doctest: +SKIP
        """
        self._require_fitted()
        k = _check_k(k, self.n_items)
        for name, value in (("exclude_seen", exclude_seen), ("history", history)):
            if not isinstance(value, (bool, np.bool_)):
                raise DataError(f"`{name}` must be True or False, got {value!r}")
        if ids not in ("external", "indices"):
            raise ConfigError(f"to_keras: `ids` must be 'external' or 'indices', got {ids!r}")
        from twotower.models.keras_layers import build_history_model, build_keras_model
        if not history:
            return build_keras_model(self, k, bool(exclude_seen), ids)
        if self.history_embeddings is None or self.config.query_tower == "id":
            raise ConfigError(
                f"to_keras(history=True): this model's query tower is "
                f"'{self.config.query_tower}' (a user id embedding, as the tutorial and "
                "clicks presets train): its query reads no history, so there is none to "
                "build in the file; export without history=True (known users by id), or "
                "train with query_tower 'history' or 'id+history' (the default preset)")
        return build_history_model(self, k, bool(exclude_seen), ids)

    def save(self, directory: str | os.PathLike[str], *, test: Interactions | None = None,
             metrics: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
             unchanged_since: Any = None) -> None:
        """Save everything needed to serve (atomic: see ``twotower.artifacts``).

        Args:
            directory: the run directory (replaced whole, atomically, if it is a run).
            test: held-out interactions, saved so ``twotower evaluate RUN`` scores them.
            metrics: evaluation results, saved as ``eval.json``.
            data: how the data was read (JSON-able: source, split, seed, columns); by
                default a loaded model's own (``TwoTower.load``; not after a new ``fit``).
            unchanged_since: ``artifacts.run_stamp(directory)`` taken earlier: the save is
                refused if the run changed since (another command replaced it).

        After training over several processes (``jax.distributed``) every process must
        call ``save``: reading the Keras weights is a collective. Give process 0 the run's
        directory and the others a scratch one (``twotower train`` does).
        """
        from twotower.artifacts import save_model
        self._require_fitted()
        loaded = getattr(self, "_loaded_from", None)
        if data is None:  # a loaded run's own (the file and columns it was trained on)
            data = getattr(self, "data_source", None) or None
        if test is None and loaded is not None and (loaded / "test.npz").is_file() \
                and Path(directory).resolve() == loaded:
            warnings.warn(f"save: {directory} is replaced whole, and its held-out split "
                          "(test.npz) and metrics (eval.json) go with it: `twotower "
                          "evaluate` will have nothing to score (`twotower index RUN` "
                          "changes a run's index and keeps them; or pass test=)",
                          stacklevel=2)
        if self._net is not None and _split_over_processes(self._net.variables):
            raise ConfigError("save: the network's tables are split over several processes, "
                              "and Keras saves each table whole from one process; train "
                              "them data parallel to save a run (docs/scaling.md)")
        save_model(self, directory, test=test, metrics=metrics, data=data,
                   unchanged_since=unchanged_since)

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, keras: bool = False) -> TwoTower:
        """Load a saved model; ``keras=True`` also rebuilds the Keras network."""
        from twotower.artifacts import load_model
        return load_model(directory, keras=keras)

    def __repr__(self) -> str:
        state = f"{self.n_items} items" if self._fitted else "not fitted"
        return f"TwoTower({self.config.query_tower}/{self.config.objective}, {state})"


ProgressCallback = Callable[[int, dict[str, float]], None]


def _utc_now() -> str:
    import datetime as _dt
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
