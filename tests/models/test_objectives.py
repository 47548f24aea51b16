"""Objectives, masking, log-Q, determinism and the history tower on planted synthetic data."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest
from keras import ops

from twotower.data import Interactions
from twotower.models import ModelConfig, TwoTower
from twotower.models.net import NEG_INF, mask_accidental_hits

N_USERS, N_ITEMS, N_GROUPS = 80, 40, 4


def planted(seed: int = 0, share: float = 0.6) -> tuple[Interactions, np.ndarray]:
    """Users of group g interact with a random ``share`` of group g's items (rating 5) and a
    few others (rating 1). Returns the interactions and each user's group."""
    rng = np.random.default_rng(seed)
    ugroup = np.arange(N_USERS) % N_GROUPS
    igroup = np.arange(N_ITEMS) % N_GROUPS
    users, items, ratings, times = [], [], [], []
    for u in range(N_USERS):
        own = np.flatnonzero(igroup == ugroup[u])
        pos = rng.choice(own, int(share * len(own)), replace=False)
        other = rng.choice(np.flatnonzero(igroup != ugroup[u]), 1, replace=False)
        for i, r in [(i, 5.0) for i in pos] + [(i, 1.0) for i in other]:
            users.append(u); items.append(i); ratings.append(r); times.append(len(times))
    x = Interactions.from_ids(np.array(users), np.array(items), np.array(ratings),
                              np.array(times))
    return x, ugroup


def planted_auc(scores: np.ndarray, x: Interactions, ugroup: np.ndarray) -> float:
    """Share of (unseen own-group item, other-group item) pairs ranked the right way."""
    seen = x.to_csr().toarray() > 0
    igroup = x.item_vocab.ids % N_GROUPS
    wins = []
    for u in range(x.n_users):
        g = ugroup[x.user_vocab.ids[u]]
        pos = scores[u, (igroup == g) & ~seen[u]]
        neg = scores[u, (igroup != g) & ~seen[u]]
        if len(pos) and len(neg):
            wins.append((pos[:, None] > neg[None, :]).mean())
    return float(np.mean(wins))


FAST = dict(epochs=30, embedding_dim=16, learning_rate=0.05, optimizer="adam",
            batch_size=64, validation_freq=1000)
CASES = {
    "mse": dict(query_tower="id", objective="mse", optimizer="adagrad", learning_rate=0.5),
    "softmax": dict(query_tower="id", objective="softmax", temperature=0.5),
    "sampled_softmax": dict(query_tower="id", objective="sampled_softmax", temperature=0.5),
    "sampled_softmax+hard": dict(query_tower="id", objective="sampled_softmax",
                                 temperature=0.5, hard_negatives=24),
    "bpr": dict(query_tower="id+history", objective="bpr"),
    "multinomial": dict(query_tower="history", objective="multinomial", batch_size=16,
                        history_dropout=0.5, item_bias=True, l2=0.1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_objective_ranks_planted_positives(name):
    x, ugroup = planted()
    model = TwoTower(ModelConfig.from_dict({**FAST, **CASES[name]})).fit(x, verbose=0)
    users = np.arange(x.n_users)
    scores = model.query_embeddings(users) @ model.item_embeddings.T
    assert planted_auc(scores, x, ugroup) > 0.8, name
    assert np.isfinite(model.history["loss"]).all()


def test_mask_accidental_hits_masks_duplicates_but_not_the_positive():
    items = np.array([3, 7, 3, 5, 7], dtype=np.int32)
    logits = np.arange(25, dtype=np.float32).reshape(5, 5)
    out = np.asarray(mask_accidental_hits(ops.convert_to_tensor(logits),
                                          ops.convert_to_tensor(items)))
    expected = logits.copy()
    for r, c in [(0, 2), (2, 0), (1, 4), (4, 1)]:  # same item, different row: accidental
        expected[r, c] = NEG_INF
    np.testing.assert_array_equal(out, expected)
    assert np.all(np.diag(out) == np.diag(logits))  # the positives are never masked


def test_log_q_correction_subtracts_log_probability():
    import keras_rs
    logits = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]], dtype=np.float32)
    p = np.array([[0.5, 0.25, 0.125]], dtype=np.float32)
    out = np.asarray(keras_rs.layers.SamplingProbabilityCorrection()(
        ops.convert_to_tensor(logits), ops.convert_to_tensor(p)))
    np.testing.assert_allclose(out, logits - np.log(p), rtol=1e-5, atol=1e-5)
    # popular candidates lose the most: the correction is not a constant shift
    assert (out - logits)[0, 0] < (out - logits)[0, 2]


def test_the_net_s_log_q_correction_is_not_capped_at_keras_rs_default_floor():
    """keras-rs clips the probability at 1e-6 by default: every item with fewer than
    rows / 1e6 interactions (most of a 20M-row log's) got the correction of one with
    rows / 1e6, where the inputs clip at 1e-12."""
    from twotower.models.net import TwoTowerNet
    net = TwoTowerNet(3, 4, ModelConfig.preset("tutorial", objective="sampled_softmax"))
    logits = np.zeros((1, 3), dtype=np.float32)
    p = np.array([[1e-3, 4e-8, 1e-12]], dtype=np.float32)  # one row in 25M rows; the clip
    out = np.asarray(net.logq(ops.convert_to_tensor(logits), ops.convert_to_tensor(p)))
    np.testing.assert_allclose(out, -np.log(p), rtol=1e-5)  # 17.0 and 27.6, not 13.8


@pytest.mark.parametrize("preset", ["tutorial", "default"])
def test_same_seed_same_model(preset):
    x, _ = planted(1)
    cfg = ModelConfig.preset(preset, epochs=3, seed=7)
    a = TwoTower(cfg).fit(x, verbose=0)
    b = TwoTower(cfg).fit(x, verbose=0)
    assert a.history["loss"] == b.history["loss"]
    users = np.arange(x.n_users)
    np.testing.assert_array_equal(a.recommend(users, 5)[1], b.recommend(users, 5)[1])


def test_history_tower_recommends_for_an_unseen_user():
    x, ugroup = planted(2)
    cfg = ModelConfig.from_dict({**FAST, **CASES["multinomial"]})
    model = TwoTower(cfg).fit(x, verbose=0)
    igroup = np.arange(N_ITEMS) % N_GROUPS
    # a new user who liked three items of group 2 (internal indices = external ids here)
    history = model.item_vocab.lookup(np.flatnonzero(igroup == 2)[:3].tolist())
    _, top = model.recommend_from_history([history], k=5, exclude=[history])
    groups = model.item_vocab.ids[top[0]] % N_GROUPS
    assert (groups == 2).mean() >= 0.8
    assert not set(top[0]) & set(history)


def test_id_tower_cannot_recommend_from_history():
    from twotower.errors import ConfigError
    x, _ = planted(3)
    model = TwoTower(ModelConfig.preset("tutorial", epochs=1)).fit(x, verbose=0)
    with pytest.raises(ConfigError, match="history"):
        model.recommend_from_history([np.array([0, 1])], k=3)


def click_log(rows: int = 20_000, users: int = 1_000, items: int = 300, topics: int = 10,
              seed: int = 0) -> Interactions:
    """Clicks without ratings: Zipf popularity (item 0 the most clicked), and 60% of a user's
    clicks within their topic (``user % topics``), the rest over the whole catalogue."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, items + 1)
    u = rng.integers(0, users, rows)
    it = rng.choice(items, rows, p=pop / pop.sum())
    own = rng.random(rows) < 0.6
    for t in range(topics):
        ix = np.flatnonzero(np.arange(items) % topics == t)
        m = own & (u % topics == t)
        it[m] = rng.choice(ix, int(m.sum()), p=pop[ix] / pop[ix].sum())
    return Interactions.from_ids(u, it)


def test_clicks_preset_learns_a_click_log():
    """The README's click-log advice was the tutorial preset with sampled_softmax: its
    Adagrad 0.1 at temperature 1 left the tables near their initial values, lists close to
    random (here Recall@10 0.033, random 0.033, MostPop 0.236). The ``clicks`` preset, as
    it is: 0.319 (benchmarks/probes/click_softmax.py measures it on larger logs)."""
    from twotower.evaluation import MostPop, recommend_and_evaluate
    from twotower.models.retriever import check_streamable
    from twotower.data import random_split
    cfg = ModelConfig.preset("clicks")
    check_streamable(cfg, None)  # `twotower train --stream --preset clicks` trains it
    split = random_split(click_log(), 0.2, 0)
    model = TwoTower(cfg).fit(split.train, verbose=0)
    mine = recommend_and_evaluate(model, split.train, split.test, (10,))["recall@10"]
    pop = recommend_and_evaluate(MostPop().fit(split.train), split.train, split.test,
                                 (10,))["recall@10"]
    assert mine > 3 * 10 / split.train.n_items  # a random ranking: about 10 / 300
    assert mine > 0.9 * pop, (mine, pop)


def test_bpr_reads_the_temperature():
    """``bpr`` divides its score difference by ``temperature``, as the softmax objectives
    divide their logits: with Adagrad (the ``clicks`` preset's 0.5) at temperature 1 the
    tables, initialised in +-0.05, hardly move (the loss stays at log 2: close to random
    lists, ``benchmarks/probes/objective_audit.py``); the preset's temperature 0.1 trains
    them."""
    x, ugroup = planted()
    users = np.arange(x.n_users)
    auc = {}
    for temperature in (1.0, 0.1):
        cfg = ModelConfig.preset("clicks", objective="bpr", embedding_dim=16, batch_size=64,
                                 temperature=temperature, validation_freq=1000)
        model = TwoTower(cfg).fit(x, verbose=0)
        scores = model.query_embeddings(users) @ model.item_embeddings.T
        auc[temperature] = planted_auc(scores, x, ugroup)
    assert auc[0.1] > 0.8 and auc[0.1] > auc[1.0] + 0.1, auc
