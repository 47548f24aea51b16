import pytest

from twotower import ConfigError, ModelConfig
from twotower.models.config import PRESETS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_json(name):
    cfg = ModelConfig.preset(name)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_tutorial_preset_is_the_tutorial():
    cfg = ModelConfig.preset("tutorial")
    assert (cfg.objective, cfg.embedding_dim, cfg.epochs, cfg.batch_size, cfg.optimizer,
            cfg.learning_rate) == ("mse", 32, 50, 1000, "adagrad", 0.1)


def test_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"model.embedding_dim must be between 1 and 4096, got 0"):
        ModelConfig(embedding_dim=0)
    with pytest.raises(ConfigError, match=r"model.objective must be one of"):
        ModelConfig(objective="hinge")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['epoch'\]"):
        ModelConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="preset must be one of"):
        ModelConfig.preset("fast")
    with pytest.raises(ConfigError, match="invalid JSON"):
        ModelConfig.from_json("{")
