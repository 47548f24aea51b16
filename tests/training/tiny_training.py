"""The small training run shared by the subprocess checks (``distributed_check.py``,
``multiprocess_check.py``): the tutorial model on a fixed random log, 2 epochs, 4 steps per
jitted call, under whatever distribution the caller has set (imports are lazy: a caller
sets XLA_FLAGS or joins ``jax.distributed`` first)."""

from __future__ import annotations

from typing import Any

import numpy as np

N_USERS, N_ITEMS, ROWS, BATCH, EPOCHS = 48, 64, 2000, 200, 2


def train(objective: str, sparse: str) -> tuple[Any, Any, dict[str, np.ndarray]]:
    """Train and return ``(net, loop, data)``: the same data order and seed every call."""
    import keras

    from twotower.models.config import ModelConfig
    from twotower.models.net import TwoTowerNet
    from twotower.training import LoopConfig, TrainLoop, make_optimizer
    cfg = ModelConfig.preset("tutorial", objective=objective, embedding_dim=8,
                             batch_size=BATCH, epochs=EPOCHS, learning_rate=0.1)
    rng = np.random.default_rng(0)
    x = {"user": rng.integers(0, N_USERS, ROWS).astype("int32"),
         "item": rng.integers(0, N_ITEMS, ROWS).astype("int32"),
         "rating": rng.random(ROWS).astype("float32"),
         "logq": np.full(ROWS, np.log(1 / N_ITEMS), "float32")}
    keras.utils.set_random_seed(7)
    net = TwoTowerNet(N_USERS, N_ITEMS, cfg)
    net.build()
    loop = TrainLoop(net, make_optimizer(cfg), LoopConfig(steps_per_call=4,
                                                          sparse_updates=sparse))
    # with several processes each passes the same arrays and feeds its part of a batch
    loop.fit(x, batch_size=BATCH, epochs=EPOCHS, shuffle=True, seed=3)
    return net, loop, x
