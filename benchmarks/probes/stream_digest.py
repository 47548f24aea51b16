"""Probe: what telling a streamed file by its rows costs (a checkpoint's fingerprint, the
multi-process data check): the vocabulary scan alone, the scan computing the digest in its
own pass (``scan(digest=True)``, what ``fit_stream`` now runs where it needs one), and the
separate digest pass it ran before, on a synthetic log of the throughput benchmark's shape.

Usage: python benchmarks/probes/stream_digest.py [--rows 5_000_000] [--repeats 3]
Output of the run quoted in docs/scaling.md: results/probe-stream-digest-20261205.txt
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=lambda s: int(s.replace("_", "")), default=5_000_000)
    p.add_argument("--users", type=int, default=200_000)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    from synthetic import Planted, write

    from twotower.training import InteractionStream, StreamConfig

    scratch = Path(tempfile.mkdtemp(prefix="digest-"))
    try:
        path = scratch / "log.parquet"
        write(path, a.rows, Planted(users=a.users, items=a.items))
        cfg = StreamConfig(user_col="user_id", item_col="item_id", rating_col="rating")
        print(f"{a.rows:,} rows ({path.stat().st_size / 1e6:.0f} MB Parquet); "
              f"{os.cpu_count()} CPUs; seconds, each repeat in turn", flush=True)
        times: dict[str, list[float]] = {"scan": [], "scan(digest=True)": [],
                                         "scan, then content_digest()": []}
        digests = set()
        for _ in range(a.repeats):
            for name in times:
                s = InteractionStream(path, cfg)
                t0 = time.perf_counter()
                s.scan(digest=name == "scan(digest=True)")
                if name != "scan":
                    digests.add(s.content_digest())
                times[name].append(time.perf_counter() - t0)
        assert len(digests) == 1
        base = min(times["scan"])
        for name, t in times.items():
            print(f"{name:>28}: best {min(t):6.2f} s ({min(t) / base:.2f}x the scan); all "
                  f"{', '.join(f'{v:.2f}' for v in t)}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
