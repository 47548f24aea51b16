"""Training throughput: streamed vs in-memory input, the product loop vs ``model.fit``,
1 vs 2 (simulated) devices, and the memory of a streamed pass vs file size.

Everything is measured side by side in one run, repeated, medians reported; results go to
``benchmarks/results/train-<tag>.{json,md}``. Data: ``benchmarks/synthetic.py`` (planted
preferences, so quality is checked as planted recall@100: the share of fresh samples from
the planted distribution that land in the model's top 100).

    python benchmarks/train_throughput.py --rows 2_000_000 --users 20_000 --items 100_000
    python benchmarks/train_throughput.py --rows 20_000_000 --users 200_000 --items 1_000_000

Sections (skip any with --skip a,b,c,d):
  a  streamed Parquet vs the same data in memory (both with the product loop)
  b  the product loop (and its parts: steps per call, sparse updates) vs plain model.fit
  c  1 device vs 2 simulated devices (data parallel, and row-sharded tables), subprocesses
  d  peak RSS of a streamed pass over a --rss-rows[0] vs --rss-rows[1] row file
"""

from __future__ import annotations

import argparse
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

from synthetic import ITEM_ID0, USER_ID0, Planted, write  # noqa: E402


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


def stream_of(path: Path, a: argparse.Namespace, shuffle: int | None = None):
    from twotower.training import InteractionStream, StreamConfig
    cfg = StreamConfig(user_col="user_id", item_col="item_id", rating_col="rating",
                       shuffle_buffer=a.shuffle_buffer if shuffle is None else shuffle,
                       seed=a.seed)
    return InteractionStream(path, cfg)


def in_memory(stream, objective: str) -> dict[str, np.ndarray]:
    inputs = stream.model_inputs(objective)
    parts = [inputs(c) for c in stream.chunks()]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def new_net(stream, a: argparse.Namespace):
    import keras

    from twotower.models.net import TwoTowerNet
    keras.utils.set_random_seed(a.seed)
    net = TwoTowerNet(len(stream.user_vocab), len(stream.item_vocab), model_config(a))
    net.build()
    return net


def planted_recall(net, stream, a: argparse.Namespace, k: int = 100, n_users: int = 2000
                   ) -> float:
    """Share of fresh planted samples (one per evaluated user) in the model's top k."""
    pl = planted(a)
    rng = np.random.default_rng(12345)
    uidx = rng.choice(len(stream.user_vocab), min(n_users, len(stream.user_vocab)),
                      replace=False)
    users = stream.user_vocab.ids[uidx] - USER_ID0
    fresh = pl.sample(rng, users) + ITEM_ID0
    fresh_idx = stream.item_vocab.lookup_or(fresh.tolist())
    q = np.asarray(net.user_embedding.embeddings)[uidx]
    e = np.asarray(net.item_embedding.embeddings)
    hits = 0
    for s in range(0, len(q), 250):
        scores = q[s:s + 250] @ e.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        hits += int((top == fresh_idx[s:s + 250, None]).any(axis=1).sum())
    return hits / len(q)


def oracle_recall(stream, a: argparse.Namespace, k: int = 100, n_users: int = 2000) -> float:
    """The same measure for the planted model's own top k (the ceiling)."""
    pl = planted(a)
    rng = np.random.default_rng(12345)
    uidx = rng.choice(len(stream.user_vocab), min(n_users, len(stream.user_vocab)),
                      replace=False)
    users = stream.user_vocab.ids[uidx] - USER_ID0
    fresh = pl.sample(rng, users)
    ptopic = np.diff(np.concatenate([np.zeros((len(users), 1)), pl.user_topic_cum[users]],
                                    axis=1), axis=1)
    w = ptopic / np.maximum(pl.topic_mass, 1e-300)
    hits = 0
    for s in range(0, len(users), 100):
        p = w[s:s + 100][:, pl.item_topic] * pl.pop[None, :]
        top = np.argpartition(-p, k, axis=1)[:, :k]
        hits += int((top == fresh[s:s + 100, None]).any(axis=1).sum())
    return hits / len(users)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------- a + b
def sections_ab(a: argparse.Namespace, path: Path, out: dict) -> None:
    import keras

    from twotower.training import LoopConfig, TrainLoop, make_optimizer
    stream = stream_of(path, a)
    t_scan = timed(stream.scan)
    mem_stream = stream_of(path, a, shuffle=0)
    mem_stream._user_vocab, mem_stream._item_vocab = stream.user_vocab, stream.item_vocab
    mem_stream.stats = stream.stats
    t0 = time.perf_counter()
    x = in_memory(mem_stream, a.objective)
    t_load = time.perf_counter() - t0
    n = len(x["user"]) // a.batch_size * a.batch_size  # whole batches: no retrace in fit
    x = {k: v[:n] for k, v in x.items()}
    warm = {k: v[:a.batch_size * 40] for k, v in x.items()}
    out["data"] = {"rows": n, "users": len(stream.user_vocab), "items": len(stream.item_vocab),
                   "scan_seconds": t_scan, "load_in_memory_seconds": t_load}
    inputs = stream.model_inputs(a.objective)
    cfg = model_config(a)

    runners = {}
    # plain model.fit: the tutorial's way, default settings
    fit_net = new_net(stream, a)
    fit_net.compile(optimizer=make_optimizer(cfg))
    fit_net.fit(warm, batch_size=a.batch_size, epochs=1, verbose=0)
    runners["model.fit"] = lambda: fit_net.fit(x, batch_size=a.batch_size, epochs=1,
                                               shuffle=True, verbose=0)

    def loop_runner(loop_cfg, streamed=False):
        loop = TrainLoop(new_net(stream, a), make_optimizer(cfg), loop_cfg)
        loop.fit(warm, batch_size=a.batch_size, epochs=1)  # compiles
        epoch = [0]

        def run():
            epoch[0] += 1
            if streamed:
                loop.fit(lambda e: stream.batches(a.batch_size, epoch[0], inputs=inputs,
                                                  drop_remainder=True))
            else:
                loop.fit(x, batch_size=a.batch_size, seed=epoch[0])
        return run

    if "b" not in a.skip:
        runners["loop k=1 dense"] = loop_runner(LoopConfig(steps_per_call=1,
                                                           sparse_updates="off"))
        runners["loop k=16 dense"] = loop_runner(LoopConfig(steps_per_call=16,
                                                            sparse_updates="off"))
        runners["loop k=1 sparse"] = loop_runner(LoopConfig(steps_per_call=1))
    runners["loop k=16 sparse (product)"] = loop_runner(LoopConfig(steps_per_call=16))
    if "a" not in a.skip:
        runners["loop k=16 sparse, streamed Parquet"] = loop_runner(LoopConfig(),
                                                                    streamed=True)
    raw: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(a.repeats):
        for name, run in runners.items():
            dt = timed(run)
            raw[name].append(n / dt)
            print(f"  repeat {r + 1}: {name}: {n / dt:,.0f} examples/s", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in raw.items()}
    out["throughput"] = {k: {"median_examples_per_s": med[k], "runs": v}
                         for k, v in raw.items()}
    prod = med["loop k=16 sparse (product)"]
    out["ratios"] = {"loop / model.fit": prod / med["model.fit"]}
    if "loop k=16 sparse, streamed Parquet" in med:
        out["ratios"]["streamed / in-memory"] = med["loop k=16 sparse, streamed Parquet"] / prod
    del keras


# ---------------------------------------------------------------------- c
def worker_train(a: argparse.Namespace) -> None:
    from twotower.training import (DistributionConfig, LoopConfig, TrainLoop,
                                   apply_distribution, make_optimizer)
    path = data_file(a, a.rows)
    stream = stream_of(path, a, shuffle=0)
    stream.scan()
    x = in_memory(stream, a.objective)
    n = len(x["user"]) // a.batch_size * a.batch_size
    x = {k: v[:n] for k, v in x.items()}
    apply_distribution(DistributionConfig(data_parallel=a.dp, model_parallel=a.mp))
    net = new_net(stream, a)
    loop = TrainLoop(net, make_optimizer(model_config(a)), LoopConfig())
    loop.fit(x, batch_size=a.batch_size, epochs=a.epochs, seed=a.seed)
    import jax
    print("RESULT " + json.dumps({
        "devices": len(jax.devices()), "dp": a.dp, "mp": a.mp,
        "examples_per_s": loop.examples_per_second[1:] or loop.examples_per_second,
        "loss": loop.history["loss"], "planted_recall@100": planted_recall(net, stream, a)}))


def section_c(a: argparse.Namespace, out: dict) -> None:
    variants = {"1 device": (1, 1, 1), "2 devices, data parallel": (2, 2, 1),
                "2 devices, row-sharded tables": (2, 1, 2)}
    raw: dict[str, list[dict]] = {k: [] for k in variants}
    for r in range(a.repeats_c):
        for name, (ndev, dp, mp) in variants.items():
            env = {**os.environ, "KERAS_BACKEND": "jax"}
            if ndev > 1:
                env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={ndev}"
            cmd = [sys.executable, __file__, "--worker", "train", "--dp", str(dp),
                   "--mp", str(mp), *a.passthrough]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(proc.stderr[-3000:])
            res = json.loads(next(x for x in proc.stdout.splitlines()
                                  if x.startswith("RESULT "))[7:])
            raw[name].append(res)
            print(f"  repeat {r + 1}: {name}: {statistics.median(res['examples_per_s']):,.0f} "
                  f"examples/s, planted recall@100 {res['planted_recall@100']:.4f}",
                  file=sys.stderr)
    out["devices"] = {
        k: {"median_examples_per_s": statistics.median(
                [statistics.median(r["examples_per_s"]) for r in v]),
            "planted_recall@100": [r["planted_recall@100"] for r in v],
            "final_loss": [r["loss"][-1] for r in v], "runs": v} for k, v in raw.items()}
    one = out["devices"]["1 device"]["median_examples_per_s"]
    out.setdefault("ratios", {})
    for k in list(variants)[1:]:
        out["ratios"][f"{k} / 1 device"] = out["devices"][k]["median_examples_per_s"] / one


# ---------------------------------------------------------------------- d
def _hwm_kb() -> int:
    """Peak resident set of this process (VmHWM; ru_maxrss survives exec on Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker_rss(a: argparse.Namespace) -> None:
    import pyarrow.parquet  # noqa: F401  (imports counted in the baseline)

    import twotower.training  # noqa: F401
    from twotower.data import Vocabulary
    path = Path(a.file)
    base = _hwm_kb()
    stream = stream_of(path, a)
    if a.fixed_vocab:  # every planted id: the same vocabularies whatever the file size
        stream._user_vocab = Vocabulary(USER_ID0 + np.arange(a.users), "user")
        stream._item_vocab = Vocabulary(ITEM_ID0 + np.arange(a.items), "item")
    t0 = time.perf_counter()
    stats = stream.scan()
    rows = sum(len(b["user"]) for b in stream.batches(a.batch_size,
                                                      inputs=stream.model_inputs(a.objective)))
    peak = _hwm_kb()
    print("RESULT " + json.dumps({"file_rows": stats.rows, "rows_streamed": rows,
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
               *a.passthrough, *(["--fixed-vocab"] if fixed else [])]
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
             f"Data: synthetic planted, {a['rows']:,} rows requested, {a['users']:,} users, "
             f"{a['items']:,} items; objective {a['objective']}, batch {a['batch_size']}, "
             f"embedding_dim {a['embedding_dim']}, Adagrad lr {a['learning_rate']}. "
             f"Machine: {out['machine']['cpus']} CPUs ({out['machine']['platform']}), shared; "
             f"medians of {a['repeats']} interleaved repeats.", ""]
    if "data" in out:
        d = out["data"]
        lines += [f"Rows trained per epoch: {d['rows']:,} ({d['users']:,} users, "
                  f"{d['items']:,} items seen); streaming vocabulary pass "
                  f"{d['scan_seconds']:.1f} s; loading into memory {d['load_in_memory_seconds']:.1f} s.",
                  "", "| training | examples/s (median) | runs |", "|---|---:|---|"]
        for k, v in out["throughput"].items():
            runs = ", ".join(f"{r:,.0f}" for r in v["runs"])
            lines.append(f"| {k} | {v['median_examples_per_s']:,.0f} | {runs} |")
        lines.append("")
    if "devices" in out:
        lines += ["| devices (subprocesses) | examples/s (median) | planted recall@100 | "
                  "final loss |", "|---|---:|---|---|"]
        for k, v in out["devices"].items():
            rec = ", ".join(f"{r:.4f}" for r in v["planted_recall@100"])
            loss = ", ".join(f"{r:.4f}" for r in v["final_loss"])
            lines.append(f"| {k} | {v['median_examples_per_s']:,.0f} | {rec} | {loss} |")
        lines += ["", f"Oracle planted recall@100 (the planted model's own top 100): "
                      f"{out.get('oracle_recall@100', float('nan')):.4f}", ""]
    if "memory" in out:
        lines += ["| streamed pass (scan + shuffled batches) | vocabularies | users / items "
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
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--repeats-c", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3, help="epochs per device subprocess (c)")
    p.add_argument("--rss-rows", type=_int, nargs=2, default=[5_000_000, 10_000_000])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", default="")
    p.add_argument("--tag", default=None)
    p.add_argument("--work", default="/tmp/twotower-bench")
    p.add_argument("--worker", choices=["train", "rss"], help=argparse.SUPPRESS)
    p.add_argument("--dp", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--mp", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    p.add_argument("--fixed-vocab", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    a.passthrough = ["--rows", str(a.rows), "--users", str(a.users), "--items", str(a.items),
                     "--objective", a.objective, "--batch-size", str(a.batch_size),
                     "--embedding-dim", str(a.embedding_dim), "--learning-rate",
                     str(a.learning_rate), "--shuffle-buffer", str(a.shuffle_buffer),
                     "--epochs", str(a.epochs), "--seed", str(a.seed), "--work", a.work]
    if a.worker == "train":
        return worker_train(a)
    if a.worker == "rss":
        return worker_rss(a)
    import jax
    import keras
    tag = a.tag or f"{a.rows // 1_000_000}m"
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
        section_c(a, out)
        s = stream_of(path, a)
        s.scan()
        out["oracle_recall@100"] = oracle_recall(s, a)
    if "d" not in a.skip:
        section_d(a, out)
    out["seconds"] = time.perf_counter() - t0
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    (res / f"train-{tag}.json").write_text(json.dumps(out, indent=2))
    (res / f"train-{tag}.md").write_text(markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()
