"""Per-thread BLAS threads: run a block of work with single-threaded BLAS in this thread.

Exact search splits its work over Python threads, one per core, each with its own BLAS
calls on small blocks. A multi-threaded BLAS on such blocks spends much of its time
synchronising its own threads (256 x 4,096 x 64 float32 GEMMs ran several times slower with two
OpenBLAS threads than one), so each worker asks for one BLAS thread. OpenBLAS >= 0.3.27
has a thread-local setting for this (``openblas_set_num_threads_local``); with any other
BLAS this module does nothing and ``available()`` is False.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
from collections.abc import Iterator

import numpy as np

_set_local = None
_searched = False


def _find() -> object | None:
    global _set_local, _searched
    if _searched:
        return _set_local
    _searched = True
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
    return _set_local


def available() -> bool:
    """True when numpy's BLAS accepts a per-thread thread count."""
    return _find() is not None


@contextlib.contextmanager
def single_threaded() -> Iterator[bool]:
    """Within the block, BLAS calls made by this thread use one thread; yields available()."""
    fn = _find()
    if fn is None:
        yield False
        return
    before = fn(1)
    try:
        yield True
    finally:
        fn(before)
