"""Recency-weighted history pooling and side features (item cold start, save/load)."""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pandas as pd
import pytest

from twotower.data import Interactions
from twotower.errors import ConfigError
from twotower.models import ModelConfig, TwoTower
from twotower.models.features import feature_matrix
from twotower.models.retriever import recency_weights

from tests.models.test_objectives import CASES, FAST, N_GROUPS, N_ITEMS, planted

MULT = {**FAST, **CASES["multinomial"]}


def test_recency_weights_halve_every_half_life_and_keep_the_floor():
    cfg = ModelConfig.from_dict({**MULT, "recency_half_life": 2.0})
    np.testing.assert_allclose(recency_weights(5, cfg), [1, 2 ** -0.5, 0.5, 2 ** -1.5, 0.25],
                               rtol=1e-6)
    floor = cfg.replace(recency_floor=0.2)
    np.testing.assert_allclose(recency_weights(3, floor), [1.0, 0.2 + 0.8 * 2 ** -0.5, 0.6],
                               rtol=1e-6)
    np.testing.assert_array_equal(recency_weights(4, cfg.replace(recency_half_life=0.0)),
                                  np.ones(4))


def test_recency_makes_the_latest_items_decide_a_history_query():
    x, _ = planted(4)
    igroup = np.arange(N_ITEMS) % N_GROUPS
    # oldest first: six items of group 0, then the two latest of group 1
    history_ext = np.concatenate([np.flatnonzero(igroup == 0)[:6],
                                  np.flatnonzero(igroup == 1)[:2]])
    share = {}
    for half_life in (0.0, 1.0):
        cfg = ModelConfig.from_dict({**MULT, "recency_half_life": half_life})
        model = TwoTower(cfg).fit(x, verbose=0)
        history = model.item_vocab.lookup(history_ext.tolist())
        _, top = model.recommend_from_history([history], k=5, exclude=[history])
        share[half_life] = float((model.item_vocab.ids[top[0]] % N_GROUPS == 1).mean())
    assert share[0.0] <= 0.4   # unweighted: mostly the majority (group 0)
    assert share[1.0] >= 0.8   # recency-weighted: the latest items (group 1) win


def test_recency_without_a_time_column_warns_that_row_order_is_used():
    import warnings

    from twotower.data import Interactions
    x, _ = planted(4)
    cfg = ModelConfig.from_dict({**MULT, "recency_half_life": 2.0, "epochs": 1})
    users, items = x.user_vocab.ids[x.users], x.item_vocab.ids[x.items]
    for times, expect in ((None, True), (np.arange(len(x), dtype=np.int64), False)):
        data = Interactions.from_ids(users, items, x.ratings, times)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            TwoTower(cfg).fit(data, verbose=0)
        said = [w for w in caught if "recency_half_life weights" in str(w.message)]
        assert bool(said) == expect, [str(w.message) for w in caught]


@pytest.mark.parametrize("activation", ["linear", "tanh"])
def test_history_pooling_is_the_same_in_training_and_serving(activation):
    x, _ = planted(5)
    cfg = ModelConfig.from_dict({**MULT, "query_tower": "id+history", "epochs": 2,
                                 "recency_half_life": 3.0, "recency_floor": 0.1,
                                 "history_activation": activation})
    model = TwoTower(cfg).fit(x, verbose=0)
    users = np.arange(x.n_users)
    served = model.query_embeddings(users)[:, :cfg.embedding_dim]
    keras_q = np.asarray(model._net.query({"user": users.astype(np.int32)}))
    np.testing.assert_allclose(served, keras_q, rtol=1e-4, atol=1e-5)
    # the history-only path pools a user's own history exactly like the table does
    hist = [np.asarray(h[h > 0] - 1)[::-1] for h in model._history[:3]]
    np.testing.assert_allclose(model.history_query_embeddings(hist)[:, :cfg.embedding_dim],
                               served[:3] - model.user_embeddings[:3], rtol=1e-4, atol=1e-5)


def test_feature_matrix_tokens_lists_numbers_and_categories():
    info = pd.DataFrame({"id": [10, 11, 12, 13], "genres": [["a", "b"], ["b"], [], ["a"]],
                         "year": pd.array([1990, 2000, None, 1995], dtype="Int64"),
                         "gender": ["F", "M", None, "F"]})
    m, names = feature_matrix(info, ("genres", "year", "gender"), 4, n_bins=2)
    m = m.toarray()
    assert names[:2] == ["genres=a", "genres=b"]
    assert {"gender=F", "gender=M"} <= set(names) and "gender=None" not in names
    assert sum(n.startswith("year:q") for n in names) == 2
    # rows are normalised by sqrt(number of active features); missing values add nothing
    np.testing.assert_allclose((m > 0).sum(axis=1), [4, 3, 0, 3])
    np.testing.assert_allclose(m[0][m[0] > 0], 0.5)
    assert m[2].sum() == 0
    with pytest.warns(UserWarning, match="no such item column.*available"):
        m, names = feature_matrix(info, ("rating", "gender"), 4)
    assert names == ["gender=F", "gender=M"]


def test_a_column_of_numbers_and_text_and_a_flag_column_are_one_feature_per_value():
    """The first value decided: a column mixing numbers and text was binned as numbers and
    its text values silently gave no feature; a true/false column was binned too."""
    info = pd.DataFrame({"code": pd.Series([1, "a", 2, "b", None], dtype=object),
                         "flag": [True, False, True, True, False],
                         "price": pd.Series([1.5, None, 3.0, 9.0, 2.0], dtype=object)})
    m, names = feature_matrix(info, ("code", "flag", "price"), 5, n_bins=2)
    m = m.toarray()
    assert {"code=1", "code=a", "code=2", "code=b", "flag=True", "flag=False"} <= set(names)
    assert sum(n.startswith("price:q") for n in names) == 2  # numbers held as objects: binned
    assert not any(n.startswith(("code:q", "flag:q")) for n in names)
    np.testing.assert_array_equal((m > 0).sum(axis=1), [3, 2, 3, 3, 2])
    # Parquet decimals (Decimal objects) and datetimes are numbers: binned, as before
    import decimal
    info = pd.DataFrame({"price": [decimal.Decimal(f"{i}.99") for i in range(40)],
                         "when": pd.date_range("2026-01-01", periods=40)})
    m, names = feature_matrix(info, ("price", "when"), 40, n_bins=4)
    assert names == [f"price:q{b}" for b in range(4)] + [f"when:q{b}" for b in range(4)]


def test_a_column_of_numbers_with_a_stray_text_value_warns():
    """A price column read from a CSV with one "unknown" cell holds text: it is one feature
    per value (its numbers lose their order), which went unsaid."""
    import warnings
    prices = [f"{p:.2f}" for p in np.linspace(1, 99, 40)] + ["unknown"]
    info = pd.DataFrame({"price": prices, "size": ["S", "M", "L"] * 13 + ["S", "12"]})
    with pytest.warns(UserWarning, match=r"item feature column 'price': 40 of 41 values are "
                                         r"numbers, 1 are not \(e.g. 'unknown'\)"):
        m, names = feature_matrix(info, ("price",), 41)
    assert len(names) == 41  # one feature per value, as documented
    with warnings.catch_warnings():  # text with one number in it, numbers alone: no word
        warnings.simplefilter("error")
        feature_matrix(info, ("size",), 41)
        feature_matrix(pd.DataFrame({"price": [1.5, None, 3.0]}), ("price",), 3)


def test_year_falls_back_to_the_title_and_missing_metadata_trains_without_features():
    info = pd.DataFrame({"title": ["Toy Story (1995)", "Heat (1995) ", "Untitled"]})
    m, names = feature_matrix(info, ("year",), 3, n_bins=2)
    assert names == ["year:q1"] and m.toarray()[2].sum() == 0
    x, _ = planted(8)  # no item or user metadata at all
    cfg = ModelConfig.from_dict({**MULT, "item_features": ["genres", "year"], "epochs": 1})
    with pytest.warns(UserWarning, match="genres"):
        model = TwoTower(cfg).fit(x, verbose=0)
    assert model.item_feature_names == [] and model.recommend(np.arange(3), 5)[1].shape == (3, 5)


def test_present_columns_are_those_feature_matrix_builds_without_a_warning():
    import warnings

    from twotower.models.features import present_columns
    cases = [(None, ("genres", "year"), ()),
             (pd.DataFrame({"id": [1], "title": ["Heat (1995)"]}), ("genres", "year"),
              ("year",)),
             (pd.DataFrame({"genres": [["a"]], "shop": ["x"]}), ("year", "shop", "genres"),
              ("shop", "genres")),
             (pd.DataFrame({"id": [1]}), ("id",), ()),  # the id is no feature
             # titles that give no year: no year column
             (pd.DataFrame({"title": ["Heat"], "shop": ["x"]}), ("year", "shop"), ("shop",))]
    for info, wanted, kept in cases:
        assert present_columns(info, wanted) == kept
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the kept columns alone: no warning
            feature_matrix(info, kept, 1)
        if kept != wanted:
            with pytest.warns(UserWarning, match="names"):
                feature_matrix(info, wanted, 1)


def _genre_data(seed: int = 6) -> tuple[Interactions, np.ndarray, np.ndarray]:
    """Planted data whose items carry their group as a genre; one item of each group has
    all its interactions removed (cold, still in the vocabulary)."""
    x, ugroup = planted(seed)
    info = pd.DataFrame({"genres": [[f"g{i % N_GROUPS}"] for i in range(N_ITEMS)],
                         "year": [1990 + i % 7 for i in range(N_ITEMS)]},
                        index=pd.Index(list(range(N_ITEMS))))
    users = pd.DataFrame({"gender": ["F" if g % 2 else "M" for g in range(len(ugroup))]},
                         index=pd.Index(list(range(len(ugroup)))))
    x = Interactions.from_ids(x.user_vocab.ids[x.users], x.item_vocab.ids[x.items], x.ratings,
                              x.timestamps, item_info=info, user_info=users)
    cold_ext = np.arange(N_GROUPS) + N_ITEMS - N_GROUPS  # the last item of each group
    cold = x.item_vocab.lookup(cold_ext.tolist())
    return x.take(np.flatnonzero(~np.isin(x.items, cold))), ugroup, cold


def test_item_features_give_a_cold_item_a_useful_embedding():
    x, ugroup, cold = _genre_data()
    assert x.item_popularity()[cold].sum() == 0
    cfg = ModelConfig.from_dict({**MULT, "query_tower": "id+history",
                                 "item_features": ["genres"]})
    model = TwoTower(cfg).fit(x, verbose=0)
    users = np.arange(x.n_users)
    scores = model.query_embeddings(users) @ model.item_embeddings[cold].T  # [users, 4]
    cold_group = model.item_vocab.ids[cold] % N_GROUPS
    user_group = ugroup[model.user_vocab.ids[users]]
    right = cold_group[np.argmax(scores, axis=1)] == user_group
    assert right.mean() >= 0.9


@pytest.mark.parametrize("objective", ["mse", "sampled_softmax", "softmax", "bpr",
                                       "multinomial"])
def test_a_cold_items_id_row_and_bias_are_cleared_under_every_objective(objective, tmp_path):
    """An item with features but no training rows: mse and sampled_softmax never update its
    id row (it kept its random initial value: two such items with the same features scored
    apart); softmax, bpr and multinomial update it only as a negative, pushing it (and its
    bias) away from every query, so such items ranked below most of the catalogue
    (benchmarks/probes/cold_items.py). The row and bias are now zero under every objective,
    in the network and the served table, and stay so through save and load: the features
    alone place the item."""
    x, _, cold = _genre_data()
    cfg = ModelConfig.from_dict({**FAST, **CASES[objective], "epochs": 2,
                                 "item_features": ["genres"]})
    model = TwoTower(cfg).fit(x, verbose=0)
    net = model._net
    ids = np.asarray(net.item_embedding.embeddings)
    trained = np.flatnonzero(x.item_popularity() > 0)
    assert (np.abs(ids[trained]).sum(axis=1) > 0).all()
    assert (ids[cold] == 0).all()
    feats = model._item_features.toarray() @ np.asarray(net.item_feature_embedding)
    d = cfg.embedding_dim
    np.testing.assert_allclose(model.item_embeddings[cold, :d], feats[cold], atol=1e-6)
    if cfg.item_bias:
        bias = np.asarray(net.item_bias.embeddings)[:, 0]
        assert (bias[cold] == 0).all() and (bias[trained] != 0).any()
        by_features = (model._item_features.toarray() @ np.asarray(net.item_feature_bias))[:, 0]
        np.testing.assert_allclose(model.item_embeddings[cold, d], by_features[cold],
                                   atol=1e-6)
    model.save(tmp_path / "run")
    back = TwoTower.load(tmp_path / "run", keras=True)
    assert (np.asarray(back._net.item_embedding.embeddings)[cold] == 0).all()
    np.testing.assert_array_equal(back.item_embeddings, model.item_embeddings)


@pytest.mark.parametrize("objective", ["mse", "sampled_softmax", "multinomial"])
def test_a_feature_value_only_cold_items_have_adds_no_noise(objective):
    """Two cold items of one trained genre, each with a brand no item with training rows
    has: those brands' rows were never trained (mse, sampled_softmax) or trained only as
    negatives (multinomial, bias rows too), and made the two items score apart. The rows
    are now zero: the genre alone places both."""
    x, _, cold = _genre_data()
    info = x.item_info.assign(brand=["old"] * x.n_items)
    info.loc[cold[0], "brand"], info.loc[cold[1], "brand"] = "new1", "new2"
    info.at[cold[1], "genres"] = info.at[cold[0], "genres"]
    x = dataclasses.replace(x, item_info=info)
    cfg = ModelConfig.from_dict({**FAST, **CASES[objective], "epochs": 2,
                                 "item_features": ["genres", "brand"]})
    model = TwoTower(cfg).fit(x, verbose=0)
    assert not model.untrained_items()[cold[:2]].any()
    np.testing.assert_allclose(model.item_embeddings[cold[0]], model.item_embeddings[cold[1]],
                               atol=1e-6)
    names = model.item_feature_names
    new = [names.index("brand=new1"), names.index("brand=new2")]
    rows = np.asarray(model._net.item_feature_embedding)
    assert (rows[new] == 0).all()
    assert (np.abs(rows[names.index("brand=old")]) > 0).any()
    if cfg.item_bias:
        assert (np.asarray(model._net.item_feature_bias)[new] == 0).all()


def test_side_features_round_trip_through_save_and_load(tmp_path):
    x, _, _ = _genre_data(7)
    cfg = ModelConfig.from_dict({**MULT, "query_tower": "id+history", "epochs": 3,
                                 "item_features": ["genres", "year"],
                                 "user_features": ["gender"], "recency_half_life": 5.0})
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    model = TwoTower(cfg).fit(x, verbose=0)
    model.save(tmp_path / "run")
    users = np.arange(x.n_users)
    for keras in (False, True):
        back = TwoTower.load(tmp_path / "run", keras=keras)
        assert back.config == cfg
        assert back.item_feature_names == model.item_feature_names
        assert back.user_feature_names == ["gender=F", "gender=M"]
        np.testing.assert_array_equal(back.recommend(users, 5)[1], model.recommend(users, 5)[1])
        hist = [np.array([0, 1, 2])]
        np.testing.assert_array_equal(back.recommend_from_history(hist, 5)[1],
                                      model.recommend_from_history(hist, 5)[1])
    np.testing.assert_allclose(np.asarray(back._net.item_table()),
                               model.item_embeddings[:, :cfg.embedding_dim], atol=1e-6)


def test_feature_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="item_features"):
        ModelConfig.from_dict({"item_features": "genres"})
    with pytest.raises(ConfigError, match="user_features"):
        ModelConfig.from_dict({"user_features": [""]})


def test_cosine_learning_rate_decays_to_zero_over_the_run():
    x, _ = planted(9)
    cfg = ModelConfig.from_dict({**MULT, "epochs": 2, "learning_rate_decay": "cosine"})
    model = TwoTower(cfg).fit(x, verbose=0)
    opt = model._net.optimizer
    assert int(opt.iterations) == 2 * -(-x.n_users // cfg.batch_size)
    assert float(opt.learning_rate) < 1e-6 < cfg.learning_rate


def test_an_id_like_feature_column_is_held_sparse_not_items_by_values():
    """A ``brand`` with one value per item made the feature matrix a dense [items, values]
    block (100k items x 50k brands: 20 GB); it is now each item's own features. Here 3,000
    items with 3,000 brands: 36 MB dense, a few tens of kB sparse."""
    import tracemalloc

    import scipy.sparse as sp
    n = 3000
    info = pd.DataFrame({"brand": [f"b{i}" for i in range(n)],
                         "genres": [["x", "y"] if i % 2 else ["x"] for i in range(n)]})
    tracemalloc.start()
    try:
        m, names = feature_matrix(info, ("brand", "genres"), n)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sp.issparse(m) and m.shape == (n, n + 2) and m.nnz == n + n + n // 2
    dense_bytes = n * (n + 2) * 4
    assert peak < dense_bytes / 20, (peak, dense_bytes)
    # the values are the dense matrix's: 1 / sqrt(active features) per row
    np.testing.assert_allclose(m[1].toarray()[0][[names.index("brand=b1"),
                                                  names.index("genres=x"),
                                                  names.index("genres=y")]],
                               [3 ** -0.5] * 3, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m.sum(axis=1)).ravel(),
                               [2 ** 0.5 if i % 2 == 0 else 3 ** 0.5 for i in range(n)],
                               rtol=1e-6)
    # a value listed twice in a row is one feature, as dense
    m, names = feature_matrix(pd.DataFrame({"t": [["a", "a", "b"], []]}), ("t",), 2)
    np.testing.assert_allclose(m.toarray(), [[2 ** -0.5, 2 ** -0.5], [0, 0]], rtol=1e-6)


def test_sparse_features_give_the_dense_products_in_the_network_and_the_served_tables(
        tmp_path):
    """The network's feature parts (item table, item bias, user table, a batch's query)
    equal the dense ``features @ table`` products, and so do the served tables, through
    save and load; a run saved with a dense matrix (before the sparse form) loads to the
    same model."""
    x, _, _ = _genre_data(7)
    cfg = ModelConfig.from_dict({**MULT, "query_tower": "id+history", "epochs": 2,
                                 "item_features": ["genres", "year"], "item_bias": True,
                                 "user_features": ["gender"]})
    model = TwoTower(cfg).fit(x, verbose=0)
    net = model._net
    fi, fu = model._item_features.toarray(), model._user_features.toarray()
    assert fi.shape == (x.n_items, len(model.item_feature_names))
    ids = np.asarray(net.item_embedding.embeddings)
    dense_items = ids + fi @ np.asarray(net.item_feature_embedding)
    np.testing.assert_allclose(np.asarray(net.item_table()), dense_items, atol=1e-6)
    dense_bias = (np.asarray(net.item_bias.embeddings) + fi @ np.asarray(
        net.item_feature_bias)).ravel()
    np.testing.assert_allclose(np.asarray(net.item_bias_vector()), dense_bias, atol=1e-6)
    dense_users = np.asarray(net.user_embedding.embeddings) + fu @ np.asarray(
        net.user_feature_embedding)
    np.testing.assert_allclose(np.asarray(net.user_table()), dense_users, atol=1e-6)
    users = np.array([3, 0, 5, 3], dtype=np.int32)  # a batch's rows, as the query reads them
    table = np.asarray(net.user_feature_embedding)
    np.testing.assert_allclose(np.asarray(net.user_features.rows_times(users, table)),
                               fu[users] @ table, atol=1e-6)
    d = cfg.embedding_dim
    np.testing.assert_allclose(model.item_embeddings[:, :d], dense_items, atol=1e-6)
    model.save(tmp_path / "run")
    z = dict(np.load(tmp_path / "run" / "arrays.npz"))
    assert "item_features" not in z and z["item_features_data"].size == (fi > 0).sum()
    import json

    from twotower.artifacts import _sha256
    from twotower.errors import ArtifactError

    def rewrite(arrays):
        np.savez(tmp_path / "run" / "arrays.npz", **arrays)
        fmt = json.loads((tmp_path / "run" / "format.json").read_text())
        fmt["files"]["arrays.npz"] = _sha256(tmp_path / "run" / "arrays.npz")
        (tmp_path / "run" / "format.json").write_text(json.dumps(fmt))

    bad = dict(z, item_features_indices=z["item_features_indices"] + fi.shape[1])
    rewrite(bad)  # a feature index past the names: damage, named
    with pytest.raises(ArtifactError, match=r"item_features_indptr/indices/data do not form "
                                            rf"a \[{x.n_items}, {fi.shape[1]}\] matrix"):
        TwoTower.load(tmp_path / "run")
    # a run saved before: the dense matrices
    for what, dense in (("item", fi), ("user", fu)):
        for k in ("indptr", "indices", "data"):
            del z[f"{what}_features_{k}"]
        z[f"{what}_features"] = dense
    rewrite(z)
    users = np.arange(x.n_users)
    for keras in (False, True):
        back = TwoTower.load(tmp_path / "run", keras=keras)
        np.testing.assert_array_equal(back.recommend(users, 5)[1], model.recommend(users, 5)[1])
        np.testing.assert_array_equal(back._item_features.toarray(), fi)
        if keras:
            np.testing.assert_allclose(np.asarray(back._net.item_table()), dense_items,
                                       atol=1e-6)


def test_a_declared_multi_valued_text_column_is_split_into_one_feature_per_value():
    """Only ``genres`` text was split on ``|``: a CSV ``tags`` column holding ``x|y`` was
    one value (items tagged ``x|y`` and ``x`` shared no feature), with no way to say
    otherwise; ``multi_valued`` (the model's multi_valued_features) names such columns."""
    import warnings
    info = pd.DataFrame({"tags": ["x|y", "x", None, " y | z |", "x|x"],
                         "genres": ["a|b", "b", "", "a", None],
                         "sizes": [1.0, 2.0, None, 1.0, 3.5],
                         "codes": [["p", "q"], ["q"], [], None, ["p"]]})
    with pytest.warns(UserWarning, match=r"item feature column 'tags': 3 of 4 values hold "
                                         r"'\|' \(e\.g\. 'x\|y'\), and each is read as one "
                                         r"value; if they list several, name the column in "
                                         r"multi_valued_features \(--multi-valued-features "
                                         r"tags\)"):
        _, names = feature_matrix(info, ("tags",), 5)
    assert "tags=x|y" in names  # as documented: one value, undeclared
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m, names = feature_matrix(info, ("tags", "genres", "sizes", "codes"), 5,
                                  multi_valued=("tags", "sizes", "codes"))
    assert names == ["tags=x", "tags=y", "tags=z", "genres=a", "genres=b",
                     "sizes=1", "sizes=2", "sizes=3.5", "codes=p", "codes=q"]
    m = m.toarray()
    on = [[names[j] for j in np.flatnonzero(row)] for row in m]
    assert on == [["tags=x", "tags=y", "genres=a", "genres=b", "sizes=1", "codes=p", "codes=q"],
                  ["tags=x", "genres=b", "sizes=2", "codes=q"],
                  [],
                  ["tags=y", "tags=z", "genres=a", "sizes=1"],
                  ["tags=x", "sizes=3.5", "codes=p"]]
    np.testing.assert_allclose(m[0][m[0] > 0], 7 ** -0.5, rtol=1e-6)
    # another separator; genres named there takes it too
    info = pd.DataFrame({"tags": ["x;y", "x"], "genres": ["a;b", "a"]})
    _, names = feature_matrix(info, ("tags", "genres"), 2, multi_valued=("tags", "genres"),
                              sep=";")
    assert names == ["tags=x", "tags=y", "genres=a", "genres=b"]


def test_multi_valued_features_config_is_checked_and_round_trips():
    cfg = ModelConfig(item_features=("tags", "brand"), multi_valued_features=["tags"],
                      multi_value_sep=";")
    assert cfg.multi_valued_features == ("tags",)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    cfg.check_used()
    with pytest.raises(ConfigError, match=r"model.multi_valued_features names \['tag'\], which "
                                          r"neither item_features \['tags', 'brand'\] nor "
                                          r"user_features \[\] lists"):
        cfg.replace(multi_valued_features=("tag",)).check_used()
    with pytest.raises(ConfigError, match="model.multi_value_sep must be a non-empty string"):
        ModelConfig(multi_value_sep="")
    with pytest.raises(ConfigError, match="model.multi_valued_features must be a list"):
        ModelConfig.from_dict({"multi_valued_features": "tags"})
    assert "multi_value_sep" in ModelConfig().unread()
    assert "multi_value_sep" not in cfg.unread()


def test_a_null_inside_a_list_cell_is_no_value():
    """A Parquet list cell ``["x", null]`` gave a feature ``tags=None`` shared by every
    item with a null in its list; a text cell among lists gave one feature per character."""
    info = pd.DataFrame({"tags": pd.Series([["x", None], ["y", np.nan], "zz", None],
                                           dtype=object)})
    for multi in ((), ("tags",)):
        m, names = feature_matrix(info, ("tags",), 4, multi_valued=multi)
        assert names == ["tags=x", "tags=y", "tags=zz"], (multi, names)
        np.testing.assert_array_equal(m.toarray() > 0, [[1, 0, 0], [0, 1, 0], [0, 0, 1],
                                                        [0, 0, 0]])


def test_a_cold_items_ease_row_is_the_mean_row_of_its_feature_mates(tmp_path):
    """The EASE part has no row for an item no training row has: it scored 0 for every
    user, so in the default blend a cold item sat mid-catalogue whatever its features said
    (benchmarks/probes/cold_items.py part 4). Its row is now the mean row of the trained
    items sharing its feature values; served, saved and loaded alike."""
    x, _, cold = _genre_data()
    cfg = ModelConfig.from_dict({**MULT, "epochs": 2, "item_features": ["genres"],
                                 "ease_weight": 0.4, "ease_lambdas": [50.0],
                                 "ease_half_lives": [3.0], "ease_floors": [1.0],
                                 "ease_rank": 8})
    model = TwoTower(cfg).fit(x, verbose=0)
    q = model._linear.item_table
    genre = model.item_vocab.ids % N_GROUPS
    trained = x.item_popularity() > 0
    for c in cold:
        mates = trained & (genre == genre[c])
        assert np.abs(q[c]).max() > 1e-4
        np.testing.assert_allclose(q[c], q[mates].mean(axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(model.item_embeddings[:, -q.shape[1]:], q)
    model.save(tmp_path / "run")
    np.testing.assert_array_equal(TwoTower.load(tmp_path / "run").item_embeddings,
                                  model.item_embeddings)
