"""``TwoTower.fit`` trains large catalogues with the product loop when that is exact."""

from __future__ import annotations

import io

import numpy as np

from twotower.data import Interactions
from twotower.models import ModelConfig, TwoTower
from twotower.models.progress import TrainProgress

GROUPS = 5


def _grouped(n_users: int, n_items: int, seed: int = 0) -> Interactions:
    """Users like their group's items (rating 5) and meet a few others (rating 1)."""
    rng = np.random.default_rng(seed)
    users, items, ratings = [], [], []
    for u in range(n_users):
        own = rng.choice(np.arange(u % GROUPS, n_items, GROUPS), 12, replace=False)
        other = rng.integers(0, n_items, 4)
        users += [u] * 16
        items += [*own, *other]
        ratings += [5.0] * 12 + [1.0] * 4
    return Interactions.from_ids(np.array(users), np.array(items),
                                 np.array(ratings, dtype=np.float32))


def _own_group_share(model: TwoTower, x: Interactions) -> float:
    users = np.arange(x.n_users)
    _, top = model.recommend(users, 10)
    same = (model.item_vocab.ids[top] % GROUPS) == (model.user_vocab.ids[users] % GROUPS)[:, None]
    return float(same.mean())


def test_large_tables_train_with_the_loop_and_learn(tmp_path):
    x = _grouped(1500, 600)   # 2,100 table rows >= 16 x batch 64
    cfg = ModelConfig.preset("tutorial", batch_size=64, epochs=3, learning_rate=0.5)
    out = io.StringIO()
    model = TwoTower(cfg).fit(x, verbose=0, callbacks=[TrainProgress(every_s=0.0, out=out,
                                                                     prefix="mine: ")])
    assert model.trained_with.startswith("TrainLoop")
    # the progress callback given is honoured on the loop path: its stream and prefix,
    # every_s 0 = a line for every call (it was dropped: stderr, 10 s)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3 and all(ln.startswith("mine: epoch ") for ln in lines), lines
    assert len(model.history["loss"]) == 3
    assert model.history["loss"][-1] < model.history["loss"][0]
    assert _own_group_share(model, x) > 0.6   # chance: 0.2
    model.save(tmp_path / "run")
    again = TwoTower.load(tmp_path / "run")
    users = np.arange(50)
    np.testing.assert_array_equal(again.recommend(users, 10)[1], model.recommend(users, 10)[1])


def test_small_tables_other_callbacks_or_adam_use_model_fit():
    x = _grouped(1500, 600)
    big = ModelConfig.preset("tutorial", batch_size=64, epochs=1)
    small = ModelConfig.preset("tutorial", batch_size=1000, epochs=1)  # 2,100 < 16,000 rows
    assert TwoTower(small).fit(x, verbose=0).trained_with == "model.fit"
    import keras
    other = keras.callbacks.Callback()  # a Keras callback the loop cannot honour
    assert TwoTower(big).fit(x, verbose=0, callbacks=[other]).trained_with == "model.fit"
    adam = big.replace(optimizer="adam", learning_rate=0.01)  # Adam moves every row
    assert TwoTower(adam).fit(x, verbose=0).trained_with == "model.fit"


def test_side_features_on_a_large_catalogue_train_with_model_fit():
    # the loop's row-wise updates have no rows for feature tables: it crashed ("no id role
    # for variable .../item_feature_embedding") instead of taking model.fit
    import pandas as pd
    x = _grouped(1500, 600)
    info = pd.DataFrame({"genres": [["a", "b", "c"][i % 3] for i in x.item_vocab.ids]},
                        index=x.item_vocab.ids)
    x = Interactions.from_ids(x.user_vocab.ids[x.users], x.item_vocab.ids[x.items], x.ratings,
                              item_info=info)
    cfg = ModelConfig.preset("tutorial", batch_size=64, epochs=1, item_features=("genres",))
    model = TwoTower(cfg).fit(x, verbose=0)
    assert model.trained_with == "model.fit"
    assert model.item_feature_names
