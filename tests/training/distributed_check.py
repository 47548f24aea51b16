"""Run in a subprocess with 4 simulated CPU devices (XLA_FLAGS is set before JAX loads).

Trains one small model on one device, data parallel over 4, with row-sharded embedding
tables over 4 and on a 2 x 2 mesh, with the same data order and seed, and prints a JSON
report: per-step losses, final tables and the shardings of the embedding variables.
Usage: python distributed_check.py OBJECTIVE SPARSE_UPDATES
"""

from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=4").strip()
os.environ["KERAS_BACKEND"] = "jax"

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from twotower.models.config import ModelConfig  # noqa: E402
from twotower.models.net import TwoTowerNet  # noqa: E402
from twotower.training import (DistributionConfig, LoopConfig, TrainLoop,  # noqa: E402
                               apply_distribution, make_optimizer)

N_USERS, N_ITEMS, ROWS, BATCH = 48, 64, 2000, 200


def train(dist: DistributionConfig, objective: str, sparse: str) -> dict:
    apply_distribution(dist)
    cfg = ModelConfig.preset("tutorial", objective=objective, embedding_dim=8,
                             batch_size=BATCH, epochs=2, learning_rate=0.1)
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
    loop.fit(x, batch_size=BATCH, epochs=2, shuffle=True, seed=3)
    shard = {}
    for v in (net.user_embedding.embeddings, net.item_embedding.embeddings):
        s = v.value.sharding
        shard[v.path] = {"devices": len(s.device_set), "rows": int(v.shape[0]),
                         "shard_rows": int(s.shard_shape(v.value.shape)[0])}
    return {"losses": loop.step_losses.tolist(), "sparse": loop.sparse, "sharding": shard,
            "item_table": np.asarray(net.item_embedding.embeddings).tolist()}


def main() -> None:
    objective, sparse = sys.argv[1], sys.argv[2]
    assert len(jax.devices()) == 4, jax.devices()
    out = {"single": train(DistributionConfig(), objective, sparse),
           "data_parallel": train(DistributionConfig(data_parallel=4), objective, sparse),
           "sharded": train(DistributionConfig(model_parallel=4), objective, sparse),
           "mesh_2x2": train(DistributionConfig(data_parallel=2, model_parallel=2),
                             objective, sparse)}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
