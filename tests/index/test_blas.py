"""The per-block single-threaded BLAS setting (``twotower.index._blas``)."""

from __future__ import annotations

import os
import threading
import warnings

import pytest

from twotower.index import _blas


def _current() -> int:
    """The BLAS thread count this thread sees (the setting returns the one before)."""
    fn = _blas._find()
    before = fn(1)
    fn(before)
    return before


def test_blocks_left_in_turn_by_two_threads_restore_the_thread_count():
    # numpy's OpenBLAS applies the "local" setting to the whole process. Thread A enters
    # (saves 2), B enters (saves A's 1), A leaves (puts 2 back), B leaves (puts 1 back):
    # without counting the open blocks, the process stayed on one BLAS thread for good.
    if not _blas.available():
        pytest.skip("numpy's BLAS has no per-thread thread count")
    fn = _blas._find()
    original = fn(2)
    try:
        assert _current() == 2
        a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

        def a() -> None:
            with _blas.single_threaded():
                a_in.set()
                b_in.wait(10)
            a_out.set()

        def b() -> None:
            a_in.wait(10)
            with _blas.single_threaded():
                b_in.set()
                a_out.wait(10)

        threads = [threading.Thread(target=a), threading.Thread(target=b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert a_out.is_set() and b_in.is_set()
        assert _current() == 2
        with _blas.single_threaded():  # and inside a block: one thread
            assert _current() == 1
        assert _current() == 2
    finally:
        fn(original)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_child_forked_while_a_block_is_open_gets_its_thread_count_back():
    # A process forked while another thread searched (a block open) inherited the count
    # of open blocks, whose threads it does not have: its own blocks never brought the
    # count back to 0, and the child stayed on one BLAS thread for good (a forked worker
    # training or multiplying large matrices at a fraction of its speed).
    if not _blas.available():
        pytest.skip("numpy's BLAS has no per-thread thread count")
    fn = _blas._find()
    original = fn(2)
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        with _blas.single_threaded():
            entered.set()
            release.wait(20)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert entered.wait(20) and _current() == 1
        with warnings.catch_warnings():  # fork() with threads: the point of the test
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            code = 1
            try:
                with _blas.single_threaded():
                    pass
                code = 0 if (_current(), _blas._depth) == (2, 0) else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        release.set()
        t.join(20)
        assert _current() == 2  # the parent's block closed: its count back
    finally:
        release.set()
        t.join(20)
        fn(original)  # (this process's count before the test, which need not be 2)


def test_threads_that_first_look_for_the_setting_at_once_all_find_it(monkeypatch):
    # The first search of a process starts its workers at once, each looking the setting
    # up. A worker that came while another was still looking once saw "searched, none
    # found" and ran its first blocks on multi-threaded BLAS (slower, and scores an ulp
    # off those of every later call).
    if not _blas.available():
        pytest.skip("numpy's BLAS has no per-thread thread count")
    real_glob = _blas.glob.glob
    started = threading.Event()

    def slow_glob(pattern):
        started.set()
        threading.Event().wait(0.2)  # the first looker holds the search open a while
        return real_glob(pattern)

    monkeypatch.setattr(_blas, "_searched", False)
    monkeypatch.setattr(_blas, "_set_local", None)
    monkeypatch.setattr(_blas.glob, "glob", slow_glob)
    found: dict[str, bool] = {}

    def first() -> None:
        found["first"] = _blas.available()

    def second() -> None:
        started.wait(10)
        found["second"] = _blas.available()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert found == {"first": True, "second": True}
