"""Per-thread BLAS threads: run a block of work with single-threaded BLAS in this thread.

Exact search splits its work over Python threads, one per core, each with its own BLAS
calls on small blocks. A multi-threaded BLAS on such blocks spends much of its time
synchronising its own threads (256 x 4,096 x 64 float32 GEMMs ran several times slower with two
OpenBLAS threads than one), so each worker asks for one BLAS thread. OpenBLAS >= 0.3.27
has a setting for this (``openblas_set_num_threads_local``); with any other BLAS this
module does nothing and ``available()`` is False.

Despite its name, in numpy's OpenBLAS (scipy-openblas 0.3.31) that setting acts on the
whole process: while one thread holds it at 1, every thread's BLAS calls use one thread,
and it returns the process-wide value. Two workers entering and leaving in turn (A saves
2, B saves A's 1, A restores 2, B restores 1) left the process on one BLAS thread for
good: a 4,096² matmul then ran at 126-130 instead of 245-252 GFLOP/s on two cores. So the
blocks are counted: the first to enter keeps the value before, the last to leave puts it
back.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import threading
from collections.abc import Iterator

import numpy as np

_set_local = None
_searched = False
_lock = threading.Lock()
_depth = 0  # single_threaded blocks open in the process
_saved = 0  # the BLAS thread count before the first of them


_find_lock = threading.Lock()


def _find() -> object | None:
    """The setting, looked up once per process. Every caller waits for the first lookup:
    the first search starts its workers at once, and a worker that saw "searched" before
    the first had found it ran its blocks on multi-threaded BLAS (slower, and scores an
    ulp off those of later calls)."""
    if _searched:
        return _set_local
    with _find_lock:
        if not _searched:
            _look()
    return _set_local


def _look() -> None:
    global _set_local, _searched
    libdir = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    for path in sorted(glob.glob(os.path.join(libdir, "*openblas*.so*"))):
        try:
            lib = ctypes.CDLL(path)  # already loaded by numpy: the same library handle
            fn = lib.openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_int]
        fn.restype = ctypes.c_int
        _set_local = fn
        break
    _searched = True


def available() -> bool:
    """True when numpy's BLAS accepts a per-thread thread count."""
    return _find() is not None


@contextlib.contextmanager
def single_threaded() -> Iterator[bool]:
    """Within the block, BLAS calls made by this thread use one thread (with numpy's
    OpenBLAS, every thread's, while any block is open); yields available(). The count
    from before the first open block comes back when the last one closes."""
    global _depth, _saved
    fn = _find()
    if fn is None:
        yield False
        return
    with _lock:
        before = fn(1)  # every entrant: also right where the setting is per thread
        if _depth == 0:
            _saved = before
        _depth += 1
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                fn(_saved)


def _after_fork() -> None:
    # A child forked while other threads held blocks open inherits their count, not the
    # threads: it would never close them, and stay on one BLAS thread for good (and a lock
    # held at the fork, never released). It starts with none open, its count as before.
    global _depth, _lock, _find_lock
    _lock, _find_lock = threading.Lock(), threading.Lock()
    if _depth:
        _depth = 0
        _set_local(_saved)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
