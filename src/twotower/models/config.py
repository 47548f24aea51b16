"""Model configuration: one frozen, JSON-round-trippable config per trained model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twotower.config import Config, check_choice, check_range
from twotower.errors import ConfigError

OBJECTIVES = ("mse", "softmax", "sampled_softmax", "bpr")
QUERY_TOWERS = ("id", "history", "id+history")
OPTIMIZERS = ("adagrad", "adam", "sgd")


@dataclass(frozen=True)
class ModelConfig(Config):
    """How a two-tower model is built and trained.

    Attributes:
        query_tower: ``id`` (a user id embedding, the tutorial), ``history`` (pooled
            embeddings of the user's items: works for users unseen in training), or
            ``id+history``.
        objective: ``mse`` on ratings rescaled to [0, 1] (the tutorial), ``softmax`` over
            the whole catalogue, ``sampled_softmax`` over in-batch candidates (log-Q
            corrected, accidental hits masked), or ``bpr`` (pairwise, one sampled negative).
        embedding_dim: size of both towers' output.
        epochs, batch_size, learning_rate, optimizer: training loop settings.
        l2: L2 penalty on the embeddings of a batch (per example).
        temperature: divides the logits of the softmax objectives.
        history_length: most recent items kept per user for the history tower.
        history_dropout: share of history items dropped per training step.
        hard_negatives: >0 keeps only that many hardest in-batch negatives
            (``keras_rs.layers.HardNegativeMining``; sampled_softmax only).
        validation_freq: validate every this many epochs when validation data is given.
        seed: seeds weights, shuffling and dropout; same seed, same model.

    Example:
        >>> ModelConfig.preset("tutorial").objective
        'mse'
    """

    query_tower: str = "id"
    objective: str = "mse"
    embedding_dim: int = 32
    epochs: int = 50
    batch_size: int = 1000
    optimizer: str = "adagrad"
    learning_rate: float = 0.1
    l2: float = 0.0
    temperature: float = 1.0
    history_length: int = 200
    history_dropout: float = 0.0
    hard_negatives: int = 0
    validation_freq: int = 5
    seed: int = 42

    def validate(self) -> None:
        own = "model"
        check_choice(own, "query_tower", self.query_tower, QUERY_TOWERS)
        check_choice(own, "objective", self.objective, OBJECTIVES)
        check_choice(own, "optimizer", self.optimizer, OPTIMIZERS)
        check_range(own, "embedding_dim", self.embedding_dim, 1, 4096, integer=True)
        check_range(own, "epochs", self.epochs, 1, 100_000, integer=True)
        check_range(own, "batch_size", self.batch_size, 1, 10_000_000, integer=True)
        check_range(own, "learning_rate", self.learning_rate, 1e-8, 100.0)
        check_range(own, "l2", self.l2, 0.0, 100.0)
        check_range(own, "temperature", self.temperature, 1e-4, 100.0)
        check_range(own, "history_length", self.history_length, 1, 100_000, integer=True)
        check_range(own, "history_dropout", self.history_dropout, 0.0, 0.95)
        check_range(own, "hard_negatives", self.hard_negatives, 0, 100_000, integer=True)
        check_range(own, "validation_freq", self.validation_freq, 1, 100_000, integer=True)
        check_range(own, "seed", self.seed, 0, 2**31 - 1, integer=True)
        if self.query_tower != "id" and self.objective == "mse":
            raise ConfigError("model.objective 'mse' is only supported with query_tower 'id'")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ModelConfig:
        """A named configuration: ``tutorial`` or ``default``."""
        if name not in PRESETS:
            raise ConfigError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
        return cls.from_dict({**PRESETS[name], **overrides})


PRESETS: dict[str, dict[str, Any]] = {
    # The Keras-RS "Recommending movies: retrieval" tutorial, as published.
    "tutorial": dict(query_tower="id", objective="mse", embedding_dim=32, epochs=50,
                     batch_size=1000, optimizer="adagrad", learning_rate=0.1,
                     validation_freq=5),
    # The product default: chosen on a validation split carved from train (benchmarks/).
    "default": dict(query_tower="id", objective="softmax", embedding_dim=64, epochs=30,
                    batch_size=1000, optimizer="adam", learning_rate=0.005, l2=0.0,
                    temperature=0.1),
}
