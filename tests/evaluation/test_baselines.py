"""Baselines: planted structure, exclusion, the top-k contract, configs, tuning, ML-100k."""

from __future__ import annotations

import numpy as np
import pytest

from twotower.data import Interactions, random_split, read_movielens_100k
from twotower.errors import ConfigError, DataError, NotFittedError
from twotower.evaluation import (EASE, EASEConfig, HistoryRecommender, ItemKNN, ItemKNNConfig,
                                 MostPop, MostPopConfig, Recommender, recommend_and_evaluate,
                                 topk_excluding, tune)

BLOCK = 10


def two_blocks(seed: int = 0, n_users: int = 40, per_user: int = 6) -> Interactions:
    """Even users like items 0-9, odd users items 10-19; each rated ``per_user`` of them."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(BLOCK, per_user, replace=False) + BLOCK * (u % 2)
                            for u in range(n_users)])
    return Interactions.from_ids(users, items)


def make(cls):
    return {MostPop: lambda: MostPop(), ItemKNN: lambda: ItemKNN(neighbors=8),
            EASE: lambda: EASE(lambda_=5.0)}[cls]()


ALL = [MostPop, ItemKNN, EASE]


@pytest.mark.parametrize("cls", [ItemKNN, EASE])
def test_planted_blocks_recommend_unseen_items_of_own_block(cls):
    x = two_blocks()
    model = make(cls).fit(x)
    users = np.arange(x.n_users)
    seen = model.seen_items(users)
    k = BLOCK - 6  # exactly the unseen items of the user's block
    _, ids = model.recommend(users, k, exclude=seen)
    for u in users:
        want = set(range(BLOCK * (u % 2), BLOCK * (u % 2 + 1))) - set(seen[u].tolist())
        assert set(ids[u].tolist()) == want


def test_mostpop_returns_most_popular_unseen():
    # popularity 5, 4, 3, 2, 1 for items 0..4 (distinct counts: no ties)
    users = [0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 2, 0, 1, 0]
    items = [0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3, 3, 4]
    x = Interactions.from_ids(users, items)
    m = MostPop().fit(x)
    scores, ids = m.recommend(np.array([4, 3]), k=3, exclude=m.seen_items(np.array([4, 3])))
    assert ids.tolist() == [[1, 2, 3], [2, 3, 4]]
    assert scores[0].tolist() == [4.0, 3.0, 2.0]


@pytest.mark.parametrize("cls", ALL)
def test_exclusion_and_padding_beyond_catalogue(cls):
    x = two_blocks()
    model = make(cls).fit(x)
    exclude = [np.arange(0, 20, 2), np.array([], dtype=np.int64)]
    scores, ids = model.recommend(np.array([0, 1]), k=25, exclude=exclude)
    assert ids.shape == scores.shape == (2, 25)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    assert not set(ids[0].tolist()) & set(range(0, 20, 2))
    assert (ids[0, 10:] == -1).all() and np.isneginf(scores[0, 10:]).all()
    assert sorted(ids[1, :20].tolist()) == list(range(20)) and (ids[1, 20:] == -1).all()
    assert (np.diff(scores[1, :20]) <= 0).all()


@pytest.mark.parametrize("cls", ALL)
def test_history_equals_training_row(cls):
    x = two_blocks()
    model = make(cls).fit(x)
    users = np.array([0, 3, 7])
    seen = model.seen_items(users)
    a = model.recommend(users, 5, exclude=seen)
    b = model.recommend_from_history([s[::-1] for s in seen], 5, exclude=seen)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)


@pytest.mark.parametrize("cls", ALL)
def test_protocols_and_unfitted(cls):
    model = make(cls)
    assert isinstance(model, Recommender) and isinstance(model, HistoryRecommender)
    with pytest.raises(NotFittedError, match="call fit first"):
        model.recommend(np.array([0]), 3)
    with pytest.raises(NotFittedError, match="call fit first"):
        model.recommend_from_history([np.array([0])], 3)


def test_bad_arguments_are_named():
    model = EASE(lambda_=5.0).fit(two_blocks())
    with pytest.raises(DataError, match="user index 99"):
        model.recommend(np.array([99]), 3)
    with pytest.raises(ConfigError, match="`k`"):
        model.recommend(np.array([0]), 0)
    with pytest.raises(DataError, match="exclude"):
        model.recommend(np.array([0, 1]), 3, exclude=[np.array([0])])
    with pytest.raises(DataError, match="history item"):
        model.recommend_from_history([np.array([20])], 3)
    with pytest.raises(ConfigError, match="lambda_"):
        EASEConfig(lambda_=0.0)
    with pytest.raises(ConfigError, match="neighbors"):
        ItemKNNConfig(neighbors=-1)


@pytest.mark.parametrize("config", [MostPopConfig(), ItemKNNConfig(neighbors=7, shrink=2.5),
                                    EASEConfig(lambda_=123.0)])
def test_config_json_round_trip(config):
    again = type(config).from_json(config.to_json())
    assert again == config and again.to_dict() == config.to_dict()


def test_constructor_does_no_work_and_takes_overrides():
    m = EASE(EASEConfig(lambda_=1.0), lambda_=2.0)
    assert m.config == EASEConfig(lambda_=2.0) and "unfitted" in repr(m)
    with pytest.raises(ConfigError, match="EASEConfig"):
        EASE(ItemKNNConfig())


def test_ease_weights_match_closed_form():
    x = two_blocks(per_user=4)
    lam = 3.0
    model = EASE(lambda_=lam).fit(x)
    dense = x.to_csr().toarray().astype(np.float64)
    p = np.linalg.inv(dense.T @ dense + lam * np.eye(x.n_items))
    b = np.eye(x.n_items) - p / np.diag(p)
    np.testing.assert_allclose(model._weights, b, atol=1e-5)
    assert np.allclose(np.diag(model._weights), 0.0)


def test_topk_excluding_is_tie_exact():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 30)).astype(np.float32)  # many ties
    exclude = [rng.choice(30, rng.integers(0, 5), replace=False) for _ in range(50)]
    for k in (1, 5, 29, 30):
        masked = scores.copy()
        for row, e in enumerate(exclude):
            masked[row, e] = -np.inf
        want = np.argsort(-masked, axis=1, kind="stable")[:, :k]
        want_scores = np.take_along_axis(masked, want, axis=1)
        want = np.where(np.isneginf(want_scores), -1, want)
        got_s, got = topk_excluding(scores.copy(), k, exclude)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_s, want_scores)


def test_tune_uses_a_validation_split_of_train_only():
    x = two_blocks(n_users=60, per_user=8)
    best, results = tune(EASE, x, {"lambda_": [1.0, 10.0, 1e6]}, seed=0)
    assert [r["config"]["lambda_"] for r in results] == [1.0, 10.0, 1e6]
    scores = [r["metrics"]["recall@10"] for r in results]
    assert best.lambda_ == [1.0, 10.0, 1e6][int(np.argmax(scores))]
    assert best.lambda_ != 1e6  # near-zero weights lose the block structure's advantage
    again = tune(EASE, x, [{"lambda_": 1.0}, {"lambda_": 10.0}, {"lambda_": 1e6}], seed=0)
    assert again.best_config == best
    stages = []  # progress: each setting named as it starts
    tune(EASE, x, {"lambda_": [1.0, 10.0]}, seed=0, stage=stages.append)
    assert stages == ["setting 1 of 2 (lambda_ 1)", "setting 2 of 2 (lambda_ 10)"]
    only = tune(MostPop, x, None, seed=0, stage=stages.append)
    assert only.best_config == MostPopConfig() and len(only.results) == 1
    assert stages[-1] == "setting 1 of 1"
    with pytest.raises(ConfigError, match="split"):
        tune(EASE, x, {"lambda_": [1.0]}, split="nope")


def test_tune_checks_its_metric_and_validation_fraction_before_any_fit(monkeypatch):
    """A metric the ``ks`` do not give was refused only after the first setting's fit (an
    EASE fit takes minutes at 20k items), and a bad ``validation_fraction`` was named
    ``split.test_fraction``."""
    x = two_blocks()
    fits = []
    monkeypatch.setattr(EASE, "_fit", lambda self, m: fits.append(self.config))
    for kw in ({"ks": (5,)}, {"metric": "recal@10"}, {"metric": []}):
        with pytest.raises(ConfigError, match=r"`metric` .* is not among .*recall@"):
            tune(EASE, x, {"lambda_": [1.0, 10.0]}, **kw)
    with pytest.raises(ConfigError, match=r"validation_fraction must be between 0.0 and "
                                          r"1.0, got 1.5"):
        tune(EASE, x, {"lambda_": [1.0]}, validation_fraction=1.5)
    assert fits == []


def _timed_log(seed: int = 0, n_users: int = 30, n_items: int = 25, n: int = 400):
    """Random (user, item) rows with times, repeats included."""
    rng = np.random.default_rng(seed)
    return Interactions.from_ids(rng.integers(0, n_users, n), rng.integers(0, n_items, n),
                                 timestamps=rng.permutation(n).astype(np.int64))


def test_recency_weighted_ease_scores_the_weighted_history_row():
    """EASE(half_life, floor) scores x_w @ B, x_w weighing a user's r-th latest distinct
    item floor + (1 - floor) 0.5^(r / half_life) (a repeated item at its latest time): a
    numpy reference, and the same from the chronological history."""
    x = _timed_log()
    cfg = EASEConfig(lambda_=5.0, half_life=2.0, floor=0.1)
    m = EASE(cfg).fit(x)
    plain = EASE(lambda_=5.0).fit(x)
    np.testing.assert_allclose(m._weights, plain._weights)  # the same B
    for u in (0, 3, 17):
        rows = np.flatnonzero(x.users == u)
        order = rows[np.argsort(x.timestamps[rows], kind="stable")]
        latest_first, seen = [], set()
        for i in x.items[order][::-1]:
            if i not in seen:
                seen.add(i)
                latest_first.append(i)
        q = np.zeros(x.n_items)
        for r, i in enumerate(latest_first):
            q[i] = 0.1 + 0.9 * 0.5 ** (r / 2.0)
        ref = np.argsort(-(q @ plain._weights), kind="stable")[:5]
        got = m.recommend(np.array([u]), 5)
        np.testing.assert_array_equal(got[1][0], ref)
        np.testing.assert_allclose(got[0][0], np.sort(q @ plain._weights)[::-1][:5],
                                   rtol=1e-5)
        again = m.recommend_from_history([x.items[order]], 5)  # oldest first, as TwoTower
        np.testing.assert_array_equal(again[1], got[1])
        np.testing.assert_allclose(again[0], got[0], rtol=1e-6)
    # floor 1 or half-life 0: the plain binary row
    for flat in (EASEConfig(lambda_=5.0, half_life=2.0, floor=1.0),
                 EASEConfig(lambda_=5.0, half_life=0.0, floor=0.1)):
        np.testing.assert_array_equal(EASE(flat).fit(x).recommend(np.arange(5), 5)[1],
                                      plain.recommend(np.arange(5), 5)[1])
    with pytest.raises(ConfigError, match="floor"):
        EASEConfig(floor=1.5)


def test_with_query_equals_a_fit_and_tune_fits_once_per_lambda(monkeypatch):
    x = _timed_log(1)
    base = EASE(lambda_=5.0).fit(x)
    for hl, fl in ((2.0, 0.0), (5.0, 0.5)):
        cfg = EASEConfig(lambda_=5.0, half_life=hl, floor=fl)
        a = base.with_query(cfg).recommend(np.arange(10), 4)
        b = EASE(cfg).fit(x).recommend(np.arange(10), 4)
        np.testing.assert_array_equal(a[1], b[1])
    assert base.config == EASEConfig(lambda_=5.0)  # not changed by with_query
    with pytest.raises(ConfigError, match="only half_life, floor may change"):
        base.with_query(EASEConfig(lambda_=6.0))
    fits = []
    real = EASE._fit
    monkeypatch.setattr(EASE, "_fit", lambda self, m: fits.append(self.config) or real(self, m))
    grid = {"lambda_": [5.0, 50.0], "half_life": [2.0, 5.0], "floor": [0.0, 1.0]}
    cached = tune(EASE, x, grid, seed=0, split="temporal")
    assert [f.lambda_ for f in fits] == [5.0, 50.0]  # one fit per lambda, not per setting
    monkeypatch.setattr(EASE, "query_params", ())  # every setting fitted: the same choice
    fresh = tune(EASE, x, grid, seed=0, split="temporal")
    assert len(fits) == 2 + 8 and fresh.best_config == cached.best_config
    assert [r["metrics"] for r in fresh.results] == [r["metrics"] for r in cached.results]


def test_tune_ease_picks_plain_and_weighted_from_one_tune():
    """tune_ease: the plain EASE is the best binary-query setting, EASE+recency the best
    of all; the unweighted setting first, so it wins ties and a split with nothing to
    score."""
    from twotower.evaluation.baselines import recency_settings, tune_ease
    assert recency_settings((5.0, 10.0), (0.0, 1.0)) == [(0.0, 1.0), (5.0, 0.0), (10.0, 0.0)]
    x = _timed_log(2, n=600)
    settings = recency_settings((2.0,), (0.0, 0.5, 1.0))
    plain, weighted = tune_ease(x, 0, split="temporal", recency=settings,
                                lambdas=[5.0, 50.0])
    res = tune(EASE, x, [{"lambda_": lam, "half_life": h, "floor": f} for lam in (5.0, 50.0)
                         for h, f in settings], 0, split="temporal")
    def score(r):
        return r["metrics"]["recall@10"] + r["metrics"]["ndcg@10"]
    flat = [r for r in res.results if r["config"]["floor"] == 1.0]
    assert plain.to_dict() == max(flat, key=score)["config"] and not plain.weighted
    assert weighted.to_dict() == res.best_config.to_dict()
    alone, none = tune_ease(x, 0, split="temporal", lambdas=[5.0, 50.0])
    assert alone == plain and none is None
    # a log of repeats: every validation metric NaN, the first (plain) setting both times
    users = np.repeat(np.arange(6), 6)
    items = np.tile([0, 1, 2], 12)
    rep = Interactions.from_ids(users, items, timestamps=np.arange(36, dtype=np.int64))
    p, w = tune_ease(rep, 0, split="temporal", recency=settings, lambdas=[5.0])
    assert p == w == EASEConfig(lambda_=5.0, half_life=0.0, floor=1.0)
    # nothing to validate on (one row per user): the first setting, plain, both times
    one = Interactions.from_ids(np.arange(5), np.arange(5), timestamps=np.arange(5))
    assert tune_ease(one, 0, split="temporal", recency=settings, lambdas=[7.0, 9.0]) == (
        EASEConfig(lambda_=7.0), EASEConfig(lambda_=7.0))
    with pytest.raises(ConfigError, match="lambdas"):
        tune_ease(x, 0, lambdas=[])


def test_tune_ease_picks_the_recency_weights_where_the_latest_item_decides(monkeypatch):
    """Sessions: each user's items follow a chain, so the next item follows the latest;
    the weighted query wins there, and the repeated and unweighted settings are scored
    once each."""
    import twotower.evaluation.baselines as base_mod
    from twotower.evaluation.baselines import tune_ease
    grids = []
    real_tune = base_mod.tune
    monkeypatch.setattr(base_mod, "tune",
                        lambda cls, train, grid, *a, **kw: grids.append(grid)
                        or real_tune(cls, train, grid, *a, **kw))
    rng = np.random.default_rng(0)
    users, items = [], []
    for u in range(80):
        start = rng.integers(0, 40)
        for j in range(10):
            users.append(u)
            items.append((start + j) % 40)
    x = Interactions.from_ids(users, items, timestamps=np.arange(len(users)))
    plain, weighted = tune_ease(x, 0, split="temporal",
                                recency=[(2.0, 0.0), (2.0, 0.0), (0.0, 1.0), (5.0, 1.0)],
                                lambdas=[1.0, 10.0])
    assert weighted.weighted and not plain.weighted, (plain, weighted)
    assert [(g["lambda_"], g["half_life"], g["floor"]) for g in grids[0]] == [
        (1.0, 0.0, 1.0), (1.0, 2.0, 0.0), (10.0, 0.0, 1.0), (10.0, 2.0, 0.0)]


def test_recency_ties_in_time_go_to_the_later_row():
    """Two rows at one time: the later row is the more recent (as the model's history)."""
    x = Interactions.from_ids([0, 0, 0, 1, 1], [3, 1, 2, 0, 1],
                              timestamps=np.array([5, 5, 4, 1, 1]))
    users, items, rank = x.recency_ranks()
    got = {(int(u), int(i)): int(r) for u, i, r in zip(users, items, rank)}
    assert got == {(0, 1): 0, (0, 3): 1, (0, 2): 2, (1, 1): 0, (1, 0): 1}


def test_ease_on_movielens_100k(ml100k_dir):
    s = random_split(read_movielens_100k(ml100k_dir), 0.2, seed=42)
    r = recommend_and_evaluate(EASE().fit(s.train), s.train, s.test, ks=(10,))
    assert r["users"] > 900
    assert 0.18 < r["recall@10"] < 0.35, r


@pytest.mark.parametrize("n_items, n_users, rows", [(50, 30, 400), (3000, 500, 20000), (7, 5, 12)])
def test_mostpop_lists_equal_ranking_the_whole_catalogue(n_items, n_users, rows):
    """MostPop ranks the head of its one popularity order per user; the lists (ties by the
    lower index, exclusions, padding past the catalogue) equal the generic path's, which
    scores every item for every user."""
    from twotower.evaluation.baselines import _Baseline
    rng = np.random.default_rng(n_items)
    x = Interactions.from_ids(rng.integers(0, n_users, rows), rng.zipf(1.3, rows) % n_items)
    mp = MostPop().fit(x)
    users = np.arange(x.n_users)
    ex = mp.seen_items(users)
    ex[0] = np.concatenate([ex[0], [-5, 10**9]])  # unknown indices: ignored by both
    for k in (1, 5, x.n_items, x.n_items + 3):
        for e in (None, ex):
            got = mp.recommend(users, k, e)
            want = _Baseline._rank(mp, mp._seen[users], k, e)
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[0], want[0])


def test_topk_excluding_refuses_nan_scores_naming_where():
    # a NaN ranked above lower finite scores: [nan, 1, 2, nan, 0.5] gave [2, 1, 0]
    from twotower.evaluation.baselines import topk_excluding
    with pytest.raises(DataError, match=r"NaN \(row 1, item index 3\)"):
        topk_excluding(np.array([[0.0, 1, 2, 3, 4], [1.0, 1, 2, np.nan, 0.5]]), 3)


def test_itemknn_similarity_is_its_definition():
    """Cosine over the binary user-item matrix with ``shrink`` added to the denominator, no
    item its own neighbour, and per target item only its ``neighbors`` largest kept."""
    x = two_blocks(3)
    m = x.to_csr()
    g = (m.T @ m).toarray().astype(np.float64)
    norms = np.sqrt(np.diag(g))
    ref = g / (np.outer(norms, norms) + 3.0)
    np.fill_diagonal(ref, 0.0)
    full = ItemKNN(neighbors=0, shrink=3.0).fit(x)._sim.toarray()  # a sparse matrix
    np.testing.assert_allclose(full, ref, rtol=1e-5, atol=1e-7)
    cut = ItemKNN(neighbors=5, shrink=3.0).fit(x)._sim.toarray()
    kept = (cut != 0).sum(axis=0)
    assert (kept <= 5).all() and (kept == 5).any()
    np.testing.assert_allclose(np.sort(cut, axis=0)[-5:], np.sort(ref, axis=0)[-5:],
                               rtol=1e-5, atol=1e-7)


def test_a_repeated_pair_counts_once():
    """The user-item matrix the baselines read is binary: a user who clicked an item twice
    counts once for MostPop (and once in EASE's and ItemKNN's Gram matrix)."""
    d = Interactions.from_ids([1, 1, 2], [10, 10, 20])
    assert d.to_csr().data.tolist() == [1.0, 1.0]
    assert MostPop().fit(d)._popularity.tolist() == [1.0, 1.0]


def test_tune_keeps_the_first_of_tied_settings():
    """Two settings that score alike (both keep every neighbour): the first listed wins,
    as the docstring says."""
    x = two_blocks(5)
    assert tune(ItemKNN, x, {"neighbors": [0, 1000]}, seed=0).best_config.neighbors == 0
    assert tune(ItemKNN, x, {"neighbors": [1000, 0]}, seed=0).best_config.neighbors == 1000


def _dense_itemknn(m, neighbors: int, shrink: float) -> np.ndarray:
    """The dense ``[n, n]`` similarity ItemKNN held before it went sparse (the reference)."""
    n = m.shape[1]
    gram = (m.T @ m).toarray().astype(np.float32)
    norms = np.sqrt(np.diag(gram)).astype(np.float32)
    sim = gram / (np.outer(norms, norms) + np.float32(shrink) + 1e-12)
    np.fill_diagonal(sim, 0.0)
    if 0 < neighbors < n - 1:
        order = np.argsort(-sim, axis=0, kind="stable")[neighbors:]
        np.put_along_axis(sim, order, 0.0, axis=0)
    return sim


def _tied_log(seed: int, n_users: int = 30, n_items: int = 16) -> Interactions:
    """Few rows per user over few items (many tied co-occurrence counts), two items no row
    has (zero norms), and a user with no rows."""
    from twotower.data import Vocabulary
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 5, n_users - 1)
    users = np.repeat(np.arange(n_users - 1), per)
    items = rng.integers(0, n_items - 2, len(users))
    return Interactions(users=users, items=items,
                        user_vocab=Vocabulary(np.arange(n_users), name="user"),
                        item_vocab=Vocabulary(np.arange(n_items), name="item"))


@pytest.mark.parametrize("path", ["sparse", "dense"])
@pytest.mark.parametrize("neighbors,shrink", [(1, 0.0), (3, 2.5), (14, 0.0), (15, 1.0),
                                              (100, 0.0), (0, 10.0)])
def test_sparse_itemknn_equals_the_dense_one(monkeypatch, neighbors, shrink, path):
    """The sparse fit (by column blocks of XᵀX) keeps exactly the dense matrix's entries,
    ties to the lower index included (neighbors 14 and 15 are n - 2 and n - 1 of 16 items;
    0 keeps all), and its lists, ranked on the sparse scores or on a dense slab, are
    ``topk_excluding`` of the dense scores: ids and scores, ties, the zero-score fill by
    index, excluded items (repeated, unknown) left out, padding past the catalogue, users
    with no history."""
    import twotower.evaluation.baselines as base
    monkeypatch.setattr(base, "KNN_BLOCK_ENTRIES", 40)  # many blocks of targets and users
    monkeypatch.setattr(base, "KNN_DENSE_SHARE", 0.0 if path == "dense" else np.inf)
    rng = np.random.default_rng(neighbors)
    for seed in range(3):
        x = _tied_log(seed)
        knn = ItemKNN(neighbors=neighbors, shrink=shrink).fit(x)
        ref = _dense_itemknn(x.to_csr(), neighbors, shrink)
        np.testing.assert_array_equal(knn._sim.toarray(), ref)
        n = x.n_items
        users = np.arange(x.n_users)
        histories = [np.flatnonzero(r) for r in x.to_csr().toarray()] + [np.array([], int)]
        for k in (1, 4, n, n + 3):
            for exclude in (None, knn.seen_items(users) + [np.array([], int)],
                            [rng.integers(-2, n + 2, rng.integers(0, n + 1))
                             for _ in histories]):
                got = knn.recommend_from_history(histories, k, exclude)
                rows = knn._history_rows(histories)
                want = topk_excluding(np.asarray(rows @ ref, dtype=np.float32), k,
                                      None if exclude is None else list(exclude))
                np.testing.assert_array_equal(got[1], want[1])
                np.testing.assert_array_equal(got[0], want[0])
        got = knn.recommend(users, 5, knn.seen_items(users))
        want = topk_excluding(np.asarray(x.to_csr() @ ref, dtype=np.float32), 5,
                              knn.seen_items(users))
        np.testing.assert_array_equal(got[1], want[1])


def test_itemknn_memory_grows_with_its_neighbours_not_the_catalogue_squared():
    """5,000 items: the dense [n, n] float32 matrix ItemKNN held was 100 MB; the sparse fit
    and a ranking of 2,000 users stay within a few MB (numpy's and scipy's arrays, as
    tracemalloc sees them)."""
    import tracemalloc
    rng = np.random.default_rng(0)
    n_users, n_items = 2_000, 5_000
    users = np.repeat(np.arange(n_users), 5)
    from twotower.data import Vocabulary
    x = Interactions(users=users, items=rng.integers(0, n_items, len(users)),
                     user_vocab=Vocabulary(np.arange(n_users), name="user"),
                     item_vocab=Vocabulary(np.arange(n_items), name="item"))
    tracemalloc.start()
    try:
        knn = ItemKNN(neighbors=50).fit(x)
        fit_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        u = np.arange(n_users)
        _, ids = knn.recommend(u, 10, knn.seen_items(u))
        rank_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fit_peak < 20 * 2**20 and rank_peak < 20 * 2**20, (fit_peak, rank_peak)
    assert (ids >= 0).all()
