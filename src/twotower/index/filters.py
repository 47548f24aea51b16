"""Search filters: per-query exclusions, a global allow-list and a global deny-list.

``compile_filters`` checks the caller's filters at the boundary and turns them into flat
arrays every index kind applies inside its search (per-query lists are flattened into CSR
arrays, and their ids checked, in one vectorised pass on the calling thread; a malformed
list fails the ``search`` call and names its row):

* ``exclude``: one sequence of internal ids per query (e.g. the items each user has seen),
  or a scipy sparse matrix ``[batch, n]`` (read as CSR) whose non-zeros are the excluded
  ids (explicit zeros exclude nothing);
* ``allow``: 1-D internal ids; only these may be returned (to every query);
* ``deny``: 1-D internal ids; these are never returned (e.g. out of stock).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from twotower.errors import DataError


def _load_kernels() -> Any:
    """The compiled loops of ``twotower.index._kernels`` (built by setup.py where a C
    compiler is), or None: not built, or ``TWOTOWER_NO_KERNELS`` set to anything but ``0``
    (then the numpy path runs, with the same results)."""
    if os.environ.get("TWOTOWER_NO_KERNELS", "") not in ("", "0"):
        return None
    try:
        from twotower.index import _kernels
    except ImportError:
        return None
    return _kernels


_kernels = _load_kernels()


class Filters:
    """Compiled filters for one search call of ``b`` queries over ``n`` items.

    Attributes:
        ex_ptr: ``[b + 1]`` int64 offsets into ``ex_ids`` (CSR rows), or None.
        ex_ids: int64 excluded ids, row after row, or None.
        allowed: ``[n]`` bool, True where an item may be returned; None when all may.
        n_allowed: number of True entries of ``allowed`` (``n`` when None).
        prepared: the rows of a table the index prepared (``Filters.prepared_rows``)
            while not gathered yet; exact search reads each query block's own. Reading
            ``ex_ptr`` or ``ex_ids`` gathers them all.
        in_layout: True when ``ex_ids`` are the index's own storage rows (a prepared
            table's), not ids: nothing to map.
        lists: the caller's per-query id arrays, checked (``_kernels.check_rows``), while
            not flattened yet: exact search reads them in place with the compiled loops.
            Reading ``ex_ids`` flattens them.
        flat32: a CSR matrix's own int32 ids, checked, while not copied to int64 yet:
            exact search reads them in place with the compiled loops. Reading ``ex_ids``
            copies them.
    """

    __slots__ = ("_ptr", "_ids", "_rows", "_lists", "_flat32", "_n", "allowed",
                 "n_allowed", "in_layout", "cache")

    def __init__(self, ex_ptr: np.ndarray | None, ex_ids: np.ndarray | None,
                 allowed: np.ndarray | None, n_allowed: int, in_layout: bool = False) -> None:
        self._ptr, self._ids, self._rows = ex_ptr, ex_ids, None
        self._lists: tuple[np.ndarray, ...] | None = None
        self._flat32: np.ndarray | None = None
        self._n = 0  # the catalogue size the lists (or flat32) were checked against
        self.allowed, self.n_allowed = allowed, n_allowed
        # True: ``ex_ids`` are already the index's own rows (``Exclusions``), not ids
        self.in_layout = in_layout
        # a prepared global filter's (``Denied``): forms of ``allowed`` a kind derives once
        # and keeps, each entry ``key -> (the allowed array it was derived from, value)``
        self.cache: dict[Any, tuple[np.ndarray, Any]] | None = None

    def derived(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()``, kept in a prepared filter's ``cache`` under ``key`` for this very
        ``allowed`` array (an entry of another array is made again, never reused)."""
        if self.cache is None:
            return make()
        entry = self.cache.get(key)
        if entry is not None and entry[0] is self.allowed:
            return entry[1]
        value = make()
        self.cache[key] = (self.allowed, value)
        return value

    def with_exclusions(self, ex_ptr: np.ndarray | None, ex_ids: np.ndarray | None
                        ) -> Filters:
        """Other (flat) exclusions under the same global filter."""
        f = Filters(ex_ptr, ex_ids, self.allowed, self.n_allowed)
        f.cache = self.cache
        return f

    def with_global(self, g: Filters) -> Filters:
        """These exclusions under the global filter ``g`` (a prepared one's)."""
        self.allowed, self.n_allowed, self.cache = g.allowed, g.n_allowed, g.cache
        return self

    def with_allowed(self, allowed: np.ndarray | None) -> Filters:
        f = Filters(self._ptr, self._ids, allowed, self.n_allowed, self.in_layout)
        f._rows, f.cache, f._lists, f._n = self._rows, self.cache, self._lists, self._n
        f._flat32 = self._flat32
        return f

    @classmethod
    def from_lists(cls, ptr: np.ndarray, lists: tuple[np.ndarray, ...], n: int,
                   allowed: np.ndarray | None, n_allowed: int) -> Filters:
        """Per-query int64 id arrays ``lists`` over ``n`` items, checked by
        ``_kernels.check_rows`` (which gave ``ptr``), kept unflattened (``lists``)."""
        f = cls(ptr, None, allowed, n_allowed)
        f._lists, f._n = lists, n
        return f

    @classmethod
    def from_flat32(cls, ptr: np.ndarray, ids: np.ndarray, n: int,
                    allowed: np.ndarray | None, n_allowed: int) -> Filters:
        """A CSR matrix's int32 ``ids`` (checked in ``[0, n)``; ``ptr`` int64), kept as they
        are (``flat32``) until something reads ``ex_ids``."""
        f = cls(ptr, None, allowed, n_allowed)
        f._flat32, f._n = ids, n
        return f

    @property
    def lists(self) -> tuple[np.ndarray, ...] | None:
        """The caller's checked per-query arrays while not flattened (``from_lists``)."""
        return self._lists if self._ids is None else None

    @property
    def flat32(self) -> np.ndarray | None:
        """A CSR matrix's checked int32 ids while not copied (``from_flat32``)."""
        return self._flat32 if self._ids is None else None

    @classmethod
    def prepared_rows(cls, prepared: Exclusions, allowed: np.ndarray | None,
                      n_allowed: int) -> Filters:
        """Exclusions as rows of a table the index prepared (already in its row layout,
        ``in_layout``): gathered on first use, or per query block by exact search."""
        f = cls(None, None, allowed, n_allowed, in_layout=True)
        f._rows = prepared
        return f

    @property
    def prepared(self) -> Exclusions | None:
        """The prepared rows (``Filters.prepared_rows``) while not gathered yet."""
        return self._rows

    def _flatten(self) -> None:
        if self._rows is not None:
            ex = self._rows._gather(0, len(self._rows))
            self._ptr, self._ids = ex if ex is not None else (None, None)
            self._rows = None

    def _concat(self) -> None:
        if self._ids is None and (self._lists is not None or self._flat32 is not None):
            # ``ex_ptr`` is theirs already
            ids = (np.concatenate(self._lists) if self._lists is not None
                   else self._flat32.astype(np.int64))
            # checked when the call began; an array another thread changed since is
            # refused here, as the compiled loops refuse it
            if len(ids) != self._ptr[-1] or ids.dtype != np.int64 or (
                    ids.size and ids.view(np.uint64).max() >= self._n):
                raise DataError("`exclude` changed during the search: pass arrays that no "
                                "other thread changes while it runs")
            self._ids = ids

    @property
    def ex_ptr(self) -> np.ndarray | None:
        self._flatten()
        return self._ptr

    @property
    def ex_ids(self) -> np.ndarray | None:
        self._flatten()
        self._concat()
        return self._ids

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


def _array(value: Any, name: str) -> np.ndarray:
    """``np.asarray``, but a set's ids (an allow-list held as a set) as a 1-D array, not
    a 0-d object array.

    Raises:
        DataError: a sequence of ids that holds a bool (numpy would read True and False
            among integers as ids 1 and 0), naming ``name``.
    """
    unordered = isinstance(value, (set, frozenset))
    if unordered:
        value = list(value)
        if not value:
            return np.empty(0, dtype=np.int64)
    arr = np.asarray(value)
    if arr.dtype.kind in "iu" and not isinstance(value, np.ndarray) and arr.ndim == 1:
        kinds = set(map(type, value))
        if bool in kinds or np.bool_ in kinds:
            at = next(i for i, x in enumerate(value) if isinstance(x, (bool, np.bool_)))
            where = "" if unordered else f" at position {at}"
            raise DataError(f"`{name}` must be a 1-D sequence of integer item ids, got "
                            f"{value[at]!r}{where}: a bool is not an id (numpy would "
                            f"read it as id {int(value[at])})")
    return arr


def _not_ids(name: str, arr: np.ndarray, n: int) -> DataError:
    """The error for ``arr``, not a 1-D array of integer ids; text ids are external ids
    (an item's own id, e.g. MovieLens' "50"), which the index does not know, and a bool
    array is a mask, not ids: it says so."""
    hint = ""
    if arr.ndim == 0 and arr.dtype.kind == "O":  # an object numpy could not read as a list
        obj = arr.item()
        if isinstance(obj, Denied):
            hint = ": a prepared deny list (prepare_deny) goes to `deny`"
        elif isinstance(obj, Exclusions):
            hint = ": prepared exclusions (prepare_exclusions) go to `exclude`"
        elif isinstance(obj, Iterator):
            hint = ": an iterator; pass a list or an array of the ids"
        return DataError(f"`{name}` must be a 1-D sequence of integer item ids, got "
                         f"{type(obj).__name__}{hint}")
    if arr.dtype.kind == "b":
        hint = ": a bool mask; pass the ids it marks (np.flatnonzero(mask))"
    elif arr.dtype.kind in "USO" and arr.size and isinstance(arr.flat[0], (str, bytes)):
        hint = (f": these are text, like external item ids; the index takes internal ids "
                f"(row numbers in [0, {n})): map ids to them first, e.g. with the model's "
                "item_vocab.lookup(ids)")
    return DataError(f"`{name}` must be a 1-D sequence of integer item ids, got "
                     f"{arr.dtype} array of shape {arr.shape}{hint}")


def _ids(name: str, value: Any, n: int) -> np.ndarray:
    arr = _array(value, name)
    if arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise _not_ids(name, arr, n)
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi >= n:
        bad = lo if lo < 0 else hi
        raise DataError(f"`{name}` ids must be internal ids in [0, {n}), got {bad}")
    return arr.astype(np.int64, copy=False)


def _is_sparse(value: Any) -> bool:
    """A scipy sparse matrix or array (or anything else that claims CSR-like arrays)."""
    return hasattr(value, "tocsr") or hasattr(value, "indptr")


def _as_csr(m: Any, name: str) -> Any:
    """Sparse ``m`` as scipy CSR whose stored entries are its non-zeros: ``m`` itself when
    it is CSR without explicit zeros (the usual case, e.g. ``TwoTower.seen_rows``: one
    comparison pass over its values, ~5 µs for 50k, no copy), else a converted copy
    (``m`` is never changed).

    Raises:
        DataError: ``m`` cannot be read as CSR (``.tocsr()``).
    """
    if getattr(m, "format", None) != "csr":
        try:
            m = m.tocsr()
        except (AttributeError, TypeError, ValueError) as exc:
            raise DataError(f"`{name}` as a sparse matrix must be a scipy sparse matrix or "
                            f"array (read as CSR), got {type(m).__name__} ({exc})") from None
        if getattr(m, "format", None) != "csr":
            raise DataError(f"`{name}` as a sparse matrix must be a scipy sparse matrix or "
                            f"array (read as CSR), got {type(m).__name__}")
    if (np.asarray(m.data) == 0).any():  # explicit zeros exclude nothing
        m = m.copy()
        m.eliminate_zeros()
    return m


def _exclusion_rows(exclude: Any, b: int, name: str = "exclude") -> Sequence[Any]:
    """The per-query sequences of ``exclude`` (a list, or a rectangular 2-D id array)."""
    if isinstance(exclude, np.ndarray) and exclude.ndim == 2 and exclude.dtype.kind in "iu":
        rows = list(exclude)  # a rectangular [b, m] table of ids
    elif isinstance(exclude, (Sequence, np.ndarray)) and not isinstance(exclude, (str, bytes)):
        rows = exclude
    else:
        raise DataError(f"`{name}` must be a list with one sequence of item ids per query, "
                        f"got {type(exclude).__name__}")
    if len(rows) != b:
        raise DataError(f"`{name}` must have one entry per query ({b}), got {len(rows)}")
    return rows


def exclusions(exclude: Any, n: int, b: int, row0: int = 0, name: str = "exclude",
               keep_int32: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """``exclude`` (``b`` per-query id sequences, or a scipy sparse ``[b, n]``) as CSR arrays
    ``(ptr [b + 1], ids)``, checked; None when nothing is excluded. ``row0``: the first
    row's number in the caller's list (for error messages about a slice of it); ``name``:
    the argument's name in them (``table`` for ``Index.prepare_exclusions``, whose rows
    are not queries). ``keep_int32``: a CSR matrix's int32 ids are returned as they are
    (checked), not as an int64 copy.

    Raises:
        DataError: the wrong form, or ids outside ``[0, n)`` (naming the row).
    """
    if _is_sparse(exclude):
        exclude = _as_csr(exclude, name)
        shape = getattr(exclude, "shape", (None, None))
        if shape[0] != b or shape[1] != n:
            rows = "queries" if name == "exclude" else "rows"
            raise DataError(f"`{name}` as a sparse matrix must have shape ({b}, {n}) "
                            f"({rows}, items), got {shape}")
        ptr = np.asarray(exclude.indptr, dtype=np.int64)
        held = np.asarray(exclude.indices)
        if (keep_int32 and held.dtype == np.int32 and held.ndim == 1
                and held.flags.c_contiguous and len(held) == ptr[-1]
                and (held.size == 0 or held.view(np.uint32).max() < n)):
            return ptr, held  # checked in one pass (a negative id reads as >= 2**31)
        ids = held.astype(np.int64, copy=False)
        # scipy checks no index against the shape: one past n would land on another
        # query's item (a flat index) or fail in numpy
        _check_in_range(ptr, ids, ids, n, name, row0)
        return ptr, ids
    rows = _exclusion_rows(exclude, b, name)
    if b == 0:
        return None  # no query, nothing to exclude
    if b == 1 and row0 == 0:  # the single-query hot path: no concatenation
        ids = _ids(f"{name}[0]", rows[0], n)  # the row, as with more queries
        return np.array([0, len(ids)], dtype=np.int64), ids
    ids = None
    # the fast path takes arrays only, and "no" casting: numpy would read bools among ids
    # (a bool array beside int ones, True in a list) as ids 1 and 0; the slow path names them
    if set(map(type, rows)) == {np.ndarray}:
        try:
            lengths = np.fromiter(map(len, rows), dtype=np.int64, count=b)
            ids = (np.concatenate(rows, casting="no") if lengths.sum()
                   else np.empty(0, dtype=np.int64))
        except (TypeError, ValueError):
            ids = None
    if ids is None or ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
        parts = []  # slow path: empty rows of another dtype, or a bad row to name
        for row, value in enumerate(rows):
            arr = _array(value, f"{name}[{row0 + row}]")
            if arr.size and (arr.ndim != 1 or arr.dtype.kind not in "iu"):
                raise _not_ids(f"{name}[{row0 + row}]", arr, n)
            if arr.size and arr.dtype.kind == "u" and arr.max() >= n:  # named as given
                raise DataError(f"`{name}[{row0 + row}]` ids must be internal ids in "
                                f"[0, {n}), got {arr[arr >= n][0]}")
            parts.append(arr.reshape(-1).astype(np.int64))
        lengths = np.fromiter(map(len, parts), dtype=np.int64, count=b)
        ids = np.concatenate(parts)
    ptr = np.zeros(b + 1, dtype=np.int64)
    np.cumsum(lengths, out=ptr[1:])
    if ptr[-1] == 0:
        return None
    given = ids  # uint64 ids past 2**63 are named as given, not as wrapped int64
    ids = ids.astype(np.int64, copy=False)
    _check_in_range(ptr, ids, given, n, name, row0)
    return ptr, ids


def _check_in_range(ptr: np.ndarray, ids: np.ndarray, given: np.ndarray, n: int, name: str,
                    row0: int) -> None:
    """Every one of the CSR rows' int64 ``ids`` in ``[0, n)``, else an error naming the
    first row (``row0`` + its number) and its id as ``given`` holds it."""
    # one pass: a negative id read as unsigned is larger than any n
    if ids.size and ids.view(np.uint64).max() >= n:
        bad_at = int(np.flatnonzero((ids < 0) | (ids >= n))[0])
        row = int(np.searchsorted(ptr, bad_at, side="right") - 1)
        raise DataError(f"`{name}[{row0 + row}]` ids must be internal ids in [0, {n}), "
                        f"got {given[bad_at]}")


try:
    # scipy's compiled row gather, the one ``csr[rows]`` calls, without that call's Python
    # checks (which hold the GIL while the other worker needs it): 9.9 against 30.8 µs
    # for 512 rows alone (benchmarks/probes/seen_forms.py)
    from scipy.sparse._sparsetools import csr_row_index as _csr_row_index
except ImportError:  # pragma: no cover - another scipy layout: ``csr[rows]``
    _csr_row_index = None

# Storage-row limits of an ``Exclusions`` table's per-row heads (``Exclusions.head``)
_HEAD_LIMITS = (1 << 14, 1 << 15, 1 << 16, 1 << 17)


class Exclusions:
    """Per-query exclusions prepared once for one index: ``Index.prepare_exclusions``.

    A fixed table of rows (e.g. every user's seen items), checked once and held in the
    index's own item layout. ``index.search(q, k, exclude=prepared.rows(users))`` then
    neither checks nor maps the excluded ids on each call. Over a catalogue stored in
    decreasing-norm order (exact search, 65,536 items or more) each row is also sorted,
    with its length below a few row limits: a search that stops in the first rows reads
    only the exclusions that lie there, not every one (README, "Search"). Valid only for
    the index (and the build of it) that prepared it.

    Example:
        >>> import numpy as np
        >>> from twotower.index import make_index
        >>> index = make_index().build(np.diag(np.array([4, 3, 2, 1], dtype="float32")))
        >>> seen = index.prepare_exclusions([[0], [1, 2], []])  # rows: e.g. users
        >>> index.search(np.ones((2, 4), "float32"), 2, exclude=seen.rows([1, 0]))[1]
        array([[0, 3],
               [1, 2]])
    """

    __slots__ = ("_ptr", "_ids", "_heads", "_csr", "_sel", "_owner")

    def __init__(self, ptr: np.ndarray, ids: np.ndarray, heads: np.ndarray | None,
                 csr: Any, sel: np.ndarray | None, owner: object) -> None:
        # csr: the same rows as a scipy CSR matrix (sharing ``ids``), for scipy's compiled
        # row gather (``_gather``)
        self._ptr, self._ids, self._heads, self._csr = ptr, ids, heads, csr
        self._sel, self._owner = sel, owner

    def __len__(self) -> int:
        return len(self._ptr) - 1 if self._sel is None else len(self._sel)

    def __repr__(self) -> str:
        return f"Exclusions(rows={len(self)}, table_rows={len(self._ptr) - 1})"

    def rows(self, rows: Any) -> Exclusions:
        """The exclusions of table rows ``rows`` (1-D integers), one per query, in order.
        Nothing is copied until a search reads them."""
        idx = np.asarray(rows)
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise DataError(f"`rows` must be a 1-D sequence of row numbers of the prepared "
                            f"table, got {idx.dtype} array of shape {idx.shape}")
        idx = idx.astype(np.int64)  # a copy: later changes to `rows` do not leak in
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            bad = idx.min() if idx.min() < 0 else idx.max()
            raise DataError(f"`rows` must be in [0, {len(self)}) (the prepared rows), "
                            f"got {bad}")
        return Exclusions(self._ptr, self._ids, self._heads, self._csr,
                          idx if self._sel is None else self._sel[idx], self._owner)

    def _table_rows(self, r0: int, r1: int) -> np.ndarray:
        return (np.arange(r0, r1, dtype=np.int64) if self._sel is None
                else self._sel[r0:r1])

    def _gather(self, r0: int, r1: int, limit: int | None = None
                ) -> tuple[np.ndarray, np.ndarray] | None:
        """CSR ``(ptr, rows)`` of queries ``[r0, r1)``: all their excluded rows, or (with
        ``limit``, rows sorted) those below ``limit``; None when there are none."""
        t = self._table_rows(r0, r1)
        starts = self._ptr[t]
        if limit is None and len(t) > 1:
            if _csr_row_index is None:  # pragma: no cover - another scipy layout
                sub = self._csr[t]
                ptr = np.asarray(sub.indptr, dtype=np.int64)
                return (ptr, sub.indices) if ptr[-1] else None
            c = self._csr
            ptr = np.zeros(len(t) + 1, dtype=np.int64)
            np.cumsum(self._ptr[t + 1] - starts, out=ptr[1:])
            if ptr[-1] == 0:
                return None
            ids = np.empty(ptr[-1], dtype=c.indices.dtype)
            # `t` is checked (``rows``): scipy's compiled gather reads inside the table
            _csr_row_index(len(t), t.astype(c.indices.dtype, copy=False), c.indptr,
                           c.indices, c.data, ids, np.empty(ptr[-1], dtype=c.data.dtype))
            return ptr, ids
        if limit is None:
            lens = self._ptr[t + 1] - starts
        else:  # heads[j]: each row's length below _HEAD_LIMITS[j]
            lens = self._heads[bisect.bisect_left(_HEAD_LIMITS, limit)][t]
        ptr = np.zeros(len(t) + 1, dtype=np.int64)
        np.cumsum(lens, out=ptr[1:])
        if ptr[-1] == 0:
            return None
        if len(t) == 1:
            return ptr, self._ids[starts[0]:starts[0] + ptr[1]]
        pos = np.repeat(starts - ptr[:-1], lens) + np.arange(ptr[-1])
        return ptr, self._ids[pos]

    def head(self, r0: int, r1: int, near: int
             ) -> tuple[np.ndarray, np.ndarray] | None:
        """(query rows, storage rows) of the exclusions of queries ``[r0, r1)`` below
        storage row ``near`` (on the numpy path some after it too, up to the next head
        limit), read from the sorted rows' heads; None when the table keeps no heads up to
        ``near`` (the caller gathers every exclusion instead)."""
        if self._heads is None or near > _HEAD_LIMITS[-1]:
            return None
        if _kernels is not None:  # one compiled call (tens of µs of numpy calls a block)
            return _kernels.sorted_heads(self._table_rows(r0, r1), self._ptr, self._ids,
                                         near)
        got = self._gather(r0, r1, near)
        if got is None:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        ptr, cols = got
        return np.repeat(np.arange(r1 - r0), np.diff(ptr)), cols

    def _check(self, owner: object, b: int) -> None:
        if owner is not self._owner:
            raise DataError("`exclude` was prepared by another index, or before this one "
                            "was built again: prepare it with this index's "
                            "prepare_exclusions")
        if len(self) != b:
            raise DataError(f"`exclude` must have one row per query ({b}), got {len(self)}: "
                            "select them with .rows(...)")


class Denied:
    """Ids no query may get, checked and compiled once for one index: ``Index.prepare_deny``.

    ``index.search(q, k, deny=prepared)`` then builds no ``[n]`` mask on each call, and
    each kind keeps what it derives from it (exact search's masks, faiss' bitmap). A
    model denies the same items in every list (the ones it never trained), so it
    prepares them once. The ids are copied: later changes to the caller's array do not
    reach it. Valid only for the index (and the build of it) that prepared it.

    Example:
        >>> import numpy as np
        >>> from twotower.index import make_index
        >>> index = make_index().build(np.diag(np.array([4, 3, 2, 1], dtype="float32")))
        >>> out_of_stock = index.prepare_deny([0, 2])
        >>> index.search(np.ones((1, 4), "float32"), 2, deny=out_of_stock)[1]
        array([[1, 3]])
    """

    __slots__ = ("_filters", "_owner", "n_denied")

    def __init__(self, filters: Filters, owner: object) -> None:
        self._filters, self._owner = filters, owner
        self.n_denied = len(filters.allowed) - filters.n_allowed

    def __repr__(self) -> str:
        return f"Denied(n_denied={self.n_denied})"

    def _check(self, owner: object) -> Filters:
        if owner is not self._owner:
            raise DataError("`deny` was prepared by another index, or before this one was "
                            "built again: prepare it with this index's prepare_deny")
        return self._filters


def prepare_deny(ids: Any, n: int, owner: object) -> Denied:
    """``Index.prepare_deny``: ``ids`` checked (as ``deny`` is) and compiled once."""
    if ids is None:
        raise DataError("`ids` must be a 1-D sequence of the ids to deny, got None "
                        "(search's deny=None denies nothing: no list to prepare)")
    f = compile_filters(None, None, ids, n, 1)  # a fresh mask: nothing else holds it
    assert f.allowed is not None
    f.allowed.flags.writeable = False  # shared by every search that uses it
    f.cache = {}
    return Denied(f, owner)


def prepare_exclusions(table: Any, n: int, rows_of: np.ndarray | None,
                       owner: object) -> Exclusions:
    """``Index.prepare_exclusions``: ``table`` checked (as ``exclude`` is), its ids mapped
    through ``rows_of`` (each id's row in the index; None: ids are rows). Mapped rows are
    sorted, and each row's length below every ``_HEAD_LIMITS`` entry is kept."""
    if _is_sparse(table):
        table = _as_csr(table, "table")  # so the ids held below are the CSR's own
        b = table.shape[0]
    elif isinstance(table, (Sequence, np.ndarray)) and not isinstance(table, (str, bytes)):
        b = len(table)
    else:
        raise DataError(f"`table` must be a list with one sequence of item ids per row, or "
                        f"a scipy sparse matrix [rows, {n}], got {type(table).__name__}")
    import scipy.sparse as sp
    ex = exclusions(table, n, b, name="table")
    if ex is None:
        ex = np.zeros(b + 1, dtype=np.int64), np.empty(0, dtype=np.int32)
    ptr, ids = ex
    dtype = np.int32 if n < 2**31 and ptr[-1] < 2**31 else np.int64
    heads = None
    if rows_of is None:
        held = np.asarray(getattr(table, "indices", ids))
        # a CSR table's own ids (checked above) are held, not copied
        ids = held if held.dtype == dtype and held.ndim == 1 else ids.astype(dtype)
    else:
        m = sp.csr_matrix((np.ones(len(ids), dtype=bool), rows_of[ids].astype(dtype),
                           ptr), shape=(b, n), copy=False)
        m.has_sorted_indices = False
        m.sort_indices()  # each row in increasing storage row (in place, no large temps)
        ids = np.asarray(m.indices, dtype=dtype)
        # each row's length below every limit: a prefix of the sorted row
        heads = np.empty((len(_HEAD_LIMITS), b), dtype=np.int32)
        cnt_dtype = np.int32 if len(ids) < 2**31 else np.int64
        for j, lim in enumerate(_HEAD_LIMITS):
            c = np.zeros(len(ids) + 1, dtype=cnt_dtype)
            np.cumsum(ids < lim, out=c[1:])
            heads[j] = c[ptr[1:]] - c[ptr[:-1]]
    # scipy keeps one index dtype: indptr as the ids' (no copy of the ids)
    csr = sp.csr_matrix((np.ones(len(ids), dtype=bool), ids, ptr.astype(ids.dtype)),
                        shape=(b, n), copy=False)
    return Exclusions(ptr, ids, heads, csr, None, owner)


def compile_filters(exclude: Any, allow: Any, deny: Any, n: int, b: int) -> Filters:
    """Check and flatten the filters of one search call.

    Raises:
        DataError: a filter of the wrong form, or ids outside ``[0, n)``.
    """
    # Per-query sequences are flattened here, once for the whole batch (one concatenation,
    # one range check), before any worker starts. (Flattened per query block by exact
    # search's workers, each block's concatenation held the GIL the other worker needed:
    # trained 1M +27.7% to +37.3% back-to-back for 100 ids per query.) With the compiled
    # loops, int64 arrays are only checked here, in one pass that reads each in place;
    # exact search reads them in place again where it needs more (each query block's
    # worker its own), other kinds flatten them (``Filters.lists``). (A pass that also
    # found the ids stored in an exact index's first rows, on this thread, ran while no
    # worker could: trained 1M, 1,024 queries of 100 ids, arrays +15.0 to +16.9% over the
    # plain search with it, +11.4 to +13.3% checked here and found by the workers,
    # benchmarks/results/probe-array-exclusions-20261207-230228.txt.)
    ex = lists = None
    read = exclude is None
    if (_kernels is not None and b > 0 and isinstance(exclude, (list, tuple))
            and len(exclude) == b):
        rows = tuple(exclude)  # the rows checked are the rows kept
        got = _kernels.check_rows(rows, n)
        read = not isinstance(got, int)  # else: the row the numpy path reads (or names)
        if read and got[-1]:
            lists, ex = rows, (got, None)
    if not read:
        ex = exclusions(exclude, n, b, keep_int32=_kernels is not None)
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
    if lists is not None:
        return Filters.from_lists(ex[0], lists, n, allowed, n_allowed)
    if ex is None or len(ex[1]) == 0:
        return Filters(None, None, allowed, n_allowed)
    if ex[1].dtype == np.int32:  # a CSR matrix's own ids (``keep_int32``)
        return Filters.from_flat32(ex[0], ex[1], n, allowed, n_allowed)
    return Filters(ex[0], ex[1], allowed, n_allowed)


def take_rows(f: Filters, rows: np.ndarray) -> Filters:
    """The filters of a subset of the queries (global filters unchanged)."""
    if f.ex_ptr is None:
        return f
    starts, ends = f.ex_ptr[rows], f.ex_ptr[rows + 1]
    ptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(ends - starts, out=ptr[1:])
    if ptr[-1] == 0:  # none of these queries excludes anything
        out = Filters(None, None, f.allowed, f.n_allowed)
    else:
        ids = np.concatenate([f.ex_ids[s:e] for s, e in zip(starts, ends)])
        out = Filters(ptr, ids, f.allowed, f.n_allowed, f.in_layout)
    out.cache = f.cache
    return out


def first_rows(f: Filters, b: int, m: int, pos: np.ndarray | None = None,
               rows: np.ndarray | None = None) -> Filters:
    """The filters of ``b`` queries over the first ``m`` rows of the items in some order:
    ``pos`` gives each item id's row (ids are rows when None), ``rows`` each row's item id
    (for the allow-list, which is in row order already when None)."""
    allowed = None if f.allowed is None else (f.allowed[:m] if rows is None
                                              else f.allowed[rows[:m]])
    n_allowed = m if allowed is None else int(np.count_nonzero(allowed))
    if f.ex_ptr is None:
        return Filters(None, None, allowed, n_allowed)
    ids = f.ex_ids if pos is None else pos[f.ex_ids]
    keep = (ids >= 0) & (ids < m)
    qrows = np.repeat(np.arange(b), np.diff(f.ex_ptr))[keep]
    ptr = np.zeros(b + 1, dtype=np.int64)
    np.cumsum(np.bincount(qrows, minlength=b), out=ptr[1:])
    return Filters(ptr, ids[keep].astype(np.int64, copy=False), allowed, n_allowed)
