"""TwoTower's public boundary: indices, id lists, vocabularies and ratings are checked with
errors that name the argument and the expected form."""

from __future__ import annotations

import copy
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest

from twotower.data import Interactions, Vocabulary
from twotower.errors import DataError, UnknownIdError
from twotower.index import IndexConfig
from twotower.models import ModelConfig, TwoTower


def _log(n_users: int = 12, n_items: int = 8, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), 4)
    items = rng.integers(0, n_items, len(users))
    ratings = rng.integers(1, 6, len(users)).astype(float)
    return Interactions.from_ids(users, items, ratings)


def _bpr(query_tower: str = "id") -> ModelConfig:
    return ModelConfig(query_tower=query_tower, objective="bpr", epochs=1, batch_size=8,
                       embedding_dim=4)


@pytest.fixture(scope="module")
def history_model() -> TwoTower:
    return TwoTower(_bpr("id+history")).fit(_log(), verbose=0)


@pytest.mark.parametrize("bad", [-1, 12, 1000])
def test_user_indices_out_of_range_are_data_errors(history_model, bad):
    # -1 used to return the last user's list; 12 and 1000 a raw IndexError
    with pytest.raises(DataError, match=rf"`users` must be internal user ids in \[0, 12\), "
                                        rf"got {bad}"):
        history_model.recommend(np.array([0, bad]), k=3)


@pytest.mark.parametrize("bad", [np.array([12]), np.array([-1]), np.array([0.9])])
def test_the_tutorial_s_raw_list_refuses_user_indices_out_of_range(history_model, bad):
    # through the network's lookup, 12 listed items 0, 1, 2, ... (a fill), -1 the last
    # user's list and 0.9 user 0's, in silence
    with pytest.raises(DataError, match=r"`users` must be internal user ids"):
        history_model.raw_tutorial_top_ids(bad)


def test_the_tutorial_s_raw_list_of_no_user_is_empty(history_model):
    # predict on no rows raised Keras' UnboundLocalError
    top = history_model.raw_tutorial_top_ids(np.array([], dtype=np.int64))
    assert top.shape == (0, 8) and top.dtype == np.int64
    assert history_model.raw_tutorial_top_ids(np.array([3])).shape == (1, 8)


@pytest.mark.parametrize("bad", [-1, 8])
def test_item_indices_out_of_range_are_data_errors(history_model, bad):
    with pytest.raises(DataError, match=rf"`items` must be internal item ids in \[0, 8\), "
                                        rf"got {bad}"):
        history_model.similar_items(np.array([bad]), k=3)
    # -1 used to be dropped silently (it is the padding once shifted), 8 a scipy ValueError
    with pytest.raises(DataError, match=rf"`histories` must be internal item ids in "
                                        rf"\[0, 8\), got {bad}"):
        history_model.recommend_from_history([np.array([0, 1]), np.array([2, bad])], k=3)


def test_a_single_id_is_refused_where_a_list_is_expected(history_model):
    # "u1" used to be read as the ids 'u' and '1'
    with pytest.raises(DataError, match=r"`user_ids` must be a list of user ids, got the "
                                        r"single id 3; pass \[3\]"):
        history_model.recommend_ids(3, k=2)
    with pytest.raises(DataError, match=r"`item_ids` must be a list of item ids, got the "
                                        r"single id '7'"):
        history_model.similar_ids("7", k=2)
    assert history_model.recommend_ids(np.array([3]), k=2)[1].shape == (1, 2)
    # containers that iterate as no list of ids: a DataFrame (its column names), a 2-D
    # array (its rows), a dict (its keys), a set (no order)
    import pandas as pd
    for bad, said in ((pd.DataFrame({"user_id": [3]}), "got a DataFrame"),
                      (np.array([[3, 4]]), r"got an array of shape \(1, 2\)"),
                      ({3: 1}, "got a dict"), ({3, 4}, "got a set")):
        with pytest.raises(DataError, match=rf"`user_ids` must be a (1-D )?list of user ids, "
                                            rf"{said}"):
            history_model.recommend_ids(bad, k=2)
    assert history_model.recommend_ids(pd.Series([3, 4]), k=2)[1].shape == (2, 2)
    with pytest.raises(DataError, match=r"`exclude_seen` must be True or False, got 'no'"):
        history_model.recommend_ids([3], k=2, exclude_seen="no")  # it counted as True
    # one flat history where one per user is expected: a numpy IndexError before
    with pytest.raises(DataError, match=r"`histories` must hold one sequence of item indices "
                                        r"per user, got a sequence of 3 single indices"):
        history_model.recommend_from_history([0, 1, 2], k=2)
    assert history_model.recommend_from_history([[0, 1, 2]], k=2)[1].shape == (1, 2)


def test_titles_of_takes_what_recommend_ids_returns():
    """`titles` takes indices; the README mapped `recommend_ids`' ids back through
    `item_vocab.lookup`, which failed on a short row's None padding."""
    import pandas as pd
    x = Interactions.from_ids(["a", "a", "b", "b", "c"], [1, 2, 2, 3, 1],
                              item_info=pd.DataFrame({"id": [1, 2, 3],
                                                      "title": ["One", "Two", "Three"]}))
    m = TwoTower(_bpr()).fit(x, verbose=0)
    _, items = m.recommend_ids(["a"], k=3)  # a had 1 and 2: one item left, two pads
    assert items.tolist() == [[3, None, None]]
    assert m.titles_of(items).tolist() == [["Three", "", ""]]
    assert m.titles_of([2, 1]).tolist() == ["Two", "One"]
    with pytest.raises(UnknownIdError):
        m.titles_of([99])


def test_similar_items_of_a_one_item_catalogue_say_there_is_no_other_item():
    model = TwoTower(_bpr()).fit(Interactions.from_ids(["a", "b"], [7, 7]), verbose=0)
    with pytest.raises(DataError, match="single item, so there is no other item"):
        model.similar_ids([7], k=1)


def test_validation_on_other_vocabularies_is_refused():
    x = _log()
    other_users = Vocabulary(np.arange(1000), name="user")
    val = Interactions.from_ids(np.array([900, 950]), x.item_vocab.ids[:2],
                                np.array([3.0, 4.0]), user_vocab=other_users,
                                item_vocab=x.item_vocab)
    cfg = ModelConfig.preset("tutorial", epochs=1, batch_size=8, validation_freq=1)
    with pytest.raises(DataError, match="`validation` must use the training user vocabulary"):
        TwoTower(cfg).fit(x, val, verbose=0)
    shuffled = Vocabulary(x.item_vocab.ids[::-1].copy(), name="item")
    val = Interactions.from_ids(x.user_vocab.ids[:2], x.item_vocab.ids[:2], [3.0, 4.0],
                                user_vocab=x.user_vocab, item_vocab=shuffled)
    with pytest.raises(DataError, match="`validation` must use the training item vocabulary"):
        TwoTower(cfg).fit(x, val, verbose=0)


def test_mse_refuses_ratings_that_do_not_vary():
    x = Interactions.from_ids(["a", "b", "c", "a"], [1, 2, 3, 3], [4.0, 4.0, 4.0, 4.0])
    # the [0, 1] rescale mapped every rating to 0: the model learned nothing
    with pytest.raises(DataError, match=r"'mse' needs ratings that vary \(all ratings are "
                                        r"4.0\).*sampled_softmax"):
        TwoTower(ModelConfig.preset("tutorial", epochs=1, batch_size=8)).fit(x, verbose=0)


def test_index_tuning_skips_users_with_nothing_left_to_recommend():
    # every user has seen the single item: recall was NaN at every setting and ef_search
    # doubled to 4096
    model = TwoTower(_bpr()).fit(Interactions.from_ids(["a", "b"], [1, 1]), verbose=0)
    report = model.set_index(IndexConfig(kind="hnsw"), target_recall=0.9)
    assert report["calibration_queries"] == 0 and report["recall_tried"] == {}
    assert not report["reached"] and "whole catalogue" in report["skipped"]
    assert model.index_config.ef_search == IndexConfig(kind="hnsw").ef_search
    # user "a" has seen both items: left out of the calibration queries, not counted as NaN
    x = Interactions.from_ids(["a", "a", "b", "c"], [1, 2, 1, 2])
    model = TwoTower(_bpr()).fit(x, verbose=0)
    report = model.set_index(IndexConfig(kind="hnsw"), target_recall=0.9)
    assert report["calibration_queries"] == 2 and report["reached"]


def test_set_index_documents_the_report_it_returns():
    """set_index returns the tuning report (used by `twotower index`), unlike fit's self;
    its docstring said "return the report" with no Returns section naming what it holds.
    Each key of a real report is named there, and None when nothing is tuned."""
    import re
    x = Interactions.from_ids(["a", "a", "b", "c"], [1, 2, 1, 2])
    model = TwoTower(_bpr()).fit(x, verbose=0)
    assert model.set_index(IndexConfig(kind="hnsw")) is None
    assert model.set_index(IndexConfig(kind="exact"), target_recall=0.9) is None
    report = model.set_index(IndexConfig(kind="hnsw"), target_recall=0.9)
    doc = TwoTower.set_index.__doc__
    assert "Returns:" in doc, doc
    returns = doc.split("Returns:")[1].split("Raises:")[0]
    named = set(re.findall(r"``(\w+)``", returns))
    assert set(report) | {"skipped"} <= named, (sorted(report), sorted(named))
    assert set(report["similar"]) <= named


def test_an_interrupted_refit_leaves_no_half_updated_model(tmp_path):
    """A second fit stopped half-way (Ctrl-C in a notebook) leaves the model unfitted, not a
    mix of the new vocabularies and the old tables that recommends wrongly and saves a run
    that cannot be loaded."""
    import keras

    from tests.models.test_objectives import planted
    from twotower import ModelConfig, TwoTower
    from twotower.errors import NotFittedError
    a, _ = planted(0)
    b = a.take(a.users < a.n_users // 2)
    model = TwoTower(ModelConfig.preset("tutorial", epochs=2, embedding_dim=8)).fit(
        a, verbose=0)

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise KeyboardInterrupt

    small = ModelConfig.preset("tutorial", epochs=2, embedding_dim=8)
    model.config = small
    with pytest.raises(KeyboardInterrupt):
        model.fit(b, verbose=0, callbacks=[Stop()])
    with pytest.raises(NotFittedError):
        model.recommend(np.array([0]), 3)
    with pytest.raises(NotFittedError):
        model.save(tmp_path / "run")
    assert not (tmp_path / "run").exists()
    model.fit(b, verbose=0)  # a fit that completes serves again
    assert model.recommend(np.array([0]), 3)[1].shape == (1, 3)


def test_a_diverged_training_says_so_and_leaves_the_model_unfitted():
    from tests.models.test_objectives import planted
    from twotower import ModelConfig, TwoTower
    from twotower.errors import NotFittedError, TrainingError
    data, _ = planted(0)
    model = TwoTower(ModelConfig(objective="softmax", optimizer="sgd", learning_rate=100.0,
                                 epochs=3, batch_size=32, embedding_dim=8, temperature=0.05))
    with pytest.raises(TrainingError, match="training diverged: .* lower "
                                            "model.learning_rate"):
        model.fit(data, verbose=0)
    with pytest.raises(NotFittedError):
        model.similar_items(np.array([0]), 3)


def test_float_bool_and_negative_indices_are_refused(tutorial_run):
    """0.9 read as user 0, True as item 1, -1 as the last user: DataErrors naming the
    argument instead."""
    from twotower.errors import DataError
    model, _ = tutorial_run
    for call in (lambda: model.recommend(np.array([0.9]), 2),
                 lambda: model.similar_items(np.array([True]), 2),
                 lambda: model.seen_items(np.array([-1])),
                 lambda: model.seen_rows(np.array([-1])),
                 lambda: model.seen_exclusions(np.array([0.0])),
                 lambda: model.titles(np.array([model.n_items]))):
        with pytest.raises(DataError, match="must be internal"):
            call()
    # a short row's padding has no title (it showed the last item's)
    assert model.titles(np.array([[0, -1]])).tolist() == [[model.titles([0])[0], ""]]


def test_users_without_training_rows_are_warned_about():
    """A split can leave users in the vocabulary with no training rows: their lists come
    from an untrained query, which fit says."""
    from twotower import ModelConfig, TwoTower
    from twotower.data import Interactions
    x = Interactions.from_ids(["a", "a", "b", "c"], ["i", "j", "i", "j"])
    train = x.take(np.array([True, True, True, False]))  # c's only row held out
    with pytest.warns(UserWarning, match="1 of 3 users have no training interactions"):
        TwoTower(ModelConfig.preset("tutorial", objective="softmax", epochs=1,
                                    embedding_dim=4)).fit(train, verbose=0)


def test_fit_on_a_dataframe_says_what_it_takes():
    import pandas as pd

    from twotower import ModelConfig, TwoTower
    from twotower.errors import DataError
    with pytest.raises(DataError, match="`train` must be Interactions .* got DataFrame"):
        TwoTower(ModelConfig.preset("tutorial")).fit(pd.DataFrame({"user": [1]}))


def test_find_item_names_near_titles_and_ids_written_another_way():
    import pandas as pd
    from twotower.data import Interactions
    from twotower.errors import UnknownIdError
    x = Interactions.from_ids(["a", "a", "b", "b"], ["00448", "00012", "00448", "x"],
                              item_info=pd.DataFrame({"id": ["00448", "00012", "x"],
                                                      "title": ["Café", "Tea", "Coffee"]}))
    m = TwoTower(ModelConfig.preset("tutorial", objective="softmax", epochs=1,
                                    embedding_dim=4)).fit(x, verbose=0)
    assert m.find_item("Café") == m.find_item("00448")
    with pytest.raises(UnknownIdError, match="ids written another way: '00448'"):
        m.find_item("448")
    with pytest.raises(UnknownIdError, match="titles containing it: 'Café'"):
        m.find_item("CAFÉ")
    # spaces around a title are left out, as around an id (it named the title it meant)
    assert m.find_item(" Café ") == m.find_item(" 00448") == m.find_item("00448")
    # text that is not UTF-8 (typed in a latin-1 terminal: Python's argv holds a lone
    # surrogate for the byte) is unknown, said so; the title search crashed in pyarrow
    with pytest.raises(UnknownIdError, match=r"'Caf\\udce9' is neither .* not UTF-8"):
        m.find_item("Caf\udce9")


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_an_item_never_trained_on_is_in_no_recommendation_list(kind, tmp_path):
    """An item a split left out of training (no training row, no item features) keeps the
    vector it was initialised with; the tutorial preset put such items in the top 10 of
    6-14% of the users on MovieLens splits (probes/untrained_items.py). Here its vector is
    made to win most users' lists, and no list (by index or id, from a history, after
    save/load, through any index kind) returns it."""
    rng = np.random.default_rng(0)
    x = Interactions.from_ids(rng.integers(0, 20, 400).tolist() + [1],
                              rng.integers(0, 30, 400).tolist() + [99],
                              ratings=rng.integers(1, 6, 401))
    model = TwoTower(_bpr("id+history")).fit(x.take(np.arange(400)), verbose=0)
    j = int(model.item_vocab.lookup([99])[0])  # in the catalogue, not in training
    assert model.untrained_items()[j] and model.untrained_items().sum() == 1
    users = np.arange(len(model.user_vocab))
    q = model.query_embeddings(users)
    model.item_embeddings[j] = 1e3 * q.mean(axis=0) / np.linalg.norm(q.mean(axis=0))
    model.set_index(IndexConfig(kind=kind))
    raw = model._index.search(q, 1)[1][:, 0]  # the index itself: it wins most lists
    assert (raw == j).mean() > 0.5, raw
    denied = model._untrained_denied(model._index)  # prepared once per index build
    assert denied.n_denied == 1 and model._untrained_denied(model._index) is denied
    model.save(tmp_path / "run")
    for m in (model, TwoTower.load(tmp_path / "run")):
        for exclude in (None, m.seen_exclusions(users), m.seen_items(users)):
            top = m.recommend(users, m.n_items, exclude)[1]
            assert not (top == j).any()
            assert (top[:, -1] == -1).all()  # padded: one item fewer qualifies
        assert 99 not in m.recommend_ids([1, 2], 5)[1].ravel().tolist()
        hist = m.recommend_from_history([np.array([0, 1])], m.n_items)[1]
        assert j not in hist[0].tolist() and hist[0, -1] == -1


def test_ids_the_model_never_trained_on_are_refused_by_the_library_as_by_the_cli(tmp_path):
    """recommend_ids for a user, and similar_ids for an item, that a split left in the
    vocabularies with no training rows answered from vectors as initialised, with no error
    (the CLI and the service refuse both); after a load there was not even fit's warning."""
    from twotower.errors import UnknownIdError
    users = [0, 1, 2, 0, 1, 2, 0, 1, 2, 7]
    items = [0, 1, 2, 1, 2, 0, 2, 0, 1, 9]
    x = Interactions.from_ids(users, items)
    with pytest.warns(UserWarning, match="no training"):
        model = TwoTower(_bpr()).fit(x.take(np.arange(9)), verbose=0)
    model.save(tmp_path / "run")
    for m in (model, TwoTower.load(tmp_path / "run")):
        with pytest.raises(UnknownIdError, match=r"user id 7 has no training interactions"):
            m.recommend_ids([0, 7], 2)
        with pytest.raises(UnknownIdError, match=r"item id 9 has no training interactions "
                                                 "and no trained item features"):
            m.similar_ids([0, 9], 2)
        assert m.recommend_ids([0, 1], 2)[1].shape == (2, 2)
        assert 9 not in m.similar_ids([0], 3)[1].ravel().tolist()
        assert m.trained_with == "model.fit"  # kept by the save (it was None after a load)


@pytest.mark.parametrize("bad", [1.5, -0.1, True, "0.9", float("nan")])
def test_set_index_checks_target_recall_before_it_rebuilds(history_model, bad):
    """A target recall out of range was found only after the index had been replaced (the
    model kept the new kind after the error), and the error named `target`."""
    from twotower.errors import ConfigError
    before = history_model.index_config
    with pytest.raises(ConfigError, match=r"`target_recall` must be a recall in \(0, 1\]"):
        history_model.set_index(IndexConfig(kind="hnsw"), target_recall=bad)
    assert history_model.index_config is before


@pytest.mark.parametrize("bad", [2, 0, -0.5, True, "0.9", float("nan")])
def test_tune_index_refuses_a_bad_target_recall_as_set_index_does(history_model, bad):
    """`tune_index(2)` raised DataError (naming `target`) where `set_index` raises
    ConfigError for the same argument; over exact search it returned None unchecked."""
    from twotower.errors import ConfigError
    match = r"`target_recall` must be a recall in \(0, 1\], got "
    assert history_model._index.kind == "exact"
    with pytest.raises(ConfigError, match=match):
        history_model.tune_index(bad)
    model = copy.copy(history_model)  # the fixture's index is shared: set one of its own
    model.set_index(IndexConfig(kind="hnsw"))
    before = model.index_config
    calls = [lambda: model.tune_index(bad)]
    if bad != 0:  # set_index's target_recall 0 means "no tuning" (documented)
        calls.append(lambda: model.set_index(IndexConfig(kind="ivf"), target_recall=bad))
    for call in calls:
        with pytest.raises(ConfigError, match=match):
            call()
        assert model.index_config is before and model._index.kind == "hnsw"


def test_similar_index_with_no_item_to_find_is_not_tuned_to_its_limit():
    """One trained item: no item has another to be similar to (the rest are never trained),
    the recall is NaN at every value, and tuning doubled the similar-items HNSW's ef_search
    to 4,096 and kept it; now it is left as it was, and the report says why."""
    x = Interactions.from_ids(["u1", "u2", "u3"], ["a", "a", "a"], ratings=[5, 4, 2],
                              item_vocab=Vocabulary(["a", "b", "c", "d"]))
    model = TwoTower(ModelConfig.preset("tutorial", epochs=1, embedding_dim=4)).fit(x, verbose=0)
    report = model.set_index(IndexConfig(kind="hnsw"), target_recall=0.9)
    assert "never trained" in report["similar"]["skipped"]
    assert model._similar.config.ef_search == 128 and report["similar"]["value"] == 128


@pytest.mark.parametrize("users", [[12], [0.5], [[0, 1]]])
def test_set_index_checks_users_before_it_rebuilds(history_model, users):
    """Calibration users out of range (or not user indices) were found only after the index
    had been replaced: the model kept the new, untuned kind after the error."""
    before = history_model.index_config
    with pytest.raises(DataError, match=r"`users` must be"):
        history_model.set_index(IndexConfig(kind="ivf"), target_recall=0.9,
                                users=np.array(users))
    assert history_model.index_config is before and history_model._index.kind == before.kind


def test_no_calibration_users_is_refused_not_blamed_on_their_seen_items(history_model):
    """`tune_index(0.9, users=[])` reported "each of the 0 users sampled has seen the
    whole catalogue"; set_index then had already rebuilt the index."""
    before = history_model.index_config
    with pytest.raises(DataError, match=r"`users` is empty"):
        history_model.set_index(IndexConfig(kind="ivf"), target_recall=0.9,
                                users=np.array([], np.int64))
    assert history_model.index_config is before


def test_one_user_index_not_in_a_list_is_named(history_model):
    """recommend(0, k) failed deep inside with `len() of unsized object`."""
    with pytest.raises(DataError, match=r"`users` must be a 1-D array .* \(use \[0\] for one\)"):
        history_model.recommend(0, 2)
    with pytest.raises(DataError, match=r"got shape \(1, 2\)"):
        history_model.query_embeddings(np.array([[0, 1]]))
    assert history_model.recommend(np.array([0]), 2)[1].shape == (1, 2)


def test_an_item_whose_only_feature_value_no_trained_item_has_is_untrained():
    """A category only items without training rows have (launched after the cutoff) was
    never trained either: such items counted as described by a feature, and filled 16% of
    the top-10 slots of a click log's tutorial-preset run."""
    import pandas as pd
    users = [u for u in range(12) for _ in range(3)] + [0, 1]
    items = [(u + j) % 6 for u in range(12) for j in range(3)] + [6, 7]
    info = pd.DataFrame({"id": list(range(8)),
                         "cat": ["a", "b", "a", "b", "a", "b", "ghost", "a"]})
    x = Interactions.from_ids(users, items, item_info=info)
    cfg = ModelConfig(query_tower="id", objective="bpr", epochs=1, batch_size=8,
                      embedding_dim=4, item_features=("cat",))
    model = TwoTower(cfg).fit(x.take(np.arange(36)), verbose=0)  # items 6, 7: no rows
    got = dict(zip(model.item_vocab.ids.tolist(), model.untrained_items().tolist()))
    assert got[6] and not got[7]  # 'ghost' only on item 6; 'a' is trained on items 0, 2, 4
    top = model.recommend(np.arange(12), 8)[1]
    j6 = int(model.item_vocab.lookup([6])[0])
    assert not (top == j6).any()


def test_a_history_query_leaves_out_the_items_never_trained():
    """An untrained item in a history pulled the pooled query by its vector as
    initialised; it is left out, so the list is the one of the history without it."""
    rng = np.random.default_rng(0)
    x = Interactions.from_ids(rng.integers(0, 20, 400).tolist() + [1],
                              rng.integers(0, 30, 400).tolist() + [99])
    model = TwoTower(_bpr("id+history")).fit(x.take(np.arange(400)), verbose=0)
    j = int(model.item_vocab.lookup([99])[0])
    model.history_embeddings[j + 1] = 50.0  # a wild vector (row 0 pads the table)
    a, b = (int(i) for i in model.item_vocab.lookup([3, 7]))
    with_it = model.history_query_embeddings([np.array([a, j, b])])
    without = model.history_query_embeddings([np.array([a, b])])
    np.testing.assert_allclose(with_it, without, rtol=1e-6)


def test_a_history_query_leaves_out_an_item_with_features_but_no_training_rows():
    """Such an item is listed (its features are trained), but its history vector is not:
    the history table is by id. It pulled the pooled query by its vector as initialised."""
    import pandas as pd
    rng = np.random.default_rng(0)
    info = pd.DataFrame({"id": list(range(30)) + [99],
                         "cat": [f"c{i % 3}" for i in range(30)] + ["c1"]})
    x = Interactions.from_ids(rng.integers(0, 20, 400).tolist() + [1],
                              rng.integers(0, 30, 400).tolist() + [99], item_info=info)
    cfg = _bpr("id+history").replace(item_features=("cat",))
    model = TwoTower(cfg).fit(x.take(np.arange(400)), verbose=0)
    j = int(model.item_vocab.lookup([99])[0])
    assert not model.untrained_items()[j]  # "c1" is trained: 99 can be listed
    model.history_embeddings[j + 1] = 50.0  # a wild vector (row 0 pads the table)
    a, b = (int(i) for i in model.item_vocab.lookup([3, 7]))
    np.testing.assert_allclose(model.history_query_embeddings([np.array([a, j, b])]),
                               model.history_query_embeddings([np.array([a, b])]), rtol=1e-6)


def test_index_tuning_draws_its_users_among_those_the_model_trained_on():
    """Tuning drew its calibration users among all, untrained ones included: their query
    is as initialised and they are served the fallback, never the index."""
    users = [u for u in range(30) for _ in range(4)] + [40, 41, 42]
    items = [(3 * u + j) % 25 for u in range(30) for j in range(4)] + [1, 2, 3]
    x = Interactions.from_ids(users, items)
    with pytest.warns(UserWarning, match="no training"):
        model = TwoTower(_bpr()).fit(x.take(np.arange(120)), verbose=0)
    untrained = np.flatnonzero(model.untrained_users())
    assert len(untrained) == 3
    asked = []
    real = model.query_embeddings
    model.query_embeddings = lambda u: (asked.append(np.asarray(u)), real(u))[1]
    model.set_index(IndexConfig(kind="hnsw"), target_recall=0.9)
    assert len(asked) == 1 and len(asked[0]) == 30
    assert not np.isin(asked[0], untrained).any()


def test_seen_items_are_read_only_views_a_caller_cannot_corrupt(history_model):
    # they were views into the training table: writing into one (an in-place sort, a
    # reused buffer) changed which items every later list left out, and what a save kept
    seen = history_model.seen_items(np.arange(3))
    assert any(len(s) for s in seen)
    for s in seen:
        with pytest.raises(ValueError, match="read-only"):
            s[...] = s  # the same values: a failure here leaves the fixture intact


def test_untrained_masks_are_read_only_a_caller_cannot_corrupt(history_model):
    # both are cached: writing into one (mask |= other) made every later call read it, so
    # trained users got the popular fallback and trained items "have no similar items"
    for mask in (history_model.untrained_users(), history_model.untrained_items()):
        with pytest.raises(ValueError, match="read-only"):
            mask[...] = mask  # the same values: a failure here leaves the fixture intact
    assert not history_model.untrained_users().any()


def test_untrained_deny_lists_prepared_from_two_threads_at_once():
    """A fitted model's first recommend and similar_items calls, from two threads, each
    prepare its index's deny list of untrained items: the second's entry landed while the
    first swept the cache for indexes the model no longer has (iterating the dict), and
    the first failed with 'dictionary changed size during iteration'. Forced here: the
    sweep's first read of ``_similar`` waits for the other thread's entry."""
    import threading

    rng = np.random.default_rng(0)
    x = Interactions.from_ids(rng.integers(0, 20, 400).tolist() + [1],
                              rng.integers(0, 30, 400).tolist() + [99],
                              ratings=rng.integers(1, 6, 401))
    model = TwoTower(_bpr("id+history")).fit(x.take(np.arange(400)), verbose=0)
    assert model.untrained_items().sum() == 1
    model.__dict__.pop("_denied", None)  # nothing prepared yet, as after fit
    index, similar = model._index, model._similar
    first = threading.get_ident()
    other_done = threading.Event()

    class Slow(TwoTower):
        @property
        def _similar(self):
            if threading.get_ident() == first and not other_done.is_set():
                t = threading.Thread(target=lambda: (self._untrained_denied(similar),
                                                     other_done.set()))
                t.start()
                t.join(20)
            return self.__dict__["_similar"]

    model.__class__ = Slow
    try:
        denied = model._untrained_denied(index)
    finally:
        model.__class__ = TwoTower
    assert other_done.is_set()
    assert denied.n_denied == 1
    assert model._untrained_denied(index) is denied  # both kept, not made again
    assert model._untrained_denied(similar) is model._denied[id(similar)][3]
    assert set(model._denied) == {id(index), id(similar)}


def test_an_index_set_during_a_call_is_not_mixed_into_it(history_model):
    """recommend_ids prepared the seen items for the model's index, then searched
    ``self._index`` again: another thread's set_index in between failed the call with
    "`exclude` was prepared by another index" (a thread test: 1 in 4,877 calls). Each
    call now reads its index once. Forced here: the index is set again between the
    call's filters and its search."""
    from twotower.index import IndexConfig
    model = history_model
    before = model.recommend_ids(model.user_vocab.ids[:3].tolist(), k=3)
    kind = model._index.config.kind
    real = model._search_filters
    swapped = []

    def filters_then_set_index(index, allow, deny):  # another thread's set_index, here
        out = real(index, allow, deny)
        if not swapped:
            swapped.append(index)
            model.set_index(IndexConfig(kind=kind))  # a new index object, same kind
        return out
    model._search_filters = filters_then_set_index
    try:
        got = model.recommend_ids(model.user_vocab.ids[:3].tolist(), k=3)
        assert swapped and model._index is not swapped[0]
        np.testing.assert_array_equal(got[1], before[1])
        np.testing.assert_allclose(got[0], before[0], rtol=1e-6)
    finally:
        del model._search_filters
