"""Probe: what the SVD form (``ModelConfig.ease_large = "svd"``) costs to fit as the default
preset runs it, on synthetic catalogues far above ``ease_max_items`` (20,000).

For each size, a ``benchmarks/synthetic.py`` log (``Planted``: topic preference mixed with
Zipf popularity) is generated, split 80/20 at random (the model sees the training part), and
``twotower.models.linear.tune_and_fit`` is called on it with the arguments
``TwoTower._fit_linear`` passes under ``ModelConfig.preset("default", ease_large="svd")``
(lambda grid, recency grid, coordinate search, ranks 128/256/512/1024, the rank check of
``ease_weight_choice = "auto"`` on a log without time, history length 1,000, form ``svd``).
Each stage it reports (``stage``) is timed, with the process's peak RSS during it (VmHWM,
reset at each stage where the kernel allows):

- the tuning split and the rank-1,024 SVD of its training part (``sparse_svd``);
- the lambda / recency search at the smallest rank (128), one validation scoring per setting;
- the rank choice (cuts of the same SVD, one validation scoring per rank tried);
- the blend-weight grid, only when the rank check asks for it. That stage first trains the
  default model's trained part again on the split (``TwoTower._trained_scores_on``), which
  this probe does NOT time: it passes a stand-in trained part (fixed random 128-d user and
  item vectors), so only the scoring of the weight grid is timed. The fit of the trained part
  itself (the multinomial model on all items) is a separate, and on these sizes the larger,
  cost;
- the final fit on the whole training part (a rank-``rank`` SVD).

Also measured: the users a batch of the validation metrics (``linear.validation_batch``;
1,024 before it existed) and the top-k selection's own temporaries per score cell.

Not timed: the two ``[1,024, n_items]`` score matrices ``_fit_linear`` forms afterwards to
scale the parts (one validation batch's worth).

Usage (one size at a time on a shared host):
    nice -n 19 python benchmarks/probes/svd_form_cost.py --size 50_000:30_000:1_000_000 \\
        --size 200_000:60_000:2_000_000
Output: results/probe-svd-form-cost-<time>.txt
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import results_log  # noqa: E402
from _results import proc_status_mb as _status  # noqa: E402
from _results import reset_peak_rss as _reset_peak  # noqa: E402
from synthetic import Planted, write  # noqa: E402

from twotower.data import random_split, read_interactions  # noqa: E402
from twotower.evaluation.baselines import recency_settings  # noqa: E402
from twotower.models import ModelConfig  # noqa: E402
from twotower.evaluation.baselines import topk_excluding  # noqa: E402
from twotower.models.linear import AUTO_RANK_MAX, tune_and_fit  # noqa: E402
from twotower.models import linear  # noqa: E402


def _group(stage: str) -> str:
    """A ``tune_and_fit`` stage message -> the stage it belongs to."""
    for key, name in (("SVD of a validation split", "tuning split + rank-max SVD"),
                      ("on the validation split, setting", "lambda/recency search"),
                      ("choosing the rank", "rank choice"),
                      ("checking the blend weight", "rank check (extra cut)"),
                      ("training the model", "weight grid (stand-in trained part)"),
                      ("query recency", "trained query recency"),
                      ("fitting on all", "final fit")):
        if key in stage:
            return name
    return stage


class _Clock:
    """Times the stages ``tune_and_fit`` announces, with the peak RSS of each."""

    def __init__(self) -> None:
        self.rows: dict[str, list[float]] = {}
        self.cur: str | None = None
        self.t = time.perf_counter()
        self.ok = _reset_peak()

    def __call__(self, stage: str) -> None:
        self.close()
        self.cur = _group(stage)
        self.t = time.perf_counter()

    def close(self) -> None:
        now = time.perf_counter()
        if self.cur is not None:
            r = self.rows.setdefault(self.cur, [0.0, 0.0])
            r[0] += now - self.t
            r[1] = max(r[1], _status("VmHWM") if self.ok else float("nan"))
        self.ok = _reset_peak()
        self.t = now


def topk_bytes_per_cell(n_items: int, users: int = 256) -> float:
    """The extra bytes per score cell ``topk_excluding`` allocates at its peak (k = 10, a few
    exclusions a user; ``tracemalloc``), on ``[users, n_items]`` float32 scores."""
    import tracemalloc
    s = np.random.default_rng(0).standard_normal((users, n_items)).astype(np.float32)
    tracemalloc.start()
    topk_excluding(s, 10, [np.arange(5)] * users)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / s.size


def run_size(n_items: int, n_users: int, rows: int, seed: int, say) -> None:
    cfg = ModelConfig.preset("default", seed=seed, ease_large="svd", ease_split="random")
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/syn.parquet"
        t0 = time.perf_counter()
        write(path, rows, Planted(n_users, n_items, seed=seed), seed=seed + 1)
        data = read_interactions(path, rating_col="rating")
    train = random_split(data, 0.2, seed).train
    say(f"\n{rows:,} rows requested, {n_users:,} users, {n_items:,} items: generated in "
        f"{time.perf_counter() - t0:.0f} s; log {len(data):,} rows, {data.n_users:,} users, "
        f"{data.n_items:,} items; training part {len(train):,} rows; RSS {_status('VmRSS')} MB")
    del data
    ranks = tuple(min(cfg.embedding_dim * m, AUTO_RANK_MAX) for m in (1, 2, 4, 8))
    rng = np.random.default_rng(seed)
    u_vec = rng.standard_normal((train.n_users, cfg.embedding_dim)).astype(np.float32)
    i_vec = rng.standard_normal((train.n_items, cfg.embedding_dim)).astype(np.float32)

    def stand_in(_part):  # a trained part's scores, of the right shape, no training
        return lambda users, recency=None: u_vec[users] @ i_vec.T

    batch = getattr(linear, "validation_batch", lambda n: 1024)(train.n_items)
    say(f"validation metrics: {batch:,} users a batch ({batch * train.n_items / 1e6:,.0f}M "
        f"score cells); topk_excluding's peak extra at this catalogue "
        f"{topk_bytes_per_cell(train.n_items):.1f} bytes a cell (plus 4 for the scores)")
    clock = _Clock()
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, q, chosen = tune_and_fit(
            train, cfg.history_length, cfg.ease_lambdas, cfg.ease_half_lives, cfg.ease_floors,
            cfg.ease_rank or cfg.embedding_dim, cfg.ease_split, cfg.seed, cfg.ease_weight_grid,
            stand_in, ranks=ranks, stage=clock, check_rank=cfg.embedding_dim,
            joint=cfg.ease_search == "joint", form="svd",
            weighted=cfg.interaction_weights != "none")
    clock.close()
    total = time.perf_counter() - t0
    say(f"tune_and_fit (svd form, the default preset's grids): {total:.0f} s wall, load "
        f"{load0:.2f} at the start and {os.getloadavg()[0]:.2f} at the end; chose lambda "
        f"{chosen['lambda']:g}, half-life {chosen['half_life']:g}, floor {chosen['floor']:g}, "
        f"rank {chosen.get('rank')}, weight check {chosen.get('weight_check')}, "
        f"{len(chosen['tried'])} search settings scored; P {p.shape}")
    top = max(clock.rows, key=lambda k: clock.rows[k][0])
    for name, (sec, hwm) in clock.rows.items():
        say(f"  {name:<38} {sec:7.1f} s ({100 * sec / total:4.1f}%)  peak RSS {hwm:,.0f} MB"
            + ("  <- dominates" if name == top else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    num = lambda s: int(s.replace("_", ""))  # noqa: E731

    def size(s: str) -> tuple[int, int, int]:
        parts = s.split(":")
        if len(parts) != 3:
            raise argparse.ArgumentTypeError(f"--size must be ITEMS:USERS:ROWS, got {s!r}")
        return tuple(num(v) for v in parts)  # type: ignore[return-value]

    ap.add_argument("--size", type=size, action="append", required=True,
                    help="ITEMS:USERS:ROWS of one synthetic log (repeat for more)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None,
                    help="results file (default: results/probe-svd-form-cost-<time>.txt)")
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)
    say, close = results_log(a.out, "svd-form-cost", force=a.force)

    say(f"python benchmarks/probes/svd_form_cost.py {' '.join(argv or sys.argv[1:])}")
    say(f"cpus {os.cpu_count()}, numpy {np.__version__}, load {os.getloadavg()[0]:.2f} "
        f"(1-min average at the start), nice {os.nice(0)}; the host is shared: seconds are "
        f"indicative, peak RSS is not affected")
    for n_items, n_users, rows in a.size:
        run_size(n_items, n_users, rows, a.seed, say)
    # ru_maxrss is the same high-water mark that clear_refs resets: not the whole run's
    say(f"\nthe stage peaks above are VmHWM reset at each stage "
        f"({'reset' if _reset_peak() else 'NOT resettable here: cumulative'})")
    close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
