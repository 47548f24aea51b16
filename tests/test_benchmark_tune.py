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


class _Data:
    n_users, n_items = 40, 30

    def __len__(self):
        return 400


def test_tune_writes_its_result_into_the_out_folder(tmp_path, monkeypatch):
    """`--out DIR` (a Path) went into the result's "args" as is, and json.dumps refused it
    (TypeError: Object of type PosixPath is not JSON serializable) after the whole run:
    nothing was written. The training is stubbed here; the writing is the script's."""
    import json

    import tune
    monkeypatch.setattr(tune, "load_data", lambda *a: _Data())
    monkeypatch.setattr(tune, "validation_splits", lambda data, seeds: [("random-0", 1, 2)])
    monkeypatch.setattr(tune, "tune", lambda *a, **k: (type("C", (), {"lambda_": 100.0}), []))
    monkeypatch.setattr(tune, "EASE", lambda cfg: type("E", (), {"fit": lambda s, x: s})())
    monkeypatch.setattr(tune, "recommend_and_evaluate",
                        lambda *a: {"recall@10": 0.2, "ndcg@10": 0.4})

    class Curve:
        def __init__(self, *a):
            self.points = [{"epoch": 1, "recall@10": 0.1, "ndcg@10": 0.2}]

    monkeypatch.setattr(tune, "_Curve", Curve)
    monkeypatch.setattr(tune, "TwoTower", lambda cfg: type("T", (), {
        "fit": lambda s, *a, **k: s})())
    assert tune.main(["--data", "unused", "--quick", "--out", str(tmp_path / "r")]) == 0
    [path] = (tmp_path / "r").glob("tune-*.json")
    saved = json.loads(path.read_text())
    assert saved["args"]["out"] == str(tmp_path / "r") and saved["winner"]["epochs"] == 1


def test_tune_blend_writes_its_result_into_the_out_folder(tmp_path, monkeypatch):
    """As tune.py: `--out DIR` stopped the run at its end (a Path is not JSON)."""
    import json

    import tune_blend
    monkeypatch.setattr(tune_blend, "load_data", lambda *a: _Data())
    monkeypatch.setattr(tune_blend, "validation_splits", lambda data, seeds: [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the mean of no splits
        assert tune_blend.main(["--data", "unused", "--weights", "0",
                                "--out", str(tmp_path)]) == 0
    [path] = tmp_path.glob("tune-blend-*.json")
    assert json.loads(path.read_text())["args"]["out"] == str(tmp_path)
