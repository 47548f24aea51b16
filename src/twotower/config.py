"""Configuration as data: frozen dataclasses that round-trip through JSON.

Every component takes one typed, frozen config. ``to_dict``/``from_dict`` are exact
inverses (tested), unknown keys are rejected by name, and values are checked by each
config's ``validate``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Mapping
from typing import Any, Self

import numpy as np

from twotower.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every twotower config. Subclasses add fields and a ``validate``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        # before the dataclass __init__, whose TypeError would not name the expected keys
        _check_names(cls, kwargs)
        return super().__new__(cls)

    def __post_init__(self) -> None:
        floats = _float_fields(type(self))
        for f in dataclasses.fields(self):  # numpy scalars -> Python (to_dict stays JSON)
            v = given = getattr(self, f.name)
            if isinstance(v, list) and isinstance(f.default, tuple):
                v = tuple(v)  # a list where the field holds a sequence: frozen, hashable
            new = tuple(map(_python_scalar, v)) if isinstance(v, tuple) else _python_scalar(v)
            if f.name in floats:  # 1 where a float is meant (a TOML `learning_rate = 1`)
                new = (tuple(map(_as_float, new)) if isinstance(new, tuple)
                       else _as_float(new))
            if new is not given:  # (tuple(map(f, ())) is the very () of an empty list)
                object.__setattr__(self, f.name, new)
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the field when a value is out of range."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Config):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, dict):  # a copy: editing the result leaves the config be
                v = dict(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Self:
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(f"{cls.__name__}: expected a mapping of setting names to values, "
                              f"got {type(data).__name__}")
        data = dict(data or {})
        _check_names(cls, data)
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            hint = hints.get(name)
            if isinstance(hint, type) and issubclass(hint, Config) and isinstance(value, dict):
                value = hint.from_dict(value)
            # (a list where a sequence is held becomes a tuple in __post_init__; any other
            # list stays one, so that an error shows the value as written)
            kwargs[name] = value
        try:
            return cls(**kwargs)
        except TypeError as exc:  # pragma: no cover - defensive
            raise ConfigError(f"{cls.__name__}: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Self:
        try:
            data = json.loads(text, object_pairs_hook=unique_keys)
        except DuplicateKey as exc:  # json keeps the last in silence
            raise ConfigError(f"{cls.__name__}: key {exc.args[0]!r} is given twice in one "
                              "JSON object (which one is meant cannot be told)") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{cls.__name__}: invalid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)


class DuplicateKey(Exception):
    """A JSON object names one key twice (``json`` keeps the last in silence)."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' ``object_pairs_hook``: the object, or DuplicateKey naming a key
    given twice (the config files' reader and ``Config.from_json`` refuse such a file)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise DuplicateKey(key)
        out[key] = value
    return out


def _check_names(cls: type, data: Mapping[str, Any]) -> None:
    names = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown key(s) {unknown}; expected some of {names}")


def _float_fields(cls: type) -> frozenset[str]:
    """The fields of ``cls`` typed ``float`` or ``tuple[float, ...]``."""
    got = _FLOAT_FIELDS.get(cls)
    if got is None:
        hints = typing.get_type_hints(cls)
        got = _FLOAT_FIELDS[cls] = frozenset(
            n for n, h in hints.items()
            if h is float or (typing.get_origin(h) is tuple and typing.get_args(h)[:1]
                              == (float,)))
    return got


_FLOAT_FIELDS: dict[type, frozenset[str]] = {}


def _as_float(value: Any) -> Any:
    """An int (not a bool) as the float it stands for; anything else unchanged (validation
    names what is wrong with it)."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # a 400-digit integer: infinite, which validation names
            return math.inf if value > 0 else -math.inf
    return value


def _python_scalar(value: Any) -> Any:
    """A numpy integer or float scalar as the Python int or float (numpy bools stay: a
    bool is not a number here); anything else unchanged."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def check_range(owner: str, name: str, value: Any, lo: float | None = None,
                hi: float | None = None, *, integer: bool = False) -> None:
    """Raise ConfigError unless lo <= value <= hi, finite (and an int when ``integer``)."""
    kind = "an integer" if integer else "a number"
    value = _python_scalar(value)
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ConfigError(f"{owner}.{name} must be {kind}, got {value!r}")
    lo_s = "-inf" if lo is None else lo
    hi_s = "inf" if hi is None else hi
    if isinstance(value, float) and not math.isfinite(value):  # NaN passes < and >
        raise ConfigError(f"{owner}.{name} must be a finite number between {lo_s} and "
                          f"{hi_s}, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{owner}.{name} must be between {lo_s} and {hi_s}, got {value!r}")


def check_choice(owner: str, name: str, value: Any, choices: typing.Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{owner}.{name} must be one of {choices}, got {value!r}")
