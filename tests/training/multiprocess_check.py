"""Two processes on this host train one model data parallel (``jax.distributed`` through
``DistributionConfig(coordinator_address=..., num_processes=2, process_id=...)``): each
passes the same in-memory arrays to ``TrainLoop.fit``, which feeds its half of every
global batch; or, with ``single``, one process trains on the whole batches. Prints a JSON report: per-step losses and the final item table.

With ``tables``, the two processes split the embedding tables by rows and both feed the
whole batch (``data_parallel = 1``).

Usage: python multiprocess_check.py single OBJECTIVE
       python multiprocess_check.py PROCESS_ID OBJECTIVE PORT batch|tables
"""

from __future__ import annotations

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"

import numpy as np  # noqa: E402

N_USERS, N_ITEMS, ROWS, BATCH, EPOCHS = 48, 64, 2000, 200, 2


def main() -> None:
    who, objective = sys.argv[1], sys.argv[2]
    from twotower.training import DistributionConfig, apply_distribution
    if who != "single":
        pid, split = int(who), sys.argv[4]
        apply_distribution(DistributionConfig(
            data_parallel=2 if split == "batch" else 1,
            model_parallel=2 if split == "tables" else 1,
            coordinator_address=f"127.0.0.1:{sys.argv[3]}", num_processes=2,
            process_id=pid))
    import jax
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
                                                          sparse_updates="on"))
    # every process passes the same arrays and feeds its part of each global batch
    loop.fit(x, batch_size=BATCH, epochs=EPOCHS, shuffle=True, seed=3)
    table = net.item_embedding.embeddings.value
    if not table.is_fully_addressable:  # spread over the processes: gather it (all join)
        from jax.experimental import multihost_utils
        table = multihost_utils.process_allgather(table, tiled=True)
    print("RESULT " + json.dumps({"process": jax.process_index(),
                                  "processes": jax.process_count(),
                                  # rows per step of the compiled calls: the global batch
                                  "step_rows": sorted({shape[1] for key in loop._fns
                                                       for _, shape, _ in key[1]}),
                                  "devices": len(jax.devices()),
                                  "input_nice": loop._input_nice(),
                                  "losses": loop.step_losses.tolist(),
                                  "item_table": np.asarray(table).tolist()}), flush=True)


if __name__ == "__main__":
    main()
