"""twotower: the retrieval stage of recommender systems, from interaction logs to a served
top-K candidate list.

Public API (everything else is private)::

    from twotower import (TwoTower, ModelConfig, IndexConfig, Interactions, Vocabulary,
                          read_interactions, load_movielens_100k, random_split, temporal_split,
                          global_temporal_split)
"""

from __future__ import annotations

import os

# Keras reads its backend once, at import: JAX unless the caller chose another.
os.environ.setdefault("KERAS_BACKEND", "jax")

__version__ = "0.1.0"

from twotower.data import (Interactions, Split, Vocabulary,  # noqa: E402
                           global_temporal_split, held_out_users_split, load_movielens_100k,
                           make_split, random_split, read_interactions, read_movielens_100k,
                           temporal_split)
from twotower.errors import (ArtifactError, ConfigError, DataError, FetchError,  # noqa: E402
                             NotFittedError, TwoTowerError, UnknownIdError)
from twotower.index import IndexConfig, make_index  # noqa: E402
from twotower.models import ModelConfig, TwoTower  # noqa: E402

__all__ = [
    "ArtifactError", "ConfigError", "DataError", "FetchError", "IndexConfig", "Interactions",
    "ModelConfig", "NotFittedError", "Split", "TwoTower", "TwoTowerError", "UnknownIdError",
    "Vocabulary", "__version__", "global_temporal_split", "held_out_users_split",
    "load_movielens_100k", "make_index",
    "make_split", "random_split", "read_interactions", "read_movielens_100k", "temporal_split",
]
