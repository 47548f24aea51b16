"""Training throughput: streamed vs in-memory input, the product loop vs ``model.fit``,
1 vs 2 (simulated) devices, and the memory of a streamed training pass vs file size.

Everything is measured side by side in one run, repeated, medians reported; results go to
``benchmarks/results/train-<tag>-<timestamp>.{json,md}`` (``--out DIR``: there; under
1,000,000 ``--rows``, a smoke run, a temporary folder; a file of the same name is not
overwritten without ``--force``). Data: ``benchmarks/synthetic.py`` (planted
preferences, so quality is checked as planted recall@100: the share of fresh samples from
the planted distribution that land in the model's top 100).

    python benchmarks/train_throughput.py --rows 20_000_000 --users 200_000 --items 1_000_000

Sizes where a dense epoch takes most of an hour are measured on a fixed number of steps per
method, not on epochs: after a warm-up (compilation) every method trains on the same window
of the same pre-shuffled rows, in the same order (``--steps`` steps; the dense methods,
``model.fit`` among them, on the first ``--steps-dense`` steps of that window), the methods
interleaved (order reversed every other repeat), a new window per repeat, medians reported.
The clock runs from the first step to the end of the last (``model.fit``: epoch begin to
epoch end, with the variables ready; the loop: its own per-epoch rate), so the one-off copy
of the tables into and out of a call is not charged to either.

Sections (skip any with --skip a,b,c,d):
  a  streamed Parquet vs the same data in memory (both with the product loop); in memory
     twice: the pre-shuffled window as is, and the same window shuffled by the loop as
     ``TrainLoop.fit`` does by default (the stream shuffles on the clock too)
  b  the product loop (and its parts: steps per call, sparse updates) vs plain model.fit
  c  1 device vs 2 simulated devices (data parallel, row-sharded tables, column-sharded
     tables; optionally with single-threaded XLA CPU), one subprocess each, a full epoch
     each, planted recall after
  d  peak RSS of a streamed training pass over files of each --rss-rows row count

``--collectives`` only times 2-device collectives per scan step: a ``psum``, and the pair a
row-routed step would need (``all_gather`` of each device's rows, ``psum_scatter`` of their
gradients back to the owners), for ``[600, 32]`` per device.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

from _results import claim, out_dir, stamp  # noqa: E402
from synthetic import ITEM_ID0, USER_ID0, Planted, write  # noqa: E402

WARM_STEPS = 32  # compiles every method (two calls of 16 steps)
# XLA CPU settings for one compute thread per simulated device
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
# section c variants: key -> (name, simulated devices, data parallel, model parallel, flags
# [, how the tables are split: rows (default), columns or blocks[, an offset to the seed of
# the data order[, the input: "random" (in memory, the loop's shuffle; the default),
# "blocks"/"blocks4" (in memory, laid out in 2 or 4 devices' blocks' order) or "stream"
# (the Parquet file through InteractionStream.batches and its shuffle buffer)]]])
VARIANTS = {
    "1": ("1 device", 1, 1, 1, ""),
    "1t": ("1 device, 1 XLA thread", 1, 1, 1, ONE_THREAD),
    "dp": ("2 devices, data parallel", 2, 2, 1, ""),
    "dpt": ("2 devices, data parallel, 1 XLA thread each", 2, 2, 1, ONE_THREAD),
    "mp": ("2 devices, row-sharded tables", 2, 1, 2, ""),
    "mpt": ("2 devices, row-sharded tables, 1 XLA thread each", 2, 1, 2, ONE_THREAD),
    "fs": ("2 devices, data parallel, tables row-sharded over the same 2", 2, 2, 0, ""),
    "mpc": ("2 devices, column-sharded tables", 2, 1, 2, "", "columns"),
    "mpb": ("2 devices, tables in blocks", 2, 1, 2, "", "blocks"),
    # the noise of the planted recall: one device on another order of the same rows
    "1o": ("1 device, another data order", 1, 1, 1, "", "rows", 1),
    "1o2": ("1 device, a third data order", 1, 1, 1, "", "rows", 2),
    "1o3": ("1 device, a fourth data order", 1, 1, 1, "", "rows", 3),
    "mpbo": ("2 devices, tables in blocks, another data order", 2, 1, 2, "", "blocks", 1),
    "mpbo2": ("2 devices, tables in blocks, a third data order", 2, 1, 2, "", "blocks", 2),
    # where the blocks' recall comes from: one device trained on the order the blocks
    # train in (stratum by stratum, each (stratum, device) pair's rows shuffled on their
    # own, the two devices' parts of a step side by side), with the same seeds
    "1b": ("1 device, on the blocks' order", 1, 1, 1, "", "rows", 0, "blocks"),
    "1bo": ("1 device, on the blocks' order, another data order", 1, 1, 1, "", "rows", 1,
            "blocks"),
    # ... and on the order of 4 devices' blocks (4 strata of 4 blocks each)
    "1b4": ("1 device, on 4 devices' blocks' order", 1, 1, 1, "", "rows", 0, "blocks4"),
    "1b4o": ("1 device, on 4 devices' blocks' order, another data order", 1, 1, 1, "",
             "rows", 1, "blocks4"),
    "mpct": ("2 devices, column-sharded tables, 1 XLA thread each", 2, 1, 2, ONE_THREAD,
             "columns"),
    # streamed: each epoch reads the file (the first --c-rows rows of its shuffled stream);
    # with blocks the loop sorts them into strata through its bounded buffer (stratify)
    "1s": ("1 device, streamed Parquet", 1, 1, 1, "", "rows", 0, "stream"),
    "mpbs": ("2 devices, tables in blocks, streamed Parquet", 2, 1, 2, "", "blocks", 0,
             "stream"),
}


def _int(s: str) -> int:
    return int(s.replace("_", ""))


def data_file(a: argparse.Namespace, rows: int) -> Path:
    p = Path(a.work) / f"syn-{rows}-{a.users}-{a.items}-s{a.seed}.parquet"
    if not p.is_file():
        write(p, rows, planted(a), seed=a.seed + 1)
    return p


def planted(a: argparse.Namespace) -> Planted:
    return Planted(a.users, a.items, seed=a.seed)


def model_config(a: argparse.Namespace):
    from twotower.models.config import ModelConfig
    return ModelConfig.preset("tutorial", objective=a.objective, batch_size=a.batch_size,
                              embedding_dim=a.embedding_dim, learning_rate=a.learning_rate,
                              epochs=1)


def stream_of(path: Path, a: argparse.Namespace, shuffle: int | None = None,
              user_vocab=None, item_vocab=None):
    from twotower.training import InteractionStream, StreamConfig
    cfg = StreamConfig(user_col="user_id", item_col="item_id", rating_col="rating",
                       shuffle_buffer=a.shuffle_buffer if shuffle is None else shuffle,
                       seed=a.seed)
    return InteractionStream(path, cfg, user_vocab=user_vocab, item_vocab=item_vocab)


def in_memory(stream, objective: str) -> dict[str, np.ndarray]:
    inputs = stream.model_inputs(objective)
    parts = [inputs(c) for c in stream.chunks()]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def cached_inputs(a: argparse.Namespace, path: Path, stream=None):
    """The file's model inputs (file order) and vocabularies, cached as .npy/.json next to
    the file so the device subprocesses do not each re-read 20M rows."""
    from twotower.data import Vocabulary
    d = Path(a.work) / f"{path.stem}.{a.objective}.inputs"
    if not (d / "done").is_file():
        if stream is None:
            stream = stream_of(path, a)
            stream.scan()
        mem = stream_of(path, a, shuffle=0)
        mem._user_vocab, mem._item_vocab = stream.user_vocab, stream.item_vocab
        mem.stats = stream.stats
        t0 = time.perf_counter()
        x = in_memory(mem, a.objective)
        d.mkdir(parents=True, exist_ok=True)
        for k, v in x.items():
            np.save(d / f"{k}.npy", v)
        stream.user_vocab.save(d / "user_vocab.json")
        stream.item_vocab.save(d / "item_vocab.json")
        (d / "done").write_text(json.dumps({"load_in_memory_seconds":
                                            time.perf_counter() - t0}))
    x = {f.stem: np.load(f) for f in sorted(d.glob("*.npy"))}
    return (x, Vocabulary.load(d / "user_vocab.json"), Vocabulary.load(d / "item_vocab.json"),
            json.loads((d / "done").read_text()))


def new_net(n_users: int, n_items: int, a: argparse.Namespace):
    import keras

    from twotower.models.net import TwoTowerNet
    keras.utils.set_random_seed(a.seed)
    net = TwoTowerNet(n_users, n_items, model_config(a))
    net.build()
    return net


def planted_recall(net, user_vocab, item_vocab, a: argparse.Namespace, k: int = 100,
                   n_users: int = 2000) -> float:
    """Share of fresh planted samples (one per evaluated user) in the model's top k."""
    pl = planted(a)
    rng = np.random.default_rng(12345)
    uidx = rng.choice(len(user_vocab), min(n_users, len(user_vocab)), replace=False)
    users = user_vocab.ids[uidx] - USER_ID0
    fresh = pl.sample(rng, users) + ITEM_ID0
    fresh_idx = item_vocab.lookup_or(fresh.tolist())
    q = np.asarray(net.user_embedding.embeddings)[uidx]
    e = np.asarray(net.item_embedding.embeddings)
    hits, step = 0, max(1, 50_000_000 // max(len(e), 1))  # ~200 MB of scores at a time
    for s in range(0, len(q), step):
        scores = q[s:s + step] @ e.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        hits += int((top == fresh_idx[s:s + step, None]).any(axis=1).sum())
    return hits / len(q)


def oracle_recall(user_vocab, a: argparse.Namespace, k: int = 100, n_users: int = 2000
                  ) -> float:
    """The same measure for the planted model's own top k (the ceiling)."""
    pl = planted(a)
    rng = np.random.default_rng(12345)
    uidx = rng.choice(len(user_vocab), min(n_users, len(user_vocab)), replace=False)
    users = user_vocab.ids[uidx] - USER_ID0
    fresh = pl.sample(rng, users)
    ptopic = np.diff(np.concatenate([np.zeros((len(users), 1)), pl.user_topic_cum[users]],
                                    axis=1), axis=1)
    w = ptopic / np.maximum(pl.topic_mass, 1e-300)
    hits, step = 0, max(1, 25_000_000 // a.items)
    for s in range(0, len(users), step):
        p = w[s:s + step][:, pl.item_topic] * pl.pop[None, :]
        top = np.argpartition(-p, k, axis=1)[:, :k]
        hits += int((top == fresh[s:s + step, None]).any(axis=1).sum())
    return hits / len(users)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _hwm_kb() -> int:
    """Peak resident set of this process (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# ---------------------------------------------------------------------- a + b
def sections_ab(a: argparse.Namespace, path: Path, out: dict) -> None:
    import jax
    import keras

    from twotower.training import LoopConfig, TrainLoop, make_optimizer
    stream = stream_of(path, a)
    t_scan = timed(stream.scan)
    x, uv, iv, info = cached_inputs(a, path, stream)
    b, s_fast, s_dense = a.batch_size, a.steps, a.steps_dense
    n = len(x["user"])
    need = (WARM_STEPS + a.repeats * s_fast) * b
    if need > n:
        raise SystemExit(f"--steps {s_fast} x --repeats {a.repeats} needs {need:,} rows, "
                         f"the file has {n:,}")
    order = np.random.default_rng(a.seed).permutation(n)[:need]
    xs = {k: v[order] for k, v in x.items()}  # the pre-shuffled rows every method sees
    del x
    warm = {k: v[:WARM_STEPS * b] for k, v in xs.items()}

    def window(r: int, steps: int) -> dict[str, np.ndarray]:
        s = (WARM_STEPS + r * s_fast) * b
        return {k: v[s:s + steps * b] for k, v in xs.items()}

    out["data"] = {"rows": n, "users": len(uv), "items": len(iv), "scan_seconds": t_scan,
                   "load_in_memory_seconds": info["load_in_memory_seconds"],
                   "warm_steps": WARM_STEPS, "steps_timed": s_fast,
                   "steps_timed_dense": s_dense}
    inputs = stream.model_inputs(a.objective)
    cfg = model_config(a)

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            jax.block_until_ready([v.value for v in self.model.trainable_variables])
            self.seconds = time.perf_counter() - self.t0

    runners, steps_of, nets = {}, {}, {}
    # plain model.fit: the tutorial's way, default settings (shuffle=False only because
    # the window is already shuffled: every method sees the same order)
    fit_net = new_net(len(uv), len(iv), a)
    fit_net.compile(optimizer=make_optimizer(cfg))
    fit_net.fit(warm, batch_size=b, epochs=1, verbose=0)
    clock = EpochClock()

    def fit_run(r: int) -> float:
        w = window(r, s_dense)
        fit_net.fit(w, batch_size=b, epochs=1, shuffle=False, verbose=0, callbacks=[clock])
        return s_dense * b / clock.seconds

    if "b" not in a.skip:
        runners["model.fit"], steps_of["model.fit"] = fit_run, s_dense

    def loop_runner(name, loop_cfg, dense=False, streamed=False, shuffled=False):
        net = nets[name] = new_net(len(uv), len(iv), a)
        loop = TrainLoop(net, make_optimizer(cfg), loop_cfg)
        steps = s_dense if dense else s_fast
        if streamed:
            it = stream.batches(b, 0, inputs=inputs, drop_remainder=True)
            loop.fit(lambda e: itertools.islice(it, WARM_STEPS))  # compiles

            def run(r: int) -> float:
                loop.fit(lambda e: itertools.islice(it, steps))
                return loop.examples_per_second[-1]
        else:
            loop.fit(warm, batch_size=b, shuffle=False)  # compiles

            def run(r: int) -> float:  # shuffled: the loop's own per-epoch shuffle
                loop.fit(window(r, steps), batch_size=b, shuffle=shuffled, seed=r)
                return loop.examples_per_second[-1]
        runners[name], steps_of[name] = run, steps

    k = a.steps_per_call
    if "b" not in a.skip:
        loop_runner("loop k=1 dense", LoopConfig(steps_per_call=1, sparse_updates="off"),
                    dense=True)
        loop_runner(f"loop k={k} dense", LoopConfig(steps_per_call=k, sparse_updates="off"),
                    dense=True)
        loop_runner("loop k=1 sparse", LoopConfig(steps_per_call=1))
    product = f"loop k={k} sparse (product)"
    loop_runner(product, LoopConfig(steps_per_call=k))
    streamed = f"loop k={k} sparse, streamed Parquet"
    reshuffled = f"loop k={k} sparse, in memory, shuffled by the loop"
    if "a" not in a.skip:
        loop_runner(streamed, LoopConfig(steps_per_call=k), streamed=True)
        loop_runner(reshuffled, LoopConfig(steps_per_call=k), shuffled=True)
    raw: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(a.repeats):
        names = list(runners) if r % 2 == 0 else list(runners)[::-1]
        for name in names:
            rate = runners[name](r)
            raw[name].append(rate)
            print(f"  repeat {r + 1}: {name}: {rate:,.0f} examples/s", file=sys.stderr)
    med = {name: statistics.median(v) for name, v in raw.items()}
    out["throughput"] = {name: {"median_examples_per_s": med[name], "steps": steps_of[name],
                                "runs": v} for name, v in raw.items()}
    out.setdefault("ratios", {})
    if "model.fit" in med:
        out["ratios"]["loop / model.fit"] = med[product] / med["model.fit"]
    if streamed in med:
        out["ratios"]["streamed / in-memory"] = med[streamed] / med[product]
        out["ratios"]["streamed / in-memory shuffled by the loop"] = (med[streamed]
                                                                     / med[reshuffled])
        # each repeat runs every method back to back: its own ratio shares its moment of
        # a shared machine's load, which a ratio of medians over the whole run does not
        out["paired_ratios"] = {
            "streamed / in-memory": [s / m for s, m in zip(raw[streamed], raw[product])],
            "streamed / in-memory shuffled by the loop": [
                s / m for s, m in zip(raw[streamed], raw[reshuffled])]}
    trained = (WARM_STEPS + a.repeats * s_fast) * b
    out["recall_after_windows"] = {
        name: {"rows_trained": trained, "planted_recall@100": planted_recall(nets[name], uv,
                                                                             iv, a)}
        for name in (product, streamed) if name in nets}
    out["peak_rss_mb_sections_ab"] = _hwm_kb() / 1024


# ---------------------------------------------------------------------- c
def worker_train(a: argparse.Namespace) -> None:
    import jax

    from twotower.training import (DistributionConfig, LoopConfig, TrainLoop,
                                   apply_distribution, make_optimizer)
    x, uv, iv, _ = cached_inputs(a, data_file(a, a.rows))
    b = a.batch_size
    n = (a.c_rows or len(x["user"])) // b * b
    x = {k: v[:n] for k, v in x.items()}
    if a.mp == 0:  # experiment: tables row-sharded over the data-parallel devices
        import keras

        from twotower.training.distribution import SHARDED_TABLES
        mesh = keras.distribution.DeviceMesh((a.dp,), ["batch"],
                                             keras.distribution.list_devices()[:a.dp])
        lm = keras.distribution.LayoutMap(mesh)
        for key in SHARDED_TABLES:
            lm[key] = ("batch", None)
        keras.distribution.set_distribution(
            keras.distribution.ModelParallel(layout_map=lm, batch_dim_name="batch"))
    else:
        apply_distribution(DistributionConfig(data_parallel=a.dp, model_parallel=a.mp,
                                              shard_tables=a.shard_tables))
    # tables split by rows need a row count the shards divide (else Keras/JAX replicate
    # them): round up; the extra rows are never looked up
    split = a.dp if a.mp == 0 else a.mp if a.shard_tables == "rows" else 1
    net = new_net(-(-len(uv) // split) * split, -(-len(iv) // split) * split, a)
    loop = TrainLoop(net, make_optimizer(model_config(a)),
                     LoopConfig(steps_per_call=a.steps_per_call))
    if a.order == "stream":
        stream = stream_of(data_file(a, a.rows), a, user_vocab=uv, item_vocab=iv)
        stream.scan()  # the stats model_inputs reads (the vocabularies are given)
        inputs = stream.model_inputs(a.objective)

        def batches(epoch: int, steps: int):
            return itertools.islice(stream.batches(b, epoch, inputs=inputs,
                                                   drop_remainder=True), steps)
        del x
        loop.fit(lambda e: batches(a.epochs + 1, WARM_STEPS))  # compiles (another order)
        cpu0, t0 = os.times(), time.perf_counter()
        loop.fit(lambda e: batches(e, n // b), epochs=a.epochs)
    else:
        cpu0, t0 = _fit_in_memory(a, loop, x, b, net)
    cpu1, wall = os.times(), time.perf_counter() - t0
    cores = ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / wall
    print("RESULT " + json.dumps({
        "cores_busy": cores,  # CPU seconds of this process per second while training
        "devices": len(jax.devices()), "dp": a.dp, "mp": a.mp,
        "shard_tables": a.shard_tables, "sparse": loop.sparse,
        "table_rows": [net.n_users, net.n_items],
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "rows_per_epoch": n,
        "examples_per_s": loop.examples_per_second, "loss": loop.history["loss"],
        "planted_recall@100": planted_recall(net, uv, iv, a), "peak_rss_mb": _hwm_kb() / 1024}))


def _fit_in_memory(a: argparse.Namespace, loop, x: dict[str, np.ndarray], b: int, net
                   ) -> tuple[os.times_result, float]:
    """Warm-up, then the timed epochs on ``x`` (shuffled by the loop, or laid out in a
    blocks' order beforehand); the clock's start ``(os.times(), perf_counter())``."""
    loop.fit({k: v[:WARM_STEPS * b] for k, v in x.items()}, batch_size=b, shuffle=False)
    shuffle = True
    if a.order != "random":  # the blocks' order, laid out beforehand (off the clock)
        if a.epochs != 1:
            raise SystemExit("--order blocks lays out one epoch: use --epochs 1")
        moving = "user" if net.n_users <= net.n_items else "item"
        p = 4 if a.order == "blocks4" else 2
        x = {k: v[blocks_order(x, p, b, a.seed + a.order_offset, moving)]
             for k, v in x.items()}
        shuffle = False
    start = os.times(), time.perf_counter()
    loop.fit(x, batch_size=b, epochs=a.epochs, seed=a.seed + a.order_offset, shuffle=shuffle)
    return start


def blocks_order(x: dict[str, np.ndarray], p: int, batch_size: int, seed: int,
                 moving: str) -> np.ndarray:
    """The rows of ``x`` in the order that ``p`` devices with tables in blocks train the
    first epoch of ``TrainLoop.fit(x, seed=seed)`` in (``blocks.pack`` and
    ``blocks.array_calls``: stratum by stratum, each (stratum, device) pair's positions
    shuffled by one generator, each step the devices' ``batch_size / p`` rows side by side).
    One device fed this order with ``shuffle=False`` trains each step on the same examples
    as the blocks, except where a stratum's last steps are short (the blocks pad them; one
    device's batches run on into the next stratum). ``moving``: the smaller table's role
    (TrainLoop's choice)."""
    from twotower.training.blocks import _pair_of
    key = _pair_of(x, p, moving)
    order = np.argsort(key.astype(np.uint8), kind="stable").astype(np.int32)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(key, minlength=p * p))])
    rng = np.random.default_rng(seed)  # epoch 0: array_calls(seed=seed + 0, epoch=0)
    per, out = batch_size // p, []
    for s in range(p):  # epoch 0 starts at stratum 0
        parts = [order[bounds[s * p + j]:bounds[s * p + j + 1]].copy() for j in range(p)]
        for part in parts:
            rng.shuffle(part)
        n_steps = max(-(-len(part) // per) for part in parts)
        for t in range(n_steps):
            out.extend(part[t * per:(t + 1) * per] for part in parts)
    return np.concatenate(out)


def section_c(a: argparse.Namespace, path: Path, out: dict) -> None:
    cached_inputs(a, path)  # once, before the subprocesses
    keys = a.c_variants.split(",")
    variants = {VARIANTS[key][0]: VARIANTS[key][1:] for key in keys}
    raw: dict[str, list[dict]] = {k: [] for k in variants}
    for r in range(a.repeats_c):
        names = list(variants) if r % 2 == 0 else list(variants)[::-1]
        for name in names:
            ndev, dp, mp, flags, *shard = variants[name]
            env = {**os.environ, "KERAS_BACKEND": "jax"}
            xla = [f"--xla_force_host_platform_device_count={ndev}"] if ndev > 1 else []
            env["XLA_FLAGS"] = " ".join(xla + ([flags] if flags else []))
            cmd = [sys.executable, __file__, "--worker", "train", "--dp", str(dp),
                   "--mp", str(mp), "--shard-tables", (shard or ["rows"])[0],
                   "--order-offset", str(shard[1] if len(shard) > 1 else 0),
                   "--order", shard[2] if len(shard) > 2 else "random",
                   *a.passthrough]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(proc.stderr[-3000:])
            res = json.loads(next(x for x in proc.stdout.splitlines()
                                  if x.startswith("RESULT "))[7:])
            raw[name].append(res)
            print(f"  repeat {r + 1}: {name}: {statistics.median(res['examples_per_s']):,.0f} "
                  f"examples/s, {res['cores_busy']:.2f} cores busy, planted recall@100 "
                  f"{res['planted_recall@100']:.4f}", file=sys.stderr)
    out["devices"] = {
        k: {"median_examples_per_s": statistics.median(
                [statistics.median(r["examples_per_s"]) for r in v]),
            "planted_recall@100": [r["planted_recall@100"] for r in v],
            "final_loss": [r["loss"][-1] for r in v],
            "peak_rss_mb": [r["peak_rss_mb"] for r in v],
            "cores_busy": statistics.median([r["cores_busy"] for r in v]), "runs": v}
        for k, v in raw.items()}
    out.setdefault("ratios", {})
    one = out["devices"].get("1 device", {}).get("median_examples_per_s")
    for k in variants:
        if one and k != "1 device":
            out["ratios"][f"{k} / 1 device"] = out["devices"][k]["median_examples_per_s"] / one


def collective_cost(steps: int = 2000) -> dict:
    """Microseconds per step of a ``lax.scan`` under ``shard_map`` on 2 simulated devices,
    with and without a ``psum``, and with an ``all_gather`` + ``psum_scatter`` pair (run
    with ``--collectives``; sets its own XLA_FLAGS)."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P
    mesh = Mesh(np.array(jax.devices()[:2]), ("d",))

    def per_step(body, x, spec) -> float:
        fn = jax.jit(jax.shard_map(lambda v: jax.lax.scan(body, v, None, length=steps)[0],
                                   mesh=mesh, in_specs=spec, out_specs=spec,
                                   check_vma=False))
        fn(x).block_until_ready()
        ts = [timed(lambda: fn(x).block_until_ready()) for _ in range(5)]
        return statistics.median(ts) / steps * 1e6

    def plain(c, _):
        return jnp.tanh(c) * 1.0001, None

    def psum(c, _):
        return jax.lax.psum(jnp.tanh(c) * 1.0001, "d") * 0.5, None

    def routed(c, _):  # each device's rows to all, the gradients back to their owners
        g = jax.lax.all_gather(jnp.tanh(c) * 1.0001, "d", tiled=True)
        return jax.lax.psum_scatter(jnp.tanh(g) * 0.5, "d", scatter_dimension=0,
                                    tiled=True), None

    out = {}
    for rows in (1, 1000):  # the same block on every device
        x = jnp.ones((rows, 32))
        out[f"[{rows}, 32] without psum"] = per_step(plain, x, P())
        out[f"[{rows}, 32] with psum"] = per_step(psum, x, P())
    x = jnp.ones((1200, 32))  # [600, 32] on each device
    out["[600, 32] per device without collectives"] = per_step(plain, x, P("d"))
    out["[600, 32] per device with all_gather + psum_scatter"] = per_step(routed, x, P("d"))
    return out


# ---------------------------------------------------------------------- d
def worker_rss(a: argparse.Namespace) -> None:
    import pyarrow.parquet  # noqa: F401  (imports counted in the baseline)

    import twotower.training  # noqa: F401
    from twotower.data import Vocabulary
    from twotower.training import LoopConfig, TrainLoop, make_optimizer
    path = Path(a.file)
    base = _hwm_kb()
    # --fixed-vocab: every planted id, given to the stream as a user gives a vocabulary
    # file, so both files train the same tables. (Until 2026-12-07 it was set on the
    # stream's attributes after construction, which scan() has rebuilt since 50ef516:
    # the "given" rows of runs from 2026-12-06 had the scan's vocabularies; checked now.)
    vocabs = ({"user_vocab": Vocabulary(USER_ID0 + np.arange(a.users), "user"),
               "item_vocab": Vocabulary(ITEM_ID0 + np.arange(a.items), "item")}
              if a.fixed_vocab else {})
    stream = stream_of(path, a, **vocabs)
    t0 = time.perf_counter()
    stats = stream.scan()
    if a.fixed_vocab and (len(stats.user_vocab), len(stats.item_vocab)) != (a.users, a.items):
        raise SystemExit(f"--fixed-vocab: the stream has {len(stats.user_vocab):,} users / "
                         f"{len(stats.item_vocab):,} items, not the {a.users:,} / "
                         f"{a.items:,} given")
    inputs = stream.model_inputs(a.objective)
    if a.rss_train:  # a streamed training pass: one epoch of the product loop
        net = new_net(len(stats.user_vocab), len(stats.item_vocab), a)
        loop = TrainLoop(net, make_optimizer(model_config(a)),
                         LoopConfig(steps_per_call=a.steps_per_call))
        rows = [0]

        def counted(e):
            for b in stream.batches(a.batch_size, e, inputs=inputs):
                rows[0] += len(b["user"])
                yield b
        loop.fit(counted)
        rows = rows[0]
    else:
        rows = sum(len(b["user"]) for b in stream.batches(a.batch_size, inputs=inputs))
    peak = _hwm_kb()
    print("RESULT " + json.dumps({"file_rows": stats.rows, "rows_streamed": rows,
                                  "trained": bool(a.rss_train),
                                  "fixed_vocab": bool(a.fixed_vocab),
                                  "users": len(stats.user_vocab),
                                  "items": len(stats.item_vocab),
                                  "seconds": time.perf_counter() - t0,
                                  "rss_after_imports_mb": base / 1024,
                                  "peak_rss_mb": peak / 1024,
                                  "file_mb": path.stat().st_size / 2**20}))


def section_d(a: argparse.Namespace, out: dict) -> None:
    out["memory"] = []
    for fixed, rows in [(f, r) for f in (False, True) for r in a.rss_rows]:
        path = data_file(a, rows)
        cmd = [sys.executable, __file__, "--worker", "rss", "--file", str(path),
               *a.passthrough, *(["--fixed-vocab"] if fixed else []),
               *(["--rss-train"] if a.rss_train else [])]
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, "KERAS_BACKEND": "jax"})
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        res = json.loads(next(x for x in proc.stdout.splitlines()
                              if x.startswith("RESULT "))[7:])
        out["memory"].append(res)
        print(f"  streamed pass over {rows:,} rows: peak RSS {res['peak_rss_mb']:.0f} MB",
              file=sys.stderr)


# ---------------------------------------------------------------------- report
def markdown(out: dict) -> str:
    a = out["args"]
    lines = [f"# Training throughput ({out['tag']})", "",
             f"Data: synthetic planted, {a['rows']:,} rows, {a['users']:,} users, "
             f"{a['items']:,} items; objective {a['objective']}, batch {a['batch_size']}, "
             f"embedding_dim {a['embedding_dim']}, Adagrad lr {a['learning_rate']}. "
             f"Machine: {out['machine']['cpus']} CPUs ({out['machine']['platform']}), shared.",
             ""]
    if "data" in out:
        d = out["data"]
        lines += [f"{d['rows']:,} rows ({d['users']:,} users, {d['items']:,} items seen); "
                  f"streaming vocabulary pass {d['scan_seconds']:.1f} s; loading into memory "
                  f"{d['load_in_memory_seconds']:.1f} s. After {d['warm_steps']} warm-up "
                  f"steps, each method trains on the same pre-shuffled window per repeat "
                  f"({d['steps_timed']} steps; dense methods its first "
                  f"{d['steps_timed_dense']}); medians of {a['repeats']} interleaved "
                  "repeats.", "",
                  "| training | steps timed | examples/s (median) | runs |",
                  "|---|---:|---:|---|"]
        for k, v in out["throughput"].items():
            runs = ", ".join(f"{r:,.0f}" for r in v["runs"])
            lines.append(f"| {k} | {v['steps']} | {v['median_examples_per_s']:,.0f} | "
                         f"{runs} |")
        lines.append("")
        for k, v in out.get("recall_after_windows", {}).items():
            lines.append(f"Planted recall@100 of {k} after {v['rows_trained']:,} rows: "
                         f"{v['planted_recall@100']:.4f}")
        lines += [f"Peak RSS of sections a+b: {out['peak_rss_mb_sections_ab']:.0f} MB", ""]
    if "devices" in out:
        lines += [f"Devices: one subprocess per run, {a['epochs']} epoch(s) after the warm-up "
                  f"each, medians of {a['repeats_c']} interleaved repeats.", "",
                  "| devices (subprocesses) | examples/s (median) | CPU cores busy | "
                  "planted recall@100 | final loss | peak RSS MB |", "|---|---:|---:|---|---|---|"]
        for k, v in out["devices"].items():
            rec = ", ".join(f"{r:.4f}" for r in v["planted_recall@100"])
            loss = ", ".join(f"{r:.4f}" for r in v["final_loss"])
            rss = ", ".join(f"{r:.0f}" for r in v["peak_rss_mb"])
            lines.append(f"| {k} | {v['median_examples_per_s']:,.0f} | "
                         f"{v['cores_busy']:.2f} | {rec} | {loss} | {rss} |")
        lines += ["", f"Oracle planted recall@100 (the planted model's own top 100): "
                      f"{out.get('oracle_recall@100', float('nan')):.4f}", ""]
    if "memory" in out:
        what = "scan + one training epoch" if a.get("rss_train") else "scan + shuffled batches"
        lines += [f"| streamed pass ({what}) | vocabularies | users / items "
                  "| file MB | seconds | peak RSS MB | RSS after imports MB |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for m in out["memory"]:
            vocab = "given (all planted ids)" if m.get("fixed_vocab") else "built by scan"
            lines.append(f"| {m['file_rows']:,} rows | {vocab} | {m.get('users', 0):,} / "
                         f"{m.get('items', 0):,} | {m['file_mb']:.0f} | "
                         f"{m['seconds']:.1f} | {m['peak_rss_mb']:.0f} | "
                         f"{m['rss_after_imports_mb']:.0f} |")
        lines.append("")
    lines += ["| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in out.get("ratios", {}).items()]
    if out.get("paired_ratios"):
        lines += ["", "| ratio within each repeat | median | repeats |", "|---|---:|---|"]
        lines += [f"| {k} | {statistics.median(v):.3f} | {', '.join(f'{r:.3f}' for r in v)} |"
                  for k, v in out["paired_ratios"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=_int, default=2_000_000)
    p.add_argument("--users", type=_int, default=20_000)
    p.add_argument("--items", type=_int, default=100_000)
    p.add_argument("--objective", default="sampled_softmax")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--embedding-dim", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=0.1)
    p.add_argument("--shuffle-buffer", type=_int, default=262_144)
    p.add_argument("--steps-per-call", type=int, default=16)
    p.add_argument("--steps", type=int, default=640,
                   help="steps timed per repeat (a, b: the loop's row-wise runs)")
    p.add_argument("--steps-dense", type=int, default=160,
                   help="steps timed per repeat for model.fit and the dense loops (b)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--repeats-c", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1, help="epochs per device subprocess (c)")
    p.add_argument("--c-rows", type=_int, default=0,
                   help="rows per epoch in (c) (0: the whole file)")
    p.add_argument("--c-variants", default="1,dp,mp",
                   help=f"device runs (c), of: {', '.join(VARIANTS)}")
    p.add_argument("--rss-rows", type=_int, nargs="+", default=[5_000_000, 10_000_000])
    p.add_argument("--rss-train", action=argparse.BooleanOptionalAction, default=True,
                   help="(d) train one epoch on the stream, not only read it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", default="")
    p.add_argument("--tag", default=None,
                   help="in the result's name, train-<tag>-<time> (default: the rows, 2m)")
    p.add_argument("--out", default=None,
                   help="folder for the results (default benchmarks/results; under "
                        "1,000,000 --rows, a smoke run: a temporary one)")
    p.add_argument("--force", action="store_true",
                   help="overwrite result files of the same name")
    p.add_argument("--work", default="/tmp/twotower-bench")
    p.add_argument("--worker", choices=["train", "rss"], help=argparse.SUPPRESS)
    p.add_argument("--dp", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--mp", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--shard-tables", default="rows", help=argparse.SUPPRESS)
    p.add_argument("--order-offset", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--order", choices=["random", "blocks", "blocks4", "stream"],
                   default="random",
                   help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    p.add_argument("--fixed-vocab", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--collectives", action="store_true",
                   help="only time a 2-device psum per scan step (us/step) and exit")
    a = p.parse_args()
    # said now, not after the sections before (c) have run (a KeyError, or a section run
    # that --skip meant to leave out)
    unknown = [k for k in a.c_variants.split(",") if k not in VARIANTS]
    if unknown:
        p.error(f"--c-variants: unknown {', '.join(map(repr, unknown))}; of: "
                f"{', '.join(VARIANTS)}")
    if not set(a.skip) <= set("abcd,"):
        p.error(f"--skip {a.skip!r}: sections a, b, c, d, comma-separated (e.g. b,c,d)")
    if a.collectives:
        if "device_count" not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                       + " --xla_force_host_platform_device_count=2")
        print(json.dumps(collective_cost(), indent=1))
        return None
    a.passthrough = ["--rows", str(a.rows), "--users", str(a.users), "--items", str(a.items),
                     "--objective", a.objective, "--batch-size", str(a.batch_size),
                     "--embedding-dim", str(a.embedding_dim), "--learning-rate",
                     str(a.learning_rate), "--shuffle-buffer", str(a.shuffle_buffer),
                     "--steps-per-call", str(a.steps_per_call), "--epochs", str(a.epochs),
                     "--c-rows", str(a.c_rows), "--seed", str(a.seed), "--work", a.work]
    if a.worker == "train":
        return worker_train(a)
    if a.worker == "rss":
        return worker_rss(a)
    import jax
    import keras
    tag = a.tag or f"{a.rows // 1_000_000}m"
    res = out_dir(a.out, smoke=a.rows < 1_000_000, name="train_throughput")
    stem = f"train-{tag}-{stamp()}"
    claim(res / f"{stem}.json", res / f"{stem}.md", force=a.force, hint="--out or --tag")
    out: dict = {"tag": tag, "args": {k: v for k, v in vars(a).items() if k != "passthrough"},
                 "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                             "python": platform.python_version()},
                 "versions": {"jax": jax.__version__, "keras": keras.__version__},
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    t0 = time.perf_counter()
    path = data_file(a, a.rows)
    out["generate_seconds"] = time.perf_counter() - t0
    if not {"a", "b"} <= set(a.skip):
        sections_ab(a, path, out)
    if "c" not in a.skip:
        section_c(a, path, out)
        _, uv, _, _ = cached_inputs(a, path)
        out["oracle_recall@100"] = oracle_recall(uv, a)
    if "d" not in a.skip:
        section_d(a, out)
    out["seconds"] = time.perf_counter() - t0
    (res / f"{stem}.json").write_text(json.dumps(out, indent=2))
    (res / f"{stem}.md").write_text(markdown(out))
    print(markdown(out))
    print("wrote", res / f"{stem}.md")


if __name__ == "__main__":
    main()
