"""Two-tower models: configuration, the Keras network, and the public ``TwoTower``."""

from twotower.models.config import PRESETS, ModelConfig
from twotower.models.retriever import TwoTower

__all__ = ["PRESETS", "ModelConfig", "TwoTower"]
