"""Probe: where the streamed input's CPU goes, stage by stage, next to the in-memory input.

The training loop's input thread prepares every call's batches. With data in memory that is
slicing, stacking 16 batches, checking ids and finding each step's unique rows; a stream
first decodes Parquet, maps ids through the vocabularies, shuffles through its bounded
buffer and cuts batches. This times the stream's stages cumulatively (each line runs the
pipeline up to that stage), then the same per-call work the loop adds, for both inputs, on
the first ``--rows`` rows of the 20M benchmark set (``mse`` inputs, batch 1,000, 16 steps
per call, 262,144-row shuffle buffer). CPU time of this process per row, the best of 3.

Usage: KERAS_BACKEND=jax python benchmarks/probes/stream_stages.py [--rows 4000000]
(the set is written first when ``/tmp/twotower-bench`` lacks it, as the throughput benchmark
does). Output of the run quoted in docs/scaling.md: results/probe-stream-stages-20261129.txt

With ``--src DIR [DIR ...]`` (``src`` folders of twotower checkouts, e.g. a ``git worktree``
of an earlier commit), it runs itself once per folder, in turn, ``--repeats`` times, each in
a fresh process with that folder first on ``PYTHONPATH``, and writes every run's table, the
load average around it, and the best and median of each stage per folder to
``results/probe-stream-stages-<time>.txt`` (``--out`` names another file).
"""
from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

B, K, BUFFER = 1000, 16, 262_144
N_USERS, N_ITEMS = 200_000, 1_000_000


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=4_000_000)
    p.add_argument("--file-rows", type=int, default=20_000_000)
    p.add_argument("--work", default="/tmp/twotower-bench")
    p.add_argument("--src", nargs="+", default=None,
                   help="twotower src folders to compare, run in turn (see above)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None)
    p.add_argument("--force", action="store_true")
    a = p.parse_args()
    if a.src:
        return compare(a)
    from synthetic import Planted, write
    from twotower.training.loop import _array_batches, _check_ids, _host_unique
    from twotower.training.stream import InteractionStream, StreamConfig, rebatch

    path = Path(a.work) / f"syn-{a.file_rows}-{N_USERS}-{N_ITEMS}-s0.parquet"
    if not path.is_file():
        write(path, a.file_rows, Planted(N_USERS, N_ITEMS, seed=0), seed=1)
    s = InteractionStream(path, StreamConfig(user_col="user_id", item_col="item_id",
                                             rating_col="rating", shuffle_buffer=BUFFER))
    s.scan()
    inputs = s.model_inputs("mse")
    n_want = a.rows

    def count(it, key=None) -> int:
        n = 0
        for b in it:
            n += b.num_rows if key is None else len(b[key])
            if n >= n_want:
                break
        return n

    def per_call(batches) -> int:  # what TrainLoop._put does before placing a call
        n = 0
        while n < n_want:
            group = list(itertools.islice(batches, K))
            if not group:
                break
            st = {k: np.stack([b[k] for b in group]) for k in group[0]}
            for role, rows in (("user", N_USERS), ("item", N_ITEMS)):
                _check_ids(st[role], role, rows, "{at}")
                _host_unique(st[role], rows)
            n += st["user"].size
        return n

    def cpu_ns(fn) -> float:
        best = float("inf")
        for _ in range(3):
            t = time.process_time()
            n = fn()
            best = min(best, 1e9 * (time.process_time() - t) / n)
        return best

    def batches():
        return s.batches(B, 0, inputs=inputs)

    stages = [
        ("stream: Parquet decode", lambda: count(s.record_batches())),
        ("stream: + id mapping", lambda: count(s._index_chunks(), "user")),
        ("stream: + shuffle buffer", lambda: count(s.chunks(0), "user")),
        ("stream: + batches (rebatch)", lambda: count(rebatch(s.chunks(0), B), "user")),
        ("stream: + model inputs (batches())", lambda: count(batches(), "user")),
        ("stream: + per-call work (the input thread)", lambda: per_call(batches())),
    ]
    x = {k: np.concatenate([c[k] for c in itertools.islice(
        s.batches(65_536, 0, inputs=inputs), -(-n_want // 65_536))]) for k in
         ("user", "item", "rating")}
    stages += [
        ("in memory: batches", lambda: count(_array_batches(x, B, False, 0), "user")),
        ("in memory: + per-call work (the input thread)",
         lambda: per_call(_array_batches(x, B, False, 0))),
    ]
    print(f"{path.name}: first {n_want:,} rows; batch {B}, {K} steps per call, shuffle "
          f"buffer {BUFFER:,}; CPU ns per row, best of 3")
    for name, fn in stages:
        print(f"{name:48s} {cpu_ns(fn):6.1f}")


def compare(a: argparse.Namespace) -> None:
    """Run the probe for each of ``a.src`` in turn, ``a.repeats`` times; write the file."""
    from _results import RESULTS, claim, stamp
    out = Path(a.out) if a.out else RESULTS / f"probe-stream-stages-{stamp()}.txt"
    claim(out, force=a.force)
    out.parent.mkdir(parents=True, exist_ok=True)
    srcs = [str(Path(d).resolve()) for d in a.src]

    def commit(d: str) -> str:
        r = subprocess.run(["git", "-C", d, "log", "-1", "--format=%h %s"],
                           capture_output=True, text=True)
        return r.stdout.strip()[:100] or "(not a git checkout)"

    def load() -> str:
        return Path("/proc/loadavg").read_text().split(" ")[0]
    args = ["--rows", str(a.rows), "--file-rows", str(a.file_rows), "--work", a.work]
    lines = [f"# KERAS_BACKEND=jax python benchmarks/probes/stream_stages.py "
             f"{' '.join(args)} --repeats {a.repeats} --src {' '.join(a.src)}",
             f"# {os.cpu_count()} CPUs; load = /proc/loadavg's 1-minute figure before and "
             "after each run"]
    lines += [f"# src {j}: {d}: {commit(d)}" for j, d in enumerate(srcs)]
    got: dict[int, dict[str, list[float]]] = {j: {} for j in range(len(srcs))}
    with out.open("w") as f:
        def say(line: str) -> None:
            print(line, flush=True)
            f.write(line + "\n")
            f.flush()
        for line in lines:
            say(line)
        for rep in range(a.repeats):
            for j, d in enumerate(srcs):
                env = {**os.environ, "PYTHONPATH": d, "KERAS_BACKEND": "jax"}
                before = load()
                r = subprocess.run([sys.executable, __file__, *args], env=env,
                                   capture_output=True, text=True)
                if r.returncode:
                    raise SystemExit(f"run {rep} of src {j} failed:\n{r.stderr[-2000:]}")
                say(f"\n# run {rep + 1}, src {j}; load {before} -> {load()}")
                for line in r.stdout.splitlines():
                    say(line)
                    name, _, value = line.rpartition(" ")
                    if name.startswith(("stream", "in memory")):
                        got[j].setdefault(name.strip(), []).append(float(value))
        say(f"\n# summary: CPU ns per row, best / median of {a.repeats} runs per src")
        say(f"{'stage':48s} " + " ".join(f"{'src ' + str(j):>14s}" for j in got))
        for name in got[0]:
            say(f"{name:48s} " + " ".join(
                f"{min(got[j][name]):6.1f} / {sorted(got[j][name])[len(got[j][name]) // 2]:5.1f}"
                for j in got))


if __name__ == "__main__":
    main()
