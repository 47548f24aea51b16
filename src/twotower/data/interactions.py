"""Interactions: who interacted with what (optionally with a rating and a time).

Holds contiguous indices plus the vocabularies that map them to external ids, and
optional per-item / per-user metadata tables aligned with those indices.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from twotower.data.vocabulary import INT_ID, Vocabulary, plain_id
from twotower.errors import DataError


@dataclass(frozen=True, eq=False)
class Interactions:
    """A log of (user, item[, rating, timestamp]) rows over fixed vocabularies.

    Attributes:
        users: ``[n]`` int64 user indices into ``user_vocab``.
        items: ``[n]`` int64 item indices into ``item_vocab``.
        ratings: ``[n]`` float32 or None.
        timestamps: ``[n]`` int64 (seconds) or None.
        user_vocab, item_vocab: the id vocabularies.
        item_info: optional DataFrame with one row per item index (columns such as
            ``title``, ``genres``); row ``i`` describes item index ``i``.
        user_info: optional DataFrame with one row per user index.

    Example:
        >>> x = Interactions.from_ids(["a", "b", "a"], [10, 20, 20])
        >>> x.n_users, x.n_items, len(x)
        (2, 2, 3)
    """

    users: np.ndarray
    items: np.ndarray
    user_vocab: Vocabulary
    item_vocab: Vocabulary
    ratings: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    item_info: pd.DataFrame | None = field(default=None, repr=False)
    user_info: pd.DataFrame | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("users", "items", "ratings", "timestamps"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, np.ndarray) or v.ndim != 1):
                what = "indices into its vocabulary" if name in ("users", "items") else name
                got = (f"shape {v.shape}" if isinstance(v, np.ndarray) else
                       f"{type(v).__name__} (Interactions.from_ids(user_ids, item_ids, ...) "
                       "builds one from external ids)")
                raise DataError(f"Interactions: `{name}` must be a 1-D numpy array of "
                                f"{what}, got {got}")
        n = len(self.users)
        for name in ("items", "ratings", "timestamps"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise DataError(f"Interactions: {name} has {len(v)} rows, users has {n}")
        if n:
            if self.users.min() < 0 or self.users.max() >= len(self.user_vocab):
                raise DataError("Interactions: user index out of vocabulary range")
            if self.items.min() < 0 or self.items.max() >= len(self.item_vocab):
                raise DataError("Interactions: item index out of vocabulary range")

    @classmethod
    def from_ids(cls, user_ids: Any, item_ids: Any, ratings: Any = None, timestamps: Any = None,
                 *, user_vocab: Vocabulary | None = None, item_vocab: Vocabulary | None = None,
                 item_info: pd.DataFrame | None = None,
                 user_info: pd.DataFrame | None = None) -> Interactions:
        """Build from external ids; vocabularies are derived (sorted) unless given.

        ``item_info``/``user_info``, when given, are indexed by external id, or have an
        ``id`` column, or an ``item_id``/``user_id`` column beside a default (0..n-1) index,
        as ``pd.read_csv`` gives; they are re-ordered to the vocabulary (missing ids get
        empty rows).
        Their ids are matched as a metadata file's are: ``"7"`` and ``7.0`` match the int id
        7. Metadata that matches no id of the data is an error (rows of other ids are
        left out).
        """
        for arg, vocab in (("user_vocab", user_vocab), ("item_vocab", item_vocab)):
            if vocab is not None and not isinstance(vocab, Vocabulary):
                raise DataError(f"`{arg}` must be a Vocabulary (e.g. a trained model's, or "
                                f"Vocabulary(ids)), got {type(vocab).__name__}")
        u = _external_ids("user_ids", user_ids)
        i = _external_ids("item_ids", item_ids)
        if len(u) != len(i):
            raise DataError(f"user ids ({len(u)}) and item ids ({len(i)}) differ in length")
        user_vocab = user_vocab or Vocabulary.from_values(u, name="user")
        item_vocab = item_vocab or Vocabulary.from_values(i, name="item")
        r = None if ratings is None else as_float32_ratings("ratings", _finite("ratings",
                                                                               ratings))
        t = None if timestamps is None else epoch_seconds("timestamps", timestamps)
        return cls(
            users=_index(user_vocab, u), items=_index(item_vocab, i),
            user_vocab=user_vocab, item_vocab=item_vocab, ratings=r, timestamps=t,
            item_info=_align(item_info, item_vocab, "item_info"),
            user_info=_align(user_info, user_vocab, "user_info"),
        )

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_users(self) -> int:
        return len(self.user_vocab)

    @property
    def n_items(self) -> int:
        return len(self.item_vocab)

    def take(self, rows: np.ndarray) -> Interactions:
        """The rows selected by an index array or boolean mask; vocabularies unchanged."""
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]
        return Interactions(
            users=self.users[rows], items=self.items[rows], user_vocab=self.user_vocab,
            item_vocab=self.item_vocab, ratings=pick(self.ratings),
            timestamps=pick(self.timestamps), item_info=self.item_info, user_info=self.user_info,
        )

    def to_csr(self, values: str = "binary") -> sp.csr_matrix:
        """``[n_users, n_items]`` CSR matrix: 1.0 per (user, item) pair, or ``"rating"``."""
        if values == "rating" and self.ratings is not None:
            data = self.ratings.astype(np.float32)
        else:
            data = np.ones(len(self), dtype=np.float32)
        m = sp.csr_matrix((data, (self.users, self.items)), shape=(self.n_users, self.n_items))
        m.sum_duplicates()
        if values == "binary":
            m.data[:] = 1.0
        return m

    def recency_ranks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each user's distinct items by recency: ``(users, items, rank)``, one entry per
        (user, item) pair, ``rank`` 0 for the user's most recent item, 1 for the one
        before, ... An item the user had more than once counts at its latest interaction.
        Recency is the timestamp, rows in order breaking ties (row order alone without
        timestamps). Entries are grouped by user, oldest first."""
        order = (np.lexsort((np.arange(len(self)), self.timestamps, self.users))
                 if self.timestamps is not None
                 else np.lexsort((np.arange(len(self)), self.users)))
        users, items = self.users[order], self.items[order]
        key = users.astype(np.int64) * max(self.n_items, 1) + items
        _, last = np.unique(key[::-1], return_index=True)
        if len(last) < len(key):  # repeated (user, item) pairs: keep the latest of each
            keep = np.sort(len(key) - 1 - last)
            users, items = users[keep], items[keep]
        ends = np.cumsum(np.bincount(users, minlength=self.n_users))
        return users, items, ends[users] - 1 - np.arange(len(users))

    def item_popularity(self) -> np.ndarray:
        """``[n_items]`` int64 interaction counts."""
        return np.bincount(self.items, minlength=self.n_items).astype(np.int64)

    def titles(self) -> np.ndarray:
        """``[n_items]`` display names: the ``title`` column, else the external id."""
        if self.item_info is not None and "title" in self.item_info:
            t = self.item_info["title"].astype(object).to_numpy()
            ids = self.item_vocab.ids.astype(str)
            return np.where(pd.isna(t) | (t == ""), ids, t).astype(object)
        return self.item_vocab.ids.astype(str).astype(object)


def integral_as_int(values: np.ndarray) -> np.ndarray | None:
    """Float ids as int64 when each is a whole number that a float holds exactly (e.g. a
    Parquet id column with gaps, stored as float); else None."""
    v = np.asarray(values, dtype=np.float64)
    if np.all(v == np.round(v)) and np.abs(v).max(initial=0) < 2**53:
        return v.astype(np.int64)
    return None


def datetime_seconds(values: Any) -> np.ndarray:
    """Datetimes (numpy or pandas, of any unit; zoned ones in UTC) as float seconds since
    the epoch, NaN where missing (NaT)."""
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    elif isinstance(values, pd.DatetimeIndex) and values.tz is not None:
        values = values.tz_convert("UTC").tz_localize(None)
    secs = np.asarray(values).astype("datetime64[s]")
    return np.where(np.isnat(secs), np.nan, secs.astype(np.int64).astype(np.float64))


def _external_ids(name: str, values: Any) -> np.ndarray:
    """``values`` as a 1-D array of int64 or str ids (integral floats become ints).

    Raises:
        DataError: a missing id (None/NaN), or ids that are neither integers nor strings.
    """
    if isinstance(values, (list, tuple)) and not len(values):
        return np.empty(0, dtype=np.int64)
    if isinstance(values, (set, frozenset, dict)) or (
            not hasattr(values, "__len__") and hasattr(values, "__next__")):
        # (a generator read as one object: "got shape ()"; a set has no row order)
        raise DataError(f"`{name}` must be a 1-D sequence of ids, one per interaction, got "
                        f"a {type(values).__name__}: pass a list")
    if isinstance(values, (list, tuple)):
        # a Python list: numpy would make one text array of [7, "7", nan] (3 ids "7", "7",
        # "nan"); each element is read as itself instead, as a Series' would be
        arr = np.empty(len(values), dtype=object)
        try:
            arr[:] = values
        except ValueError:  # nested sequences
            arr = np.asarray(values, dtype=object)
        if arr.ndim == 1 and len(arr) and pd.api.types.infer_dtype(arr, skipna=True) in (
                "floating", "mixed-integer-float"):
            arr = arr.astype(np.float64)  # 1.0 -> the id 1, as a float array's
    else:
        arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"`{name}` must be a 1-D sequence of ids, got shape {arr.shape}")
    if arr.dtype.kind == "u" and len(arr) and arr.max() >= 2**63:
        raise DataError(f"`{name}`: id {arr.max()} does not fit int64; pass such ids as "
                        "strings")
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind in "fO":
        missing = pd.isna(arr)
        if missing.any():
            raise DataError(f"`{name}`[{int(np.argmax(missing))}]: missing id (None or NaN)")
    if arr.dtype.kind == "f":
        ints = integral_as_int(arr)
        if ints is None:
            bad = float(arr[np.argmax((arr != np.round(arr)) | (np.abs(arr) >= 2**53))])
            raise DataError(f"`{name}`: ids must be integers or strings, got {bad!r}")
        return ints
    if arr.dtype.kind in "US":
        return arr.astype(object)
    if arr.dtype.kind == "O":
        kind = pd.api.types.infer_dtype(arr, skipna=False)  # one compiled pass
        if kind == "string":
            return arr
        if kind == "integer":
            try:
                return arr.astype(np.int64)
            except OverflowError:
                big = next(x for x in arr if not -2**63 <= x < 2**63)
                raise DataError(f"`{name}`: id {big} does not fit int64; pass such ids as "
                                "strings") from None
        bad = next(x for x in arr if not isinstance(x, str))
        raise DataError(f"`{name}`: ids must be all integers or all strings, got "
                        f"{type(bad).__name__} {bad!r} among them")
    raise DataError(f"`{name}`: ids must be integers or strings, got dtype {arr.dtype}")


def _finite(name: str, values: Any) -> np.ndarray:
    """``values`` as float64, each a finite number; DataError names the first bad row."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        arr = pd.to_numeric(pd.Series(np.asarray(values, dtype=object)),
                            errors="coerce").to_numpy(np.float64)
    if arr.ndim != 1:
        raise DataError(f"`{name}` must be 1-D, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argmax(bad))
        got = np.asarray(values, dtype=object)[row]
        raise DataError(f"`{name}`[{row}]: expected a finite number, got {got!r}")
    return arr


#: the largest rating a float32 holds: a larger one became inf, and training then "diverged"
FLOAT32_MAX = float(np.finfo(np.float32).max)


def as_float32_ratings(name: str, values: np.ndarray, where: Any = None) -> np.ndarray:
    """Finite ``values`` as float32, refusing one float32 cannot hold (it became inf, and
    ``fit`` blamed the learning rate). ``where(row)``: the row as a file names it."""
    far = np.abs(values) > FLOAT32_MAX
    if far.any():
        row = int(np.argmax(far))
        at = where(row) if where is not None else f"`{name}`[{row}]"
        raise DataError(f"{at}: rating {values[row]:g} is beyond what float32 holds "
                        f"({FLOAT32_MAX:.1e}); rescale the ratings")
    return values.astype(np.float32)


#: Times from here on are refused: int64's limit (a larger float wrapped to a negative
#: time). Nanoseconds since the epoch (about 1.7e18 today) fit and keep their order.
MAX_TIME = 2.0 ** 63


def epoch_seconds(name: str, values: Any) -> np.ndarray:
    """Timestamps as int64 seconds since the epoch: numbers are taken as seconds already;
    datetimes (numpy, pandas, zoned: UTC) are converted from whatever unit they hold.

    Raises:
        DataError: a missing time (NaN, NaT) or a value that is neither, naming the row.
    """
    dtype = getattr(values, "dtype", None)
    if isinstance(dtype, pd.DatetimeTZDtype) or getattr(dtype, "kind", "") == "M":
        secs = datetime_seconds(values)
        if np.isnan(secs).any():
            raise DataError(f"`{name}`[{int(np.argmax(np.isnan(secs)))}]: missing time (NaT)")
        return secs.astype(np.int64)
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        top = np.uint64(np.iinfo(np.int64).max)
        if arr.dtype.kind == "u" and arr.size and arr.max() > top:  # it would wrap
            row = int(np.argmax(arr.ravel() > top))
            raise DataError(f"`{name}`[{row}]: {arr.ravel()[row]} is beyond the times int64 "
                            "holds (2**63)")
        return arr.astype(np.int64)  # a copy: the caller's array stays the caller's
    if arr.dtype.kind == "O" and arr.ndim == 1 and len(arr):
        kind = pd.api.types.infer_dtype(arr, skipna=False)
        if kind in ("datetime", "datetime64"):  # datetime / Timestamp objects (UTC if zoned)
            try:
                stamps = pd.to_datetime(pd.Series(arr), utc=True)
            except (TypeError, ValueError) as exc:
                raise DataError(f"`{name}`: cannot read these datetimes ({exc})") from None
            return epoch_seconds(name, stamps)
        if kind == "date":  # datetime.date: its midnight, UTC (as a file's 2024-03-01)
            try:
                return epoch_seconds(name, pd.to_datetime(pd.Series(arr)))
            except (TypeError, ValueError) as exc:
                raise DataError(f"`{name}`: cannot read these dates ({exc})") from None
        if kind in ("date", "period", "time", "timedelta", "mixed"):
            row = next((r for r, x in enumerate(arr) if not isinstance(x, (int, float))), 0)
            raise DataError(f"`{name}`[{row}]: expected seconds since the epoch (a number) or "
                            f"a datetime, got {type(arr[row]).__name__} {arr[row]!r}")
    if arr.dtype.kind in "fOUS":
        if arr.dtype.kind in "OUS" and arr.ndim == 1 and len(arr) and all(
                isinstance(x, str) for x in arr):
            # numbers or ISO 8601 text, as the file readers take them (2024-03-01T12:30:00Z;
            # no zone: UTC)
            from twotower.data.readers import _iso_seconds
            text = pd.Series(arr, dtype=object).str.strip()
            for parsed in (pd.to_numeric(text, errors="coerce").to_numpy(np.float64),
                           _iso_seconds(text)):
                if np.isfinite(parsed).all():
                    arr = parsed
                    break
        if arr.dtype.kind in "OUS" and any(isinstance(x, (str, bytes)) for x in arr.ravel()):
            from twotower.data.readers import reads_as_time
            row = next((r for r, x in enumerate(arr.ravel()) if isinstance(x, (str, bytes))
                        and not reads_as_time(x)), None)
            if row is None:  # each reads as a time, but not all in one form
                raise DataError(f"`{name}`: the times mix numbers (seconds since the epoch) "
                                "with ISO 8601 text: give every time in one of the two forms")
            raise DataError(f"`{name}`[{row}]: expected seconds since the epoch (a number), "
                            f"ISO 8601 text (2024-03-01T12:30:00Z) or a datetime, got "
                            f"{str(arr.ravel()[row])!r}")
        secs = _finite(name, arr).astype(np.float64)
        far = np.abs(secs) >= MAX_TIME  # int64 would wrap (to a negative time)
        if far.any():
            row = int(np.argmax(far.ravel()))
            raise DataError(f"`{name}`[{row}]: {secs.ravel()[row]:g} is beyond the times "
                            "int64 holds (2**63)")
        whole = np.floor(secs)
        if (whole != secs).any():  # as the file readers say it
            warnings.warn(f"`{name}`: times have fractions of a second; they are kept as "
                          "whole seconds (floored), and events within one second keep their "
                          "order", stacklevel=4)
        return whole.astype(np.int64)
    raise DataError(f"`{name}`: expected seconds since the epoch or datetimes, got dtype "
                    f"{arr.dtype}")


def _index(vocab: Vocabulary, ids: np.ndarray) -> np.ndarray:
    if vocab.is_int and ids.dtype.kind in "iu":
        # fast path: vectorised lookup through a sorted array
        order = np.argsort(vocab.ids)
        pos = np.searchsorted(vocab.ids, ids, sorter=order)
        pos = np.clip(pos, 0, len(order) - 1)
        idx = order[pos]
        bad = vocab.ids[idx] != ids
        if bad.any():
            vocab.index_of(ids[np.argmax(bad)])  # raises UnknownIdError naming it
        return idx.astype(np.int64)
    return vocab.lookup(ids.tolist())


def keyed_info(info: pd.DataFrame, role: str) -> pd.DataFrame:
    """Metadata ``info`` indexed by its ids: an ``id`` column, or a ``{role}_id`` column
    (``item_id``, ``user_id``) beside a default 0..n-1 index, is the key. (``pd.read_csv``
    keeps ``item_id`` as a column: the index as the ids put every title on its neighbour's
    item, with ids 1..n.)"""
    if "id" in info.columns:  # the column is the key (read_csv(...).set_index("id", drop=False))
        return info.set_index("id")
    if f"{role}_id" in info.columns and isinstance(info.index, pd.RangeIndex):
        return info.set_index(f"{role}_id")
    return info


def _align(info: pd.DataFrame | None, vocab: Vocabulary, name: str = "item_info"
           ) -> pd.DataFrame | None:
    if info is None:
        return None
    from twotower.data.readers import match_info  # readers imports this module
    if not isinstance(info, pd.DataFrame):
        raise DataError(f"`{name}` must be a pandas DataFrame indexed by {vocab.name} id, "
                        f"got {type(info).__name__}")
    info = keyed_info(info, name.split("_")[0])
    dup = info.index.duplicated()
    if dup.any():  # (the file reader warns of its repeats; a DataFrame's went unsaid)
        warnings.warn(f"`{name}`: {int(dup.sum()):,} row(s) repeat an id (first: "
                      f"{plain_id(info.index[dup][0])!r}); each id keeps its first row",
                      stacklevel=4)
    info = match_info(info, vocab.ids)  # re-keyed to the vocabulary's id type, one row per id
    keys = pd.Index(vocab.ids.tolist(), dtype=object)
    found = int(keys.isin(info.index).sum())
    if len(info) and not found:
        what = ("an id" if vocab.name == "id" else
                f"{'an' if vocab.name[:1] in 'aeiou' else 'a'} {vocab.name} id")
        raise DataError(f"`{name}`: none of its {len(info)} ids is {what} of the data (e.g. "
                        f"{plain_id(info.index[0])!r}; the data's are like "
                        f"{plain_id(vocab.ids[0])!r})")
    aligned = info.reindex(keys)
    aligned.index = pd.RangeIndex(len(vocab))
    aligned.insert(0, "id", vocab.ids)
    return aligned
