"""Train/test splits: seeded random, per-user temporal, global temporal (one time cutoff
for the whole log), and held-out users.

All are deterministic for a given seed (the temporal ones need none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from twotower.config import check_range
from twotower.data.interactions import Interactions
from twotower.errors import ConfigError, DataError

SPLITS = ("random", "temporal", "global-temporal", "none")


@dataclass(frozen=True)
class Split:
    """A train part and a test part over the same vocabularies.

    ``history`` is set only for held-out-user splits: the held-out users' visible items
    (the query side at evaluation), never seen in training.
    """

    train: Interactions
    test: Interactions
    history: Interactions | None = None


def _check_fraction(fraction: float, name: str = "test_fraction") -> None:
    check_range("split", name, fraction, 0.0, 1.0)
    if not 0.0 < fraction < 1.0:  # (an argument, as the range's: one error class)
        raise ConfigError(f"split.{name} must be strictly between 0 and 1, got {fraction}")


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"`seed` must be a non-negative integer, got {seed!r}")


def random_split(x: Interactions, test_fraction: float = 0.2, seed: int = 42) -> Split:
    """The tutorial's split: shuffle all rows with ``seed``; the last ``test_fraction`` is test."""
    _check_fraction(test_fraction)
    _check_seed(seed)
    perm = np.random.default_rng(seed).permutation(len(x))
    n_train = int(round(len(x) * (1.0 - test_fraction)))
    return Split(x.take(np.sort(perm[:n_train])), x.take(np.sort(perm[n_train:])))


def temporal_split(x: Interactions, test_fraction: float = 0.2) -> Split:
    """Per user, the latest ``test_fraction`` of their rows (by timestamp) is test.

    Each user with at least 2 rows keeps at least one in train and puts
    ``floor(test_fraction * n)`` (at least 1) in test. Ties in time keep file order.
    """
    _check_fraction(test_fraction)
    if x.timestamps is None:
        raise DataError("temporal split needs timestamps (Interactions.timestamps; --time-col "
                        "in the CLI), or use a random split (--split random)")
    order = np.lexsort((np.arange(len(x)), x.timestamps, x.users))
    users_sorted = x.users[order]
    counts = np.bincount(x.users, minlength=x.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(x)) - starts[users_sorted]  # position within the user's timeline
    n = counts[users_sorted]
    # rounded before the floor: 1 - 0.8 (held_out_users_split's history_fraction) is
    # 0.19999999999999996, whose product with 10 floored to 1 test row instead of 2
    share = np.floor(np.round(test_fraction * n, 9)).astype(np.int64)
    n_test = np.where(n >= 2, np.clip(share, 1, n - 1), 0)
    is_test = rank >= n - n_test
    test_rows = np.sort(order[is_test])
    train_rows = np.sort(order[~is_test])
    return Split(x.take(train_rows), x.take(test_rows))


def global_temporal_split(x: Interactions, test_fraction: float = 0.2) -> Split:
    """One time cutoff for the whole log: the latest ``test_fraction`` of the rows (by
    timestamp) is test, everything before it train. The realistic offline test for a model
    that is retrained and then serves the future (news, new releases): unlike the per-user
    ``temporal_split``, no training row comes after a test row, so no user's test items
    were seen in training through others' later interactions. Users and items that first
    appear after the cutoff are in test only (new to the model: left out of, or not
    findable in, the metrics).

    Rows at the cutoff time go to test with it (events of one time are on one side), so
    the test part can be larger than ``test_fraction`` when times are coarse.

    Raises:
        DataError: no timestamps, or nothing left to train on (a ``test_fraction`` that
            rounds to every row, or every row at the cutoff time). Warns when rows tied at
            the cutoff make the test part more than 5 points larger than asked.
    """
    _check_fraction(test_fraction)
    if x.timestamps is None:
        raise DataError("global-temporal split needs timestamps (Interactions.timestamps; "
                        "--time-col in the CLI), or use a random split (--split random)")
    ts = np.asarray(x.timestamps)
    n_test = max(1, int(round(len(x) * test_fraction)))
    if n_test >= len(x):  # not the times: the share asked for is every row
        raise DataError(f"global-temporal split: a test_fraction {test_fraction:g} of "
                        f"{len(x):,} rows is every one of the {len(x):,} rows (nothing left "
                        "to train on); lower --test-fraction or give more rows")
    cutoff = np.sort(ts, kind="stable")[len(x) - n_test]
    is_test = ts >= cutoff
    if is_test.all():
        raise DataError(f"global-temporal split: every one of the {len(x):,} rows is at or "
                        f"after the cutoff time {_when(cutoff, x.time_unit)} (the times are "
                        "too coarse to leave anything to train on); use --split temporal or "
                        "random")
    share = float(is_test.mean())
    if share > test_fraction + 0.05:
        import warnings
        warnings.warn(f"global-temporal split: {share:.0%} of the rows are test, not "
                      f"{test_fraction:g}: {int(np.sum(ts == cutoff)):,} rows share the cutoff "
                      f"time {_when(cutoff, x.time_unit)} and go to test together (coarse times)",
                      stacklevel=2)
    return Split(x.take(np.flatnonzero(~is_test)), x.take(np.flatnonzero(is_test)))


def held_out_users_split(x: Interactions, user_fraction: float = 0.1, seed: int = 42,
                         history_fraction: float = 0.8) -> Split:
    """A share of users is absent from training; their first ``history_fraction`` of items
    (by time when timestamps exist, else in random order) is the history, the rest the test."""
    _check_fraction(user_fraction, "user_fraction")
    _check_fraction(history_fraction, "history_fraction")  # (it named test_fraction)
    _check_seed(seed)
    rng = np.random.default_rng(seed)
    held = rng.random(x.n_users) < user_fraction
    if not held.any():  # an empty test part and history, which scored nothing, unsaid
        raise DataError(f"held_out_users_split: user_fraction {user_fraction} of "
                        f"{x.n_users:,} users holds none out with seed {seed}: raise "
                        "user_fraction")
    is_held = held[x.users]
    train = x.take(np.flatnonzero(~is_held))
    rest = x.take(np.flatnonzero(is_held))
    if x.timestamps is not None:
        inner = temporal_split(rest, 1.0 - history_fraction)
    else:
        inner = random_split(rest, 1.0 - history_fraction, seed)
    # untimed: one random split of the held users' rows, so each user's history share is
    # history_fraction only on average (a user may get no history, or no test row)
    return Split(train=train, test=inner.test, history=inner.train)


def make_split(x: Interactions, kind: str, test_fraction: float = 0.2, seed: int = 42) -> Split:
    """Dispatch by name: ``random``, ``temporal`` (per user), ``global-temporal`` (one
    cutoff) or ``none`` (empty test part)."""
    if kind == "random":
        return random_split(x, test_fraction, seed)
    if kind == "temporal":
        return temporal_split(x, test_fraction)
    if kind == "global-temporal":
        return global_temporal_split(x, test_fraction)
    if kind == "none":
        return Split(x, x.take(np.zeros(0, dtype=np.int64)))
    raise DataError(f"split must be one of {list(SPLITS)}, got {kind!r}")


def _when(t: Any, unit: str = "s") -> str:
    """A time (counted in ``unit`` since the epoch, as ``Interactions.timestamps``) as
    messages show it: ``1709251200 (2024-03-01T00:00:00Z)``,
    ``1709251200123 (2024-03-01T00:00:00.123Z)``; the number alone where it is no date
    pandas writes."""
    import pandas as pd
    spec = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
    try:
        return (f"{int(t)} ({pd.Timestamp(int(t), unit=unit).isoformat(timespec=spec[unit])}"
                "Z)")
    except (OverflowError, ValueError, KeyError):
        return str(int(t))
