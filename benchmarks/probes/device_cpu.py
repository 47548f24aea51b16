"""Probe: where the 2-simulated-device `mse` run loses throughput (issue 6).

Trains the tutorial model (id towers, `mse`, Adagrad, batch 1,000, 16 steps per call,
row-wise updates) on 2M synthetic rows over a 200k-user / 780k-item catalogue (the table
sizes of the 20M benchmark set), in a fresh subprocess per setting:
- `fit`: `TrainLoop.fit` on in-memory arrays (batches stacked by its background thread);
- `pre`: every call's batches placed on the devices beforehand, then only the jitted calls
  (no input thread at all);
each on 1 device, on 1 device pinned to one core (``sched_setaffinity``: XLA then sizes its
thread pool to one thread), on 2 simulated devices (data parallel) and on 2 simulated
devices with the tables split by columns (``shard_tables="columns"``); and, with every
call placed beforehand, one core at batch 500: the work per step a device would keep if
both the batch and the table work were split over two. Reports examples/s and the
process's CPU seconds per second ("cores busy"), and from them CPU microseconds per step.

Usage: KERAS_BACKEND=jax python benchmarks/probes/device_cpu.py
Output of the runs quoted in docs/scaling.md: results/probe-device-cpu-20261129d.txt (with
the column-split runs, the input thread at low priority under a mesh, ids kept on the host);
results/probe-device-cpu-20261129c.txt (with the batch-500 runs and the one-sort unique); `probe-device-cpu-20261129b.txt` before them;
the earlier `probe-device-cpu-20261129.txt`: 2M rows, before the loop found unique rows on
the host
"""
import json
import os
import subprocess
import sys
import time

ROWS = 8_000_000
NU, NI = 200_000, 780_000
B = int(os.environ.get("PROBE_BATCH", "1000"))


def worker(mode: str) -> None:
    if os.environ.get("PROBE_PIN"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # before XLA starts
    import numpy as np
    import jax
    import keras

    from twotower.models.config import ModelConfig
    from twotower.models.net import TwoTowerNet
    from twotower.training import (DistributionConfig, LoopConfig, TrainLoop,
                                   apply_distribution, make_optimizer)
    from twotower.training.loop import _array_batches
    ndev = len(jax.devices())
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, NI + 1) ** 0.9
    x = {"user": rng.integers(0, NU, ROWS).astype(np.int32),
         "item": rng.choice(NI, ROWS, p=p / p.sum()).astype(np.int32),
         "rating": rng.random(ROWS).astype(np.float32)}
    if ndev > 1:
        shard = os.environ.get("PROBE_SHARD", "")
        apply_distribution(DistributionConfig(data_parallel=ndev) if not shard else
                           DistributionConfig(model_parallel=ndev, shard_tables=shard))
    cfg = ModelConfig.preset("tutorial", objective="mse", batch_size=B, embedding_dim=32,
                             epochs=1)
    keras.utils.set_random_seed(0)
    net = TwoTowerNet(NU, NI, cfg)
    net.build()
    loop = TrainLoop(net, make_optimizer(cfg), LoopConfig(steps_per_call=16))
    loop.fit({k: v[:64 * B] for k, v in x.items()}, batch_size=B, shuffle=False)  # compile
    if mode == "fit":
        c0, t0 = os.times(), time.perf_counter()
        loop.fit(x, batch_size=B, shuffle=False)
    else:
        loop._setup()
        state = loop._state()
        groups = [g for g, _ in loop._groups(_array_batches(x, B, False, 0))]
        jax.block_until_ready(groups)
        c0, t0 = os.times(), time.perf_counter()
        for g in groups:
            state, losses = loop._run(state, g)
            if ndev > 1:
                losses.block_until_ready()  # as the loop does under a mesh
        jax.block_until_ready(state)
    c1, dt = os.times(), time.perf_counter() - t0
    cores = (c1.user - c0.user + c1.system - c0.system) / dt
    steps = ROWS / B
    print("RESULT " + json.dumps({"devices": ndev, "pinned": bool(os.environ.get("PROBE_PIN")),
                                  "mode": mode, "batch": B, "examples_per_s": ROWS / dt,
                                  "cores_busy": cores, "cpu_us_per_step": cores * dt / steps
                                  * 1e6, "wall_us_per_step": dt / steps * 1e6}))


def main() -> None:
    rows = []
    for rep in range(2):
        for mode in ("fit", "pre"):
            settings = [(1, False, 1000, ""), (1, True, 1000, ""), (2, False, 1000, ""),
                        (2, False, 1000, "columns")]
            if mode == "pre":
                settings.append((1, True, 500, ""))
            for ndev, pin, batch, shard in settings:
                env = {**os.environ, "KERAS_BACKEND": "jax", "PROBE_BATCH": str(batch),
                       "PROBE_SHARD": shard}
                if pin:
                    env["PROBE_PIN"] = "1"
                if ndev > 1:
                    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ndev}"
                out = subprocess.run([sys.executable, __file__, "--worker", mode], env=env,
                                     capture_output=True, text=True, check=True).stdout
                r = json.loads(next(l for l in out.splitlines()
                                    if l.startswith("RESULT "))[7:])
                r["repeat"] = rep + 1
                r["shard_tables"] = shard or None
                rows.append(r)
                print(json.dumps(r), flush=True)
    print("\nrepeat | mode | devices | examples/s | cores busy | CPU µs/step | wall µs/step")
    for r in rows:
        dev = (f"{r['devices']}{' (1 core)' if r['pinned'] else ''}"
               f"{', tables split by columns' if r.get('shard_tables') else ''}"
               f"{', batch ' + str(r['batch']) if r['batch'] != 1000 else ''}")
        print(f"{r['repeat']} | {r['mode']} | {dev} | {r['examples_per_s']:,.0f} | "
              f"{r['cores_busy']:.2f} | {r['cpu_us_per_step']:,.0f} | "
              f"{r['wall_us_per_step']:,.0f}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        main()
