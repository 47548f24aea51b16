"""The objectives' losses computed by hand (the planted-ranking tests pass with the log-Q
correction, the accidental-hit mask, the temperature, l2, hard negatives, the item bias or the
multinomial options left out: a mutation check found each survived)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
from keras import ops
from scipy.special import log_softmax

from twotower.models import ModelConfig
from twotower.models.net import TwoTowerNet


def _net(**kw):
    cfg = ModelConfig.preset("tutorial", embedding_dim=3, **kw)
    net = TwoTowerNet(4, 5, cfg)
    net.build()
    rng = np.random.default_rng(0)
    net.user_embedding.embeddings.assign(rng.normal(size=(4, 3)).astype("float32"))
    net.item_embedding.embeddings.assign(rng.normal(size=(5, 3)).astype("float32"))
    return net


def test_sampled_softmax_loss_by_hand():
    """In-batch logits / temperature - log q, accidental hits masked, diagonal kept."""
    net = _net(objective="sampled_softmax", temperature=0.5)
    item = np.array([1, 1, 3, 0], np.int32)
    logq = np.log(np.array([0.5, 0.5, 0.1, 0.2], np.float32))
    x = {"user": np.array([0, 1, 2, 3], np.int32), "item": item, "logq": logq}
    got = float(net.compute_loss(x=x, y_pred=net(x, training=True)))
    q = np.asarray(net.user_embedding.embeddings)[x["user"]]
    c = np.asarray(net.item_embedding.embeddings)[item]
    z = q @ c.T / 0.5 - logq[None, :]
    z[0, 1] = z[1, 0] = -1e9  # the same item in another row: not a negative
    want = -np.mean(np.diag(log_softmax(z, axis=1)))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_softmax_loss_with_l2_by_hand():
    net = _net(objective="softmax", temperature=0.5, l2=0.1)
    item = np.array([1, 2], np.int32)
    x = {"user": np.array([0, 3], np.int32), "item": item}
    got = float(net.compute_loss(x=x, y_pred=net(x, training=True)))
    q = np.asarray(net.user_embedding.embeddings)[x["user"]]
    t = np.asarray(net.item_embedding.embeddings)
    z = q @ t.T / 0.5
    want = -np.mean(log_softmax(z, axis=1)[np.arange(2), item])
    want += 0.1 * ((q ** 2).sum(1).mean() + (t[item] ** 2).sum(1).mean())
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_multinomial_loss_by_hand():
    """Bias added, temperature, only dropped targets, per-user mean, l2 / n_users."""
    hist = np.array([[2, 3, 0], [1, 4, 5], [0, 0, 0]], np.int32)  # items + 1, 0 = padding
    cfg = ModelConfig(query_tower="history", objective="multinomial", embedding_dim=3,
                      item_bias=True, temperature=0.5, multinomial_targets="dropped",
                      user_weighting="mean", l2=0.3, history_length=3)
    net = TwoTowerNet(3, 5, cfg, history=hist)
    net.build()
    rng = np.random.default_rng(1)
    t = rng.normal(size=(5, 3)).astype("float32")
    b = rng.normal(size=(5, 1)).astype("float32")
    net.item_embedding.embeddings.assign(t)
    net.item_bias.embeddings.assign(b)
    q = rng.normal(size=(3, 3)).astype("float32")
    kept = np.zeros((3, 5), np.float32)
    kept[0, 1] = kept[1, 3] = 1.0  # item 1 of user 0 and item 3 of user 1 were seen
    users = np.arange(3, dtype=np.int32)
    got = float(net._multinomial_loss(users, ops.convert_to_tensor(q),
                                      ops.convert_to_tensor(kept)))
    logp = log_softmax((q @ t.T + b[:, 0]) / 0.5, axis=1)
    per_user = [logp[0, 2] / 2, (logp[1, 0] + logp[1, 4]) / 3, 0.0]
    reg = sum(float((np.asarray(w) ** 2).sum()) for w in
              (net.item_embedding.embeddings, net.history_embedding.embeddings))
    want = -np.mean(per_user) + 0.3 * reg / 3
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_user_features_are_part_of_the_trained_and_served_query():
    """The served query equals the trained one, and its feature part is the features times
    their embeddings."""
    import pandas as pd
    from twotower.data import Interactions
    from twotower.models import TwoTower
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 20, 300), rng.integers(0, 15, 300)
    info = pd.DataFrame({"gender": ["F" if u % 2 else "M" for u in range(20)]},
                        index=pd.Index(list(range(20))))
    x = Interactions.from_ids(users, items, np.ones(300), np.arange(300), user_info=info)
    cfg = ModelConfig.preset("tutorial", objective="softmax", epochs=1, embedding_dim=4,
                             user_features=("gender",))
    model = TwoTower(cfg).fit(x, verbose=0)
    u = np.arange(x.n_users)
    net = model._net
    served = model.query_embeddings(u)
    trained = np.asarray(net.query({"user": u.astype("int32")}))
    np.testing.assert_allclose(served, trained, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        trained - np.asarray(net.user_embedding.embeddings),
        model._user_features.toarray() @ np.asarray(net.user_feature_embedding), atol=1e-6)


def test_hard_negative_mining_keeps_only_the_top_negatives():
    """hard_negatives=1: the positive against the hardest in-batch negative only."""
    net = _net(objective="sampled_softmax", hard_negatives=1)
    item = np.array([0, 1, 2, 3], np.int32)
    logq = np.zeros(4, np.float32)
    x = {"user": np.array([0, 1, 2, 3], np.int32), "item": item, "logq": logq}
    got = float(net.compute_loss(x=x, y_pred=net(x, training=True)))
    q = np.asarray(net.user_embedding.embeddings)
    z = q @ np.asarray(net.item_embedding.embeddings)[item].T
    pos = np.diag(z)
    neg = np.where(np.eye(4, dtype=bool), -np.inf, z).max(axis=1)  # the hardest negative
    want = np.mean(np.logaddexp(pos, neg) - pos)
    np.testing.assert_allclose(got, want, rtol=1e-5)
