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
from twotower.errors import DataError, UnknownIdError


@dataclass(frozen=True, eq=False)
class Interactions:
    """A log of (user, item[, rating, timestamp]) rows over fixed vocabularies.

    Attributes:
        users: ``[n]`` int64 user indices into ``user_vocab``.
        items: ``[n]`` int64 item indices into ``item_vocab``.
        ratings: ``[n]`` float32 or None.
        timestamps: ``[n]`` int64 or None: counts of ``time_unit`` since the epoch.
        time_unit: what ``timestamps`` count: ``"s"`` (the default), ``"ms"``, ``"us"`` or
            ``"ns"``. The readers keep times exactly, in the coarsest of these that holds
            every one (whole seconds stay seconds; 1700000000123 ms stays milliseconds), so
            events within one second keep the order their times give.
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
    time_unit: str = "s"

    def __post_init__(self) -> None:
        if self.time_unit not in KEPT_UNITS:
            raise DataError(f"Interactions: `time_unit` must be one of {', '.join(KEPT_UNITS)} "
                            f"(what `timestamps` count), got {self.time_unit!r}")
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
                 user_info: pd.DataFrame | None = None,
                 time_unit: str = "auto") -> Interactions:
        """Build from external ids; vocabularies are derived (sorted) unless given.

        ``timestamps``: numbers counting ``time_unit`` (``auto``, the default, reads it off
        them: 1.7e9 seconds, 1.7e12 milliseconds, ..., 20240301 a date, and warns when they
        are not seconds; ``s``, ``ms``, ``us``, ``ns``, ``yyyymmdd`` say it), datetimes or
        ISO 8601 text (which carry their own: a ``time_unit`` for them is refused, as it is
        with no ``timestamps``); kept exactly as int64 counts of the coarsest of s, ms, us,
        ns that holds them (the result's ``time_unit``).

        ``item_info``/``user_info``, when given, are indexed by external id, or have an
        ``id`` column, or an ``item_id``/``user_id`` column beside a default (0..n-1) index,
        as ``pd.read_csv`` gives; they are re-ordered to the vocabulary (missing ids get
        empty rows).
        Their ids are matched as a metadata file's are: ``"7"`` and ``7.0`` match the int id
        7. Metadata that matches no id of the data is an error (rows of other ids are
        left out).

        Ids are taken exactly as given (no spaces stripped), but an empty string is no
        id: it is refused naming its position, as a missing one (None, NaN) is and as the
        file readers refuse an empty cell (the HTTP API could not ask for it).
        """
        for arg, vocab in (("user_vocab", user_vocab), ("item_vocab", item_vocab)):
            if vocab is not None and not isinstance(vocab, Vocabulary):
                raise DataError(f"`{arg}` must be a Vocabulary (e.g. a trained model's, or "
                                f"Vocabulary(ids)), got {type(vocab).__name__}")
        u = _external_ids("user_ids", user_ids)
        i = _external_ids("item_ids", item_ids)
        if len(u) != len(i):
            raise DataError(f"user ids ({len(u)}) and item ids ({len(i)}) differ in length")
        user_vocab = user_vocab or _rows_vocab("user_ids", u, "user")
        item_vocab = item_vocab or _rows_vocab("item_ids", i, "item")
        r = None if ratings is None else as_float32_ratings("ratings", _finite("ratings",
                                                                               ratings))
        if timestamps is None:  # a unit for no times is never read (it was ignored without
            # a word), refused as read_interactions refuses it with no time column
            if (unit := check_time_unit(time_unit)) != "auto":
                from twotower.errors import ConfigError
                raise ConfigError(f"`timestamps`: time_unit {unit} is "
                                  "never read: no timestamps are given (None); give the "
                                  "timestamps, or leave time_unit out (or give auto)")
            t, kept = None, "s"
        else:
            t, kept = epoch_times("timestamps", timestamps, time_unit)
        return cls(
            users=_index(user_vocab, u, "user_ids"), items=_index(item_vocab, i, "item_ids"),
            user_vocab=user_vocab, item_vocab=item_vocab, ratings=r, timestamps=t,
            item_info=_align(item_info, item_vocab, "item_info"),
            user_info=_align(user_info, user_vocab, "user_info"), time_unit=kept,
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
            time_unit=self.time_unit,
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


def datetime_counts(values: Any) -> tuple[np.ndarray, str, np.ndarray]:
    """Datetimes (numpy or pandas, of any unit; zoned ones in UTC) as exact int64 counts
    since the epoch of their own unit (``s``, ``ms``, ``us`` or ``ns``; days, hours and
    minutes as seconds), with that unit and the mask of missing ones (NaT, counted 0)."""
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.DatetimeTZDtype):
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    elif isinstance(values, pd.DatetimeIndex) and values.tz is not None:
        values = values.tz_convert("UTC").tz_localize(None)
    arr = np.asarray(values)
    unit = np.datetime_data(arr.dtype)[0]
    if unit not in KEPT_UNITS:  # coarser than seconds (D, h, m), or finer than ns (ps)
        unit = "s" if unit in ("Y", "M", "W", "D", "h", "m") else "ns"
        arr = arr.astype(f"datetime64[{unit}]")
    missing = np.isnat(arr)
    counts = arr.astype(np.int64)
    counts[missing] = 0
    return counts, unit, missing


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


#: What a number in a time column counts (``time_unit``; dates and ISO 8601 text carry
#: their own): ``auto`` (the default) reads it off the values (``guess_time_unit``); ``s``,
#: ``ms``, ``us``, ``ns``: seconds, milli-, micro- or nanoseconds since 1970-01-01 UTC;
#: ``yyyymmdd``: dates written as 8-digit numbers (20240301: 2024-03-01, midnight UTC).
TIME_UNITS = ("auto", "s", "ms", "us", "ns", "yyyymmdd")
_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
#: What ``Interactions.timestamps`` count (its ``time_unit``), coarsest first. Times are
#: kept as int64 counts of the coarsest that holds each exactly: float64 seconds would
#: hold nanoseconds since 1970 to about 240 ns only (and counters to 2**53), and seconds
#: stay the int64 seconds they always were.
KEPT_UNITS = ("s", "ms", "us", "ns")
_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds",
               "ns": "nanoseconds"}
_UNIT_WORDS = {"s": "seconds since 1970", "ms": "milliseconds since 1970",
               "us": "microseconds since 1970", "ns": "nanoseconds since 1970",
               "yyyymmdd": "YYYYMMDD dates"}
#: the options a message names: the Python argument and the CLI flag
_UNIT_OPTION = "time_unit (--time-unit)"


def check_time_unit(unit: Any, what: str = "time_unit") -> str:
    """``unit`` as one of ``TIME_UNITS`` (any case).

    Raises:
        ConfigError: another value, naming ``what`` and the choices.
    """
    from twotower.errors import ConfigError
    if isinstance(unit, str) and unit.strip().lower() in TIME_UNITS:
        return unit.strip().lower()
    raise ConfigError(f"{what} must be one of {', '.join(TIME_UNITS)} (what a number in the "
                      f"time column counts), got {unit!r}")


def check_unit_unread(unit: str, where: str, holds: str) -> None:
    """Refuse a stated ``unit`` (not ``auto``) for a time column that carries its own
    (datetimes, ISO 8601 text): it would never be read, as ``train --stream`` refuses
    ``--time-unit`` (until 2026-12-07 it was ignored without a word). ``where``: the
    column, for the message; ``holds``: what it holds ("ISO 8601 text").

    Raises:
        ConfigError: ``unit`` is not ``auto``.
    """
    if unit != "auto":
        from twotower.errors import ConfigError
        raise ConfigError(f"{where}: {_UNIT_OPTION} {unit} is never read: the column holds "
                          f"{holds}, which carries its own unit; leave {_UNIT_OPTION} out "
                          "(or give auto)")


def _yyyymmdd_seconds(values: np.ndarray) -> np.ndarray:
    """8-digit dates (20240301) as float seconds since the epoch (midnight UTC); NaN where
    a value is not one (a fraction, 20240231, 2024031). Integer arithmetic (the civil
    calendar's day count), a few passes over the column: no datetime parsing."""
    v = np.asarray(values)
    ok = (v >= 10000101) & (v <= 99991231)
    if v.dtype.kind == "f":
        ok &= v == np.floor(v)
    iv = np.where(ok, v, 19700101).astype(np.int64)
    y, m, d = iv // 10000, iv // 100 % 100, iv % 100
    ok &= (m >= 1) & (m <= 12) & (d >= 1)
    m = np.where(ok, m, 1)
    leap = (y % 4 == 0) & ((y % 100 != 0) | (y % 400 == 0))
    ok &= d <= _MONTH_DAYS[m - 1] + (leap & (m == 2))
    yy = y - (m <= 2)  # days since 1970-01-01 of the proleptic Gregorian calendar
    era, mp = yy // 400, (m + 9) % 12
    yoe = yy - era * 400
    days = (era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + (153 * mp + 2) // 5 + d - 1
            - 719468)
    return np.where(ok, (days * 86400).astype(np.float64), np.nan)


_MONTH_DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


def _maybe_dates(v: np.ndarray) -> bool:
    """Whether every value is in the range of 8-digit dates of 1900-2099 (cheap: then
    ``_yyyymmdd_seconds`` says whether they are dates)."""
    return bool(len(v)) and v.min() >= 19000101 and v.max() <= 20991231


def guess_time_unit(values: np.ndarray, dates: np.ndarray | None = None) -> str:
    """The unit of numeric times, as ``time_unit="auto"`` reads it: ``yyyymmdd`` when every
    value is an 8-digit date of 1900-2099 (20240301); else by the median magnitude, as the
    epoch counts today (about 1.7e9 s): under 1e11 seconds (to the year 5138; small
    counters too), under 1e14 milliseconds, under 1e17 microseconds, else nanoseconds.
    ``dates``: ``_yyyymmdd_seconds(values)`` when already computed."""
    v = np.asarray(values)
    if not len(v):
        return "s"
    if _maybe_dates(v):
        if dates is None:
            dates = _yyyymmdd_seconds(v)
        if not np.isnan(dates).any():
            return "yyyymmdd"
    sample = v[::max(1, len(v) // 100_000)]  # the magnitude: a sample tells it
    mag = float(np.median(np.abs(sample.astype(np.float64))))
    return "s" if mag < 1e11 else "ms" if mag < 1e14 else "us" if mag < 1e17 else "ns"


def coarsest_times(counts: np.ndarray, unit: str) -> tuple[np.ndarray, str]:
    """int64 ``counts`` of ``unit`` (``KEPT_UNITS``) as counts of the coarsest unit that
    holds each exactly, and that unit: 1700000000000 ms is 1700000000 s, 1700000000123 ms
    stays milliseconds."""
    counts = np.asarray(counts, dtype=np.int64)
    for coarser in KEPT_UNITS[:KEPT_UNITS.index(unit)]:
        factor = _PER_SECOND[unit] // _PER_SECOND[coarser]
        # (a head first: sub-second times show it there, without a pass over them all)
        if not np.any(counts[:4096] % factor) and not np.any(counts % factor):
            return counts // factor, coarser
    return counts, unit


def _float_counts(v: np.ndarray, unit: str) -> tuple[np.ndarray, str]:
    """Finite float counts of ``unit`` (each under 2**63) as int64 counts: of ``unit`` when
    each is whole, else of the first finer unit in which each is whole to the float's own
    precision (1709251200.123 s: 1709251200123 ms), else of the finest that int64 holds,
    rounded (a float holds no more)."""
    top = max(abs(float(v.min())), abs(float(v.max()))) if len(v) else 0.0
    units = [u for u in KEPT_UNITS[KEPT_UNITS.index(unit):]  # those int64 holds them in
             if top * (_PER_SECOND[u] // _PER_SECOND[unit]) < MAX_TIME]
    for n, finer in enumerate(units):
        factor = _PER_SECOND[finer] // _PER_SECOND[unit]
        # whole to a few units in the last place of the largest (the float holds no more)
        tol = 4 * np.spacing(top * factor)
        last = n == len(units) - 1
        head = v[:4096] * factor  # (fractions show in a head, without a pass over them all)
        if not last and np.abs(head - np.rint(head)).max(initial=0.0) > tol:
            continue
        scaled = v * factor  # (a new array: worked on in place)
        whole = np.rint(scaled)
        if not last:
            np.subtract(scaled, whole, out=scaled)
            np.abs(scaled, out=scaled)
        if last or scaled.max(initial=0.0) <= tol:
            return whole.astype(np.int64), finer
    return np.rint(v).astype(np.int64), unit  # (not reached: the last unit is taken)


def numbers_as_times(values: np.ndarray, unit: str, where: Any) -> tuple[np.ndarray, str]:
    """Finite numeric times (int or float) counted in ``unit`` (``TIME_UNITS``) as exact
    int64 counts since the epoch, and their unit: the coarsest of ``KEPT_UNITS`` that holds
    every one (``coarsest_times``; fractions of a float are kept in the finer unit that
    holds them, ``_float_counts``; dates are seconds). ``auto`` reads the unit off the
    values (``guess_time_unit``) and, when they are not seconds, warns what it read them
    as. ``where(row)``: where row ``row`` is, for messages (``row`` None: the column).

    Raises:
        DataError: ``yyyymmdd`` with a value that is no date, or a time int64 cannot count,
            naming its row.
    """
    unit = check_time_unit(unit)
    v = np.asarray(values)
    if len(v) and v.dtype.kind == "f" and np.abs(v).max() >= MAX_TIME:
        row = int(np.argmax(np.abs(v) >= MAX_TIME))  # (int64 would wrap: a negative time)
        raise DataError(f"{where(row)}: {v[row]:g} is beyond the times int64 holds (2**63); "
                        "times are counted since the epoch in seconds or a finer unit "
                        f"({_UNIT_OPTION})")
    dates = (_yyyymmdd_seconds(v) if unit == "yyyymmdd" or (unit == "auto"
                                                             and _maybe_dates(v)) else None)
    chosen = guess_time_unit(v, dates) if unit == "auto" else unit
    if unit == "auto" and chosen == "s" and dates is not None:
        is_date = ~np.isnan(dates)
        if is_date.mean() >= 0.5:  # (of consecutive seconds there, under 4% read as dates)
            row = int(np.argmin(is_date))
            raise DataError(f"{where(row)}: the times look like dates written YYYYMMDD "
                            f"({int(is_date.sum()):,} of {len(v):,} are), but {_plain(v[row])} "
                            f"is none; correct it, or give {_UNIT_OPTION} s to take the "
                            "numbers as seconds")
    if chosen == "yyyymmdd":
        secs = dates if dates is not None else _yyyymmdd_seconds(v)
        bad = np.isnan(secs)
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"{where(row)}: expected a date written YYYYMMDD (e.g. 20240301), "
                            f"got {_plain(v[row])} (the time unit is yyyymmdd: give "
                            f"{_UNIT_OPTION} for another)")
        counts, kept = secs.astype(np.int64), "s"
    elif v.dtype.kind in "iu":  # exact, also for nanoseconds beyond float64's 2**53
        counts, kept = coarsest_times(v.astype(np.int64), chosen)
    else:
        counts, kept = coarsest_times(*_float_counts(v.astype(np.float64), chosen))
    if unit == "auto" and chosen != "s" and len(v):
        row = int(np.argmax(np.abs(v)))  # the largest: the one its unit was read from
        when = pd.Timestamp(int(counts[row]), unit=kept).isoformat(
            timespec="seconds" if kept == "s" else _UNIT_NAMES[kept])
        how = ("midnight UTC" if chosen == "yyyymmdd" else f"kept in {_UNIT_NAMES[kept]}")
        warnings.warn(f"{where(None)}: times read as {_UNIT_WORDS[chosen]} (e.g. "
                      f"{_plain(v[row])} = {when}Z; {how}); give "
                      f"{_UNIT_OPTION} s, ms, us, ns or yyyymmdd to say which they are",
                      stacklevel=3)
    return counts, kept


def _plain(x: Any) -> str:
    """A number as written in a file: 20240301 (not 20240301.0), 1.5."""
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    f = float(x)
    return str(int(f)) if f.is_integer() and abs(f) < 2**63 else repr(f)


def negative_times_text(place: str, n: int, total: int, first: Any,
                        where: str | None = None) -> str:
    """The warning for times holding negative numbers (``n`` of ``total``): read as times
    before 1970, which is what they are, unless one stands for "unknown" (``-1``), whose
    event then comes before every other in every temporal split and history. ``place``:
    the column or argument (``--data: log.csv, column 'ts'``, ```timestamps```);
    ``first``: the first such value as written, at ``where`` (``line 3``, ``row 2
    (1-based)``, ```timestamps`[1]``; None: a reader that keeps no row). One message for
    the readers and ``Interactions.from_ids``."""
    at = f"first: {first}, {where}" if where is not None else f"e.g. {first}"
    return (f"{place}: {n:,} of {total:,} times are negative ({at}): "
            "they are read as times before 1970, so those events come before every other; "
            "if a negative time means unknown, drop those rows or give them their times")


def _negatives_said(name: str, numbers: np.ndarray, times: tuple[np.ndarray, str],
                    written: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """``times`` (numeric times ``numbers`` read), after a warning, as the file readers
    give one, when some are negative (``written``: the numbers as the caller wrote them,
    text). Datetimes and ISO text are not said: they are dates, not a ``-1``."""
    negative = numbers < 0
    if negative.any():
        row = int(np.argmax(negative))
        first = written[row] if written is not None else _plain(numbers[row])
        # (stacklevel: here, epoch_times, from_ids, its caller)
        warnings.warn(negative_times_text(f"`{name}`", int(negative.sum()), len(numbers),
                                          first, f"`{name}`[{row}]"), stacklevel=4)
    return times


def epoch_times(name: str, values: Any, time_unit: str = "auto") -> tuple[np.ndarray, str]:
    """Timestamps as exact int64 counts since the epoch, and what they count (the coarsest
    of ``KEPT_UNITS`` that holds every one: whole seconds stay seconds): numbers count
    ``time_unit`` (``TIME_UNITS``; ``auto``: read off the values, e.g. 1.7e12 as
    milliseconds, 20240301 as a date, said in a warning); datetimes (numpy, pandas, zoned:
    UTC) and ISO 8601 text carry their own. Negative numbers (a ``-1`` meaning unknown
    would be the oldest event) are kept, with one warning naming ``name``, how many and
    the first's position, as the file readers warn.

    Raises:
        DataError: a missing time (NaN, NaT) or a value that is neither, naming the row.
        ConfigError: ``time_unit`` is not one of ``TIME_UNITS``, or is stated (not
            ``auto``) for datetimes or ISO 8601 text, which carry their own.
    """
    time_unit = check_time_unit(time_unit)
    written = None  # numbers given as text: as written, for a warning

    def at(row: int | None) -> str:
        return f"`{name}`" if row is None else f"`{name}`[{row}]"

    dtype = getattr(values, "dtype", None)
    if isinstance(dtype, pd.DatetimeTZDtype) or getattr(dtype, "kind", "") == "M":
        check_unit_unread(time_unit, at(None), f"datetimes ({dtype})")
        counts, unit, missing = datetime_counts(values)
        if missing.any():
            raise DataError(f"`{name}`[{int(np.argmax(missing))}]: missing time (NaT)")
        return coarsest_times(counts, unit)
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        top = np.uint64(np.iinfo(np.int64).max)
        if arr.dtype.kind == "u" and arr.size and arr.max() > top:  # it would wrap
            row = int(np.argmax(arr.ravel() > top))
            raise DataError(f"`{name}`[{row}]: {arr.ravel()[row]} is beyond the times int64 "
                            "holds (2**63)")
        if arr.ndim == 1:  # (a copy: the caller's stays theirs)
            return _negatives_said(name, arr, numbers_as_times(arr, time_unit, at))
        return arr.astype(np.int64), "s"  # (refused by Interactions: not 1-D)
    if arr.dtype.kind == "O" and arr.ndim == 1 and len(arr):
        kind = pd.api.types.infer_dtype(arr, skipna=False)
        if kind in ("datetime", "datetime64", "date"):
            check_unit_unread(time_unit, at(None), f"{kind} objects")
        if kind in ("datetime", "datetime64"):  # datetime / Timestamp objects (UTC if zoned)
            try:
                stamps = pd.to_datetime(pd.Series(arr), utc=True)
            except (TypeError, ValueError) as exc:
                raise DataError(f"`{name}`: cannot read these datetimes ({exc})") from None
            return epoch_times(name, stamps)
        if kind == "date":  # datetime.date: its midnight, UTC (as a file's 2024-03-01)
            try:
                return epoch_times(name, pd.to_datetime(pd.Series(arr)))
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
            from twotower.data.readers import _iso_times
            text = pd.Series(arr, dtype=object).str.strip()
            numbers = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
            if np.isfinite(numbers).all():
                arr, written = numbers, text.to_numpy()
            else:
                counts, unit, missing = _iso_times(text)
                if not missing.any():  # dated text: no unit to read
                    check_unit_unread(time_unit, at(None), "ISO 8601 text (e.g. "
                                      f"{text.iloc[0]!r})")
                    return coarsest_times(counts, unit)
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
        numbers = _finite(name, arr)  # (1-D)
        return _negatives_said(name, numbers, numbers_as_times(numbers, time_unit, at),
                               written)
    raise DataError(f"`{name}`: expected seconds since the epoch or datetimes, got dtype "
                    f"{arr.dtype}")
def _refuse_empty_id(name: str, ids: np.ndarray) -> None:
    """Raise a DataError naming the first empty-string id among ``ids`` (argument
    ``name``), if any: the readers refuse an empty cell, and the HTTP API cannot ask for
    one, so no run holds one (nor does a ``Vocabulary``). Called only once a vocabulary
    refused the ids or a lookup failed: the usual case makes no pass to look for one."""
    if ids.dtype.kind == "O" and (ids == "").any():
        raise DataError(f"`{name}`[{int(np.argmax(ids == ''))}]: empty id (''); an id is "
                        "an integer or a string of at least one character") from None


def _rows_vocab(name: str, ids: np.ndarray, role: str) -> Vocabulary:
    """The sorted vocabulary of the ids of argument ``name`` (``Vocabulary.from_values``);
    an empty id, which the vocabulary refuses, is said naming its row."""
    try:
        return Vocabulary.from_values(ids, name=role)
    except DataError:
        _refuse_empty_id(name, ids)
        raise


def _index(vocab: Vocabulary, ids: np.ndarray, name: str = "ids") -> np.ndarray:
    """Indices of ``ids`` (argument ``name``) in ``vocab``: UnknownIdError names the first
    unknown one; an empty id (never in a vocabulary) is said as such, naming its row."""
    try:
        return _lookup(vocab, ids)
    except UnknownIdError:
        _refuse_empty_id(name, ids)
        raise


def _lookup(vocab: Vocabulary, ids: np.ndarray) -> np.ndarray:
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
