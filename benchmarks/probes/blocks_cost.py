"""Probe: where the time of `mse` training with tables in blocks goes (issue 6).

The tutorial model (id towers, `mse`, Adagrad, batch 1,000, 16 steps per call, row-wise
updates) on synthetic rows over a 200k-user / 1M-item catalogue (power-law items), in a
fresh subprocess per setting: one device, and 2 simulated devices with the tables in blocks
(`shard_tables="blocks"`). For each it reports
- `input`: CPU per row of the loop's input path alone (batches, unique rows, placing them on
  the devices; no training), the second of two passes;
- `devices`: every call built and placed beforehand, then only the jitted calls (not waited
  for one by one): examples/s, cores busy and CPU per 1,000 examples, the second of two
  passes;
- `fit`: `TrainLoop.fit`, one epoch after a warm-up, with the input thread at nice 19
  (`input_priority="low"`) and at normal priority: examples/s, how long the main thread
  waited for the input thread, and the input thread's wall and CPU time.
And in this process: one permutation of the epoch against a shuffle of each (stratum,
device) pair's positions on their own (ns per row).

Usage: python benchmarks/probes/blocks_cost.py [--rows N] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NU, NI = 200_000, 1_000_000


def worker(mode: str, rows: int) -> None:
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import keras
    import numpy as np

    import twotower.training.loop as L
    from twotower.models.config import ModelConfig
    from twotower.models.net import TwoTowerNet
    from twotower.training import (DistributionConfig, LoopConfig, TrainLoop,
                                   apply_distribution, make_optimizer)
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, NI + 1) ** 0.9
    x = {"user": rng.integers(0, NU, rows).astype(np.int32),
         "item": rng.choice(NI, rows, p=p / p.sum()).astype(np.int32),
         "rating": rng.random(rows).astype(np.float32)}
    if mode == "blocks":
        apply_distribution(DistributionConfig(model_parallel=2, shard_tables="blocks"))
    cfg = ModelConfig.preset("tutorial", objective="mse", batch_size=1000, embedding_dim=32,
                             epochs=1)
    out: dict = {"mode": mode, "devices": len(jax.devices())}

    def cpu() -> float:
        t = os.times()
        return t.user + t.system

    def new_loop(priority: str = "auto") -> TrainLoop:
        keras.utils.set_random_seed(0)
        net = TwoTowerNet(NU, NI, cfg)
        net.build()
        return TrainLoop(net, make_optimizer(cfg),
                         LoopConfig(steps_per_call=16, input_priority=priority))

    loop = new_loop()
    loop._setup()
    if mode == "blocks":
        loop._pack_blocks(x)  # as fit does first

    def groups(seed: int):
        if mode == "blocks":
            return loop._block_groups(iter(()), 1000, 0, seed, x, True, seed)
        return loop._groups(L._array_batches(x, 1000, True, seed, L._pack_rows(x)))

    for rep in range(2):  # input path alone
        c0, n = cpu(), 0
        for _, sizes in groups(rep):
            n += sizes.sum()
        out["input_ns_per_row"] = (cpu() - c0) / n * 1e9
    calls = [c for c in groups(0) if len(c[1]) == 16]  # devices alone
    state = loop._state()
    for rep, part in enumerate((calls[:40], calls[40:])):
        t0, c0, n = time.perf_counter(), cpu(), 0
        for stacked, sizes in part:
            state, _ = loop._run(state, dict(stacked))
            n += sizes.sum()
        jax.block_until_ready(state)
        dt = time.perf_counter() - t0
        if rep:
            out["devices"] = {"examples_per_s": n / dt, "cores_busy": (cpu() - c0) / dt,
                              "cpu_us_per_1000": (cpu() - c0) / n * 1e9}
    del calls, state
    # fit, with the main thread's and the input thread's time
    stats = {"wait": 0.0, "produce": 0.0, "produce_cpu": 0.0}
    prefetch = L._prefetch

    def timed_prefetch(items, depth, nice=0):  # noqa: ANN001, ANN202
        def produced():
            it = iter(items)
            while True:
                t, c = time.perf_counter(), time.thread_time()
                v = next(it, None)
                stats["produce"] += time.perf_counter() - t
                stats["produce_cpu"] += time.thread_time() - c
                if v is None:
                    return
                yield v
        g = prefetch(produced(), depth, nice)
        while True:
            t = time.perf_counter()
            v = next(g, None)
            stats["wait"] += time.perf_counter() - t
            if v is None:
                return
            yield v
    L._prefetch = timed_prefetch
    out["fit"] = {}
    for priority in ("low", "normal"):
        loop = new_loop(priority)
        loop.fit({k: v[:32_000] for k, v in x.items()}, batch_size=1000, shuffle=False)
        for k in stats:
            stats[k] = 0.0
        loop.fit(x, batch_size=1000, epochs=1, seed=1)
        out["fit"][priority] = {"examples_per_s": loop.examples_per_second[-1],
                                "main_waits_for_input_s": stats["wait"],
                                "input_wall_s": stats["produce"],
                                "input_cpu_s": stats["produce_cpu"]}
    print("RESULT " + json.dumps(out))


def shuffle_cost(n: int) -> tuple[float, float]:
    import numpy as np
    rng = np.random.default_rng(0)
    key = rng.integers(0, 4, n)
    parts = [np.flatnonzero(key == c).astype(np.int32) for c in range(4)]
    best = [1e9, 1e9]
    for _ in range(3):
        t = time.perf_counter()
        rng.permutation(n)
        best[0] = min(best[0], time.perf_counter() - t)
        t = time.perf_counter()
        for part in parts:
            rng.shuffle(part.copy())
        best[1] = min(best[1], time.perf_counter() - t)
    return best[0] / n * 1e9, best[1] / n * 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=6_000_000)
    ap.add_argument("--out", help="the results file (default results/probe-blocks-cost-*)")
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a.rows)
    from _results import results_log
    say, close = results_log(a.out, "blocks-cost", force=a.force)
    say(f"# python benchmarks/probes/blocks_cost.py --rows {a.rows}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
        f"load {os.getloadavg()[0]:.1f}")
    perm, pairs = shuffle_cost(a.rows)
    say(f"shuffle of {a.rows:,} rows: one permutation {perm:.1f} ns per row; each of 4 "
        f"(stratum, device) pairs on its own {pairs:.1f} ns per row")
    for mode in ("one", "blocks"):
        env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[2] / "src"),
             *filter(None, [os.environ.get("PYTHONPATH")])])}
        env["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=2" if mode == "blocks"
                            else "")
        proc = subprocess.run([sys.executable, __file__, "--worker", mode, "--rows",
                               str(a.rows)], env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        r = json.loads(next(x for x in proc.stdout.splitlines()
                            if x.startswith("RESULT "))[7:])
        d = r["devices"]
        name = "1 device" if mode == "one" else "2 devices, tables in blocks"
        say(f"{name}: input path {r['input_ns_per_row']:.1f} ns of CPU per row; calls placed "
            f"beforehand {d['examples_per_s']:,.0f} examples/s, {d['cores_busy']:.2f} cores "
            f"busy, {d['cpu_us_per_1000']:.0f} us of CPU per 1,000 examples "
            f"(load {os.getloadavg()[0]:.1f})")
        for priority, f in r["fit"].items():
            say(f"{name}: fit, input thread {priority}: {f['examples_per_s']:,.0f} "
                f"examples/s; the main thread waited {f['main_waits_for_input_s']:.2f} s for "
                f"input; the input thread {f['input_wall_s']:.2f} s wall, "
                f"{f['input_cpu_s']:.2f} s CPU")
    close()


if __name__ == "__main__":
    main()
