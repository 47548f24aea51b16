"""HTTP load benchmark of ``twotower serve`` (run on demand, never in ``make test``).

Starts the server as a subprocess on a free loopback port, sends a bounded mixed load from
C concurrent keep-alive clients, stops by itself and writes throughput, latency percentiles
and error counts to ``benchmarks/results/serve-<timestamp>.json``. In the same run it times
the in-process search (``model.recommend`` for one user, seen items excluded), so the HTTP
overhead is the difference.

    python benchmarks/serve_load.py --data-dir /path/to/ml-100k          # trains a run first
    python benchmarks/serve_load.py --run runs/ml100k --requests 20000 --concurrency 32

Mix (by default): 70% ``GET /v1/recommendations`` (k=10, seen items excluded), 20%
``GET /v1/similar-items`` (k=10), 10% ``POST /v1/recommendations`` (batch of 16 users).

The load generator is a minimal asyncio HTTP/1.1 keep-alive client (``--client raw``,
default) so that it costs the shared CPUs as little as possible; ``--client httpx`` uses
``httpx.AsyncClient`` instead. Both run on the same machine as the server: on a small
machine the client's CPU time is reported next to the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np

from _results import claim, out_dir



# ---------------------------------------------------------------- the run
def train_run(data_dir: str | None, out: Path, epochs: int) -> Path:
    from twotower import ModelConfig, TwoTower, load_movielens_100k, random_split
    x = load_movielens_100k(data_dir)
    split = random_split(x, 0.2, seed=42)
    model = TwoTower(ModelConfig.preset("tutorial", epochs=epochs)).fit(split.train, verbose=0)
    model.save(out, test=split.test, data={"source": "movielens-100k", "split": "random"})
    return out


# ---------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, port: int, workers: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "KERAS_BACKEND": "jax"}  # serve() caps BLAS threads itself
    fh = log.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "twotower.cli", "serve", str(run),
                             "--port", str(port), "--workers", str(workers)],
                            env=env, stdout=fh, stderr=subprocess.STDOUT)
    import httpx
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"server did not become healthy; see {log}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick


def tree_cpu_seconds(pid: int) -> float:
    total = cpu_seconds(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(tree_cpu_seconds(int(c)) for c in children)


# ---------------------------------------------------------------- the load
def make_requests(n: int, users: list, items: list, seed: int, batch: int
                  ) -> list[tuple[str, str, str, bytes | None]]:
    """(kind, method, target, body) for n requests, mixed 70/20/10."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.7:
            out.append(("recommend", "GET",
                        f"/v1/recommendations?user_id={rng.choice(users)}&k=10&exclude_seen=true",
                        None))
        elif r < 0.9:
            out.append(("similar", "GET", f"/v1/similar-items?item_id={rng.choice(items)}&k=10",
                        None))
        else:
            body = json.dumps({"user_ids": rng.sample(users, batch), "k": 10}).encode()
            out.append(("batch", "POST", "/v1/recommendations", body))
    return out


async def raw_worker(port: int, queue: list, results: list) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while queue:
            kind, method, target, body = queue.pop()
            head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            if body is not None:
                head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            t0 = time.perf_counter()
            writer.write(head.encode() + b"\r\n" + (body or b""))
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            status = int(status_line.split()[1]) if status_line else 0
            results.append((kind, status, time.perf_counter() - t0))
    finally:
        writer.close()


async def httpx_worker(client, queue: list, results: list) -> None:
    while queue:
        kind, method, target, body = queue.pop()
        t0 = time.perf_counter()
        try:
            r = await client.request(method, target, content=body,
                                     headers={"content-type": "application/json"} if body
                                     else None)
            status = r.status_code
        except Exception:  # noqa: BLE001 - count transport errors, keep loading
            status = 0
        results.append((kind, status, time.perf_counter() - t0))


async def run_load(port: int, reqs: list, concurrency: int, client: str) -> tuple[list, float]:
    queue = list(reversed(reqs))
    results: list[tuple[str, int, float]] = []
    t0 = time.perf_counter()
    if client == "raw":
        await asyncio.gather(*(raw_worker(port, queue, results) for _ in range(concurrency)))
    else:
        import httpx
        limits = httpx.Limits(max_connections=concurrency,
                              max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits,
                                     timeout=30) as c:
            await asyncio.gather(*(httpx_worker(c, queue, results)
                                   for _ in range(concurrency)))
    return results, time.perf_counter() - t0


def summarise(lat_s: list[float]) -> dict[str, float]:
    a = np.asarray(lat_s) * 1e3
    if not len(a):
        return {}
    return {"n": int(len(a)), "mean_ms": round(float(a.mean()), 3),
            "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p90_ms": round(float(np.percentile(a, 90)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3),
            "max_ms": round(float(a.max()), 3)}


# ---------------------------------------------------------------- in process
def in_process(run: Path, n: int, seed: int) -> dict:
    from twotower import TwoTower
    model = TwoTower.load(run)
    rng = np.random.default_rng(seed)
    users = rng.integers(0, len(model.user_vocab), n)
    for u in users[:50]:  # warm up
        model.recommend(np.array([u]), 10, model.seen_items(np.array([u])))
    rec, sim = [], []
    for u in users:
        one = np.array([u])
        t0 = time.perf_counter()
        model.recommend(one, 10, model.seen_items(one))
        rec.append(time.perf_counter() - t0)
    for i in rng.integers(0, model.n_items, n):
        t0 = time.perf_counter()
        model.similar_items(np.array([i]), 10)
        sim.append(time.perf_counter() - t0)
    return {"recommend_one_user_exclude_seen": summarise(rec),
            "similar_items_one_item": summarise(sim),
            "index": model.index_config.to_dict(), "n_items": model.n_items}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": platform.python_version()}
    for pkg in ("twotower", "fastapi", "starlette", "uvicorn", "h11", "httptools", "uvloop",
                "httpx", "numpy", "faiss-cpu", "pydantic"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="run directory to serve (default: train the tutorial preset)")
    p.add_argument("--data-dir", help="MovieLens 100k directory, for training a run")
    p.add_argument("--epochs", type=int, default=5, help="epochs when training a run")
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--workers", type=int, default=1, help="server worker processes")
    p.add_argument("--batch", type=int, default=16, help="users per batch request")
    p.add_argument("--client", choices=("raw", "httpx"), default="raw")
    p.add_argument("--warmup", type=int, default=1000, help="requests before measuring")
    p.add_argument("--unloaded", type=int, default=2000,
                   help="extra requests from 1 client: latency without queueing (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="result JSON (default benchmarks/results/serve-<time>.json)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else out_dir(None, name="serve_load") / (
        f"serve-{dt.datetime.now():%Y%m%d-%H%M%S}-w{args.workers}-{args.client}.json")
    claim(out, force=args.force)

    tmp = tempfile.TemporaryDirectory(prefix="twotower-serve-load-")
    if args.run:
        run = Path(args.run)
    else:
        t0 = time.perf_counter()
        run = train_run(args.data_dir, Path(tmp.name) / "tutorial", args.epochs)
        print(f"trained the tutorial preset ({args.epochs} epochs) in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)

    inproc = in_process(run, 2000, args.seed)
    from twotower import TwoTower
    model = TwoTower.load(run)
    users = model.user_vocab.ids.tolist()
    items = model.item_vocab.ids.tolist()
    del model

    port = free_port()
    log = Path(tmp.name) / "server.log"
    server = start_server(run, port, args.workers, log)
    try:
        warm = make_requests(args.warmup, users, items, args.seed + 1, args.batch)
        asyncio.run(run_load(port, warm, args.concurrency, args.client))
        reqs = make_requests(args.requests, users, items, args.seed, args.batch)
        cpu_server0, cpu_client0 = tree_cpu_seconds(server.pid), time.process_time()
        results, wall = asyncio.run(run_load(port, reqs, args.concurrency, args.client))
        cpu_server = tree_cpu_seconds(server.pid) - cpu_server0
        cpu_client = time.process_time() - cpu_client0
        unloaded: dict = {}
        if args.unloaded:
            one = make_requests(args.unloaded, users, items, args.seed + 2, args.batch)
            res1, wall1 = asyncio.run(run_load(port, one, 1, args.client))
            kinds: dict[str, list[float]] = {}
            for kind, _, lat in res1:
                kinds.setdefault(kind, []).append(lat)
            unloaded = {"requests": len(res1), "concurrency": 1,
                        "throughput_rps": round(len(res1) / wall1, 1),
                        "errors": sum(1 for r in res1 if r[1] != 200),
                        "latency_all": summarise([lat for _, _, lat in res1]),
                        "latency_by_kind": {k: summarise(v) for k, v in sorted(kinds.items())}}
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    log_lines = log.read_text(errors="replace").splitlines()

    by_kind: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    for kind, status, lat in results:
        by_kind.setdefault(kind, []).append(lat)
        if status != 200:
            errors[f"{kind}:{status}"] = errors.get(f"{kind}:{status}", 0) + 1
    all_lat = [lat for _, _, lat in results]
    rec_p50 = inproc["recommend_one_user_exclude_seen"]["p50_ms"]
    # overhead without queueing: the one-client phase when run, else the loaded p50
    http_p50 = (unloaded["latency_by_kind"]["recommend"]["p50_ms"]
                if unloaded.get("latency_by_kind", {}).get("recommend")
                else summarise(by_kind.get("recommend", []))["p50_ms"])
    report = {
        "benchmark": "serve_load",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor()},
        "versions": versions(),
        "settings": {"requests": args.requests, "concurrency": args.concurrency,
                     "workers": args.workers, "batch_users": args.batch,
                     "client": args.client, "warmup": args.warmup,
                     "mix": {"recommend": 0.7, "similar": 0.2, "batch": 0.1},
                     "k": 10, "exclude_seen": True, "access_log": True,
                     "run": str(run) if args.run else f"tutorial preset, {args.epochs} epochs"},
        "http": {"requests": len(results), "wall_s": round(wall, 3),
                 "throughput_rps": round(len(results) / wall, 1),
                 "errors": sum(errors.values()), "errors_by_kind_status": errors,
                 "latency_all": summarise(all_lat),
                 "latency_by_kind": {k: summarise(v) for k, v in sorted(by_kind.items())},
                 "cpu_s_server": round(cpu_server, 2), "cpu_s_client": round(cpu_client, 2)},
        "http_one_client": unloaded,
        "in_process": inproc,
        "http_overhead_p50_ms": round(http_p50 - rec_p50, 3),
        "server_log_lines": len(log_lines),
        "goal": {"p99_ms": 10, "throughput_rps": 1000},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    h = report["http"]
    print(f"{h['requests']} requests in {h['wall_s']} s: {h['throughput_rps']} req/s, "
          f"p50 {h['latency_all']['p50_ms']} ms, p99 {h['latency_all']['p99_ms']} ms, "
          f"errors {h['errors']}; in-process recommend p50 {rec_p50} ms; "
          f"CPU server {h['cpu_s_server']} s / client {h['cpu_s_client']} s")
    if unloaded:
        print(f"one client: {unloaded['throughput_rps']} req/s, p50 "
              f"{unloaded['latency_all']['p50_ms']} ms, p99 {unloaded['latency_all']['p99_ms']} ms")
    print(f"wrote {out}")
    tmp.cleanup()
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
