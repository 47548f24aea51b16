"""Probe: the default preset above ``ease_max_items`` (20,000 items), with and without its
closed-form part, against the baselines that run at that size.

Above 20,000 items EASE's dense ``n x n`` inverse is out of reach, so the default used to
serve its trained part alone (still the default). ``ModelConfig.ease_large = "svd"`` fits
the low-rank ridge ``V diag(s^2 / (s^2 + lambda)) V^T`` of a randomized SVD of the sparse
user-item matrix instead (``twotower.models.linear.sparse_svd``), tuned and blended as the
EASE part is. For each log, split and seed, one fit of the default preset with
``ease_large = "svd"`` (the EASE part's validation
split carved like the test part, as ``benchmarks/quality.py`` does), scored on the held-out
test part (seen items excluded) four ways: the blend; its trained part alone (the default
preset as it is: the same trained tables and query; a blend's trained part is
the trained part alone, scaled); its closed-form part alone; and the baselines that scale:
MostPop, and ItemKNN on a sparse item-item matrix (cosine, 100 neighbours, no shrink:
``twotower.evaluation.ItemKNN`` with its defaults). That class held a dense ``n x n``
matrix when this probe was written, so the probe kept its own sparse copy of the same
definition (ties among a target's neighbours kept arbitrarily, where the library keeps the
lower index); the results committed before 2026-12-07 (``probe-large-closed-form-20261206-*``)
came from that copy. Since the library's is sparse too, the probe uses it.

Usage:
    python benchmarks/synthetic.py --rows 1_000_000 --users 30_000 --items 40_000 \\
        --out /tmp/syn1m.parquet
    python benchmarks/sessions.py --users 20000 --items 40000 --chains 4000 \\
        --out /tmp/sess.csv
    python benchmarks/shapes.py ecom /tmp/ecom.csv --users 30000 --items 150000
    KERAS_BACKEND=jax python benchmarks/probes/large_closed_form.py \\
        --syn /tmp/syn1m.parquet --sessions /tmp/sess.csv --ecom /tmp/ecom.csv --seeds 0 1
Output: results/probe-large-closed-form-<time>.txt
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import RESULTS, claim, stamp  # noqa: E402

from twotower.data import make_split, read_interactions  # noqa: E402
from twotower.evaluation import ItemKNN, MostPop, recommend_and_evaluate  # noqa: E402
from twotower.evaluation.baselines import topk_excluding  # noqa: E402
from twotower.models import ModelConfig, TwoTower  # noqa: E402

KS = (10, 100)
SHOW = ("recall@10", "ndcg@10", "recall@100")


class _Part:
    """One part of a fitted default model as a ``Recommender``."""

    def __init__(self, model: TwoTower, part: str) -> None:
        self.model, self.part = model, part

    def recommend(self, users, k, exclude=None):
        m, users = self.model, np.asarray(users)
        if self.part == "trained":  # its own query recency, as fitted without the part
            s = m._query_part(users) @ m._trained_items().T
        else:
            lin = m._linear
            s = m._ease_query(m._history[users], lin.query_table, lin.half_life,
                              lin.floor) @ lin.item_table.T
        return topk_excluding(np.asarray(s, dtype=np.float32), k, exclude)


def _keep(m):
    return {k: float(m[k]) for k in SHOW}


def run(name, data, splits, seeds, say, max_items=None):
    rows = []
    say(f"{name}: {len(data):,} rows, {data.n_users:,} users, {data.n_items:,} items")
    for split in splits:
        kind = "random" if split == "random" else "temporal"
        for seed in seeds:
            sp_ = make_split(data, split, 0.2, seed)
            cfg = ModelConfig.preset("default", seed=seed, ease_split=kind, ease_large="svd",
                                     **({"ease_max_items": max_items} if max_items else {}))
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = TwoTower(cfg).fit(sp_.train, verbose=0)
            fit_s = time.perf_counter() - t0
            t = model.ease_tuning or {}
            say(f"  {split} seed {seed}: fit {fit_s:.0f} s; closed form {t.get('form')}, "
                f"lambda {t.get('lambda')}, rank {t.get('rank')}, half-life "
                f"{t.get('half_life')}, floor {t.get('floor')}, weight "
                f"{t.get('weight', cfg.ease_weight)}, weight check {t.get('weight_check')}")
            recs = {"with the svd part (blend)": model,
                    "trained part alone (default)": _Part(model, "trained"),
                    "closed-form part alone": _Part(model, "linear")}
            t0 = time.perf_counter()
            recs["MostPop"] = MostPop().fit(sp_.train)
            recs["ItemKNN (sparse)"] = ItemKNN().fit(sp_.train)
            say(f"    baselines fitted in {time.perf_counter() - t0:.0f} s")
            for method, rec in recs.items():
                m = recommend_and_evaluate(rec, sp_.train, sp_.test, KS)
                rows.append({"log": name, "split": split, "seed": seed, "method": method,
                             **_keep(m)})
                say(f"    {method:<28} " + "  ".join(f"{k} {rows[-1][k]:.4f}" for k in SHOW))
    return rows


def summary(rows, say):
    say("\nmean ± std over seeds (held-out test parts, seen items excluded)")
    keys = sorted({(r["log"], r["split"]) for r in rows}, key=lambda k: (k[0], k[1]))
    for log, split in keys:
        say(f"{log}, {split} split:")
        sub = [r for r in rows if (r["log"], r["split"]) == (log, split)]
        methods = list(dict.fromkeys(r["method"] for r in sub))
        for method in methods:
            v = {k: np.array([r[k] for r in sub if r["method"] == method]) for k in SHOW}
            say(f"  {method:<28} " + "  ".join(
                f"{k} {v[k].mean():.4f} ± {v[k].std():.4f}" for k in SHOW))
        base = {k: np.array([r[k] for r in sub if r["method"] == methods[1]]) for k in SHOW}
        new = {k: np.array([r[k] for r in sub if r["method"] == methods[0]]) for k in SHOW}
        say("  blend / trained part alone, per seed: " + "; ".join(
            f"{k} " + " ".join(f"{a / b:.3f}" for a, b in zip(new[k], base[k])) for k in SHOW))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--syn", help="a benchmarks/synthetic.py log (Parquet, rating column)")
    ap.add_argument("--sessions", help="a benchmarks/sessions.py log (CSV, timestamp column)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--syn-splits", nargs="+", default=["random"])
    ap.add_argument("--sessions-splits", nargs="+", default=["random", "temporal"])
    ap.add_argument("--ecom", help="a benchmarks/shapes.py ecom log (CSV, timestamp column; "
                    "--users/--items above 20,000 distinct items)")
    ap.add_argument("--ecom-splits", nargs="+", default=["random", "temporal"])
    ap.add_argument("--out", default=None, help="results file (default: results/probe-"
                    "large-closed-form-<time>.txt)")
    ap.add_argument("--ease-max-items", type=int, default=None,
                    help="override ModelConfig.ease_max_items (a smoke run on a small log)")
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)
    out = Path(a.out) if a.out else RESULTS / f"probe-large-closed-form-{stamp()}.txt"
    claim(out, force=a.force)
    out.parent.mkdir(parents=True, exist_ok=True)
    f = out.open("w")

    def say(line):
        print(line, flush=True)
        f.write(line + "\n")
        f.flush()

    say(f"python benchmarks/probes/large_closed_form.py {' '.join(argv or sys.argv[1:])}")
    say(f"cpus {os.cpu_count()}, numpy {np.__version__}")
    rows = []
    if a.syn:
        rows += run(f"synthetic ({Path(a.syn).name})",
                    read_interactions(a.syn, rating_col="rating"), a.syn_splits, a.seeds, say,
                    a.ease_max_items)
    if a.sessions:
        rows += run(f"sessions ({Path(a.sessions).name})",
                    read_interactions(a.sessions, time_col="timestamp"), a.sessions_splits,
                    a.seeds, say, a.ease_max_items)
    if a.ecom:
        rows += run(f"ecom ({Path(a.ecom).name})",
                    read_interactions(a.ecom, time_col="timestamp"), a.ecom_splits, a.seeds,
                    say, a.ease_max_items)
    summary(rows, say)
    say(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GB")
    f.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
