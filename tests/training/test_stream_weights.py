"""Interaction weights streamed (``twotower train --stream --event-col/--event-weights``,
``--interaction-weights rating``; ``TwoTower.fit_stream``): the stream reads and weighs
what the in-memory reader reads and weighs, and refuses what it refuses."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from twotower.data import read_interactions
from twotower.errors import ConfigError, DataError
from twotower.models import ModelConfig, TwoTower
from twotower.training import InteractionStream, StreamConfig

from tests.cli_run import run

WEIGHTS = {"view": 1.0, "addtocart": 3.0, "transaction": 10.0}
FLAG = "view=1,addtocart=3,transaction=10"


def _log(n=240, seed=0):
    """A small click log: 30 users, 40 items, an event name and a numeric weight a row."""
    rng = np.random.default_rng(seed)
    event = rng.choice(list(WEIGHTS), n, p=[0.7, 0.2, 0.1])
    return pd.DataFrame({"user_id": rng.integers(0, 30, n), "item_id": rng.integers(0, 40, n),
                         "event": event, "weight": [WEIGHTS[e] for e in event]})


def _write(df, path):
    if path.suffix == ".parquet":
        df.to_parquet(path, index=False, row_group_size=50)
    else:
        df.to_csv(path, index=False)
    return path


def _clicks(kind, **kw):
    """The clicks preset, small; every row in one batch: an epoch is one step whatever the
    rows' order (in memory a permutation, streamed the shuffle buffer's)."""
    return ModelConfig.preset("clicks", epochs=2, batch_size=240, embedding_dim=8,
                              interaction_weights=kind,
                              event_weights=WEIGHTS if kind == "event" else {}, **kw)


def _read(path, kind):
    if kind == "event":
        return read_interactions(path, event_col="event", event_weights=WEIGHTS)
    return read_interactions(path, rating_col="weight")


def _stream(path, kind, **kw):
    cols = (dict(event_col="event", event_weights=WEIGHTS) if kind == "event"
            else dict(rating_col="weight"))
    return InteractionStream(path, StreamConfig(read_rows=50, shuffle_buffer=0, **cols,
                                                **kw))


@pytest.mark.parametrize("kind,suffix", [("event", ".parquet"), ("event", ".csv"),
                                         ("rating", ".parquet")])
def test_a_streamed_run_weighs_rows_as_the_in_memory_run(tmp_path, kind, suffix):
    """Same data, weights and seed: the same loss after each epoch (to float32 rounding:
    1e-5 relative; measured 1e-7), and the same weight on every row."""
    from twotower.models.retriever import row_weights
    path = _write(_log(), tmp_path / f"log{suffix}")
    x = _read(path, kind)
    s = _stream(path, kind)
    in_memory = TwoTower(_clicks(kind)).fit(x, verbose=0)
    streamed = TwoTower(_clicks(kind)).fit_stream(s, progress_every_s=0)
    assert streamed.history["loss"] == pytest.approx(in_memory.history["loss"], rel=1e-5)
    # file order (shuffle_buffer 0): row for row the weights fit gives the loss
    inputs = s.model_inputs("sampled_softmax", kind)
    weights = np.concatenate([inputs(c)["weight"] for c in s.chunks()])
    expected, scale = row_weights(x, kind)
    assert np.array_equal(weights, expected)
    assert scale == pytest.approx(np.mean([WEIGHTS[e] for e in _log()["event"]]))


def test_weights_scale_each_rows_loss_term():
    """A fixed batch: the weighted loss is the weighted mean of the rows' own losses
    (``softmax``: rows do not interact), and weights of 1 are no weights."""
    import keras

    from twotower.models.net import TwoTowerNet
    keras.utils.set_random_seed(0)
    cfg = ModelConfig.preset("clicks", objective="softmax", embedding_dim=8)
    net = TwoTowerNet(6, 9, cfg)
    net.build()
    x = {"user": np.array([0, 1, 2, 5], np.int32), "item": np.array([3, 3, 8, 0], np.int32)}
    w = np.array([1.0, 0.0, 10.0, 3.0], np.float32)

    def loss(batch):
        return float(net.compute_loss(x=batch, y_pred=net(batch, training=True)))
    rows = [loss({k: v[i:i + 1] for k, v in x.items()}) for i in range(4)]
    assert loss({**x, "weight": w}) == pytest.approx(float(np.mean(w * rows)), rel=1e-5)
    assert loss({**x, "weight": np.ones(4, np.float32)}) == pytest.approx(loss(x), rel=1e-6)
    cfg = ModelConfig.preset("clicks", embedding_dim=8)  # sampled_softmax: rows interact
    net = TwoTowerNet(6, 9, cfg)
    net.build()
    x["logq"] = np.full(4, -2.0, np.float32)
    assert loss({**x, "weight": np.ones(4, np.float32)}) == pytest.approx(loss(x), rel=1e-6)
    assert loss({**x, "weight": np.full(4, 2.0, np.float32)}) == pytest.approx(2 * loss(x),
                                                                                rel=1e-6)


@pytest.mark.parametrize("suffix,where", [(".csv", "line 203"), (".parquet", "row 202 (1-based)")])
def test_an_unknown_event_name_is_named_with_the_file_and_its_line(tmp_path, suffix, where):
    df = _log()
    df.loc[201, "event"] = "wishlist"  # in the fifth record batch of 50 rows
    path = _write(df, tmp_path / f"log{suffix}")
    with pytest.raises(DataError) as streamed:
        _stream(path, "event").scan()
    with pytest.raises(DataError) as in_memory:
        _read(path, "event")
    assert str(streamed.value) == str(in_memory.value)
    assert (f"--data: {path}, {where}, column 'event': event 'wishlist' has no weight; the "
            "weights name ['addtocart', 'transaction', 'view']") in str(streamed.value)
    # "*": every other name's weight, as in memory
    s = InteractionStream(path, StreamConfig(event_col="event", shuffle_buffer=0,
                                             event_weights={**WEIGHTS, "*": 0.5}))
    s.scan()
    chunk = next(iter(s.chunks()))
    assert chunk["rating"][:3].tolist() == [WEIGHTS[e] for e in df["event"][:3]]


def test_the_stream_and_the_model_must_agree_on_the_weights(tmp_path):
    from twotower.models.retriever import check_streamable
    cfg = StreamConfig(event_col="event", event_weights={"view": 1, "*": 0})
    assert StreamConfig.from_json(cfg.to_json()) == cfg  # (weights as floats, round-tripped)
    for kw, match in [
        (dict(event_col="event"), "event_col .* and stream.event_weights .* go together; "
                                  "got event_col alone"),
        (dict(event_weights=WEIGHTS), "got event_weights alone"),
        (dict(event_col="event", event_weights=WEIGHTS, rating_col="weight"),
         "one source of ratings at a time"),
        (dict(event_col="event", event_weights={"view": -1}),
         "stream.event_weights: the weight of 'view' must be a number >= 0"),
    ]:
        with pytest.raises(ConfigError, match=match):
            StreamConfig(**kw)
    with pytest.raises(ConfigError, match="'event' weighs each row by its event name's "
                                          "weight, and the stream reads no event column"):
        check_streamable(_clicks("event"), None)
    with pytest.raises(ConfigError, match="the stream maps event names to weights by "
                                          r"\{'view': 1.0\}"):
        check_streamable(_clicks("event"), None, event_col="event",
                         event_weights={"view": 1.0})
    with pytest.raises(ConfigError, match="reads event column 'event' as each row's weight"
                                          ".*model.interaction_weights is 'none'"):
        check_streamable(_clicks("none"), None, event_col="event", event_weights=WEIGHTS)
    with pytest.raises(ConfigError, match="'rating' weighs each row by its rating, and the "
                                          "stream reads no rating column"):
        check_streamable(_clicks("rating"), None)
    with pytest.raises(ConfigError, match="is not read by objective 'mse'"):
        check_streamable(_clicks("rating", objective="mse"), "weight")
    # a negative weight, named by its line; refused before any training
    df = _log()
    df.loc[120, "weight"] = -2.5
    path = _write(df, tmp_path / "log.csv")
    with pytest.raises(DataError, match=r"weights must be numbers >= 0 \(0: the pair teaches "
                                        rf"nothing\), got -2.5 at {path} line 122 \(column "
                                        "'weight'\\)"):
        TwoTower(_clicks("rating")).fit_stream(_stream(path, "rating"), progress_every_s=0)
    df["weight"] = 0.0
    with pytest.raises(DataError, match="every row's weight is 0"):
        TwoTower(_clicks("rating")).fit_stream(_stream(_write(df, path), "rating"),
                                               progress_every_s=0)


def test_cli_stream_trains_with_event_weights_and_records_the_column(tmp_path, capsys):
    path = _write(_log(), tmp_path / "log.csv")
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--data", path, "--stream", "--preset", "clicks",
                       "--epochs", "1", "--event-col", "event", "--event-weights", FLAG,
                       "--out", out)
    assert code == 0, err
    saved = json.loads((out / "config.json").read_text())
    assert saved["data"]["columns"] == {"user": "user_id", "item": "item_id", "rating": None,
                                        "time": None, "event": "event"}
    assert saved["model"]["interaction_weights"] == "event"
    assert saved["model"]["event_weights"] == WEIGHTS


@pytest.mark.parametrize("argv,needle", [
    (["--event-col", "event", "--event-weights", "view=1,addtocart=3", "--preset", "clicks"],
     "line 7, column 'event': event 'transaction' has no weight"),
    (["--event-col", "event", "--event-weights", FLAG, "--rating-col", "weight",
      "--preset", "clicks"],
     "--rating-col weight: with event weights each row's weight is its --event-col (event) "
     "name's weight"),
    (["--event-col", "event", "--event-weights", FLAG, "--preset", "tutorial"],
     "is not read by objective 'mse'"),
    (["--interaction-weights", "rating", "--rating-col", "none", "--preset", "clicks"],
     "--interaction-weights rating weighs each pair by its --rating-col value, and "
     "--rating-col none was given"),
    (["--event-col", "kind", "--event-weights", FLAG, "--preset", "clicks"],
     "has no column 'kind' (the event column); columns are ['user_id', 'item_id', 'event', "
     "'weight']; name the right one with --event-col"),
])
def test_cli_stream_refuses_weights_it_cannot_read(tmp_path, capsys, argv, needle):
    path = _write(_log(), tmp_path / "log.csv")
    code, _, err = run(capsys, "train", "--data", path, "--stream", "--epochs", "1",
                       "--out", tmp_path / "r", *argv)
    assert code == 2 and needle in err, err
    assert not (tmp_path / "r").exists()
