"""Run in a subprocess with 2 simulated CPU devices (XLA_FLAGS is set before JAX loads).

Trains the tutorial model with tables split by columns over the 2 devices through
``TwoTower.fit`` (the product loop) three ways: whole; stopped (Ctrl-C raised in the loop's
40th call) with a checkpoint; resumed from that checkpoint. The same with the tables in
blocks (``shard_tables="blocks"``). Then the same three ways the
``model.fit`` path with batches split over the 2 devices (data parallel: whole batches from
the product's own shuffled stream), stopped as epoch 2 of 3 begins. Prints a JSON report:
whether the resumed tables equal the whole run's, and the restored tables' shard shapes.
Usage: python checkpoint_check.py CHECKPOINT_DIR
"""

from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=2").strip()
os.environ["KERAS_BACKEND"] = "jax"

import numpy as np  # noqa: E402

from test_checkpoint import _data, _fit_cfg, _loop_cfg, _stop_at_epoch  # noqa: E402
from twotower.models import TwoTower  # noqa: E402
from twotower.training import DistributionConfig, TrainLoop, apply_distribution  # noqa: E402


def main(ck: str) -> None:
    apply_distribution(DistributionConfig(model_parallel=2, shard_tables="columns"))
    x, cfg = _data(), _loop_cfg()
    whole = TwoTower(cfg).fit(x, verbose=0)
    run, calls = TrainLoop._run, [0]

    def stopping(loop, state, stacked):
        calls[0] += 1
        if calls[0] == 40:
            raise KeyboardInterrupt
        return run(loop, state, stacked)
    TrainLoop._run = stopping
    try:
        TwoTower(cfg).fit(x, verbose=0, checkpoint=ck)
        stopped = False
    except KeyboardInterrupt:
        stopped = True
    TrainLoop._run = run
    resumed = TwoTower(cfg).fit(x, verbose=0, checkpoint=ck)
    table = resumed._net.item_embedding.embeddings.value
    # tables in blocks: the state's tables are laid out in parts that move between strata;
    # a checkpoint holds them in id order, and the resumed run replays the schedule
    apply_distribution(DistributionConfig(model_parallel=2, shard_tables="blocks"))
    blocks_whole = TwoTower(cfg).fit(x, verbose=0)
    calls[0] = 0
    TrainLoop._run = stopping
    try:
        TwoTower(cfg).fit(x, verbose=0, checkpoint=ck + "-blocks")
        blocks_stopped = False
    except KeyboardInterrupt:
        blocks_stopped = True
    TrainLoop._run = run
    blocks_resumed = TwoTower(cfg).fit(x, verbose=0, checkpoint=ck + "-blocks")
    # model.fit with each batch split over the devices (its resume skips the stream's
    # shuffles of the epochs done)
    apply_distribution(DistributionConfig(data_parallel=2))
    x2 = _data(n_users=300, n_items=200)
    fit_whole = TwoTower(_fit_cfg()).fit(x2, verbose=0)
    try:
        TwoTower(_fit_cfg()).fit(x2, verbose=0, callbacks=[_stop_at_epoch(1)],
                                 checkpoint=ck + "-fit")
    except KeyboardInterrupt:
        pass
    fit_resumed = TwoTower(_fit_cfg()).fit(x2, verbose=0, checkpoint=ck + "-fit")
    print(json.dumps({
        "fit_equal": bool(np.array_equal(fit_resumed.item_embeddings,
                                         fit_whole.item_embeddings)),
        "fit_trained_with": fit_resumed.trained_with,
        "blocks_stopped": blocks_stopped,
        "blocks_trained_with": blocks_resumed.trained_with,
        "blocks_equal": bool(np.array_equal(blocks_resumed.item_embeddings,
                                            blocks_whole.item_embeddings)
                             and np.array_equal(blocks_resumed.user_embeddings,
                                                blocks_whole.user_embeddings)),
        "stopped": stopped,
        "equal": bool(np.array_equal(resumed.item_embeddings, whole.item_embeddings)),
        "max_diff": float(np.abs(resumed.item_embeddings - whole.item_embeddings).max()),
        "trained_with": resumed.trained_with,
        "devices": len(table.sharding.device_set),
        "shard_shape": list(table.sharding.shard_shape(table.shape)),
        "shape": list(table.shape)}))


if __name__ == "__main__":
    main(sys.argv[1])
