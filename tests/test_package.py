"""The package's public names, loaded on first use (PEP 562)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest


def test_public_names_resolve_to_their_modules():
    import twotower
    from twotower.data import Interactions
    from twotower.models import TwoTower
    assert twotower.TwoTower is TwoTower and twotower.Interactions is Interactions
    for name in twotower.__all__:
        assert getattr(twotower, name) is not None, name
    assert set(twotower.__all__) <= set(dir(twotower))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        twotower.nope  # noqa: B018


def test_the_lazy_table_and_the_type_checkers_imports_agree():
    """The public names are listed twice (the lazy table, and the imports type checkers
    read): a name added to one only is missing from IDEs, or from `twotower.NAME`."""
    import ast
    from pathlib import Path

    import twotower
    tree = ast.parse(Path(twotower.__file__).read_text(encoding="utf-8"))
    guarded = next(node for node in tree.body if isinstance(node, ast.If)
                   and ast.unparse(node.test) == "TYPE_CHECKING")
    imported = {alias.name: node.module for node in guarded.body
                if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert imported == twotower._PUBLIC


def test_the_command_starts_without_loading_the_library():
    """`import twotower` loaded pandas, the readers and the models (1.7 s) before the
    command's own Ctrl-C handling was in place: a Ctrl-C then was a 27-line traceback."""
    code = ("import sys, twotower, twotower.cli; "
            "print(sorted(m for m in ('pandas', 'keras', 'jax', 'scipy', 'twotower.models') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "[]", out


def test_a_stop_after_the_command_is_done_is_ignored(monkeypatch):
    """`index` (no JAX loaded) after its save: a Ctrl-C before the process ended ended it
    by SIGINT, silently; the command's status is what a caller should get."""
    from twotower import cli
    monkeypatch.setattr(cli, "main", lambda: 0)
    monkeypatch.delitem(sys.modules, "jax", raising=False)  # a command that never loads it
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as exc:
            cli.run()
        assert exc.value.code == 0
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        for s, h in before.items():
            signal.signal(s, h)


def test_the_compiled_exclusion_loops_are_built():
    """``make test`` installs with setup.py's extension (``twotower.index._kernels``):
    where a C compiler is, it must load, or the index tests' half that runs with it
    (``exclusion_loops``) would skip in silence. Built without one, twotower takes
    its numpy path, with the same results."""
    import os
    import shutil

    if os.environ.get("TWOTOWER_NO_KERNELS", "") not in ("", "0"):
        pytest.skip("TWOTOWER_NO_KERNELS is set: the numpy path is asked for")
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler here: the extension is optional")
    from twotower.index import filters

    assert filters._kernels is not None, (
        "twotower.index._kernels did not load: build it with `pip install -e .` (setup.py)")
