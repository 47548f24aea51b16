"""The training progress line: throttled, with epoch, step, loss and time left."""

from __future__ import annotations

import io
import re

from twotower.models import ModelConfig, TwoTower
from twotower.models.progress import TrainProgress, _duration

from tests.models.test_objectives import CASES, FAST, planted


def test_progress_lines_name_epoch_step_loss_and_time_left():
    x, _ = planted(0)
    cfg = ModelConfig.from_dict({**FAST, **CASES["mse"], "epochs": 2})
    out = io.StringIO()
    TwoTower(cfg).fit(x, verbose=0, callbacks=[TrainProgress(every_s=0.0, out=out)])
    lines = out.getvalue().splitlines()
    steps = -(-len(x) // cfg.batch_size)
    assert len(lines) == 2 * steps  # every_s 0: one line per step
    pattern = (r"twotower: training epoch ([12])/2, step (\d+)/(\d+), loss [\d.]+, "
               r"\d+ s so far(, about \d+ s left)?")
    first, last = re.fullmatch(pattern, lines[0]), re.fullmatch(pattern, lines[-1])
    assert first and last, (lines[0], lines[-1])
    # the pace is measured after the first step (it compiles): an estimate from then on
    assert first.group(4) is None and all("left" in line for line in lines[1:])
    first, last = (m.groups()[:3] for m in (first, last))
    assert first == ("1", "1", str(steps))
    assert last == ("2", str(steps), str(steps))


def test_progress_is_silent_for_a_quick_run():
    x, _ = planted(0)
    cfg = ModelConfig.from_dict({**FAST, **CASES["mse"], "epochs": 1})
    out = io.StringIO()
    TwoTower(cfg).fit(x, verbose=0, callbacks=[TrainProgress(every_s=3600.0, out=out)])
    assert out.getvalue() == ""


def test_durations_read_naturally():
    assert [_duration(s) for s in (5, 65, 3725)] == ["5 s", "1 min 05 s", "1 h 02 min"]


def test_a_ticker_sends_its_lines_to_a_callable_when_given_one():
    """``evaluate --baselines`` tunes ItemKNN and EASE for minutes on a large catalogue: a
    Ticker line now and then, through the caller's own log."""
    import time

    from twotower.models.progress import Ticker
    got, out = [], io.StringIO()
    with Ticker("tuning baselines", 0.01, out=out, emit=got.append) as tick:
        tick.stage = "EASE, setting 2 of 7 (lambda_ 50)"
        time.sleep(0.1)
    assert got and out.getvalue() == ""
    assert re.fullmatch(r"tuning baselines: EASE, setting 2 of 7 \(lambda_ 50\), \d+ s so far",
                        got[-1]), got[-1]


def test_a_ticker_counts_from_the_clock_it_is_given():
    """evaluate's lines said "(187 s so far)", then its baseline ticker "24 s so far": two
    clocks in one log. A ticker given ``since`` counts from there."""
    import time

    from twotower.models.progress import Ticker
    got = []
    with Ticker("tuning baselines", 0.01, emit=got.append,
                since=time.perf_counter() - 125) as tick:
        tick.stage = "EASE"
        time.sleep(0.1)
    assert got and got[-1].startswith("tuning baselines: EASE, 2 min 0") and got[-1].endswith(
        " s so far"), got[-1]


def test_the_chosen_baseline_settings_name_a_grid_edge():
    from twotower.evaluation.baselines import EASEConfig, ItemKNNConfig
    from twotower.evaluation.run import chosen_settings
    line = chosen_settings(ItemKNNConfig(neighbors=100, shrink=10.0), EASEConfig(lambda_=20.0),
                           EASEConfig(lambda_=500.0, half_life=10.0, floor=0.2))
    assert line == ("ItemKNN neighbors 100, shrink 10; EASE lambda 20 (the grid's smallest); "
                    "EASE+recency lambda 500, half-life 10, floor 0.2")
    assert chosen_settings(ItemKNNConfig(neighbors=200), EASEConfig(lambda_=2000.0),
                           EASEConfig(lambda_=50.0)) == (
        "ItemKNN neighbors 200 (the grid's largest), shrink 0; EASE lambda 2000 (the grid's "
        "largest); EASE+recency lambda 50, unweighted query")


def test_time_left_is_the_pace_after_the_first_step(monkeypatch):
    """The first step compiles: an estimate from the start said "about 39 min left" for a
    run that took 85 s. A 30 s first step, then 1 s steps: 90 steps left take 90 s."""
    import twotower.models.progress as progress
    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    out = io.StringIO()
    cb = TrainProgress(every_s=0.0, out=out)
    cb.set_params({"epochs": 1, "steps": 100})
    cb.on_train_begin()
    cb.on_epoch_begin(0)
    clock[0] = 30.0
    cb.on_train_batch_end(0, {"loss": 1.0})
    assert "left" not in out.getvalue()  # one step: no pace yet
    for step in range(1, 10):
        clock[0] += 1.0
        cb.on_train_batch_end(step, {"loss": 1.0})
    assert out.getvalue().splitlines()[-1].endswith(
        "step 10/100, loss 1.0000, 39 s so far, about 1 min 30 s left")
