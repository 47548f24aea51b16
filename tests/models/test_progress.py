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
               r"\d+ s so far, about \d+ s left")
    first, last = re.fullmatch(pattern, lines[0]), re.fullmatch(pattern, lines[-1])
    assert first and last, (lines[0], lines[-1])
    assert first.groups() == ("1", "1", str(steps))
    assert last.groups() == ("2", str(steps), str(steps))


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
