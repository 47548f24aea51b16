"""twotower: the retrieval stage of recommender systems, from interaction logs to a served
top-K candidate list.

Public API (everything else is private)::

    from twotower import (TwoTower, ModelConfig, IndexConfig, Interactions, Vocabulary,
                          read_interactions, load_movielens_100k, random_split, temporal_split,
                          global_temporal_split)

The names load on first use (PEP 562): ``import twotower`` alone, and the ``twotower``
command's start, no longer load pandas, the readers and the models, so a command's own
Ctrl-C handling is in place while they load.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

# Keras reads its backend once, at import: JAX unless the caller chose another.
os.environ.setdefault("KERAS_BACKEND", "jax")

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    **dict.fromkeys(("Interactions", "Split", "Vocabulary", "global_temporal_split",
                     "held_out_users_split", "load_movielens_100k", "make_split",
                     "random_split", "read_interactions", "read_movielens_100k",
                     "temporal_split"), "twotower.data"),
    **dict.fromkeys(("ArtifactError", "ConfigError", "DataError", "FetchError",
                     "NotFittedError", "TwoTowerError", "UnknownIdError"), "twotower.errors"),
    **dict.fromkeys(("IndexConfig", "make_index"), "twotower.index"),
    **dict.fromkeys(("ModelConfig", "TwoTower"), "twotower.models"),
}

__all__ = sorted([*_PUBLIC, "__version__"])


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'twotower' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # loaded once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and IDEs see
    from twotower.data import (Interactions, Split, Vocabulary, global_temporal_split,
                               held_out_users_split, load_movielens_100k, make_split,
                               random_split, read_interactions, read_movielens_100k,
                               temporal_split)
    from twotower.errors import (ArtifactError, ConfigError, DataError, FetchError,
                                 NotFittedError, TwoTowerError, UnknownIdError)
    from twotower.index import IndexConfig, make_index
    from twotower.models import ModelConfig, TwoTower
