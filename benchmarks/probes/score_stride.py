"""Probe: the row stride of exact search's score blocks, against the cache.

Exact search writes each block of scores (queries x catalogue rows) with one BLAS matmul
and then reads it (the row-max pass, the candidates). With the default 2,048-row chunks a
row of scores is 8 KiB long, and every row of a block starts in the same cache sets. This
times, single-threaded (one worker's view; ``_blas.single_threaded``), for several block
shapes (queries x rows), a scan of 1,024 isotropic queries over an isotropic catalogue
(d = 64) in blocks written into a buffer whose rows are either exactly ``rows`` long or
one 64-byte line longer (what ``exact._row_stride`` does for multiples of 512 rows; here
for every shape, to see which gain): GFLOP/s of the matmuls alone, and of the matmuls
followed by the row-max pass. Medians of ``--repeats``, the two layouts alternated.

Usage: python benchmarks/probes/score_stride.py [--items 786432] [--repeats 5]
Writes results/probe-score-stride-<time>.txt (``--out FILE`` for another file).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))
sys.path.insert(0, str(HERE.parent))

from twotower.index import _blas  # noqa: E402

SHAPES = ((512, 2048), (512, 1024), (512, 768), (512, 512), (256, 2048), (512, 4096),
          (1024, 768), (64, 16384))


def scan(V: np.ndarray, Q: np.ndarray, bq: int, rows: int, ld: int, row_max: bool) -> float:
    """GFLOP/s of Q against V's whole chunks of ``rows``, blocks of ``bq`` queries."""
    buf = np.empty(bq * ld, dtype=np.float32)
    S = buf.reshape(bq, ld)[:, :rows]
    used = V.shape[0] // rows * rows
    t = time.perf_counter()
    for r0 in range(0, Q.shape[0], bq):
        q = Q[r0:r0 + bq]
        for c0 in range(0, used, rows):
            np.matmul(q, V[c0:c0 + rows].T, out=S)
            if row_max:
                S.max(axis=1)
    return Q.shape[0] * used * V.shape[1] * 2 / (time.perf_counter() - t) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=786_432)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    ap.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    args = ap.parse_args()
    from _results import results_log
    say, close = results_log(args.out, "score-stride", force=args.force)
    rng = np.random.default_rng(0)
    V = rng.standard_normal((args.items, 64), dtype=np.float32)
    Q = rng.standard_normal((1024, 64), dtype=np.float32)
    say(f"# python benchmarks/probes/score_stride.py --items {args.items} "
        f"--repeats {args.repeats}")
    say(f"# {os.cpu_count()} CPUs; load at start {os.getloadavg()[0]:.2f}; "
        f"single-threaded BLAS: {_blas.available()}")
    say("# queries x rows: GFLOP/s, matmul alone / matmul + row max; median of repeats")
    try:
        with _blas.single_threaded():
            for bq, rows in SHAPES:
                got = {"unpadded": ([], []), "padded": ([], [])}
                for r in range(args.repeats):
                    order = ("unpadded", "padded") if r % 2 == 0 else ("padded", "unpadded")
                    for label in order:
                        ld = rows if label == "unpadded" else rows + 16
                        got[label][0].append(scan(V, Q, bq, rows, ld, False))
                        got[label][1].append(scan(V, Q, bq, rows, ld, True))
                u, p = got["unpadded"], got["padded"]
                say(f"{bq} x {rows}: rows of {rows} floats {statistics.median(u[0]):.0f} / "
                    f"{statistics.median(u[1]):.0f}; padded to {rows + 16} "
                    f"{statistics.median(p[0]):.0f} / {statistics.median(p[1]):.0f}")
        say(f"# load at end {os.getloadavg()[0]:.2f}")
    finally:
        close()


if __name__ == "__main__":
    main()
