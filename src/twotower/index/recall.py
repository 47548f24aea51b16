"""Recall of an approximate result against the exact one, and tuning an index to a target."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from twotower.errors import ConfigError, DataError
from twotower.index._base import PAD_ID


def recall_at_k(reference_ids: Any, approx_ids: Any) -> float:
    """Mean over queries of ``|reference ∩ approx| / |reference|`` (padding ignored).

    Args:
        reference_ids: ``[b, k]`` int ids from exact search (``PAD_ID`` allowed).
        approx_ids: ``[b, k2]`` int ids from the index under test (same ``b``).

    Returns:
        Recall in [0, 1]; NaN when no query has any reference result.

    Raises:
        DataError: not two 2-D arrays with the same number of rows.

    Example:
        >>> recall_at_k([[1, 2, 3, 4]], [[2, 1, 9, 8]])
        0.5
    """
    try:
        ref = np.asarray(reference_ids)
        got = np.asarray(approx_ids)
    except ValueError:  # rows of different lengths (numpy: "inhomogeneous shape")
        raise DataError("`reference_ids` and `approx_ids` must be [b, k] arrays (every row "
                        "k ids, padded with PAD_ID), got rows of different lengths") from None
    if ref.ndim != 2 or got.ndim != 2 or ref.shape[0] != got.shape[0]:
        raise DataError(f"`reference_ids` and `approx_ids` must be [b, k] arrays with the same "
                        f"number of rows, got shapes {ref.shape} and {got.shape}")
    b = ref.shape[0]
    if b == 0 or ref.shape[1] == 0:
        return float("nan")
    rows = np.arange(b)[:, None]
    # A hit: a reference id present in the same row of approx_ids (sort + searchsorted).
    srt = np.sort(got, axis=1)
    if srt.shape[1] == 0:
        hits = np.zeros(ref.shape, dtype=bool)
    else:
        pos = np.minimum(
            np.stack([np.searchsorted(srt[r], ref[r]) for r in range(b)]), srt.shape[1] - 1)
        hits = srt[rows, pos] == ref
    valid = ref != PAD_ID
    hits &= valid
    n_ref = valid.sum(axis=1)
    have = n_ref > 0
    if not have.any():
        return float("nan")
    return float(np.mean(hits.sum(axis=1)[have] / n_ref[have]))


def check_target(target: Any, name: str = "target", after: str = "") -> float:
    """``target`` if it is a recall in (0, 1]; else ConfigError naming ``name`` (an
    argument out of range, as ``set_index``'s and ``tune_index``'s are refused), with
    ``after`` appended to the message."""
    if isinstance(target, bool) or not isinstance(target, numbers.Real) or not 0 < target <= 1:
        raise ConfigError(f"`{name}` must be a recall in (0, 1], got {target!r}{after}")
    return float(target)


# The search knob each approximate kind tunes, and its limit (None: every IVF list).
_TUNED = {"hnsw": ("ef_search", 4096), "ivf": ("nprobe", None)}


def tune_recall(index: Any, queries: Any, reference_ids: Any, target: float, *,
                k: int = 10, exclude: Any = None, deny: Any = None) -> dict[str, Any] | None:
    """Raise an HNSW or IVF index's search knob (``ef_search``, ``nprobe``) from its
    current value, doubling, until recall@``k`` of ``queries`` against ``reference_ids``
    reaches ``target``, or the knob its limit (4,096; every list). The index keeps the
    value reached (in ``index.config``). Defaults chosen on one catalogue can miss badly
    on another: tune on real queries. None for other kinds.

    Args:
        index: a built index.
        queries: ``[b, d]`` queries to tune on.
        reference_ids: their exact top-``k`` ids under ``exclude``.
        target: recall in (0, 1].
        exclude: per-query exclusions, as ``search`` takes them.
        deny: ids no query gets, as ``search`` takes them (the reference's too).

    Returns:
        ``knob``, ``target_recall``, ``calibration_queries``, ``recall_tried`` (value ->
        recall), ``value`` (kept) and ``reached``.

    Raises:
        ConfigError: ``target`` not a recall in (0, 1] (for every kind).
        DataError: ``reference_ids`` not ``[b, k]``, or with no result (no query, or
            only padding), which no knob value could reach.
    """
    check_target(target)  # for every kind: a wrong call fails whatever the index
    if index.kind not in _TUNED:
        return None
    knob, limit = _TUNED[index.kind]
    ref = np.asarray(reference_ids)
    if ref.shape != (len(queries), k):  # another width measures another recall
        raise DataError(f"`reference_ids` must be the queries' exact top-`k` ids, "
                        f"[{len(queries)}, {k}], got shape {ref.shape}")
    if not (ref != PAD_ID).any():  # recall NaN at every value
        raise DataError(f"`reference_ids` hold no reference result ({len(queries)} queries, "
                        f"every row padding or none): nothing to tune {knob} on; give "
                        "queries that have items left to find")
    if limit is None:
        limit = index.nlist
    # the value in use (IVF's nprobe 0 resolves to its default)
    value = min(limit, index.nprobe if knob == "nprobe" else index.config.ef_search)
    tried: dict[int, float] = {}
    while True:
        index.config = index.config.replace(**{knob: value})
        got = index.search(queries, k, exclude=exclude, deny=deny)[1]
        tried[value] = round(recall_at_k(reference_ids, got), 4)
        if tried[value] >= target or value >= limit:
            break
        value = min(limit, 2 * value)
    return {"knob": knob, "target_recall": target, "calibration_queries": len(queries),
            "recall_tried": tried, "value": value, "reached": tried[value] >= target}
