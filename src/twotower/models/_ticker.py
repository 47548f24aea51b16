"""A progress line from a background thread for long steps without epochs (fitting the EASE
part, re-indexing a run): no Keras, so the commands that need no network load none."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Ticker:
    """While a long step without epochs runs (fitting the EASE part), one line at most every
    ``every_s`` seconds from a background thread: ``{prefix}{what}: {stage}, {time} so far``.
    ``stage`` is set by the step as it goes on. A step shorter than ``every_s`` prints
    nothing.

    Example:
        >>> with Ticker("EASE part", every_s=10) as tick:   # doctest: +SKIP
        ...     tick.stage = "lambda 500 (2 of 3)"
    """

    def __init__(self, what: str, every_s: float = 10.0, out: TextIO | None = None,
                 prefix: str = "twotower: ", emit: Callable[[str], None] | None = None,
                 stage: str = "starting", since: float | None = None) -> None:
        import threading
        self.since = since  # a perf_counter() to count from (an outer step's clock)
        self.what, self.every_s, self.out, self.prefix = what, every_s, out, prefix
        self.emit = emit  # given: each line goes to it (no prefix), not to ``out``
        self.stage = stage
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Ticker:
        self.t0 = time.perf_counter() if self.since is None else self.since
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.wait(self.every_s):
            line = (f"{self.what}: {self.stage}, "
                    f"{_duration(time.perf_counter() - self.t0)} so far")
            if self.emit is not None:
                self.emit(line)
            else:
                print(f"{self.prefix}{line}", file=self.out or sys.stderr, flush=True)


def ticking(what: str, every_s: float, stage: str, **kw: Any) -> Any:
    """A ``Ticker`` for the block, or nothing when ``every_s`` is 0 (progress off)."""
    return Ticker(what, every_s, stage=stage, **kw) if every_s else contextlib.nullcontext()
