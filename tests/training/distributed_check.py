"""Run in a subprocess with 4 simulated CPU devices (XLA_FLAGS is set before JAX loads).

Trains one small model on one device, data parallel over 4, with row-sharded embedding
tables over 4 and on a 2 x 2 mesh, with column-sharded tables over 4 and on a 2 x 2 mesh,
with the same data order and seed, and prints a JSON report: per-step losses, final tables
and the shardings of the embedding variables (and of the Adagrad accumulators).
Usage: python distributed_check.py OBJECTIVE SPARSE_UPDATES
"""

from __future__ import annotations

import json
import os
import re
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=4").strip()
os.environ["KERAS_BACKEND"] = "jax"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from tiny_training import BATCH, train as train_tiny  # noqa: E402
from twotower.training import DistributionConfig, apply_distribution  # noqa: E402


def train(dist: DistributionConfig, objective: str, sparse: str) -> dict:
    apply_distribution(dist)
    net, loop, x = train_tiny(objective, sparse)
    shard = {}
    for v in (net.user_embedding.embeddings, net.item_embedding.embeddings):
        s = v.value.sharding
        shard[v.path] = {"devices": len(s.device_set), "rows": int(v.shape[0]),
                         "cols": int(v.shape[1]),
                         "shard_shape": list(s.shard_shape(v.value.shape)),
                         "shard_rows": int(s.shard_shape(v.value.shape)[0])}
    for v in loop.optimizer.variables:  # the accumulators follow their tables
        if v.path.endswith("accumulator") and len(v.shape) == 2:
            shard[v.path] = {"shard_shape": list(v.value.sharding.shard_shape(v.value.shape)),
                             "devices": len(v.value.sharding.device_set)}
    # the collectives of one call's compiled program (4 steps of a full batch)
    from twotower.training.loop import _array_batches
    group = next(loop._groups(_array_batches(x, BATCH, False, 0)))[0]
    hlo = loop._compile(loop._state(), BATCH).lower(loop._state(), group).compile().as_text()
    collectives = {op: len(re.findall(rf"= \S+ {op}(-start)?\(", hlo))
                   for op in ("all-reduce", "all-gather", "reduce-scatter", "all-to-all",
                              "collective-permute")}
    return {"losses": loop.step_losses.tolist(), "sparse": loop.sparse, "sharding": shard,
            "collectives": collectives, "input_nice": loop._input_nice(),
            "item_table": np.asarray(net.item_embedding.embeddings).tolist()}


def main() -> None:
    objective, sparse = sys.argv[1], sys.argv[2]
    assert len(jax.devices()) == 4, jax.devices()
    out = {"objective": objective, "single": train(DistributionConfig(), objective, sparse),
           "data_parallel": train(DistributionConfig(data_parallel=4), objective, sparse),
           "sharded": train(DistributionConfig(model_parallel=4), objective, sparse),
           "mesh_2x2": train(DistributionConfig(data_parallel=2, model_parallel=2),
                             objective, sparse),
           "columns": train(DistributionConfig(model_parallel=4, shard_tables="columns"),
                            objective, sparse),
           "columns_2x2": train(DistributionConfig(data_parallel=2, model_parallel=2,
                                                   shard_tables="columns"), objective, sparse)}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
