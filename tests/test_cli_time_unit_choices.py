"""The CLI names the time units as a literal (it keeps pandas out of its import); they must be
the library's."""
import argparse

from twotower.cli import build_parser
from twotower.data.interactions import TIME_UNITS


def _choices(parser: argparse.ArgumentParser, flag: str) -> list[tuple[str, tuple]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [(f"{name} {n}", c) for n, c in _choices(sub, flag)]
        elif flag in action.option_strings:
            found.append((flag, tuple(action.choices)))
    return found


def test_every_time_unit_flag_offers_the_library_units():
    found = _choices(build_parser(), "--time-unit")
    assert found  # train, evaluate, ... take it
    assert all(c == TIME_UNITS for _, c in found), found
