"""Probe: what a training checkpoint costs (``TwoTower.fit(..., checkpoint=...)``).

On a synthetic log of the throughput benchmark's shape (200k users, 1M items, planted
factors; ``--rows`` interactions), the tutorial preset (the id tower with ``mse``: the
product loop) trains ``--epochs`` epochs:
- after one warm-up fit (compilation), without a checkpoint, and with one written every
  ``--every`` seconds (each value given), interleaved,
  ``--repeats`` times each: the training's wall time (``fit_seconds``) and the checkpoints
  written;
- then, alone: one write of the loop's state (the tables and Adagrad's accumulators), its
  size, one read back, and what a resume pays before it trains again: reading the state and
  skipping half an epoch's batches.

Usage: python benchmarks/probes/checkpoint_cost.py [--rows 5_000_000] [--every 600 2]
Output of the run quoted in docs/scaling.md: results/probe-checkpoint-cost-20261205.txt
"""
from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=lambda s: int(s.replace("_", "")), default=5_000_000)
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--every", type=float, nargs="+", default=[600.0, 2.0],
                   help="checkpoint intervals to time beside none (600: the default, which "
                        "in a short run writes only the end-of-training checkpoint)")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()

    from synthetic import Planted, write

    from twotower import ModelConfig, TwoTower, read_interactions
    from twotower.training import TrainLoop
    from twotower.training.checkpoint import Checkpoint
    from twotower.training.loop import _array_batches

    scratch = Path(tempfile.mkdtemp(prefix="ckcost-"))
    path = scratch / "log.parquet"
    write(path, a.rows, Planted(users=a.users, items=a.items))
    x = read_interactions(path, rating_col="rating")
    print(f"{len(x):,} rows, {x.n_users:,} users, {x.n_items:,} items; "
          f"{os.cpu_count()} CPUs", flush=True)
    cfg = ModelConfig.preset("tutorial", epochs=a.epochs)

    saves = {"n": 0}
    save = Checkpoint.save_state

    def counting(self, *args, **kw):
        saves["n"] += 1
        return save(self, *args, **kw)
    Checkpoint.save_state = counting

    TwoTower(cfg.replace(epochs=1)).fit(x, verbose=0)  # compiles the loop: off the clock
    times: dict[str, list[float]] = {"none": [], **{f"every {e:g} s": [] for e in a.every}}
    written: dict[str, list[int]] = {}
    for r in range(a.repeats):
        order = list(times) if r % 2 == 0 else list(times)[::-1]
        for name in order:
            ck = (None if name == "none" else
                  Checkpoint(scratch / f"ck{r}", every_s=float(name.split()[1])))
            saves["n"] = 0
            m = TwoTower(cfg).fit(x, verbose=0, checkpoint=ck)
            times[name].append(m.fit_seconds)
            if ck is not None:
                written.setdefault(name, []).append(saves["n"])
            print(f"repeat {r + 1} {name}: fit {m.fit_seconds:.2f} s"
                  + (f", {saves['n']} checkpoints" if ck is not None else ""), flush=True)
    base = statistics.median(times["none"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:>12}: median fit {med:.2f} s ({', '.join(f'{t:.2f}' for t in ts)}); "
              f"{med / base:.3f} of no checkpoint", flush=True)
    print(f"checkpoints written per training: {written}")

    # one write and one read alone
    m = TwoTower(cfg.replace(epochs=1)).fit(x, verbose=0)
    net = m._net
    from twotower.models.config import make_optimizer
    loop = TrainLoop(net, make_optimizer(cfg, 1))
    loop._setup()
    arrays = [np.asarray(v.value) for v in [*net.trainable_variables,
                                            *net.non_trainable_variables,
                                            *loop.optimizer.variables]]
    ck = Checkpoint(scratch / "one")
    ck.start({"probe": 1})
    t0 = time.perf_counter()
    save(ck, arrays, {"epoch": 1, "batches": 0, "history": []},
         {"steps": np.zeros(0, np.float32)})
    t_write = time.perf_counter() - t0
    size = (scratch / "one" / "state.npz").stat().st_size
    t0 = time.perf_counter()
    got = ck.load_state()
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    loop._restore(got["arrays"])
    t_restore = time.perf_counter() - t0
    inputs = m._inputs(x)
    half = len(x) // cfg.batch_size // 2
    t0 = time.perf_counter()
    for _ in itertools.islice(_array_batches(inputs, cfg.batch_size, True, cfg.seed), half):
        pass
    t_skip = time.perf_counter() - t0
    print(f"state: {len(arrays)} arrays, {size / 1e6:,.1f} MB; write {t_write:.2f} s "
          f"(with fsync), read {t_read:.2f} s, assign {t_restore:.2f} s; skipping half an "
          f"epoch ({half:,} batches) {t_skip:.2f} s")


if __name__ == "__main__":
    main()
