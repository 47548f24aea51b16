"""A training progress line for long runs: silent when training is quick."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import keras

from twotower.models._ticker import Ticker, _duration  # noqa: F401 (re-exported)


class TrainProgress(keras.callbacks.Callback):
    """One line on stderr at most every ``every_s`` seconds while ``fit`` runs: epoch, step,
    loss, time so far and an estimate of the time left. A run shorter than ``every_s``
    prints nothing. The estimate is the pace since the first step ended: that step also
    compiles (an estimate from the start gave "about 39 min left" for an 85 s run).

    Example:
        >>> model.fit(train, callbacks=[TrainProgress(every_s=10)])  # doctest: +SKIP
        twotower: training epoch 3/15, step 412/782, loss 371.2058, 1 min 40 s so far, about 7 min 10 s left
    """

    def __init__(self, every_s: float = 10.0, out: TextIO | None = None,
                 prefix: str = "twotower: ") -> None:
        super().__init__()
        self.every_s, self.out, self.prefix = every_s, out, prefix
        self.t0 = self.last = 0.0
        self.epoch = 0
        self.first: tuple[float, float] | None = None  # (time, epochs done) at step 1's end

    def on_train_begin(self, logs: Any = None) -> None:
        self.t0 = self.last = time.perf_counter()
        self.first = None

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        now = time.perf_counter()
        steps = self.params.get("steps")
        done = self.epoch + ((batch + 1) / steps if steps else 0.0)
        if self.first is None:  # compiling is behind: the pace is measured from here
            self.first = (now, done)
        if now - self.last < self.every_s:
            return
        self.last = now
        epochs = int(self.params.get("epochs") or 1)
        elapsed = now - self.t0
        t1, d1 = self.first
        step = f", step {batch + 1}/{steps}" if steps else ""
        loss = (logs or {}).get("loss")
        loss_s = f", loss {float(loss):.4f}" if loss is not None else ""
        left = (f", about {_duration((now - t1) / (done - d1) * (epochs - done))} left"
                if done > d1 else "")
        print(f"{self.prefix}training epoch {self.epoch + 1}/{epochs}{step}{loss_s}, "
              f"{_duration(elapsed)} so far{left}", file=self.out or sys.stderr, flush=True)
