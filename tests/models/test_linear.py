"""The closed-form EASE part of the towers (``ModelConfig.ease_weight``) and history pooling."""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest

from twotower.errors import ConfigError, DataError


def _log(seed=0, n_users=60, n_items=40, n=900):
    from twotower.data import Interactions
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n)
    items = (users % 4) * 10 + rng.integers(0, 10, n)  # 4 blocks: learnable structure
    ids = np.unique(users * n_items + items)
    return Interactions.from_ids(ids // n_items, ids % n_items,
                                 timestamps=rng.permutation(len(ids)).astype(np.int64))


def _cfg(**kw):
    from twotower import ModelConfig
    base = dict(query_tower="history", objective="multinomial", embedding_dim=8, epochs=2,
                batch_size=16, optimizer="adam", learning_rate=0.01, history_length=50,
                history_dropout=0.2, recency_half_life=3.0, recency_floor=0.2,
                item_bias=True, ease_weight=0.4, ease_lambdas=(5.0, 50.0),
                ease_half_lives=(3.0,), ease_floors=(0.2, 1.0), ease_rank=6)
    return ModelConfig.from_dict({**base, **kw})


def test_ease_weights_match_the_closed_form_and_reject_a_singular_gram():
    from twotower.evaluation.baselines import ease_weights
    rng = np.random.default_rng(1)
    x = (rng.random((50, 30)) < 0.2).astype(np.float64)
    gram = x.T @ x
    p = np.linalg.inv(gram + 7.0 * np.eye(30))
    ref = np.eye(30) - p / np.diag(p)[None, :]
    for dtype, tol in ((np.float64, 1e-6), (np.float32, 1e-4)):
        b = ease_weights(gram, 7.0, dtype)
        assert np.allclose(b, ref, atol=tol) and np.all(np.diag(b) == 0)
    with pytest.raises(DataError, match="lambda = -100"):
        ease_weights(gram, -100.0)


def test_low_rank_is_as_good_as_the_truncated_svd():
    from twotower.models.linear import low_rank
    rng = np.random.default_rng(2)
    b = (rng.standard_normal((300, 20)) @ rng.standard_normal((20, 300))
         + 0.3 * rng.standard_normal((300, 300))).astype(np.float32)
    u, s, vt = np.linalg.svd(b)
    for r in (10, 20, 200):
        p, q = low_rank(b, r)
        assert p.shape == (300, r) and q.shape == (300, r)
        best = np.linalg.norm(b - (u[:, :r] * s[:r]) @ vt[:r])
        assert np.linalg.norm(b - p @ q.T) <= 1.01 * best


def test_sparse_pooling_matches_the_dense_gather():
    """Duplicates, padding, recency weights and every pooling, against the obvious gather."""
    from twotower import TwoTower
    from twotower.models.retriever import recency_weights
    rng = np.random.default_rng(3)
    hist = rng.integers(0, 12, (7, 9)).astype(np.int32)
    hist[0] = 0  # an empty history
    hist[1, :4] = 5  # a repeated item
    table = rng.standard_normal((12, 4)).astype(np.float32)
    for pooling in ("sqrt", "mean", "sum"):
        for activation in ("linear", "tanh"):
            cfg = _cfg(pooling=pooling, history_activation=activation)
            m = TwoTower(cfg)
            m.history_embeddings = table
            mask = (hist > 0) * recency_weights(9, cfg)
            count = np.maximum(mask.sum(1, keepdims=True), 1.0)
            norm = {"sqrt": np.sqrt(count), "mean": count, "sum": 1.0}[pooling]
            ref = (table[hist] * mask[..., None]).sum(1) / norm
            ref = np.tanh(ref) if activation == "tanh" else ref
            assert np.allclose(m._pool(hist), ref, atol=1e-5)


def test_the_served_score_is_the_weighted_sum_of_the_two_parts():
    from twotower import TwoTower
    x = _log()
    model = TwoTower(_cfg()).fit(x, verbose=0)
    lin, d = model._linear, model.config.embedding_dim
    assert lin is not None and model.item_embeddings.shape[1] == d + 1 + 6
    users = np.arange(x.n_users)
    trained = model._query_part(users)  # [q, 1]
    items = np.array(model._net.item_table())
    items = np.concatenate([items, np.array(model._net.item_bias_vector())[:, None]], 1)
    a = trained @ items.T
    from twotower.models.linear import floor_weights, history_matrix
    xw = history_matrix(model._history, floor_weights(50, lin.half_life, lin.floor), x.n_items + 1)
    e = np.asarray(xw @ lin.query_table) @ lin.item_table.T
    got = model.query_embeddings(users) @ model.item_embeddings.T
    assert np.allclose(got, lin.model_scale * a + e, rtol=1e-4, atol=1e-4)
    # both parts carry weight: the tuned pair is one of the grid, every pair was scored
    assert lin.lambda_ in (5.0, 50.0) and (lin.half_life, lin.floor) in ((3.0, 0.2),
                                                                        (0.0, 1.0))
    assert len(model.ease_tuning["tried"]) == 3  # 2 lambdas, then 1 more recency setting
    assert 0 < lin.model_scale and np.abs(lin.item_table).max() > 0


def test_the_ease_part_scores_like_ease_at_full_rank():
    """Weight ~1 and full rank: the model ranks like unweighted EASE with the tuned lambda."""
    from twotower import TwoTower
    from twotower.evaluation import EASE
    x = _log(seed=4)
    model = TwoTower(_cfg(ease_weight=0.99, ease_rank=40, ease_floors=(1.0,),
                          ease_lambdas=(20.0,))).fit(x, verbose=0)
    users = np.arange(x.n_users)
    ref = EASE(lambda_=20.0).fit(x)._score(x.to_csr()[users])
    got = model.query_embeddings(users) @ model.item_embeddings.T
    top_ref = np.argsort(-ref, 1)[:, :3]
    top_got = np.argsort(-got, 1)[:, :3]
    assert np.mean(top_ref == top_got) > 0.95


def test_history_queries_include_the_ease_part():
    from twotower import TwoTower
    x = _log(seed=5)
    model = TwoTower(_cfg()).fit(x, verbose=0)
    u = 3
    seen = model._history[u][model._history[u] > 0][::-1] - 1  # oldest first
    q = model.history_query_embeddings([seen])
    assert np.allclose(q, model.query_embeddings([u]), atol=1e-5)


def test_save_load_round_trip_keeps_the_ease_part(tmp_path):
    from twotower import TwoTower
    x = _log(seed=6)
    model = TwoTower(_cfg()).fit(x, verbose=0)
    model.save(tmp_path / "run")
    back = TwoTower.load(tmp_path / "run")
    users = np.arange(x.n_users)
    assert np.array_equal(back.query_embeddings(users), model.query_embeddings(users))
    assert np.array_equal(back.item_embeddings, model.item_embeddings)
    assert back.ease_tuning["lambda"] == model.ease_tuning["lambda"]
    s1, i1 = model.recommend(users, 5, model.seen_items(users))
    s2, i2 = back.recommend(users, 5, back.seen_items(users))
    assert np.array_equal(i1, i2)
    # rebuilding the Keras net and re-exporting its tables keeps the EASE columns
    k = TwoTower.load(tmp_path / "run", keras=True)
    k._export_tables()
    assert np.allclose(k.item_embeddings, model.item_embeddings, atol=1e-6)


def test_ease_is_skipped_above_max_items_when_told_and_off_at_weight_zero():
    from twotower import TwoTower
    x = _log(seed=7)
    with pytest.warns(UserWarning, match="ease_max_items.*ease_large = 'skip'"):
        m = TwoTower(_cfg(ease_max_items=10)).fit(x, verbose=0)  # the default: skip
    assert m._linear is None and m.item_embeddings.shape[1] == 9
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        m = TwoTower(_cfg(ease_weight=0.0)).fit(x, verbose=0)
    assert m._linear is None and m.ease_tuning is None


@pytest.mark.parametrize("bad, match", [
    (dict(query_tower="id", objective="softmax"), "needs a history tower"),
    (dict(ease_floors=()), "ease_floors"),
    (dict(ease_floors=(1.5,)), "ease_floors"),
    (dict(ease_half_lives=(-1.0,)), "ease_half_lives"),
    (dict(ease_lambdas=("a",)), "ease_lambdas"),
    (dict(ease_split="weekly"), "ease_split"),
    (dict(ease_weight=1.0), "ease_weight"),
    (dict(ease_weight_grid=(0.5, 1.0)), "ease_weight_grid"),
    (dict(ease_weight_grid=(0.0,)), "ease_weight_grid"),
    (dict(ease_weight_choice="sometimes"), "ease_weight_choice"),
    (dict(ease_large="dense"), "ease_large"),
])
def test_bad_ease_settings_are_named(bad, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(**bad)


def test_weight_settings_the_model_does_not_read_are_listed():
    # the default preset carries a grid: turning the part off must not make it an error
    off = _cfg(ease_weight=0.0, ease_weight_grid=(0.5,), ease_weight_choice="rank_check")
    assert {"ease_weight_grid", "ease_weight_choice"} <= set(off.unread())
    assert _cfg(ease_weight_choice="rank_check").unread()["ease_weight_choice"] == \
        "ease_weight_grid empty"
    assert "ease_weight_choice" not in _cfg(ease_weight_grid=(0.5,)).unread()


def test_cli_tunes_the_ease_part_on_the_runs_split_kind(tmp_path, ml100k_dir):
    import json

    from twotower.cli import main
    run = tmp_path / "run"
    assert main(["train", "--data-dir", str(ml100k_dir), "--split", "temporal", "--epochs",
                 "1", "--out", str(run)]) == 0
    cfg = json.loads((run / "config.json").read_text())["model"]
    assert cfg["ease_split"] == "temporal" and cfg["ease_weight"] > 0
    ease = json.loads((run / "training.json").read_text())["ease"]
    # coordinate search: 7 lambdas (unweighted query), then 4 half-lives x 3 floors below 1
    assert len(ease["tried"]) == 7 + 12 and ease["floor"] in (0.0, 0.2, 0.5, 1.0)
    tried = {(r["lambda"], r["half_life"], r["floor"]) for r in ease["tried"]}
    assert {(r[0]) for r in tried if r[1:] == (0.0, 1.0)} == {20.0, 50.0, 100.0, 200.0, 500.0,
                                                             1000.0, 2000.0}
    assert {r[0] for r in tried if r[1:] != (0.0, 1.0)} == {ease["lambda"]}


def test_floor_weights_by_hand():
    from twotower.models.linear import floor_weights
    assert np.allclose(floor_weights(4, 1.0, 0.5), [1.0, 0.75, 0.625, 0.5625])
    assert np.allclose(floor_weights(3, 2.0, 0.0), [1.0, 0.5 ** 0.5, 0.5])
    assert np.array_equal(floor_weights(3, 0.0, 0.2), [1.0, 1.0, 1.0])
    assert np.array_equal(floor_weights(3, 5.0, 1.0), [1.0, 1.0, 1.0])


def test_histories_are_distinct_items_by_latest_interaction():
    """Repeated (user, item) rows: the history table, history queries and the EASE part's
    query count the item once, at its most recent interaction."""
    from twotower import TwoTower
    from twotower.data import Interactions
    from twotower.models.linear import history_matrix
    from twotower.models.retriever import history_table
    x = Interactions.from_ids([1, 1, 1, 1, 2, 2], [7, 8, 7, 9, 8, 8],
                              timestamps=np.array([1, 2, 3, 4, 5, 6]))
    i7, i8, i9 = x.item_vocab.lookup([7, 8, 9])
    table = history_table(x, 5)
    assert table[0].tolist() == [i9 + 1, i7 + 1, i8 + 1, 0, 0]
    assert table[1].tolist() == [i8 + 1, 0, 0, 0, 0]
    hist = np.array([[3, 2, 3, 0]])
    m = history_matrix(hist, np.array([1.0, 0.5, 0.25, 0.1]), 4, "latest").toarray()
    assert m.tolist() == [[0.0, 0.0, 0.5, 1.0]]
    m = history_matrix(hist, np.array([1.0, 0.5, 0.25, 0.1]), 4).toarray()
    assert m.tolist() == [[0.0, 0.0, 0.5, 1.25]]
    model = TwoTower(_cfg()).fit(_log(seed=8), verbose=0)
    a = model.history_query_embeddings([np.array([1, 2, 3, 1, 4])])
    b = model.history_query_embeddings([np.array([2, 3, 1, 4])])
    assert np.allclose(a, b)


def test_similar_items_compare_the_trained_candidate_vectors(tmp_path):
    from twotower import TwoTower
    model = TwoTower(_cfg()).fit(_log(seed=9), verbose=0)
    width = model.item_embeddings.shape[1] - model._linear.item_table.shape[1]
    v = model.item_embeddings[:, :width]
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    cos = v @ v[3]
    cos[3] = -np.inf
    _, got = model.similar_items(np.array([3]), k=4)
    assert got[0].tolist() == np.argsort(-cos)[:4].tolist()
    model.save(tmp_path / "run")
    _, again = TwoTower.load(tmp_path / "run").similar_items(np.array([3]), k=4)
    assert np.array_equal(got, again)


def test_the_weight_grid_chooses_the_blend_on_validation():
    # ease_weight_grid: the weight is chosen on the EASE tuning split, with the trained part
    # fitted again on that split's training part. A trained part that cannot learn
    # (learning rate ~0) must lose to EASE there: the largest weight wins, and the served
    # score is the blend at that weight.
    from twotower import TwoTower
    x = _log()
    grid = (0.1, 0.5, 0.9)
    weak = TwoTower(_cfg(ease_weight_grid=grid, learning_rate=1e-8)).fit(x, verbose=0)
    tried = weak.ease_tuning["weights_tried"]
    assert [r["weight"] for r in tried] == list(grid)
    assert weak.ease_tuning["weight"] == 0.9
    assert tried[-1]["recall@10"] > tried[0]["recall@10"]
    users = np.arange(x.n_users)
    lin = weak._linear
    a = weak._query_part(users) @ np.concatenate(
        [np.array(weak._net.item_table()),
         np.array(weak._net.item_bias_vector())[:, None]], 1).T
    from twotower.models.linear import floor_weights, history_matrix
    xw = history_matrix(weak._history, floor_weights(50, lin.half_life, lin.floor),
                        x.n_items + 1)
    e = np.asarray(xw @ lin.query_table) @ lin.item_table.T
    # unit-sd parts weighted 0.1 / 0.9 (the same users as TwoTower's own scaling)
    rng = np.random.default_rng(weak.config.seed)
    sample = np.sort(rng.choice(x.n_users, size=min(1024, x.n_users), replace=False))
    assert np.isclose(lin.model_scale * a[sample].std(), 0.1, rtol=1e-3)
    assert np.isclose(e[sample].std(), 0.9, rtol=1e-3)
    # without a grid the configured weight is used and nothing else is fitted
    plain = TwoTower(_cfg()).fit(x, verbose=0)
    assert "weight" not in plain.ease_tuning


def test_rank_zero_chooses_the_rank_on_validation():
    """A rank-embedding_dim EASE part lost a fifth of its recall on a log of item chains
    (an item-item matrix far from low rank): ease_rank 0 raises the rank, on the
    validation split, until the cut keeps 99% of the full-rank part's quality; on block
    structure (low rank) it stays at embedding_dim; an ease_rank given is kept."""
    from twotower import TwoTower
    from twotower.data import Interactions
    from twotower.models.linear import RANK_KEEP
    rng = np.random.default_rng(0)
    n_items, users, items = 120, [], []
    for u in range(300):  # each user walks a chain i -> i + 1 from a random start
        start = rng.integers(0, n_items)
        for j in range(6):
            users.append(u)
            items.append((start + j) % n_items)
    chains = Interactions.from_ids(users, items,
                                   timestamps=np.arange(len(users), dtype=np.int64))
    model = TwoTower(_cfg(ease_rank=0, ease_weight=0.9)).fit(chains, verbose=0)
    t = model.ease_tuning
    tried = {r["rank"]: r["recall@10"] + r["ndcg@10"] for r in t["ranks_tried"]}
    assert list(tried) == ["full", 8, 16, 32, 64][:len(tried)] and t["rank"] > 8
    assert tried[t["rank"]] >= RANK_KEEP * tried["full"] > tried[8]
    assert model._linear.query_table.shape[1] == t["rank"]
    blocks = TwoTower(_cfg(ease_rank=0)).fit(_log(), verbose=0)
    assert blocks.ease_tuning["rank"] == 8 and len(blocks.ease_tuning["ranks_tried"]) == 2
    # with the blend weight chosen too, the rank's record stays (it was dropped)
    both = TwoTower(_cfg(ease_rank=0, ease_weight_grid=(0.3, 0.6))).fit(_log(), verbose=0)
    assert {"rank", "ranks_tried", "weight", "weights_tried"} <= set(both.ease_tuning)
    fixed = TwoTower(_cfg(ease_rank=6)).fit(_log(), verbose=0)
    assert "rank" not in fixed.ease_tuning and fixed._linear.query_table.shape[1] == 6


def _chains(n_items=120, n_users=300, length=6, seed=0):
    """Users walking item chains i -> i + 1: an item-item matrix far from low rank."""
    from twotower.data import Interactions
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        start = rng.integers(0, n_items)
        for j in range(length):
            users.append(u)
            items.append((start + j) % n_items)
    return Interactions.from_ids(users, items,
                                 timestamps=np.arange(len(users), dtype=np.int64))


def test_rank_check_choice_fits_again_only_where_the_cut_loses(monkeypatch):
    """ease_weight_choice 'rank_check': the weight is chosen from the grid (a second fit of
    the trained part) only when the EASE part cut to embedding_dim keeps less than
    WEIGHT_CHECK_KEEP of its full-rank validation score; else ease_weight is kept and the
    trained part is fitted once."""
    from twotower import TwoTower
    from twotower.models.linear import WEIGHT_CHECK_KEEP
    fits = []
    real = TwoTower._trained_scores_on
    monkeypatch.setattr(TwoTower, "_trained_scores_on",
                        lambda self, part: fits.append(len(part)) or real(self, part))
    grid = dict(ease_weight_grid=(0.2, 0.9), ease_weight_choice="rank_check")
    chains = TwoTower(_cfg(ease_rank=0, **grid)).fit(_chains(), verbose=0)
    t = chains.ease_tuning
    full, cut = (r["recall@10"] + r["ndcg@10"] for r in t["ranks_tried"][:2])
    assert t["ranks_tried"][1]["rank"] == 8
    assert t["weight_check"] == {"rank": 8, "keep": round(cut / full, 4), "chose": True}
    assert cut / full < WEIGHT_CHECK_KEEP and "weight" in t and len(fits) == 1
    blocks = TwoTower(_cfg(ease_rank=0, **grid)).fit(_log(), verbose=0)
    t = blocks.ease_tuning
    assert t["weight_check"]["chose"] is False and t["weight_check"]["keep"] >= 0.99
    assert "weight" not in t and len(fits) == 1
    # the configured weight is served: the EASE part's columns carry 0.4 of the spread
    users = np.arange(blocks._seen.shape[0])
    e = blocks._with_linear_query(blocks._query_part(users), blocks._history[users])
    width = blocks._linear.item_table.shape[1]
    rng = np.random.default_rng(blocks.config.seed)
    sample = np.sort(rng.choice(len(users), size=min(1024, len(users)), replace=False))
    ease = e[:, -width:] @ blocks._linear.item_table.T
    assert np.isclose(ease[sample].std(), 0.4, rtol=1e-3)
    # a fixed ease_rank: the check measures its own cut at embedding_dim
    # (the same cut of the same validation B as the rank search measured above)
    fixed = TwoTower(_cfg(ease_rank=6, **grid)).fit(_chains(), verbose=0)
    assert fixed.ease_tuning["weight_check"] == chains.ease_tuning["weight_check"]
    assert "rank" not in fixed.ease_tuning and "weight" in fixed.ease_tuning
    # 'always' (the class default) chooses whenever there is a grid, with no check
    always = TwoTower(_cfg(ease_weight_grid=(0.2, 0.9))).fit(_log(), verbose=0)
    assert "weight" in always.ease_tuning and "weight_check" not in always.ease_tuning


def test_auto_choice_chooses_on_a_temporal_split_and_checks_the_rank_otherwise(monkeypatch):
    """ease_weight_choice 'auto' (the default preset's): with ease_split 'temporal' the
    weight is chosen with no rank check (recorded as the reason); on a random split it is
    'rank_check' (the same check, the same record)."""
    from twotower import TwoTower
    fits = []
    real = TwoTower._trained_scores_on
    monkeypatch.setattr(TwoTower, "_trained_scores_on",
                        lambda self, part: fits.append(len(part)) or real(self, part))
    grid = dict(ease_rank=0, ease_weight_grid=(0.2, 0.9))
    timed = TwoTower(_cfg(ease_weight_choice="auto", ease_split="temporal", **grid)).fit(
        _log(), verbose=0)
    t = timed.ease_tuning
    assert t["weight_check"] == {"split": "temporal", "chose": True}
    assert t["weight"] in (0.2, 0.9) and len(fits) == 1
    # the same log on a random split: the rank check keeps the weight, as 'rank_check' does
    auto = TwoTower(_cfg(ease_weight_choice="auto", ease_split="random", **grid)).fit(
        _log(), verbose=0)
    ranked = TwoTower(_cfg(ease_weight_choice="rank_check", ease_split="random",
                           **grid)).fit(_log(), verbose=0)
    assert auto.ease_tuning["weight_check"] == ranked.ease_tuning["weight_check"]
    assert auto.ease_tuning["weight_check"]["chose"] is False and "weight" not in auto.ease_tuning
    assert len(fits) == 1
    # 'rank_check' on a temporal split still checks
    temporal = TwoTower(_cfg(ease_weight_choice="rank_check", ease_split="temporal",
                             **grid)).fit(_log(), verbose=0)
    assert "rank" in temporal.ease_tuning["weight_check"]
    from twotower.models import ModelConfig
    assert ModelConfig.preset("default").ease_weight_choice == "auto"


def test_train_says_when_the_weight_was_chosen():
    from types import SimpleNamespace

    from twotower.cli import _weight_note
    chosen = {"weight": 0.95, "weight_check": {"rank": 128, "keep": 0.7326, "chose": True}}
    note = _weight_note(SimpleNamespace(ease_tuning=chosen))
    assert note.startswith("EASE part: blend weight 0.95 chosen on validation")
    assert "rank 128" in note and "73%" in note
    kept = {"weight_check": {"rank": 128, "keep": 0.998, "chose": False}}
    assert _weight_note(SimpleNamespace(ease_tuning=kept)) is None
    assert _weight_note(SimpleNamespace(ease_tuning={"weight": 0.3})) == \
        "EASE part: blend weight 0.3 chosen on validation"
    assert _weight_note(SimpleNamespace(ease_tuning=None)) is None
    timed = {"weight": 0.95, "weight_check": {"split": "temporal", "chose": True}}
    note = _weight_note(SimpleNamespace(ease_tuning=timed, config=_cfg(ease_weight=0.4)))
    assert note == ("EASE part: blend weight 0.95 chosen on validation (not ease_weight 0.4; "
                    "the EASE part was tuned on each user's latest items, a temporal split: "
                    "the weight was chosen with a second fit of the trained part)")
    # the weight given chosen again: not named as the one replaced
    same = {"weight": 0.4, "weight_check": {"split": "temporal", "chose": True}}
    note = _weight_note(SimpleNamespace(ease_tuning=same, config=_cfg(ease_weight=0.4)))
    assert note.startswith("EASE part: blend weight 0.4 chosen on validation (the EASE part")
    assert _weight_note(SimpleNamespace(
        ease_tuning={"weight_check": {"split": "temporal", "chose": False}})) is None
    # no full-rank score to keep a share of (every validation item seen: a log of repeats)
    empty = {"weight_check": {"rank": 128, "keep": None, "chose": False}}
    assert _weight_note(SimpleNamespace(ease_tuning=empty)) is None
    # a share just under the threshold is not printed as the threshold itself; the weight
    # the grid replaced is named
    close = {"weight": 0.9, "weight_check": {"rank": 128, "keep": 0.8996, "chose": True}}
    note = _weight_note(SimpleNamespace(ease_tuning=close, config=_cfg(ease_weight=0.7)))
    assert "kept 89% " in note and "under 90%" in note and "not ease_weight 0.7" in note


def test_the_weight_checks_own_cut_is_a_stage():
    """With a fixed rank the check cuts EASE itself: the progress line says so."""
    from twotower.models.linear import tune_and_fit
    stages = []
    x = _chains()
    _, _, ch = tune_and_fit(x, 50, (5.0, 50.0), (3.0,), (1.0,), 6, "random", 0, (0.2, 0.9),
                            lambda part: (lambda u: np.zeros((len(u), x.n_items),
                                                             np.float32)),
                            stage=stages.append, check_rank=8)
    assert ch["weight_check"]["rank"] == 8
    assert any("rank 8" in s and "blend weight" in s for s in stages), stages


def test_the_weight_check_keeps_the_weight_when_validation_has_nothing_to_score():
    """Every validation item also in the split's training part (a log of repeats): the
    validation metrics are NaN, and the check keeps the weight given (it printed
    'nan%' and crashed the train command's note)."""
    from twotower import TwoTower
    from twotower.data import Interactions
    x = Interactions.from_ids([u for _ in range(4) for u in range(5) for _ in range(3)],
                              [i for _ in range(4) for _ in range(5) for i in range(3)])
    m = TwoTower(_cfg(ease_rank=0, ease_weight_grid=(0.2, 0.9),
                      ease_weight_choice="rank_check", recency_half_life=0.0)).fit(
        x, verbose=0)
    assert m.ease_tuning["weight_check"] == {"rank": 3, "keep": None, "chose": False}
    assert "weight" not in m.ease_tuning


def test_auto_on_a_temporal_split_keeps_the_weight_when_validation_has_nothing_to_score(
        monkeypatch):
    """'auto' on a temporal split has no rank check: on a log of repeats (NaN validation
    metrics) it chose the grid's first weight, 0.2, after a second fit for nothing."""
    from twotower import TwoTower
    from twotower.data import Interactions
    fits = []
    real = TwoTower._trained_scores_on
    monkeypatch.setattr(TwoTower, "_trained_scores_on",
                        lambda self, part: fits.append(len(part)) or real(self, part))
    users = [u for _ in range(4) for u in range(5) for _ in range(3)]
    items = [i for _ in range(4) for _ in range(5) for i in range(3)]
    x = Interactions.from_ids(users, items, timestamps=np.arange(len(users), dtype=np.int64))
    m = TwoTower(_cfg(ease_rank=0, ease_weight_grid=(0.2, 0.9), ease_weight_choice="auto",
                      ease_split="temporal", recency_half_life=0.0)).fit(x, verbose=0)
    assert m.ease_tuning["weight_check"] == {"split": "temporal", "chose": False}
    assert "weight" not in m.ease_tuning and fits == []


def test_auto_with_no_time_column_checks_the_rank():
    """ease_split 'temporal' with no timestamps carves a random split: 'auto' checks the
    rank there (it recorded a temporal choice it did not make)."""
    from twotower import TwoTower
    from twotower.data import Interactions
    x = _log()
    plain = Interactions.from_ids(x.user_vocab.ids[x.users], x.item_vocab.ids[x.items])
    m = TwoTower(_cfg(ease_rank=0, ease_weight_grid=(0.2, 0.9), ease_weight_choice="auto",
                      ease_split="temporal")).fit(plain, verbose=0)
    assert "rank" in m.ease_tuning["weight_check"]


def test_joint_search_scores_every_pair_and_keeps_the_best():
    """``ease_search = "joint"``: every lambda with every recency weighting is scored (one
    fit per lambda), the best pair is kept, and it scores at least what the coordinate
    search's choice does, whose path is a subset of the pairs."""
    from twotower.models.linear import tune_and_fit
    x = _chains()
    lambdas, half_lives, floors = (2.0, 20.0, 200.0), (1.0, 3.0), (0.0, 1.0)
    stages: list[str] = []
    _, _, joint = tune_and_fit(x, 50, lambdas, half_lives, floors, 6, "random", 0,
                               joint=True, stage=stages.append)
    _, _, coord = tune_and_fit(x, 50, lambdas, half_lives, floors, 6, "random", 0)
    settings = {(r["lambda"], r["half_life"], r["floor"]) for r in joint["tried"]}
    assert len(joint["tried"]) == len(settings) == 3 * 3  # (0, 1), (1, 0), (3, 0)
    assert len(coord["tried"]) == 3 + 3 - 1
    assert {(r["lambda"], r["half_life"], r["floor"]) for r in coord["tried"]} <= settings
    total = {(r["lambda"], r["half_life"], r["floor"]): r["recall@10"] + r["ndcg@10"]
             for r in joint["tried"]}
    best = (joint["lambda"], joint["half_life"], joint["floor"])
    assert total[best] == max(total.values())
    assert total[best] >= total[(coord["lambda"], coord["half_life"], coord["floor"])]
    assert any("setting 9 of at most 9" in s for s in stages), stages
    assert sum("validation split, setting" in s for s in stages) == 9


def test_joint_search_fits_ease_once_per_lambda(monkeypatch):
    """Lambda is the outer loop: the recency weightings reuse its fit (3 lambdas: 3 fits in
    the search, then the final fit on all of train), not one fit per pair."""
    from twotower.evaluation import baselines
    from twotower.models.linear import tune_and_fit
    fits = []
    real = baselines.ease_weights
    monkeypatch.setattr(baselines, "ease_weights",
                        lambda g, lam, *a, **kw: fits.append(lam) or real(g, lam, *a, **kw))
    _, _, ch = tune_and_fit(_chains(), 50, (2.0, 20.0, 200.0), (1.0, 3.0), (0.0, 1.0), 6,
                            "random", 0, joint=True)
    assert len(ch["tried"]) == 9
    assert fits[:3] == [2.0, 20.0, 200.0] and fits[3:] == [ch["lambda"]]


@pytest.mark.parametrize("value", [0.25, float("nan")])
def test_joint_search_ties_go_to_the_unweighted_query_at_the_first_lambda(monkeypatch, value):
    """Every pair scores the same (or NaN: nothing to score): the first lambda with the
    unweighted query is kept, after all the pairs were scored."""
    from twotower.evaluation import metrics
    from twotower.models.linear import tune_and_fit
    monkeypatch.setattr(metrics, "recommend_and_evaluate",
                        lambda *a, **kw: {"recall@10": value, "ndcg@10": value})
    _, _, ch = tune_and_fit(_chains(), 50, (5.0, 50.0), (3.0,), (0.0, 1.0), 6, "random", 0,
                            joint=True)
    assert len(ch["tried"]) == 4
    assert (ch["lambda"], ch["half_life"], ch["floor"]) == (5.0, 0.0, 1.0)


def test_the_model_passes_its_ease_search_on(monkeypatch):
    from twotower import TwoTower
    from twotower.models import linear
    seen = []
    real = linear.tune_and_fit
    monkeypatch.setattr(linear, "tune_and_fit",
                        lambda *a, **kw: seen.append(kw["joint"]) or real(*a, **kw))
    for search in ("coordinate", "joint"):
        TwoTower(_cfg(ease_search=search)).fit(_log(), verbose=0)
    assert seen == [False, True]
    with pytest.raises(ConfigError, match="ease_search"):
        _cfg(ease_search="grid")


def test_the_blend_scale_is_measured_on_users_with_training_rows():
    """The score spreads that give the blend weight its meaning were measured on users
    drawn among all, those with no training row too (an empty EASE query, an untrained id
    vector): a fifth of the users on a global-temporal MovieLens split."""
    from twotower.data import Interactions
    from twotower.models.linear import scale_users
    x = Interactions.from_ids(list(range(3000)), [u % 7 for u in range(3000)])
    every = scale_users(x, 0)
    np.testing.assert_array_equal(  # all users with rows: the sample drawn before
        every, np.sort(np.random.default_rng(0).choice(3000, 1024, replace=False)))
    part = x.take(np.flatnonzero(np.arange(3000) % 5 != 0))  # every 5th user: no rows
    got = scale_users(part, 0)
    assert len(got) == 1024 and not np.isin(got, np.arange(0, 3000, 5)).any()


def test_coordinate_search_keeps_the_best_of_its_path():
    """The coordinate EASE search (the default's) keeps the best lambda of the unweighted
    rows, then the best recency setting at that lambda (only the joint search was tested)."""
    from twotower.models.linear import tune_and_fit
    _, _, ch = tune_and_fit(_chains(), 50, (2.0, 20.0, 200.0), (1.0, 3.0), (0.0, 1.0), 6,
                            "random", 0)
    tot = {(r["lambda"], r["half_life"], r["floor"]): r["recall@10"] + r["ndcg@10"]
           for r in ch["tried"]}
    by_lambda = {k[0]: v for k, v in tot.items() if k[1:] == (0.0, 1.0)}  # unweighted
    assert len(by_lambda) == 3 and len(set(by_lambda.values())) > 1  # the data tells apart
    assert by_lambda[ch["lambda"]] == max(by_lambda.values())
    at = {k[1:]: v for k, v in tot.items() if k[0] == ch["lambda"]}
    assert at[(ch["half_life"], ch["floor"])] == max(at.values())


def test_temporal_query_recency_is_chosen_with_the_weight_served_and_saved(tmp_path):
    """query_recency_choice 'temporal': where the blend weight is chosen on a temporal
    split, the trained part's query recency is chosen there too (users who switch to a
    random other block of items: the latest items tell which, and half-life 1 beats the
    unweighted query the part was trained with), served by every query and kept by
    save/load; 'fixed' and random splits keep the configuration's weights."""
    from twotower import TwoTower
    grid = dict(ease_weight_choice="auto", ease_split="temporal", ease_weight_grid=(0.2, 0.3),
                ease_half_lives=(1.0, 3.0), ease_floors=(0.0, 1.0), recency_half_life=0.0,
                epochs=8)
    x = _switches()
    model = TwoTower(_cfg(query_recency_choice="temporal", **grid)).fit(x, verbose=0)
    t = model.ease_tuning
    tried = t["query_recency_tried"]
    assert (tried[0]["half_life"], tried[0]["floor"]) == (None, None)  # its own, first
    assert {(r["half_life"], r["floor"]) for r in tried[1:]} == {(0.0, 1.0), (1.0, 0.0),
                                                                (3.0, 0.0)}
    assert t["query_recency"] == [1.0, 0.0]
    assert model._linear.trained_recency == tuple(t["query_recency"])
    own = max(tried[:1] + [r for r in tried if r["half_life"] == 0.0],
              key=lambda r: r["recall@10"] + r["ndcg@10"])
    best = max(tried, key=lambda r: r["recall@10"] + r["ndcg@10"])
    assert best["recall@10"] > 2 * own["recall@10"] and best["half_life"] == 1.0
    users = np.arange(x.n_users)
    d = model.config.embedding_dim + 1  # with the bias column
    served = model.query_embeddings(users)[:, :d]
    assert np.allclose(served, model._query_part(users, model._linear.trained_recency))
    assert not np.allclose(served, model._query_part(users, (0.0, 1.0)), atol=1e-3)
    histories = [np.asarray(x.items[x.users == u][:3]) for u in range(3)]
    assert np.allclose(model.history_query_embeddings(histories)[:, :d],
                       model._with_bias_column(model._pool(
                           _table(histories, model.config.history_length),
                           model._linear.trained_recency)), atol=1e-6)
    model.save(tmp_path / "run")
    loaded = TwoTower.load(tmp_path / "run")
    assert loaded._linear.trained_recency == model._linear.trained_recency
    assert np.array_equal(loaded.recommend(users[:20], 5)[1], model.recommend(users[:20], 5)[1])
    from twotower.errors import ArtifactError
    arrays = tmp_path / "run" / "arrays.npz"
    with np.load(arrays) as z:
        a = {k: z[k] for k in z.files}
    np.savez(arrays, **{**a, "ease_trained_recency": np.array([1.0, 0.0, 5.0])})
    import json

    from twotower.artifacts import _sha256
    fmt = json.loads((tmp_path / "run" / "format.json").read_text())
    fmt["files"]["arrays.npz"] = _sha256(arrays)  # damage the checksums would not catch
    (tmp_path / "run" / "format.json").write_text(json.dumps(fmt))
    with pytest.raises(ArtifactError, match=r"arrays.npz is corrupt: ease_trained_recency "
                                            r"must be \[half_life"):
        TwoTower.load(tmp_path / "run")
    fixed = TwoTower(_cfg(query_recency_choice="fixed", **grid)).fit(x, verbose=0)
    assert "query_recency_tried" not in fixed.ease_tuning
    assert fixed._linear.trained_recency is None
    assert "weight" in fixed.ease_tuning  # the weight is still chosen
    rand = TwoTower(_cfg(query_recency_choice="temporal", **{**grid, "ease_split": "random"})
                    ).fit(x, verbose=0)
    assert "query_recency_tried" not in rand.ease_tuning and rand._linear.trained_recency is None


def _switches(n_users=200, block=20, seed=0):
    """Each user: 8 items of block ``u % 4``, then 4 of a random other block (of 4)."""
    from twotower.data import Interactions
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        a = u % 4
        b = (a + rng.integers(1, 4)) % 4
        for start, n in ((a, 8), (b, 4)):
            items += [start * block + i for i in rng.choice(block, n, replace=False)]
            users += [u] * n
    return Interactions.from_ids(users, items,
                                 timestamps=np.arange(len(users), dtype=np.int64))


def _table(histories, length):
    """A history table (latest first, items + 1, 0-padded) of histories oldest first."""
    out = np.zeros((len(histories), length), dtype=np.int32)
    for r, h in enumerate(histories):
        recent = np.asarray(h)[::-1][:length]
        out[r, :len(recent)] = recent + 1
    return out


def test_query_recency_choice_is_checked_and_read_only_with_a_weight_grid():
    from twotower import ModelConfig
    with pytest.raises(ConfigError, match="query_recency_choice"):
        _cfg(query_recency_choice="always")
    assert ModelConfig.preset("default").query_recency_choice == "temporal"
    from types import SimpleNamespace

    from twotower.cli import _weight_note
    timed = {"weight": 0.3, "weight_check": {"split": "temporal", "chose": True},
             "query_recency": [1.0, 0.0]}
    assert _weight_note(SimpleNamespace(ease_tuning=timed, config=_cfg())).endswith(
        "a second fit of the trained part); with it, the trained part's query recency: "
        "half-life 1, floor 0")
    assert "query_recency_choice" in _cfg(query_recency_choice="temporal").unread()
    assert "query_recency_choice" not in _cfg(query_recency_choice="temporal",
                                              ease_weight_grid=(0.2, 0.9)).unread()
    again = ModelConfig.from_dict(_cfg(query_recency_choice="temporal").to_dict())
    assert again.query_recency_choice == "temporal"


def test_fill_cold_rows_gives_a_cold_item_its_feature_mates_weighted_mean_row():
    """Hand-worked: items 0-2 trained, 3-5 cold. Feature a: items 0 (weight 1) and 1
    (1/sqrt 2); b: items 1 (1/sqrt 2) and 2 (1); c: cold items only."""
    import scipy.sparse as sp

    from twotower.models.linear import fill_cold_rows
    h = 1 / np.sqrt(2)
    feats = sp.csr_matrix(np.array([[1, 0, 0], [h, h, 0], [0, 1, 0],
                                    [1, 0, 0], [h, 0, h], [0, 0, 1]], dtype=np.float32))
    q = np.array([[1.0, 0.0], [0.0, 1.0], [4.0, 4.0], [0, 0], [0, 0], [0, 0]], np.float32)
    cold = np.array([False, False, False, True, True, True])
    out = fill_cold_rows(q, feats, cold)
    mean_a = (1 * q[0] + h * q[1]) / (1 + h)
    mean_b = (h * q[1] + 1 * q[2]) / (h + 1)
    np.testing.assert_allclose(out[:3], q[:3])  # the trained rows as they were
    np.testing.assert_allclose(out[3], mean_a, rtol=1e-6)
    np.testing.assert_allclose(out[4], mean_a, rtol=1e-6)  # c is no trained item's: a alone
    np.testing.assert_array_equal(out[5], 0.0)  # nothing to place it by
    assert fill_cold_rows(q, None, cold) is q


def test_sparse_svd_finds_the_leading_singular_pairs():
    """The randomized SVD of a sparse matrix (the closed form above ``ease_max_items``)
    against numpy's exact one, on a planted low-rank matrix; the exact branch at high rank."""
    import scipy.sparse as sp
    from twotower.models.linear import sparse_svd
    rng = np.random.default_rng(8)
    dense = (rng.random((400, 8)) @ rng.random((8, 300)) > 1.6) * 1.0  # low rank, sparse
    dense += (rng.random((400, 300)) < 0.01)
    x = sp.csr_matrix(dense.astype(np.float32))
    _, s_ref, vt_ref = np.linalg.svd(dense, full_matrices=False)
    for r in (5, 200):
        s, v = sparse_svd(x, r, seed=1)
        assert s.shape == (r,) and v.shape == (300, r) and v.dtype == np.float32
        assert np.allclose(s, s_ref[:r], rtol=2e-2)
        # the leading directions (up to sign): the subspace of the first 5 is the same
        assert np.allclose(np.abs(v[:, :5].T @ vt_ref[:5].T), np.eye(5), atol=0.05)


def test_above_max_items_the_low_rank_ridge_part_is_served_as_the_blend(tmp_path):
    """Above ``ease_max_items`` the closed form is ``V diag(s^2 / (s^2 + lambda)) V^T`` of
    the user-item matrix's SVD (no n x n matrix): served as the same blend, recorded in
    training.json, and a saved run serves the same lists."""
    import json
    import scipy.sparse as sp
    from twotower import TwoTower
    from twotower.models.linear import floor_weights, history_matrix
    x = _log(seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "skipped" warning any more
        model = TwoTower(_cfg(ease_max_items=10, ease_rank=20, ease_large="svd")).fit(
            x, verbose=0)
    lin, d = model._linear, model.config.embedding_dim
    assert lin is not None and model.ease_tuning["form"] == "svd"
    assert model.item_embeddings.shape[1] == d + 1 + 20
    # the served score is the blend formula
    users = np.arange(x.n_users)
    items = np.array(model._net.item_table())
    items = np.concatenate([items, np.array(model._net.item_bias_vector())[:, None]], 1)
    a = model._query_part(users) @ items.T
    xw = history_matrix(model._history, floor_weights(50, lin.half_life, lin.floor),
                        x.n_items + 1, "latest")
    e = np.asarray(xw @ lin.query_table) @ lin.item_table.T
    got = model.query_embeddings(users) @ model.item_embeddings.T
    assert np.allclose(got, lin.model_scale * a + e, rtol=1e-4, atol=1e-4)
    # its item-item matrix is the low-rank ridge of the training matrix, up to the scale w / sd
    _, s, vt = np.linalg.svd(x.to_csr().toarray(), full_matrices=False)
    g = s[:20] ** 2 / (s[:20] ** 2 + lin.lambda_)
    ref = (vt[:20].T * g) @ vt[:20]
    b = lin.query_table[1:] @ lin.item_table.T
    scale = float((b * ref).sum() / (ref * ref).sum())
    assert scale > 0 and np.allclose(b, scale * ref, atol=1e-3 * np.abs(ref).max() * scale)
    assert not sp.issparse(b) and lin.lambda_ in (5.0, 50.0)
    # saved and loaded: the same lists, the choice in training.json
    model.save(tmp_path / "run")
    back = TwoTower.load(tmp_path / "run")
    _, i1 = model.recommend(users, 5, model.seen_items(users))
    _, i2 = back.recommend(users, 5, back.seen_items(users))
    assert np.array_equal(i1, i2)
    ease = json.loads((tmp_path / "run" / "training.json").read_text())["ease"]
    assert ease["form"] == "svd" and ease["lambda"] == lin.lambda_


def test_at_or_below_max_items_the_part_is_ease():
    from twotower import TwoTower
    x = _log(seed=9)
    model = TwoTower(_cfg(ease_max_items=x.n_items)).fit(x, verbose=0)
    assert model.ease_tuning["form"] == "ease"


def test_train_says_when_the_closed_form_part_is_not_ease():
    from types import SimpleNamespace

    from twotower.cli import _form_note
    svd = {"form": "svd", "rank": 256, "lambda": 200.0}
    note = _form_note(SimpleNamespace(ease_tuning=svd, config=_cfg(ease_max_items=20_000)))
    assert note == ("closed-form part: the low-rank ridge of a rank-256 SVD of the user-item "
                    "matrix (lambda 200), not EASE: the catalogue is above "
                    "model.ease_max_items = 20,000")
    assert _form_note(SimpleNamespace(ease_tuning={"form": "ease", "lambda": 5.0})) is None
    assert _form_note(SimpleNamespace(ease_tuning=None)) is None


def test_above_max_items_the_rank_is_chosen_from_one_svd():
    """``ease_rank = 0`` with the low-rank ridge: lambda searched at the smallest rank,
    then the ranks compared at that lambda against the largest (cuts of one SVD)."""
    from twotower import TwoTower
    x = _log(seed=10)
    model = TwoTower(_cfg(ease_max_items=10, ease_rank=0, ease_large="svd")).fit(x, verbose=0)
    t = model.ease_tuning
    assert t["form"] == "svd" and t["rank"] in (8, 16, 32, 40)
    assert [r["rank"] for r in t["ranks_tried"]][0] == "full"
    assert model._linear.query_table.shape[1] == t["rank"]
    assert len(t["tried"]) == 3 and t["lambda"] in (5.0, 50.0)


def test_validation_scores_are_batched_by_cells_not_a_fixed_user_count(monkeypatch):
    """The validation metrics of the search, the rank choice and the weight grid score a
    dense ``[users, n_items]`` batch each: at most ``VALIDATION_CELLS`` cells, not 1,024
    users whatever the catalogue (about 34 GB of scores and top-k temporaries at a million
    items); the choices are the same as with one batch."""
    from twotower.models import linear
    x = _log(seed=3)
    sizes = []
    real = linear._Scores.recommend

    def spy(self, users, k, exclude=None):
        sizes.append(len(users))
        return real(self, users, k, exclude)

    monkeypatch.setattr(linear._Scores, "recommend", spy)
    rng = np.random.default_rng(0)
    u_vec, i_vec = rng.standard_normal((x.n_users, 4)), rng.standard_normal((x.n_items, 4))

    def fit():
        sizes.clear()
        return linear.tune_and_fit(
            x, 50, (5.0, 50.0), (3.0,), (0.2, 1.0), 8, "random", 0, (0.3, 0.6),
            lambda _part: (lambda users, recency=None: (u_vec[users] @ i_vec.T)
                           .astype(np.float32)),
            ranks=(8, 16), form="svd")

    *_, whole = fit()
    assert max(sizes) * x.n_items > 200  # the log's validation users fill one batch of 1,024
    monkeypatch.setattr(linear, "VALIDATION_CELLS", 200, raising=False)
    *_, batched = fit()
    assert max(sizes) * x.n_items <= 200 and min(sizes) >= 1
    assert "weights_tried" in batched and len(batched["ranks_tried"]) >= 2
    assert batched == whole
    assert linear.validation_batch(10**9) == 1 and linear.validation_batch(10) == 20
