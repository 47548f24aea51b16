"""The few exception types twotower raises at its public boundary.

Every message names the argument, file or id that is wrong, the expected form,
and the value received.
"""

from __future__ import annotations


class TwoTowerError(Exception):
    """Base class of every error twotower raises on purpose."""


class DataError(TwoTowerError, ValueError):
    """Input data is missing, malformed or inconsistent (names file, line, column)."""


class UnknownIdError(DataError, KeyError):
    """An external user or item id is not in the model's vocabulary."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ConfigError(TwoTowerError, ValueError):
    """A configuration value or argument is out of range or of the wrong form."""


class NotFittedError(TwoTowerError, RuntimeError):
    """A model or index is used before it was trained or built."""


class TrainingError(TwoTowerError, RuntimeError):
    """Training ran but gave no usable model (its loss diverged to NaN or inf)."""


class ArtifactError(TwoTowerError, OSError):
    """A saved model directory is missing, corrupt, or of a newer format."""


class FetchError(TwoTowerError, OSError):
    """A data set could not be obtained from any source."""


__all__ = [
    "ArtifactError",
    "ConfigError",
    "DataError",
    "FetchError",
    "NotFittedError",
    "TrainingError",
    "TwoTowerError",
    "UnknownIdError",
]
