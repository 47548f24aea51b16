"""Run in a subprocess with 4 simulated CPU devices (XLA_FLAGS is set before JAX loads).

Trains the tutorial model (``mse``) with ``shard_tables="blocks"`` on 2 and on 4 devices,
from in-memory arrays and from a stream of batches (a small buffer: many strata, tables
moved often, padded steps), and then, on one device, trains the same initial model on the
same examples in the same order: each blocks step's examples as one batch (their
weights scaled by ``real / batch_size``, so each example weighs ``1 / batch_size`` in
both). Row-wise updates of disjoint rows commute, so both must give the same step losses
and tables. Prints a JSON report. Usage: python blocks_check.py
"""

from __future__ import annotations

import json
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=4").strip()
os.environ["KERAS_BACKEND"] = "jax"

import jax  # noqa: E402
import numpy as np  # noqa: E402

BATCH, ROWS, EPOCHS, STEPS = 40, 1500, 2, 4


def data(n_users: int, n_items: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {"user": rng.integers(0, n_users, ROWS).astype("int32"),
            "item": (rng.zipf(1.5, ROWS) % n_items).astype("int32"),  # uneven blocks
            "rating": rng.random(ROWS).astype("float32"),
            "weight": rng.uniform(0.5, 1.5, ROWS).astype("float32")}


def make(n_users: int, n_items: int, dist) -> tuple:
    import keras

    from twotower.models.config import ModelConfig
    from twotower.models.net import TwoTowerNet
    from twotower.training import (LoopConfig, TrainLoop, apply_distribution,
                                   make_optimizer)
    apply_distribution(dist)
    cfg = ModelConfig.preset("tutorial", objective="mse", embedding_dim=8,
                             batch_size=BATCH, epochs=EPOCHS, learning_rate=0.1)
    keras.utils.set_random_seed(7)
    net = TwoTowerNet(n_users, n_items, cfg)
    net.build()
    loop = TrainLoop(net, make_optimizer(cfg),
                     LoopConfig(steps_per_call=STEPS, sparse_updates="on",
                                blocks_buffer_rows=300))
    return net, loop


def stream(x: dict[str, np.ndarray]):
    from twotower.training.loop import _array_batches
    return lambda epoch: _array_batches(x, BATCH, True, 11 + epoch)


def calls_of(loop, x: dict[str, np.ndarray], streamed: bool) -> list[list[dict]]:
    """Per epoch, the blocks schedule's calls as the loop builds them (host arrays)."""
    from twotower.training.blocks import array_calls, pack, stratify
    p, n_rows = loop._blocks, {"user": loop.net.n_users, "item": loop.net.n_items}
    out = []
    for epoch in range(EPOCHS):
        if streamed:
            calls = stratify(stream(x)(epoch), devices=p, batch_size=BATCH, steps=STEPS,
                             moving=loop._moving, n_rows=n_rows, buffer_rows=300)
        else:
            calls = array_calls(pack(x, devices=p, moving=loop._moving, n_rows=n_rows),
                                devices=p, batch_size=BATCH, steps=STEPS, shuffle=True,
                                seed=3 + epoch, epoch=epoch)
        out.append(list(calls))
    return out


def global_steps(calls: list[dict], p: int, moving: str, n_rows: dict[str, int]):
    """Each step of ``calls`` as one batch of global ids (padding dropped), with its
    weights scaled by real / BATCH; and each step's real row count."""
    steps, reals = [], []
    for c in calls:
        s = c["__stratum"]
        for t in range(len(c["__rows"])):
            parts = []
            for j in range(p):
                u, i = c["user"][j, t], c["item"][j, t]
                real = u < -(-n_rows["user"] // p)
                mb = (j + s) % p  # the moving table's block on device j
                ub, ib = (mb, j) if moving == "user" else (j, mb)
                parts.append({"user": u[real] * p + ub, "item": i[real] * p + ib,
                              "rating": c["rating"][j, t][real],
                              "weight": c["weight"][j, t][real]})
            step = {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}
            n = len(step["user"])
            assert n == c["__rows"][t]
            step["weight"] = step["weight"] * np.float32(n / BATCH)
            steps.append(step)
            reals.append(n)
    return steps, reals


def run(p: int, n_users: int, n_items: int, streamed: bool) -> dict:
    from twotower.training import DistributionConfig
    x = data(n_users, n_items)
    net, loop = make(n_users, n_items,
                     DistributionConfig(model_parallel=p, shard_tables="blocks"))
    if streamed:
        loop.fit(stream(x), epochs=EPOCHS)
    else:
        loop.fit(x, batch_size=BATCH, epochs=EPOCHS, shuffle=True, seed=3)
    state = loop._block_state()
    shard = []
    for leaf, role in zip(jax.tree_util.tree_leaves(state), loop._leaf_roles):
        if role:
            shard.append({"role": role, "rows": int(leaf.shape[0]),
                          "devices": len(leaf.sharding.device_set),
                          "shard_rows": int(leaf.sharding.shard_shape(leaf.shape)[0])})
    got = {"losses": loop.step_losses.tolist(),
           "user": np.asarray(net.user_embedding.embeddings).tolist(),
           "item": np.asarray(net.item_embedding.embeddings).tolist()}
    calls = calls_of(loop, x, streamed)
    n_rows = {"user": n_users, "item": n_items}
    epochs = [global_steps(c, p, loop._moving, n_rows) for c in calls]
    strata = [c["__stratum"] for cs in calls for c in cs]
    padded = sum(int((c["__rows"] < BATCH).sum()) for cs in calls for c in cs)
    # the same initial model on one device, the same steps in the same order
    ref_net, ref_loop = make(n_users, n_items, DistributionConfig())
    ref_loop.fit(lambda e: iter(epochs[e][0]), epochs=EPOCHS)
    reals = np.concatenate([np.array(e[1]) for e in epochs])
    return {"p": p, "moving": loop._moving, "sharding": shard, "got": got,
            "ref": {"losses": (ref_loop.step_losses * BATCH / reals).tolist(),
                    "user": np.asarray(ref_net.user_embedding.embeddings).tolist(),
                    "item": np.asarray(ref_net.item_embedding.embeddings).tolist()},
            "moves": int(sum(a != b for a, b in zip(strata, strata[1:]))),
            "padded_steps": padded, "rows_trained": int(reals.sum())}


def refused() -> dict[str, str]:
    """The messages of blocks runs that would not train one device's model."""
    import keras

    from twotower.errors import ConfigError
    from twotower.models.config import ModelConfig
    from twotower.models.net import TwoTowerNet
    from twotower.training import (DistributionConfig, LoopConfig, TrainLoop,
                                   apply_distribution, make_optimizer)
    out = {}
    x = data(57, 203)
    for name, objective, sparse in (("sampled_softmax", "sampled_softmax", "on"),
                                    ("dense", "mse", "off")):
        apply_distribution(DistributionConfig(model_parallel=2, shard_tables="blocks"))
        cfg = ModelConfig.preset("tutorial", objective=objective, embedding_dim=8,
                                 batch_size=BATCH, epochs=1)
        keras.utils.set_random_seed(7)
        net = TwoTowerNet(57, 203, cfg)
        net.build()
        loop = TrainLoop(net, make_optimizer(cfg), LoopConfig(sparse_updates=sparse))
        try:
            loop.fit({**x, "logq": np.zeros(ROWS, "float32")} if objective != "mse" else x,
                     batch_size=BATCH)
            out[name] = "trained"
        except ConfigError as exc:
            out[name] = str(exc)
    return out


def main() -> None:
    assert len(jax.devices()) == 4, jax.devices()
    out = {"p2_memory": run(2, 57, 203, False), "p4_stream": run(4, 203, 57, True),
           "refused": refused()}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
