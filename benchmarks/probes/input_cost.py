"""Probe: the training loop's input work per call, and one column half's step (issue 6).

Times, for the tutorial model on the table sizes of the 20M benchmark set (200k users,
780k items, batch 1,000, 16 steps per jitted call):
- shuffled batches from 20M in-memory rows (user, item, rating): gathered per batch from
  the three arrays (``_array_batches`` without packing), and from 16-byte packed rows
  (``_pack_rows``, what ``TrainLoop.fit`` uses for 1M rows or more); ns per row;
- placing one call's batches on the devices (``TrainLoop._put``: stack, id check, unique
  rows, transfer), on 1 device and on 2 simulated devices with column-split tables, next
  to the way the loop placed them before (the ids sent along, one
  ``make_array_from_process_local_data`` per array); µs per call;
- with every call's batches placed beforehand, the row-wise `mse` step on one core at
  ``embedding_dim`` 32 and 16: the work of a whole row and of one column half.
Each device setting runs in its own subprocess.

Usage: KERAS_BACKEND=jax python benchmarks/probes/input_cost.py
Output of the run quoted in docs/scaling.md: results/probe-input-cost-20261129.txt
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

NU, NI, B, K = 200_000, 780_000, 1000, 16


def gather() -> dict:
    from twotower.training import loop as L
    n = 20_000_000
    rng = np.random.default_rng(0)
    x = {"user": rng.integers(0, NU, n).astype(np.int32),
         "item": rng.integers(0, NI, n).astype(np.int32),
         "rating": rng.random(n).astype(np.float32)}
    packed = L._pack_rows(x)
    rows = 4_800_000  # the first 300 calls of an epoch
    out = {}
    for name, pk in (("per batch, 3 arrays", None), ("packed rows", packed)):
        best = float("inf")
        for rep in range(3):
            it = L._array_batches(x, B, True, rep, pk)
            next(it)  # the permutation, drawn once per epoch, is not counted
            t0, seen = time.perf_counter(), B
            for b in it:
                seen += len(b["user"])
                if seen >= rows:
                    break
            best = min(best, (time.perf_counter() - t0) / (seen - B) * 1e9)
        out[f"shuffled batches, {name} (ns/row)"] = best
    return out


def put_worker() -> None:
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from twotower.models.config import ModelConfig
    from twotower.models.net import TwoTowerNet
    from twotower.training import (DistributionConfig, LoopConfig, TrainLoop,
                                   apply_distribution, make_optimizer)
    from twotower.training.loop import _host_unique
    ndev = len(jax.devices())
    if ndev > 1:
        apply_distribution(DistributionConfig(model_parallel=ndev, shard_tables="columns"))
    cfg = ModelConfig.preset("tutorial", batch_size=B, epochs=1)
    net = TwoTowerNet(NU, NI, cfg)
    net.build()
    loop = TrainLoop(net, make_optimizer(cfg), LoopConfig(steps_per_call=K))
    loop._setup()
    rng = np.random.default_rng(0)
    group = [{"user": rng.integers(0, NU, B).astype(np.int32),
              "item": rng.integers(0, NI, B).astype(np.int32),
              "rating": rng.random(B).astype(np.float32)} for _ in range(K)]

    def before():  # ids sent along, one transfer per array (the loop until 2f10a2c)
        st = {k: np.stack([b[k] for b in group]) for k in group[0]}
        for r, n in (("user", NU), ("item", NI)):
            st[r + "__unique"], st[r + "__inverse"] = _host_unique(st[r], n)
        if loop._mesh is None:
            return jax.device_put(st)
        whole = NamedSharding(loop._mesh, PartitionSpec())
        split = NamedSharding(loop._mesh, PartitionSpec(None, "batch"))
        return [jax.make_array_from_process_local_data(
            whole if k.endswith("__unique") else split, v) for k, v in st.items()]

    res = {}
    for name, fn in (("now", lambda: loop._put(group)), ("before", before)):
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(100):
                jax.block_until_ready(fn())
            best = min(best, (time.perf_counter() - t0) / 100 * 1e6)
        res[name] = best
    print("RESULT " + json.dumps({"devices": ndev, "put_us_per_call": res}))


def step_worker(dim: int) -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, before XLA starts
    import jax

    from twotower.models.config import ModelConfig
    from twotower.models.net import TwoTowerNet
    from twotower.training import LoopConfig, TrainLoop, make_optimizer
    from twotower.training.loop import _array_batches
    rows = 4_000_000
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, NI + 1) ** 0.9
    x = {"user": rng.integers(0, NU, rows).astype(np.int32),
         "item": rng.choice(NI, rows, p=p / p.sum()).astype(np.int32),
         "rating": rng.random(rows).astype(np.float32)}
    cfg = ModelConfig.preset("tutorial", objective="mse", batch_size=B, embedding_dim=dim,
                             epochs=1)
    net = TwoTowerNet(NU, NI, cfg)
    net.build()
    loop = TrainLoop(net, make_optimizer(cfg), LoopConfig(steps_per_call=K))
    loop.fit({k: v[:64 * B] for k, v in x.items()}, batch_size=B, shuffle=False)  # compile
    loop._setup()
    state = loop._state()
    groups = [g for g, _ in loop._groups(_array_batches(x, B, False, 0))]
    jax.block_until_ready(groups)
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        for g in groups:
            state, _ = loop._run(state, g)
        jax.block_until_ready(state)
        best = min(best, (time.perf_counter() - t0) / (rows / B) * 1e6)
    print("RESULT " + json.dumps({"embedding_dim": dim, "one_core_us_per_step": best}))


def run(args: list[str], devices: int = 1) -> dict:
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    out = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:])


def main() -> None:
    out = gather()
    for ndev in (1, 2):
        r = run(["--put"], ndev)
        for k, v in r["put_us_per_call"].items():
            out[f"placing a call's batches, {ndev} device(s), {k} (us/call)"] = v
    for dim in (32, 16):
        out[f"row-wise mse step on one core, embedding_dim {dim} (us/step)"] = run(
            ["--step", str(dim)])["one_core_us_per_step"]
    for k, v in out.items():
        print(f"{k}: {v:,.1f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--put":
        put_worker()
    elif len(sys.argv) > 2 and sys.argv[1] == "--step":
        step_worker(int(sys.argv[2]))
    else:
        main()
