"""Search filters: per-query exclusions, a global allow-list and a global deny-list.

``compile_filters`` checks the caller's filters once, at the boundary, and turns them into
flat arrays every index kind applies inside its search:

* ``exclude``: one sequence of internal ids per query (e.g. the items each user has seen),
  or a scipy CSR matrix ``[batch, n]`` whose non-zeros are the excluded ids;
* ``allow``: 1-D internal ids; only these may be returned (to every query);
* ``deny``: 1-D internal ids; these are never returned (e.g. out of stock).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from twotower.errors import DataError


@dataclasses.dataclass
class Filters:
    """Compiled filters for one search call of ``b`` queries over ``n`` items.

    Attributes:
        ex_ptr: ``[b + 1]`` int64 offsets into ``ex_ids`` (CSR rows), or None.
        ex_ids: int64 excluded ids, row after row, or None.
        allowed: ``[n]`` bool, True where an item may be returned; None when all may.
        n_allowed: number of True entries of ``allowed`` (``n`` when None).
    """

    ex_ptr: np.ndarray | None
    ex_ids: np.ndarray | None
    allowed: np.ndarray | None
    n_allowed: int

    @property
    def max_excluded(self) -> int:
        return 0 if self.ex_ptr is None else int(np.diff(self.ex_ptr).max(initial=0))

    def row_excluded(self, row: int) -> np.ndarray:
        if self.ex_ptr is None:
            return np.empty(0, dtype=np.int64)
        return self.ex_ids[self.ex_ptr[row]:self.ex_ptr[row + 1]]

    def qualifying(self, row: int) -> int:
        """How many items query ``row`` may receive after every filter."""
        ex = np.unique(self.row_excluded(row))
        if self.allowed is not None:
            ex = ex[self.allowed[ex]]
        return self.n_allowed - len(ex)


def _ids(name: str, value: Any, n: int) -> np.ndarray:
    arr = np.asarray(value)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise DataError(f"`{name}` must be a 1-D sequence of integer item ids, "
                        f"got {arr.dtype} array of shape {arr.shape}")
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi >= n:
        bad = lo if lo < 0 else hi
        raise DataError(f"`{name}` ids must be internal ids in [0, {n}), got {bad}")
    return arr.astype(np.int64, copy=False)


def _exclusions(exclude: Any, n: int, b: int) -> tuple[np.ndarray, np.ndarray] | None:
    if hasattr(exclude, "indptr") and hasattr(exclude, "indices"):  # scipy CSR
        shape = getattr(exclude, "shape", (None, None))
        if shape[0] != b or shape[1] != n:
            raise DataError(f"`exclude` as a sparse matrix must have shape ({b}, {n}) "
                            f"(queries, items), got {shape}")
        ptr = np.asarray(exclude.indptr, dtype=np.int64)
        return ptr, np.asarray(exclude.indices, dtype=np.int64)
    if isinstance(exclude, np.ndarray) and exclude.ndim == 2 and exclude.dtype.kind in "iu":
        rows = list(exclude)  # a rectangular [b, m] table of ids
    elif isinstance(exclude, (Sequence, np.ndarray)) and not isinstance(exclude, (str, bytes)):
        rows = exclude
    else:
        raise DataError(f"`exclude` must be a list with one sequence of item ids per query, "
                        f"got {type(exclude).__name__}")
    if len(rows) != b:
        raise DataError(f"`exclude` must have one entry per query ({b}), got {len(rows)}")
    if b == 1:  # the single-query hot path: no concatenation
        ids = _ids("exclude", rows[0], n)
        return np.array([0, len(ids)], dtype=np.int64), ids
    try:
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=b)
        ids = np.concatenate(rows) if lengths.sum() else np.empty(0, dtype=np.int64)
    except (TypeError, ValueError):
        ids = None
    if ids is None or ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
        parts = []  # slow path: empty rows of another dtype, or a bad row to name
        for row, value in enumerate(rows):
            arr = np.asarray(value)
            if arr.size and (arr.ndim != 1 or arr.dtype.kind not in "iu"):
                raise DataError(f"`exclude[{row}]` must be a 1-D sequence of integer item "
                                f"ids, got {arr.dtype} array of shape {arr.shape}")
            parts.append(arr.reshape(-1).astype(np.int64))
        lengths = np.fromiter(map(len, parts), dtype=np.int64, count=b)
        ids = np.concatenate(parts)
    ptr = np.zeros(b + 1, dtype=np.int64)
    np.cumsum(lengths, out=ptr[1:])
    if ptr[-1] == 0:
        return None
    ids = ids.astype(np.int64, copy=False)
    # one pass: a negative id read as unsigned is larger than any n
    if ids.view(np.uint64).max() >= n:
        bad_at = int(np.flatnonzero((ids < 0) | (ids >= n))[0])
        row = int(np.searchsorted(ptr, bad_at, side="right") - 1)
        raise DataError(f"`exclude[{row}]` ids must be internal ids in [0, {n}), "
                        f"got {ids[bad_at]}")
    return ptr, ids


def compile_filters(exclude: Any, allow: Any, deny: Any, n: int, b: int) -> Filters:
    """Check and flatten the filters of one search call.

    Raises:
        DataError: a filter of the wrong form, or ids outside ``[0, n)``.
    """
    ex = None if exclude is None else _exclusions(exclude, n, b)
    allowed = None
    n_allowed = n
    if allow is not None or deny is not None:
        if allow is not None:
            allowed = np.zeros(n, dtype=bool)
            allowed[_ids("allow", allow, n)] = True
        else:
            allowed = np.ones(n, dtype=bool)
        if deny is not None:
            allowed[_ids("deny", deny, n)] = False
        n_allowed = int(np.count_nonzero(allowed))
    if ex is None or len(ex[1]) == 0:
        return Filters(None, None, allowed, n_allowed)
    return Filters(ex[0], ex[1], allowed, n_allowed)


def take_rows(f: Filters, rows: np.ndarray) -> Filters:
    """The filters of a subset of the queries (global filters unchanged)."""
    if f.ex_ptr is None:
        return f
    starts, ends = f.ex_ptr[rows], f.ex_ptr[rows + 1]
    ptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(ends - starts, out=ptr[1:])
    ids = (np.concatenate([f.ex_ids[s:e] for s, e in zip(starts, ends)])
           if len(rows) else np.empty(0, dtype=np.int64))
    return Filters(ptr, ids, f.allowed, f.n_allowed)
