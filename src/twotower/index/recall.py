"""Recall of an approximate result against the exact one."""

from __future__ import annotations

from typing import Any

import numpy as np

from twotower.errors import DataError
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
    ref = np.asarray(reference_ids)
    got = np.asarray(approx_ids)
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
