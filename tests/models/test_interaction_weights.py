"""``ModelConfig.interaction_weights``: a weight (rating) column that the multinomial loss
and the EASE part read, so a purchase can count more than a view."""

from __future__ import annotations

import json
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pandas as pd
import pytest

from twotower.errors import ConfigError, DataError

from tests.cli_run import run

H, A, B = 0, 1, 2  # a history item both groups share, and what each group also had


def _log(weight_a=10.0):
    """60 users had H; the first 30 also had A (weight ``weight_a``), the others B (weight
    1), each with 3 noise items; user 60 had only H. A and B are alike but for A's weight."""
    from twotower.data import Interactions
    rng = np.random.default_rng(0)
    u, i, w = [], [], []
    for user in range(60):
        other = A if user < 30 else B
        for item, weight in [(H, 1.0), (other, weight_a if other == A else 1.0),
                             *((int(n), 1.0) for n in rng.choice(np.arange(3, 20), 3,
                                                                  replace=False))]:
            u.append(user), i.append(item), w.append(weight)
    u.append(60), i.append(H), w.append(1.0)
    return Interactions.from_ids(u, i, np.array(w))


def _cfg(**kw):
    from twotower import ModelConfig
    base = dict(query_tower="history", objective="multinomial", embedding_dim=8, epochs=5,
                batch_size=16, optimizer="adam", learning_rate=0.01, history_length=50,
                item_bias=True, ease_weight=0.0, ease_lambdas=(5.0,), ease_half_lives=(0.0,),
                ease_floors=(1.0,), ease_rank=8)
    return ModelConfig.from_dict({**base, **kw})


def _a_over_b(model):
    """User 60's (who had only H) score of A minus that of B."""
    s = model.query_embeddings(np.array([60])) @ model.item_embeddings.T
    return float(s[0, A] - s[0, B])


@pytest.mark.parametrize("ease_weight", [0.0, 0.9])  # the multinomial part; with EASE
def test_a_heavily_weighted_item_ranks_higher_than_unweighted(ease_weight):
    from twotower import TwoTower
    x = _log()
    plain = TwoTower(_cfg(ease_weight=ease_weight)).fit(x, verbose=0)
    weighted = TwoTower(_cfg(ease_weight=ease_weight,
                             interaction_weights="rating")).fit(x, verbose=0)
    assert _a_over_b(weighted) > _a_over_b(plain) + 0.2
    _, top = weighted.recommend(np.array([60]), 2, weighted.seen_items(np.array([60])))
    assert top[0, 0] == A  # A, the item bought (weight 10), before B, viewed (weight 1)


def test_a_weight_of_zero_takes_the_pair_out_of_the_ease_part():
    """With weights 0 and 1, the EASE part is the one fitted on the pairs of weight 1."""
    from twotower.models.linear import tune_and_fit, user_items
    x = _log(weight_a=0.0)
    kept = x.take(np.flatnonzero(x.ratings > 0))
    assert (user_items(x, True) != kept.to_csr()).nnz == 0
    args = dict(history_length=50, lambdas=(5.0,), half_lives=(0.0,), floors=(1.0,),
                rank=8, split="random", seed=0)
    p0, q0, _ = tune_and_fit(x, weighted=True, **args)
    p1, q1, _ = tune_and_fit(kept, weighted=False, **args)
    assert np.allclose(p0, p1, atol=1e-5) and np.allclose(q0, q1, atol=1e-5)
    p2, _, _ = tune_and_fit(x, weighted=False, **args)  # unweighted: A is in the matrix
    assert not np.allclose(p0, p2, atol=1e-3)


def test_a_weight_of_zero_is_no_multinomial_target():
    """A user's multinomial loss is minus the weighted sum of the log-probabilities of
    their items: a pair of weight 0 (user 0's A) adds nothing; unweighted, every item 1."""
    from twotower.models.net import TwoTowerNet
    from twotower.models.retriever import history_table, history_weights, pair_weights
    x = _log(weight_a=0.0)
    cfg = _cfg(interaction_weights="rating", item_bias=False, history_dropout=0.0)
    hist = history_table(x, cfg.history_length)
    weights = history_weights(hist, pair_weights(x))
    users = np.array([0], dtype=np.int32)  # had H, A (weight 0) and 3 noise items
    losses = []
    for table in (weights, None):
        net = TwoTowerNet(x.n_users, x.n_items, cfg, history=hist, target_weights=table)
        net.build()
        y = net({"user": users}, training=True)
        losses.append(float(net.compute_loss(x={"user": users}, y_pred=y)))
    q = np.asarray(net.query({"user": users}), dtype=np.float64)
    logits = q @ np.asarray(net.item_table(), dtype=np.float64).T
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    items = x.items[x.users == 0]
    w = x.ratings[x.users == 0] / x.ratings[x.ratings > 0].mean()
    assert A in items and w[items == A] == 0
    assert losses[0] == pytest.approx(-(w * logp[0, items]).sum(), rel=1e-4)
    assert losses[1] == pytest.approx(-logp[0, items].sum(), rel=1e-4)


def test_the_setting_is_checked_and_not_read_by_mse():
    """Since 2026-12-07 the per-pair objectives weigh each row (tests/training/
    test_stream_weights.py); mse, whose target the rating is, still refuses weights."""
    from twotower import ModelConfig
    with pytest.raises(ConfigError, match="interaction_weights must be one of"):
        _cfg(interaction_weights="column")
    cfg = ModelConfig.preset("tutorial", interaction_weights="rating")
    with pytest.raises(ConfigError, match="interaction_weights 'rating' is not read by "
                                          "objective 'mse', which fits each row's rating"):
        cfg.check_used()
    for objective in ("softmax", "sampled_softmax", "bpr"):
        cfg.replace(objective=objective).check_used()
    assert ModelConfig.from_dict(cfg.to_dict()).interaction_weights == "rating"
    assert ModelConfig.preset("default").interaction_weights == "none"


@pytest.mark.parametrize("ratings,match", [
    (None, "the interactions have none"),
    ("negative", r"weights must be numbers >= 0 .*got -1 at row 5 \(0-based\)"),
    ("zero", "every pair's weight is 0"),
])
def test_bad_weights_are_refused_by_fit(ratings, match):
    from twotower import TwoTower
    from twotower.data import Interactions
    x = _log()
    w = {None: None, "negative": np.where(np.arange(len(x)) == 5, -1.0, x.ratings),
         "zero": np.zeros(len(x))}[ratings]
    bad = Interactions(x.users, x.items, x.user_vocab, x.item_vocab, ratings=None if w is None
                       else w.astype(np.float32))
    with pytest.raises(DataError, match=match):
        TwoTower(_cfg(interaction_weights="rating")).fit(bad, verbose=0)


@pytest.fixture
def events(tmp_path):
    """A CSV click log with a weight column (view 1, buy 10)."""
    x = _log()
    path = tmp_path / "events.csv"
    pd.DataFrame({"user_id": x.user_vocab.ids[x.users], "item_id": x.item_vocab.ids[x.items],
                  "weight": x.ratings}).to_csv(path, index=False)
    return path


def _flags(tmp_path):
    """A small model's settings (--config) and no test split."""
    cfg = tmp_path / "m.toml"
    cfg.write_text("[model]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in
                                           _cfg(ease_weight=0.9).to_dict().items()))
    return ["--config", cfg, "--split", "none"]


def test_cli_trains_with_a_weight_column_saves_the_setting_and_reloads(capsys, tmp_path,
                                                                      events):
    from twotower import TwoTower
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--data", events, "--rating-col", "weight",
                       "--interaction-weights", "rating", "--out", out, *_flags(tmp_path))
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["model"]["interaction_weights"] \
        == "rating"
    model = TwoTower.load(out)
    users = np.arange(len(model.user_vocab))
    _, first = model.recommend(users, 3, model.seen_items(users))
    _, again = TwoTower.load(out).recommend(users, 3, model.seen_items(users))
    assert np.array_equal(first, again)
    code, text, err = run(capsys, "recommend", out, "--user", "60", "-k", "1", "--json")
    assert code == 0, err
    line = json.loads(text.splitlines()[-1])
    assert [r["item_id"] for r in line["items"]] == [A], line  # bought, before B (viewed)


@pytest.mark.parametrize("argv,needle", [
    (["--interaction-weights", "rating"], "--interaction-weights rating weighs each pair by "
                                          "its --rating-col value, and {data} has no rating "
                                          "column found by name"),
    (["--interaction-weights", "rating", "--rating-col", "none"], "--rating-col none was "
                                                                  "given"),
    (["--interaction-weights", "rating", "--stream", "--preset", "tutorial"],
     "(--interaction-weights) 'rating' is not read by objective 'mse'"),
    (["--interaction-weights", "bogus"], "invalid choice: 'bogus'"),
])
def test_cli_refuses_weights_it_cannot_read(capsys, tmp_path, argv, needle):
    data = tmp_path / "log.csv"
    pd.DataFrame({"user_id": [1, 2], "item_id": [3, 4]}).to_csv(data, index=False)
    code, _, err = run(capsys, "train", "--data", data, "--out", tmp_path / "r", *argv)
    assert code == 2 and needle.format(data=data) in err, err


@pytest.mark.parametrize("value,needle", [
    ("-2.5", "got -2.5 at {data} line 8 (column 'weight')"),
    ("", "{data}, line 8, column 'weight': expected a finite number, got ''"),
])
def test_cli_names_the_line_of_a_bad_weight(capsys, tmp_path, events, value, needle):
    text = events.read_text().splitlines()
    row = text[7].rsplit(",", 1)[0] + "," + value
    events.write_text("\n".join([*text[:7], row, *text[8:]]) + "\n")
    code, _, err = run(capsys, "train", "--data", events, "--rating-col", "weight",
                       "--interaction-weights", "rating", "--out", tmp_path / "r",
                       *_flags(tmp_path))
    assert code == 2, err
    assert needle.format(data=events) in err, err
    assert not (tmp_path / "r").exists()


def test_fit_stream_takes_the_weights_of_a_rating_column():
    """Streamed since 2026-12-07 (tests/training/test_stream_weights.py): with the rating
    column they are read from."""
    from twotower.models.retriever import check_streamable
    cfg = _cfg(query_tower="id", objective="sampled_softmax", item_bias=False,
               interaction_weights="rating")
    check_streamable(cfg, "weight")
    with pytest.raises(ConfigError, match="the stream reads no rating column"):
        check_streamable(cfg, None)


# ---------------------------------------------------------------- event names as weights
#: the event names of ``_log``'s weights, and the mapping that gives them back
NAMES = {1.0: "view", 10.0: "transaction"}
MAPPING = "view=1,transaction=10"


@pytest.fixture
def named(events):
    """``events`` with an ``event`` column beside ``weight``: its names for those weights."""
    df = pd.read_csv(events)
    df["event"] = df["weight"].map(NAMES)
    df.to_csv(events, index=False)
    return events


def test_event_names_read_as_the_weights_of_the_numeric_column(named):
    from twotower.data import read_interactions
    from twotower.models.retriever import history_table, history_weights, pair_weights
    numeric = read_interactions(named, rating_col="weight")
    by_name = read_interactions(named, event_col="event",
                                event_weights={"view": 1, "transaction": 10})
    assert by_name.ratings.dtype == numeric.ratings.dtype
    assert np.array_equal(by_name.ratings, numeric.ratings)
    hist = history_table(numeric, 50)
    assert np.array_equal(history_weights(hist, pair_weights(by_name, "event")),
                          history_weights(hist, pair_weights(numeric)))
    # "*": every name the mapping lacks
    rest = read_interactions(named, event_col="event", event_weights={"view": 2, "*": 0})
    assert np.array_equal(rest.ratings, np.where(numeric.ratings == 1, 2, 0))


def test_cli_event_weights_train_the_tables_the_numeric_column_trains(capsys, tmp_path,
                                                                     named):
    """The event column's names mapped by --event-weights train bit for bit the tables
    the numeric weight column does; the mapping is saved with the run and read back."""
    from twotower import TwoTower
    runs = {}
    for how, argv in (("numeric", ["--rating-col", "weight", "--interaction-weights",
                                   "rating"]),
                      ("events", ["--event-col", "event", "--event-weights", MAPPING])):
        code, _, err = run(capsys, "train", "--data", named, "--out", tmp_path / how,
                           *_flags(tmp_path), *argv)
        assert code == 0, err
        runs[how] = TwoTower.load(tmp_path / how)
    cfg = runs["events"].config
    assert cfg.interaction_weights == "event"
    assert cfg.event_weights == {"view": 1.0, "transaction": 10.0}
    saved = json.loads((tmp_path / "events" / "config.json").read_text())
    assert saved["data"]["columns"]["event"] == "event"
    for table in ("item_embeddings", "user_embeddings"):
        assert np.array_equal(getattr(runs["events"], table), getattr(runs["numeric"], table))
    # evaluation stays binary, and says so
    held = tmp_path / "held.csv"
    pd.DataFrame({"user_id": [60, 60], "item_id": [A, B]}).to_csv(held, index=False)
    code, _, err = run(capsys, "evaluate", tmp_path / "events", "--test-data", held)
    assert code == 0, err
    assert ("the model weighed its training pairs by transaction=10, view=1; the evaluation "
            "is binary: every test pair counts once, whatever its weight\n") in err, err
    code, _, err = run(capsys, "evaluate", tmp_path / "events", "--test-data", held,
                       "--baselines")
    assert code == 0, err
    assert ("whatever its weight; the baselines are fitted on the training pairs "
            "unweighted") in err, err
    # a run's saved config as --config: its mapping and its 'event' come back
    code, _, err = run(capsys, "train", "--data", named, "--out", tmp_path / "again",
                       "--config", tmp_path / "events" / "config.json")
    assert code == 2 and "[model] event_weights maps the event names of a column" in err, err


def test_a_config_file_mapping_is_the_flags_mapping(tmp_path):
    """``event_weights`` in --config's [model] (a TOML table, "*" quoted) sets
    interaction_weights 'event' as the flag does; a config round-trips it."""
    import argparse

    from twotower import ModelConfig
    from twotower.cli import _config_file, _event_weights, _model_config
    conf = tmp_path / "m.toml"
    conf.write_text('[model]\nevent_weights = {view = 1, transaction = 10, "*" = 0}\n')
    args = argparse.Namespace(config=str(conf), preset="default", split="none",
                              **dict.fromkeys(("epochs", "embedding_dim", "learning_rate",
                                               "batch_size", "seed", "item_features",
                                               "multi_valued_features", "multi_value_sep",
                                               "catalogue", "interaction_weights",
                                               "event_weights")))
    from_file = _model_config(args, _config_file(args))
    args.config, args.event_weights = None, _event_weights("view=1,transaction=10,*=0")
    from_flag = _model_config(args, {})
    assert from_file == from_flag
    assert from_file.interaction_weights == "event"
    assert from_file.event_weights == {"view": 1.0, "transaction": 10.0, "*": 0.0}
    assert ModelConfig.from_json(from_file.to_json()) == from_file


@pytest.mark.parametrize("weights,needle", [
    ({"view": 1}, "{data}, line {line}, column 'event': event 'transaction' has no weight; "
                  "the weights name ['view'] (model.event_weights, --event-weights): add "
                  "transaction=W, or *=W for every other event"),
    ({"view": 1, "buy": 10}, "event 'transaction' has no weight; the weights name ['buy', "
                             "'view']"),
])
def test_an_event_the_mapping_lacks_is_named_with_its_line(named, weights, needle):
    from twotower.data import read_interactions
    events = pd.read_csv(named)["event"]
    line = int(np.flatnonzero(events == "transaction")[0]) + 2  # the header is line 1
    with pytest.raises(DataError) as err:
        read_interactions(named, event_col="event", event_weights=weights)
    assert needle.format(data=named, line=line) in str(err.value)


def test_an_empty_event_name_and_a_rating_column_beside_events_are_refused(named):
    from twotower.data import read_interactions
    text = named.read_text().splitlines()
    named.write_text("\n".join([*text[:4], text[4].rsplit(",", 1)[0] + ",", *text[5:]]))
    # refused with "*" too (a name is not given, not another name); the message says why
    # (it said "each row needs one of []")
    with pytest.raises(DataError, match=r"line 5, column 'event': empty event name \(\*=W "
                                        r"weighs every other name, not a missing one"):
        read_interactions(named, event_col="event", event_weights={"*": 1})
    with pytest.raises(DataError, match=r"line 5, column 'event': empty event name \(each "
                                        r"row needs one of \['view'\]\); give the row"):
        read_interactions(named, event_col="event", event_weights={"view": 1})
    with pytest.raises(DataError, match="one source of ratings at a time"):
        read_interactions(named, rating_col="weight", event_col="event",
                          event_weights={"*": 1})
    with pytest.raises(DataError, match="go together; got event_col alone"):
        read_interactions(named, event_col="event")


@pytest.mark.parametrize("kw,match", [
    (dict(event_weights={"view": -1}), r"model.event_weights: the weight of 'view' must be "
                                       r"a number >= 0 .*got -1"),
    (dict(event_weights={"view": 0, "*": 0}), "gives every event weight 0"),
    (dict(event_weights={"view": "1"}), "the weight of 'view' must be a number"),
    (dict(event_weights=[("view", 1)]), "must be a table of event names to weights"),
    (dict(event_weights={}), "interaction_weights 'event' weighs each pair .*event_weights "
                             "is empty"),
])
def test_the_mapping_is_checked(kw, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(interaction_weights="event", **kw)
    with pytest.raises(ConfigError, match="one source of weights at a time"):
        _cfg(interaction_weights="rating", event_weights={"view": 1})


@pytest.mark.parametrize("argv,needle", [
    (["--event-weights", "view=1,transaction=10"],
     "--event-weights maps the event names of a column of --data to weights; name that "
     "column with --event-col COL"),
    (["--event-col", "event"], "--event-col event is read only to weigh each row by its "
                               "event name; give the weights with --event-weights"),
    (["--event-col", "event", "--event-weights", "view1,transaction=10"],
     "argument --event-weights: expected NAME=WEIGHT pairs separated by commas, e.g. "
     "view=1,addtocart=3,transaction=10 (*=W: every other event's weight), got "
     "'view1,transaction=10'"),
    (["--event-col", "event", "--event-weights", "view=one"], "('one', the weight of "
                                                              "'view', is no number)"),
    (["--event-col", "event", "--event-weights", "view=1,view=2"], "(event 'view' twice)"),
    (["--event-col", "event", "--event-weights", "view=-1,transaction=10"],
     "model.event_weights (--event-weights): the weight of 'view' must be a number >= 0"),
    (["--event-col", "event", "--event-weights", MAPPING, "--interaction-weights", "rating",
      "--rating-col", "weight"],
     "model.interaction_weights (--interaction-weights) 'rating' weighs pairs by the rating "
     "column's numbers: one source of weights at a time"),
    (["--event-col", "event", "--event-weights", MAPPING, "--rating-col", "weight"],
     "--rating-col weight: with event weights each row's weight is its --event-col (event) "
     "name's weight"),
    (["--event-col", "event", "--event-weights", MAPPING, "--stream", "--preset", "tutorial"],
     "model.interaction_weights (set by --event-weights) 'event' is not read by objective "
     "'mse'"),
    (["--event-col", "kind", "--event-weights", MAPPING],
     "has no column 'kind' (the event column); columns are ['user_id', 'item_id', 'weight', "
     "'event']; name the right one with --event-col"),
])
def test_cli_refuses_event_weights_it_cannot_read(capsys, tmp_path, named, argv, needle):
    code, _, err = run(capsys, "train", "--data", named, "--out", tmp_path / "r", *argv)
    assert code == 2 and needle in err, err
    assert not (tmp_path / "r").exists()


def test_fit_stream_takes_event_weights_from_the_streams_event_column():
    from twotower.models.retriever import check_streamable
    cfg = _cfg(query_tower="id", objective="sampled_softmax", item_bias=False,
               interaction_weights="event", event_weights={"view": 1})
    check_streamable(cfg, None, event_col="event", event_weights={"view": 1.0})
    with pytest.raises(ConfigError, match="the stream reads no event column"):
        check_streamable(cfg, None)
