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


@pytest.mark.parametrize("field", ["learning_rate", "temperature", "history_dropout",
                                   "ease_weight", "l2"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_are_refused_by_name(field, value):
    # NaN fails every < and > comparison: it used to pass the range check
    with pytest.raises(ConfigError, match=rf"model.{field} must be a finite number .*got "
                                          rf"{value}"):
        ModelConfig(**{field: value})


def test_numpy_scalars_are_accepted_as_python_numbers():
    import json

    import numpy as np
    cfg = ModelConfig(epochs=np.int64(3), learning_rate=np.float32(0.5),
                      ease_floors=(np.float32(0.5), 1.0))
    assert type(cfg.epochs) is int and type(cfg.learning_rate) is float
    assert type(cfg.ease_floors[0]) is float
    assert ModelConfig.from_json(json.dumps(cfg.to_dict())) == cfg
    assert cfg.replace(batch_size=np.int32(8)).batch_size == 8
    for value in (True, np.bool_(True)):  # a bool is not an integer here
        with pytest.raises(ConfigError, match="model.epochs must be an integer"):
            ModelConfig(epochs=value)


def test_unknown_keys_and_non_mappings_are_config_errors():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['foo'\]; expected some of"):
        ModelConfig(foo=1)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['foo'\]"):
        ModelConfig().replace(foo=1)
    with pytest.raises(ConfigError, match="expected a mapping of setting names to values, "
                                          "got list"):
        ModelConfig.from_dict([1, 2])


def test_settings_the_objective_ignores_are_refused_when_training_starts(tmp_path):
    """``item_bias`` without ``multinomial``, ``hard_negatives`` without
    ``sampled_softmax``: refused by ``check_used`` (what ``fit`` and ``fit_stream`` call
    first), while such a config still loads (a run saved before the check)."""
    from twotower import TwoTower
    from twotower.data import Interactions
    for objective in ("mse", "softmax", "sampled_softmax", "bpr"):
        cfg = ModelConfig(objective=objective, item_bias=True)  # constructs, loads
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
        with pytest.raises(ConfigError, match=rf"model.item_bias .*'multinomial'.*got "
                                              rf"objective '{objective}'"):
            cfg.check_used()
    ModelConfig(query_tower="history", objective="multinomial", item_bias=True).check_used()
    for objective in ("mse", "softmax", "bpr"):
        with pytest.raises(ConfigError, match=rf"model.hard_negatives .*'sampled_softmax'.*"
                                              rf"got objective '{objective}'"):
            ModelConfig(objective=objective, hard_negatives=5).check_used()
    ModelConfig(objective="sampled_softmax", hard_negatives=5).check_used()
    for name in PRESETS:  # the presets stay valid as they are
        ModelConfig.preset(name).check_used()
    x = Interactions.from_ids(["a", "b"], [1, 2], [1.0, 2.0])
    with pytest.raises(ConfigError, match="model.item_bias"):
        TwoTower(ModelConfig(objective="mse", item_bias=True, epochs=1)).fit(x)


def test_a_feature_column_named_twice_is_refused_when_training_starts():
    """``item_features = ["genres", "genres"]`` trained the genre feature twice (two blocks
    of the same tokens, counted twice in the normalisation), in silence; a run saved with
    such a config still loads."""
    from twotower import TwoTower
    from twotower.data import Interactions
    for name in ("item_features", "user_features"):
        cfg = ModelConfig(**{name: ("genres", "year", "genres")})
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
        with pytest.raises(ConfigError, match=rf"model.{name} names \['genres'\] more than "
                                              "once"):
            cfg.check_used()
    ModelConfig(item_features=("genres", "year")).check_used()
    x = Interactions.from_ids(["a", "b"], [1, 2], [1.0, 2.0])
    with pytest.raises(ConfigError, match="model.item_features names"):
        TwoTower(ModelConfig(item_features=("g", "g"), epochs=1)).fit(x)


def test_a_bad_weight_grid_is_shown_as_the_list_given():
    """The error showed the grid as Python's tuple, `(0.5, 1.5)`, not the list written."""
    with pytest.raises(ConfigError, match=r"ease_weight_grid must be a list of numbers in "
                                          r"\(0, 1\) \(or empty\), got \[0.5, 1.5\]"):
        ModelConfig(ease_weight_grid=[0.5, 1.5])


def test_a_list_is_accepted_where_a_sequence_is_held():
    """ModelConfig(item_features=["genres"]) said "must be a list" and refused the list."""
    from twotower import ModelConfig
    c = ModelConfig(item_features=["genres"], ease_lambdas=[10.0])
    assert c.item_features == ("genres",) and c.ease_lambdas == (10.0,)
    assert c.replace(user_features=["age"]).user_features == ("age",)
    assert c == ModelConfig.from_dict(c.to_dict())



def test_unread_names_the_settings_each_model_ignores():
    from twotower import ModelConfig
    tut = ModelConfig.preset("tutorial").unread()
    assert tut["temperature"] == "objective 'mse'" and tut["pooling"] == "query_tower 'id'"
    assert tut["ease_rank"] == "ease_weight 0"
    default = ModelConfig.preset("default")
    assert not {"temperature", "pooling", "ease_rank", "history_length"} & set(default.unread())
    assert "recency_floor" in default.replace(recency_half_life=0.0).unread()


def test_a_preset_warns_of_an_override_its_model_never_reads():
    """Only `twotower train` said so: `ModelConfig.preset("tutorial", temperature=0.5)` was
    taken in silence by the library, and training ignored the value."""
    import warnings
    from twotower import ModelConfig
    with pytest.warns(UserWarning, match=r"^settings the chosen model never reads, so training "
                                         r"ignores them: temperature \(objective 'mse'\), "
                                         r"history_length \(query_tower 'id'\)$"):
        ModelConfig.preset("tutorial", temperature=0.5, history_length=5, epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # read, or at the class default: nothing said
        ModelConfig.preset("tutorial", epochs=2, temperature=1.0)
        ModelConfig.preset("default", temperature=0.5)
        ModelConfig.preset("tutorial", **ModelConfig.preset("tutorial").to_dict())


@pytest.mark.parametrize("field,value", [("temperature", 0.0), ("temperature", -1.0),
                                         ("learning_rate", 0.0), ("history_dropout", 1.0)])
def test_out_of_range_values_are_refused(field, value):
    """A temperature of 0 divides by zero: refused, as the other bounds are."""
    with pytest.raises(ConfigError, match=rf"model.{field} must be between"):
        ModelConfig(**{field: value})


def test_unread_temperature_for_each_objective():
    """The objectives that never divide by the temperature say so of a temperature set
    (``bpr`` divides its score difference by it since 2026-12-06)."""
    for objective, unread in (("mse", True), ("bpr", False), ("softmax", False),
                              ("sampled_softmax", False)):
        cfg = ModelConfig(objective=objective)
        assert ("temperature" in cfg.unread()) == unread, objective
    assert ModelConfig(objective="mse").unread()["temperature"] == "objective 'mse'"


@pytest.mark.parametrize("text,key", [('{"epochs": 1, "epochs": 3}', "epochs"),
                                      ('{"interaction_weights": "event", "event_weights": '
                                       '{"view": 1, "view": 5}}', "view")])
def test_from_json_refuses_a_key_given_twice(text, key):
    """``from_json`` kept the last of two values of one key in silence (``epochs`` 3 here),
    where ``twotower train --config x.json`` refuses the same file."""
    from twotower.index import IndexConfig
    with pytest.raises(ConfigError, match=rf"ModelConfig: key '{key}' is given twice in one "
                                          "JSON object"):
        ModelConfig.from_json(text)
    with pytest.raises(ConfigError, match="IndexConfig: key 'kind' is given twice"):
        IndexConfig.from_json('{"kind": "hnsw", "kind": "ivf"}')
    assert ModelConfig.from_json('{"epochs": 3}').epochs == 3


def test_editing_to_dict_leaves_the_config_unchanged():
    """``to_dict`` handed out the config's own ``event_weights`` dict: editing the result
    (to derive another config) changed the frozen config it came from."""
    from twotower.training import StreamConfig
    cfg = ModelConfig(interaction_weights="event", event_weights={"view": 1, "buy": 5})
    d = cfg.to_dict()
    d["event_weights"]["view"] = 99.0
    d["event_weights"]["like"] = 2.0
    assert cfg.event_weights == {"view": 1.0, "buy": 5.0}
    assert ModelConfig.from_dict(d).event_weights == {"view": 99.0, "buy": 5.0, "like": 2.0}
    stream = StreamConfig(event_col="event", event_weights={"view": 1})
    stream.to_dict()["event_weights"]["view"] = 7.0
    assert stream.event_weights == {"view": 1.0}


@pytest.mark.parametrize("field", ["item_features", "user_features", "multi_valued_features",
                                   "ease_weight_grid"])
def test_an_empty_list_is_accepted_where_a_sequence_is_held(field):
    """``ModelConfig(item_features=[])`` and ``cfg.replace(ease_weight_grid=[])`` were refused
    ('must be a list of column names, got []'): an empty list became the very ``()`` it
    was compared with, so the list itself stayed in the config (from_dict alone turned
    lists to tuples first)."""
    cfg = ModelConfig(**{field: []})
    assert getattr(cfg, field) == ()
    assert getattr(ModelConfig.preset("default").replace(**{field: []}), field) == ()
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("data, shown", [
    ({"objective": ["mse"]}, "model.objective must be one of .*, got \\['mse'\\]$"),
    ({"ease_lambdas": ["1", 2.5]}, "model.ease_lambdas must be a non-empty list of numbers in "
                                "\\[1e-06, 1e\\+09\\], got \\['1', 2.5\\]$"),
    ({"item_features": ["genres", 3]}, "model.item_features must be a list of column names, "
                                       "got \\['genres', 3\\]$"),
    ({"interaction_weights": "event", "event_weights": [1, 2]},
     "model.event_weights must be a table .*, got \\[1, 2\\]$"),
])
def test_an_error_shows_a_list_as_written(data, shown):
    """A list from a file was shown as Python's tuple (``got ('mse',)``, ``got ('1', 2)``):
    ``from_dict`` turned every list into a tuple, where the value written was a list."""
    with pytest.raises(ConfigError, match=shown):
        ModelConfig.from_dict(data)
    from twotower.index import IndexConfig
    with pytest.raises(ConfigError, match=r"IndexConfig.kind must be one of .*, got \['hnsw'\]"):
        IndexConfig.from_dict({"kind": ["hnsw"]})
