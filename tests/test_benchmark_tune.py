"""benchmarks/tune.py's data helpers on logs of other shapes than MovieLens 100k."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def _log(path, times=None):
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 40, 400), rng.integers(0, 30, 400)
    head = "user_id,item_id,rating" + (",timestamp" if times is not None else "")
    lines = [f"{u},{i},{1 + n % 5}" + (f",{times[n]}" if times is not None else "")
             for n, (u, i) in enumerate(zip(users, items))]
    path.write_text(head + "\n" + "\n".join(lines) + "\n")
    return path


def test_tune_reads_a_log_without_times_and_takes_a_share_of_its_users(tmp_path):
    """`--interactions` on a log without a timestamp column tunes on random splits only,
    but `--users-fraction` indexed its missing times (TypeError: 'NoneType' object is not
    subscriptable); a log with times keeps them, and their unit, in the share."""
    import tune
    data = tune.load_data(str(_log(tmp_path / "notimes.csv")), "", users_fraction=0.5)
    assert data.timestamps is None and 0 < data.n_users < 40
    assert [name for name, _, _ in tune.validation_splits(data, [0, 1])] == ["random-0",
                                                                           "random-1"]
    ms = 1_700_000_000_000 + np.arange(400) * 250  # milliseconds, kept as such
    full = tune.load_data(str(_log(tmp_path / "times.csv", ms)), "")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (read again with auto: "times read as ms")
        part = tune.subsample_users(full, 0.5)
    assert part.time_unit == full.time_unit == "ms" and 0 < part.n_users < 40
    keep = np.isin(full.user_vocab.ids[full.users], part.user_vocab.ids)
    assert part.timestamps.tolist() == full.timestamps[keep].tolist()
    assert [name for name, _, _ in tune.validation_splits(part, [0])] == ["random-0",
                                                                         "temporal"]


def test_tune_reads_again_without_times_only_when_the_log_has_no_timestamp_column(
        tmp_path, monkeypatch):
    """Any DataError of the first read was taken for a missing timestamp column: a bad
    time dropped the whole column in silence, and a bad rating was said by a second
    read (chained to the first's error)."""
    import pytest
    import tune

    import twotower.data
    from twotower.errors import DataError
    times = [str(1_700_000_000 + n) for n in range(400)]
    times[6] = "soon"
    with pytest.raises(DataError, match=r"line 8, column 'timestamp': expected a time"):
        tune.load_data(str(_log(tmp_path / "badtime.csv", times)), "")
    path = tmp_path / "badrating.csv"
    path.write_text("user_id,item_id,rating,timestamp\n1,1,4,1700000000\n"
                    "2,1,x,1700000001\n")
    calls = []
    read = twotower.data.read_interactions
    monkeypatch.setattr(twotower.data, "read_interactions",
                        lambda *a, **k: calls.append(k) or read(*a, **k))
    with pytest.raises(DataError, match=r"line 3, column 'rating'") as info:
        tune.load_data(str(path), "")
    assert len(calls) == 1 and info.value.__context__ is None
    calls.clear()  # a log without the column: read again, as before
    assert tune.load_data(str(_log(tmp_path / "notimes.csv")), "").timestamps is None
    assert len(calls) == 2
