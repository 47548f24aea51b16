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

    from tiny_training import train
    net, loop, _ = train(objective, "on")
    from twotower.models.retriever import _split_over_processes
    # what TwoTower.save refuses: tables no single process holds whole
    split = _split_over_processes(net.variables)
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
                                  "split_over_processes": split,
                                  "losses": loop.step_losses.tolist(),
                                  "item_table": np.asarray(table).tolist()}), flush=True)


if __name__ == "__main__":
    main()
