"""``TwoTower.to_keras``: the trained retrieval as one ``.keras`` file, loaded by
``keras.saving.load_model`` in a fresh process, answers as ``recommend_ids`` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.cli_run import run
from twotower.data import Interactions, Vocabulary
from twotower.errors import ConfigError, DataError
from twotower.models import ModelConfig, TwoTower
from twotower.models.keras_layers import PAD

SRC = Path(__file__).resolve().parents[2] / "src"

# Loads each .keras file given in a fresh interpreter (JAX backend) and writes its answers
# for the given user inputs: what a Keras user does with the file.
_LOADER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import twotower.models.keras_layers  # registers the layers with Keras
    import keras
    jobs = json.load(open(sys.argv[1]))
    for job in jobs:
        net = keras.saving.load_model(job["file"])
        out = net.predict(np.array(job["inputs"], dtype="int32"), verbose=0)
        layer = net.get_layer("retrieval")
        vocabs = {f"vocab_{name[:-4]}s": getattr(layer, name)
                  for name in ("user_ids", "item_ids") if getattr(layer, name, None) is not None}
        np.savez(job["out"], backend=keras.backend.backend(), **vocabs,
                 **{k: np.asarray(v) for k, v in out.items()})
""")


def _load_elsewhere(tmp_path: Path, jobs: list[dict]) -> list[dict[str, np.ndarray]]:
    spec = tmp_path / "jobs.json"
    spec.write_text(json.dumps(jobs))
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _LOADER, str(spec)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [dict(np.load(job["out"], allow_pickle=False)) for job in jobs]


def _same_lists(scores: np.ndarray, ids: np.ndarray, ref_scores: np.ndarray,
                ref_ids: np.ndarray) -> None:
    """The same scores (float32 sums in another order: close, not equal) and the same ids,
    but where two neighbouring scores are too close to order for sure (a tie)."""
    ref_ids = np.array([[PAD if v is None else v for v in row] for row in ref_ids], object)
    with np.errstate(invalid="ignore"):  # -inf - -inf: padding, "sure" anyway
        gap = np.abs(np.diff(ref_scores, axis=1, prepend=np.inf, append=-np.inf))
        off = np.abs(np.nan_to_num(scores - ref_scores))
    finite = np.where(np.isinf(ref_scores), 0.0, np.abs(ref_scores))
    tol = 1e-5 * finite.max(axis=1, keepdims=True)  # float32 error of the row's sums
    assert (np.isinf(scores) == np.isinf(ref_scores)).all()
    assert (off <= tol).all(), (scores, ref_scores)
    sure = (np.minimum(gap[:, :-1], gap[:, 1:]) > tol) | np.isinf(ref_scores)
    assert (np.asarray(ids, object)[sure] == ref_ids[sure]).all(), (ids, ref_ids)
    assert sure.mean() > 0.9  # a test of the ids, not of ties


def _dated_log() -> Interactions:
    """120 users in 4 taste groups over 40 items with genres and years (the default
    preset's features), with timestamps; 40 users with a single item."""
    rng = np.random.default_rng(0)
    users = np.concatenate([np.repeat(np.arange(80), 12), np.arange(80, 120)])
    items = (users % 4) * 10 + rng.integers(0, 10, len(users))
    info = pd.DataFrame({"id": np.arange(40),
                         "genres": [["Drama", "Comedy", "Action", "War"][i // 10]
                                    for i in range(40)],
                         "year": 1990 + np.arange(40) % 7})
    return Interactions.from_ids(users + 1000, items + 500, timestamps=np.arange(len(users)),
                                 item_info=info.assign(id=info["id"] + 500))


@pytest.fixture(scope="module")
def default_model() -> TwoTower:
    """The default preset (id+history tower, item bias and features, recency pooling, the
    EASE part), small: 1 epoch, d=16, the blend weight fixed (its search fits the model
    again, which took a third of this fixture's time)."""
    cfg = ModelConfig.preset("default", epochs=1, embedding_dim=16, history_length=20,
                             ease_weight_grid=())
    return TwoTower(cfg).fit(_dated_log(), verbose=0)


@pytest.fixture(scope="module")
def text_model() -> TwoTower:
    """A tutorial-preset model over text user and item ids (1 epoch, d=4)."""
    rng = np.random.default_rng(0)
    x = Interactions.from_ids([f"u{u}" for u in rng.integers(0, 20, 300)],
                              [f"m{i}" for i in rng.integers(0, 30, 300)],
                              ratings=rng.integers(1, 6, 300))
    return TwoTower(ModelConfig.preset("tutorial", epochs=1, embedding_dim=4)).fit(
        x, verbose=0)


def test_saved_keras_models_answer_as_recommend_ids_in_a_fresh_process(
        tutorial_run, default_model, text_model, tmp_path):
    """The tutorial preset (MovieLens, 5 epochs) and the default preset, with and without
    the seen items, by external ids; text ids by index, mapped with the vocabularies the
    file carries. One fresh process loads them all (its start is most of the time)."""
    tutorial = tutorial_run[0]
    jobs, refs = [], []
    for name, model, k in (("tutorial", tutorial, 10), ("default", default_model, 5)):
        assert model._linear is not None or name == "tutorial"  # the EASE part is exported
        users = model.user_vocab.ids[::max(1, len(model.user_vocab) // 12)][:12]
        for exclude_seen in (True, False):
            file = tmp_path / f"{name}-{exclude_seen}.keras"
            model.to_keras(k, exclude_seen=exclude_seen).save(file)
            jobs.append({"file": str(file), "inputs": users.tolist(),
                         "out": str(tmp_path / f"{name}-{exclude_seen}.npz")})
            refs.append(model.recommend_ids(list(users), k, exclude_seen=exclude_seen))
    text_model.to_keras(5, ids="indices").save(tmp_path / "text.keras")
    jobs.append({"file": str(tmp_path / "text.keras"), "inputs": [0, 3, 7],
                 "out": str(tmp_path / "text.npz")})
    *answers, text = _load_elsewhere(tmp_path, jobs)
    for got, (ref_scores, ref_ids) in zip(answers, refs):
        assert str(got["backend"]) == "jax"
        _same_lists(got["scores"], got["item_ids"], ref_scores, ref_ids)
    # the vocabularies ride along in the file
    assert (got["vocab_users"] == default_model.user_vocab.ids).all()
    assert (got["vocab_items"] == default_model.item_vocab.ids).all()
    user_ids, item_ids = text["vocab_users"], text["vocab_items"]
    assert user_ids.tolist() == text_model.user_vocab.ids.tolist()
    scores, ids = text_model.recommend_ids(user_ids[[0, 3, 7]].tolist(), 5)
    idx = text["item_indices"]
    mapped = item_ids.astype(object)[idx]
    mapped[idx < 0] = PAD
    _same_lists(text["scores"], mapped, scores, ids)


@pytest.fixture(scope="module")
def text_history_model() -> TwoTower:
    """A history tower over text ids (``u0``, ``m0``), the branches the default preset does
    not take (mean pooling, tanh, no item bias, no EASE part), 1 epoch, d=8, 4 items
    pooled; items ``m40`` and ``m41`` have no training rows (``m41`` shares its genre with
    trained items: it is listed, never pooled)."""
    x = _dated_log()
    info = pd.DataFrame({"id": [f"m{i}" for i in range(42)],
                         "genres": [["Drama", "Comedy", "Action", "War"][i // 10]
                                    for i in range(40)] + ["Solo", "War"]})
    vocab = Vocabulary(np.array([f"m{i}" for i in range(42)]))
    x = Interactions.from_ids([f"u{u}" for u in x.user_vocab.ids[x.users]],
                              [f"m{i - 500}" for i in x.item_vocab.ids[x.items]],
                              timestamps=np.arange(len(x)), item_vocab=vocab, item_info=info)
    cfg = ModelConfig(query_tower="history", objective="softmax", epochs=1, embedding_dim=8,
                      history_length=4, pooling="mean", history_activation="tanh",
                      item_bias=False, learning_rate=0.05, item_features=("genres",))
    return TwoTower(cfg).fit(x, verbose=0)


def _padded(histories: list[list[int]], width: int | None = None) -> list[list[int]]:
    width = width or max(map(len, histories))
    return [h + [PAD] * (width - len(h)) for h in histories]


def test_saved_history_models_answer_as_recommend_from_history_in_a_fresh_process(
        default_model, text_history_model, tmp_path):
    """``to_keras(history=True)``: padded histories of new users in, in a fresh process,
    the lists ``recommend_from_history`` gives for them, the histories' items left out or
    not; unknown ids and items without training rows are left out of the query, and a
    history left empty gets the empty history's list. The default preset by external
    ids, a history tower over text ids by index."""
    rng = np.random.default_rng(1)
    m, n = default_model, default_model.n_items
    long = rng.integers(500, 540, 30).tolist()  # > k and > history_length 20, repeats
    histories = [[503, 507], [9999, 12345], long, [], [520, 9999, 521, 520, 7], [531]]
    jobs, refs = [], []
    for exclude in (True, False):
        file = tmp_path / f"default-{exclude}.keras"
        m.to_keras(5, history=True, exclude_seen=exclude).save(file)
        for width in (None, 40) if exclude else (None,):  # the padding's width: no matter
            jobs.append({"file": str(file), "inputs": _padded(histories, width),
                         "out": str(tmp_path / f"default-{exclude}-{width}.npz")})
            rows = [m.item_vocab.lookup_or(h, -1) for h in histories]
            rows = [r[r >= 0] for r in rows]
            scores, idx = m.recommend_from_history(rows, 5, rows if exclude else None)
            refs.append((scores, np.where(idx >= 0, m.item_vocab.ids[np.maximum(idx, 0)],
                                          PAD)))
    t = text_history_model
    text_histories = [[0, 40, 41, t.n_items + 3], [40], [1, 2, 3, 4, 5, 6, 1, 30], [11, -7]]
    t.to_keras(6, history=True, ids="indices").save(tmp_path / "text.keras")
    jobs.append({"file": str(tmp_path / "text.keras"), "inputs": _padded(text_histories),
                 "out": str(tmp_path / "text.npz")})
    *answers, text = _load_elsewhere(tmp_path, jobs)
    for got, (ref_scores, ref_ids) in zip(answers, refs):
        assert str(got["backend"]) == "jax" and "vocab_users" not in got
        _same_lists(got["scores"], got["item_ids"], ref_scores, ref_ids)
        assert (got["vocab_items"] == m.item_vocab.ids).all()
    assert np.isfinite(got["scores"][1]).all()  # unknown ids only: the empty history's list
    rows = [np.array([i for i in h if 0 <= i < t.n_items], int) for h in text_histories]
    assert (t.item_popularity[[40, 41]] == 0).all() and not t.untrained_items()[41]
    ref_scores, ref_idx = t.recommend_from_history(rows, 6, rows)
    some = [0, 2, 3]
    _same_lists(text["scores"][some], text["item_indices"][some], ref_scores[some],
                ref_idx[some])
    # [40] pools nothing: no bias, no EASE part, a zero query and every score a tie at 0
    assert (text["scores"][1] == 0).all() and (ref_scores[1] == 0).all()
    assert 40 not in text["item_indices"][1] and (text["item_indices"][1] >= 0).all()
    assert text["vocab_items"].tolist() == t.item_vocab.ids.tolist()


def test_a_history_model_of_an_id_tower_is_refused(text_model):
    with pytest.raises(ConfigError, match=r"to_keras\(history=True\): this model's query "
                                          r"tower is 'id' .*tutorial"):
        text_model.to_keras(5, ids="indices", history=True)


def test_a_history_model_takes_text_user_ids_but_not_text_item_ids(text_history_model,
                                                                    default_model):
    """Only item ids go in and out of a history model: text user ids do not matter."""
    with pytest.raises(ConfigError, match=r"item ids are text \(e\.g\. 'm0'\)"):
        text_history_model.to_keras(5, history=True)
    assert default_model.to_keras(3, history=True).input.shape == (None, None)


def test_a_cosine_run_exports_the_cosine_lists(default_model):
    """A run indexed by cosine (``IndexConfig(metric="cosine")``) ranks by the angle:
    both exported models compare unit vectors as its index does."""
    import copy

    from twotower.index import IndexConfig
    m = copy.copy(default_model)
    for cache in ("_denied", "_seen_prepared"):
        m.__dict__.pop(cache, None)
    m.set_index(IndexConfig(metric="cosine"))
    users = m.user_vocab.ids[::10].astype(np.int32)
    out = m.to_keras(5).predict(users, verbose=0)
    _same_lists(out["scores"], out["item_ids"], *m.recommend_ids(users.tolist(), 5))
    histories = [[3, 17, 22], [30], list(range(25))]
    out = m.to_keras(5, history=True, ids="indices").predict(
        np.array(_padded(histories), np.int32), verbose=0)
    _same_lists(out["scores"], out["item_indices"],
                *m.recommend_from_history(histories, 5, histories))


def test_an_item_id_that_is_the_padding_is_refused_as_an_external_id(default_model):
    import copy
    m = copy.copy(default_model)
    m.item_vocab = Vocabulary(np.append([-1], m.item_vocab.ids[1:]))
    with pytest.raises(ConfigError, match="-1 pads a history .* ids='indices'"):
        m.to_keras(3, history=True)
    m.to_keras(3)  # by user id, -1 is only the padding of a list, as before
    m.to_keras(3, history=True, ids="indices")


def test_a_list_is_padded_and_unknown_or_untrained_users_get_no_list(default_model):
    """Users with a single training item (seen, excluded) have n_items - 1 to list, the
    rest padded as recommend_ids pads; an id the model never saw gets padding only, as
    does a user with no training rows (recommend_ids refuses those)."""
    m = default_model
    n = m.n_items
    net = m.to_keras(n)
    users = np.array([1100, 1000, 1119], dtype=np.int32)  # one item each, then 12
    ref_scores, ref_ids = m.recommend_ids(users.tolist(), n)
    out = net.predict(np.append(users, 77), verbose=0)  # 77: no such user
    _same_lists(out["scores"][:3], out["item_ids"][:3], ref_scores, ref_ids)
    assert (out["item_ids"][0] == -1).sum() == 1 and np.isneginf(out["scores"][0, -1])
    assert (out["item_ids"][3] == -1).all() and np.isneginf(out["scores"][3]).all()
    # by index: one past the last user, or below 0, is no user (take would clamp to one)
    by_index = m.to_keras(3, ids="indices").predict(
        np.array([len(m.user_vocab), -2, len(m.user_vocab) - 1], np.int32), verbose=0)
    assert (by_index["item_indices"][:2] == -1).all()
    assert (by_index["item_indices"][2] >= 0).all()
    # a user a split left without training rows: in the vocabulary, never trained
    x = _dated_log()
    keep = np.flatnonzero(x.users != x.user_vocab.index_of(1005))
    lonely = TwoTower(ModelConfig(query_tower="id", objective="bpr", epochs=1,
                                  embedding_dim=4))
    with pytest.warns(UserWarning):
        lonely.fit(x.take(keep), verbose=0)
    out = lonely.to_keras(3).predict(np.array([1005, 1006], np.int32), verbose=0)
    assert (out["item_ids"][0] == -1).all() and (out["item_ids"][1] >= 500).all()


def test_items_never_trained_are_in_no_list():
    rng = np.random.default_rng(0)
    x = Interactions.from_ids(rng.integers(0, 20, 400).tolist() + [1],
                              rng.integers(0, 30, 400).tolist() + [99],
                              ratings=rng.integers(1, 6, 401))
    model = TwoTower(ModelConfig.preset("tutorial", epochs=1, embedding_dim=4)).fit(
        x.take(np.arange(400)), verbose=0)
    j = int(model.item_vocab.lookup([99])[0])
    q = model.query_embeddings(np.arange(len(model.user_vocab)))
    model.item_embeddings[j] = 1e3 * q.mean(axis=0)  # it would top most lists
    out = model.to_keras(model.n_items, exclude_seen=False).predict(
        model.user_vocab.ids.astype(np.int32), verbose=0)
    assert 99 not in out["item_ids"] and (out["item_ids"][:, -1] == -1).all()


def test_text_ids_are_refused_as_external_ids(text_model):
    with pytest.raises(ConfigError, match=r"user ids are text \(e\.g\. 'u0'\).*"
                                          r"ids='indices'"):
        text_model.to_keras(5)


def test_ids_beyond_int32_are_refused_as_external_ids(capsys, tmp_path):
    x = Interactions.from_ids([1, 2, 3 << 40], [5, 6, 7], ratings=[1, 2, 5])
    model = TwoTower(ModelConfig.preset("tutorial", epochs=1, embedding_dim=4)).fit(
        x, verbose=0)
    # the example is an id that does not fit, as Python writes it (not the first, 1)
    with pytest.raises(ConfigError, match=r"user ids are integers beyond int32 \(e\.g\. "
                                          r"3298534883328\)"):
        model.to_keras(2)
    model.save(tmp_path / "run")
    code, _, err = run(capsys, "export", tmp_path / "run", "--keras", "-k", "2",
                       "--out", tmp_path / "m.keras")
    assert code == 2 and "user ids are integers beyond int32 (e.g. 3298534883328)" in err, err
    assert model.to_keras(2, ids="indices").output["item_indices"].shape == (None, 2)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"k": 0}, ConfigError, r"`k` must be between 1 and \d+"),
    ({"k": 10_000}, ConfigError, r"`k` must be between 1 and \d+"),
    ({"exclude_seen": "no"}, DataError, "`exclude_seen` must be True or False"),
    ({"ids": "names"}, ConfigError, "`ids` must be 'external' or 'indices', got 'names'"),
    ({"history": 1}, DataError, "`history` must be True or False, got 1"),
])
def test_bad_arguments_are_named(default_model, kwargs, error, match):
    with pytest.raises(error, match=match):
        default_model.to_keras(**kwargs)


def test_an_unfitted_model_says_fit_first():
    from twotower.errors import NotFittedError
    with pytest.raises(NotFittedError, match="call fit first"):
        TwoTower().to_keras()


def test_a_loaded_run_exports_without_its_keras_network(tutorial_run):
    """What `twotower export RUN` calls: a run loaded without keras=True holds every table
    the export needs."""
    model, run = tutorial_run
    users = model.user_vocab.ids[:5].astype(np.int32)
    loaded = TwoTower.load(run)
    assert loaded._net is None
    out = loaded.to_keras(10).predict(users, verbose=0)
    ref_scores, ref_ids = model.recommend_ids(users.tolist(), 10)
    _same_lists(out["scores"], out["item_ids"], ref_scores, ref_ids)


def test_a_seen_table_too_large_is_refused_with_the_way_out(default_model, monkeypatch):
    from twotower.models import keras_layers
    monkeypatch.setattr(keras_layers, "_SEEN_BYTES", 1000)
    with pytest.raises(ConfigError, match=r"MiB \(120 users x 9, the most items one user has\): "
                                          "pass exclude_seen=False"):
        default_model.to_keras(5)
    assert default_model.to_keras(5, exclude_seen=False).get_layer("retrieval").seen is None


class _WatchedOps:
    """``keras.ops`` recording the largest integer each call returns (eager JAX arrays)."""

    def __init__(self) -> None:
        from keras import ops
        self.ops, self.largest = ops, {}

    def __getattr__(self, name: str):
        f = getattr(self.ops, name)

        def call(*args, **kwargs):
            out = f(*args, **kwargs)
            for v in out if isinstance(out, (tuple, list)) else (out,):
                v = np.asarray(v)
                if v.dtype.kind in "iu" and v.size:
                    self.largest[name] = max(self.largest.get(name, 0), int(np.abs(v).max()))
            return out
        return call


def test_the_layers_index_no_flat_batch_by_catalogue_table(monkeypatch):
    """Every integer the retrieval layers compute indexes one axis (a batch row, a history
    place, an item + 1): none is a flat (row, item) index, which passes int32 once
    batch x (n_items + 1) >= 2**31 (the history layer's latest-place segments did). And an
    item given twice counts at its latest place, as before."""
    import twotower.models.keras_layers as kl
    n, b, t, k = 40, 3, 6, 5
    rng = np.random.default_rng(0)
    hist = kl.HistoryRetrieval(n, 4, k, length=3, pool_dim=4, name="retrieval")
    hist.build()
    hist.history_table.assign(rng.normal(size=(n + 1, 4)).astype(np.float32))
    hist.pool_weights.assign(np.array([1.0, 0.5, 0.25], np.float32))
    hist.candidates.assign(rng.normal(size=(n, 4)).astype(np.float32))
    for table in (hist.poolable, hist.listable):
        table.assign(np.ones(n, np.float32))
    top = kl.TopKRetrieval(7, n, 4, k, seen_width=t, name="retrieval")
    top.build()
    top.queries.assign(rng.normal(size=(7, 4)).astype(np.float32))
    top.candidates.assign(rng.normal(size=(n, 4)).astype(np.float32))
    for table, size in ((top.servable, 7), (top.listable, n)):
        table.assign(np.ones(size, np.float32))
    top.seen.assign(rng.integers(0, n + 1, (7, t)).astype(np.int32))
    watched = _WatchedOps()
    monkeypatch.setattr(kl, "ops", watched)
    histories = np.array([[3, 7, 3, 9, PAD, PAD], [39, 38, 37, 36, 35, 39], [PAD] * 6])
    scores, items = (np.asarray(v) for v in hist(histories.astype(np.int32)))
    top(np.array([0, 6, 2], np.int32))
    assert max(watched.largest.values()) <= max(b, t, n + 1, k), watched.largest
    # [3, 7, 3, 9] pools 9, 3, 7 (latest first); [39, 38, 37, 36, 35, 39] 39, 35, 36
    table, cand = np.asarray(hist.history_table), np.asarray(hist.candidates)
    for row, pooled in ((0, [9, 3, 7]), (1, [39, 35, 36])):
        w = np.array([1.0, 0.5, 0.25], np.float32)
        ref = (w @ table[np.array(pooled) + 1]) / np.sqrt(w.sum()) @ cand.T
        ref[histories[row][histories[row] >= 0]] = -np.inf  # the history's items left out
        best = np.argsort(-ref, kind="stable")[:k]
        assert items[row].tolist() == best.tolist()
        np.testing.assert_allclose(scores[row], ref[best], rtol=1e-5)
