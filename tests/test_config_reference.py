"""docs/config.md is generated from the config classes (their docstrings and defaults):
it must be current, and every field must have its line in its class's docstring."""

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    return runpy.run_path(str(ROOT / "docs" / "config_reference.py"), run_name="reference")


def test_config_reference_is_current():
    text = _generator()["main"]()
    assert (ROOT / "docs" / "config.md").read_text() == text, (
        "docs/config.md is stale: python docs/config_reference.py > docs/config.md")


def test_a_field_without_a_docstring_line_is_caught():
    import dataclasses

    from twotower.config import Config

    @dataclasses.dataclass(frozen=True)
    class Two(Config):
        """Two fields.

        Attributes:
            a: the first.

        Example:
            >>> Two().a
            1
        """
        a: int = 1
        b: int = 2

    gen = _generator()
    with pytest.raises(SystemExit, match=r"fields without a line in its docstring: \['b'\]"):
        gen["_table"](Two, {"default": Two().to_dict()})
    assert gen["_attributes"](Two) == {"a": "the first."}  # the example is not part of it


def test_every_flag_that_wins_over_the_config_file_is_named():
    """docs/config.md listed 8 of train's flags as winning over the file's ``[model]``;
    ``--catalogue``, ``--interaction-weights`` and ``--event-weights`` win too and were not
    named. Every train flag that sets a ``ModelConfig`` field of its name must be one the
    CLI lets win (``_MODEL_FLAGS``) and be named in the reference."""
    import argparse
    import dataclasses

    from twotower import ModelConfig
    from twotower.cli import _MODEL_FLAGS, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    flags = {a.dest: a.option_strings[0] for a in sub.choices["train"]._actions
             if a.dest in fields}
    assert set(flags) == set(_MODEL_FLAGS)
    text = (ROOT / "docs" / "config.md").read_text()
    intro = text.split("| key |")[0]
    assert [f for f in flags.values() if f"`{f}`" not in intro] == []
