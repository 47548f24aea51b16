"""Where the default model's per-user temporal Recall@10 goes, against ``EASE+recency``:
the model's two parts taken apart on the test part of ``benchmarks/recheck.py``'s runs.

For each run (trained by ``twotower train`` as ``recheck.py`` trains it, reused from
``--work`` when already there) this scores, on the run's own held-out split, seen items and
the model's untrained items excluded:

- ``model``: the saved run as served (``twotower evaluate``'s ``model`` row);
- ``trained``: its trained part alone; ``ease128``: its EASE part alone (rank as saved);
- ``easefull``: the EASE part's own settings (lambda, half-life, floor) at full rank;
- ``EASE+recency``: the baseline, tuned as ``twotower evaluate --baselines`` tunes it;
- ``blend w=...``: the trained part with the saved EASE part at other blend weights
  (each part over its standard deviation on ``linear.scale_users``, as ``TwoTower``);
- ``trained+E+R w=...``: the trained part blended the same way with EASE+recency's scores.

Diagnosis only: the blends are read on the test part, so no choice is made from them.

Usage:
    KERAS_BACKEND=jax python benchmarks/probes/temporal_gap.py --work DIR
        [--variants sparse users40] [--splits temporal] [--seeds 11]

Writes ``benchmarks/results/probe-temporal-gap-<timestamp>.txt`` (``--out DIR``: there instead).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
WEIGHTS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.9, 1.0)


class _Fixed:
    """A ``Recommender`` over a fixed ``[n_users, n_items]`` score matrix."""

    def __init__(self, scores: np.ndarray, deny: np.ndarray) -> None:
        self.scores = np.array(scores, dtype=np.float32)
        self.scores[:, deny] = -np.inf

    def recommend(self, users, k, exclude=None):
        from twotower.evaluation.baselines import topk_excluding
        return topk_excluding(self.scores[np.asarray(users)], k, exclude)


def train_run(work: Path, name: str, split: str, seed: int) -> Path:
    run = work / "runs" / f"{name}-{split}-{seed}"
    if not (run / "training.json").is_file():
        rating = [] if name == "implicit" else ["--rating-col", "rating"]
        subprocess.run([sys.executable, "-m", "twotower", "train", "--data",
                        str(work / f"{name}.csv"), "--items", str(work / "items.csv"),
                        *rating, "--time-col", "timestamp", "--split", split, "--seed",
                        str(seed), "--out", str(run)], check=True, stdout=subprocess.DEVNULL)
    return run


def probe(run: Path, split: str) -> list[str]:
    from twotower import Interactions, TwoTower
    from twotower.artifacts import load_test
    from twotower.evaluation.baselines import EASE, ease_weights, recency_settings, tune_ease
    from twotower.evaluation.metrics import per_user_metrics, recommend_and_evaluate
    from twotower.evaluation.run import train_interactions
    from twotower.models.linear import floor_weights, history_matrix, scale_users

    model = TwoTower.load(run)
    test = load_test(run)
    train = train_interactions(model)
    held = Interactions(users=np.asarray(test[0], np.int64), items=np.asarray(test[1], np.int64),
                        user_vocab=model.user_vocab, item_vocab=model.item_vocab)
    lin, cfg = model._linear, model.config
    users = np.arange(len(model.user_vocab))
    q_t = model._query_part(users)
    d = q_t.shape[1]
    trained = q_t @ model.item_embeddings[:, :d].T
    hist = model._history
    ease = model._ease_query(hist, lin.query_table, lin.half_life, lin.floor) \
        @ model.item_embeddings[:, d:].T
    deny = np.flatnonzero(model.untrained_items())
    sample = scale_users(train, cfg.seed)
    sd_t, sd_e = float(trained[sample].std()), float(ease[sample].std())
    recency = model._seen_recency
    tuning = train if recency is None else Interactions(
        users=train.users, items=train.items, user_vocab=train.user_vocab,
        item_vocab=train.item_vocab,
        timestamps=(int(recency.max()) - recency).astype(np.int64))
    x = tuning.to_csr()
    b = ease_weights((x.T @ x).toarray(), lin.lambda_, np.float32)
    q_full = history_matrix(hist, floor_weights(hist.shape[1], lin.half_life, lin.floor),
                            model.n_items + 1, "latest")[:, 1:]
    full = np.asarray(q_full @ b)
    rows: dict[str, np.ndarray] = {"trained": trained, "ease128": ease, "easefull": full}
    chosen = model.ease_tuning or {}
    w0 = chosen.get("weight", cfg.ease_weight)
    # the trained part without its item bias, and with other query-time recency weights
    # (its tables trained with the config's; serving-time change only)
    items_t = model.item_embeddings[:, :d]
    if cfg.item_bias:
        nob = q_t.copy()
        nob[:, -1] = 0.0
        rows["trained, no bias"] = nob @ items_t.T
    for hl, fl in ((5.0, 0.0), (2.0, 0.0), (10.0, 0.0), (0.0, 1.0)):
        w = history_matrix(hist, floor_weights(hist.shape[1], hl, fl),
                           len(model.history_embeddings))
        count = np.maximum(np.asarray(w.sum(axis=1), dtype=np.float32), 1.0)
        pooled = np.asarray(w @ model.history_embeddings, dtype=np.float32) / np.sqrt(count)
        q2 = q_t.copy()
        q2[:, :pooled.shape[1]] = pooled + (model.user_embeddings[users]
                                            if model.user_embeddings is not None else 0.0)
        t2 = q2 @ items_t.T
        rows[f"trained, query hl {hl:g} floor {fl:g}"] = t2
        s2 = float(t2[sample].std())
        rows[f"blend(hl {hl:g}, fl {fl:g}) w={w0:g}"] = (1 - w0) * t2 / s2 + w0 * ease / sd_e
    er = None
    if split == "temporal":
        _, weighted = tune_ease(tuning, int(cfg.seed), split="temporal",
                                recency=recency_settings(cfg.ease_half_lives, cfg.ease_floors))
        fitted = EASE(weighted).fit(tuning)
        er = np.asarray(fitted._query @ fitted._weights, dtype=np.float32)
        rows["EASE+recency"] = er
    for w in WEIGHTS:
        rows[f"blend w={w:g}"] = (1 - w) * trained / sd_t + w * ease / sd_e
    if er is not None:
        sd_r = float(er[sample].std())
        for w in WEIGHTS[1:-1]:
            rows[f"trained+E+R w={w:g}"] = (1 - w) * trained / sd_t + w * er / sd_r
    out = [f"## {run.name}: saved weight {w0:g}, EASE part lambda {lin.lambda_:g}, "
           f"half-life {lin.half_life:g}, floor {lin.floor:g}, rank {lin.query_table.shape[1]}"
           + (f"; EASE+recency lambda {weighted.lambda_:g}, half-life {weighted.half_life:g}, "
              f"floor {weighted.floor:g}" if er is not None else ""),
           "| scorer | recall@10 | ndcg@10 | recall@100 |", "|---|---:|---:|---:|"]
    per_user: dict[str, dict[str, np.ndarray]] = {}
    truth = held.to_csr().astype(bool).astype(np.float32)
    truth = (truth - truth.multiply(train.to_csr().astype(bool))).tocsr()
    truth.eliminate_zeros()

    def row(name: str, rec) -> str:
        m = recommend_and_evaluate(rec, train, held, (10, 100), return_lists=True)
        lists = m["lists"]
        per_user[name] = per_user_metrics(lists["top_ids"][:, :10], truth[lists["users"]], (10,))
        return (f"| {name} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} | "
                f"{m['recall@100']:.4f} |")
    out.append(row("model", model))
    for name, s in rows.items():
        out.append(row(name, _Fixed(s, deny)))
    if er is not None:
        # paired per-user differences against EASE+recency: is the gap more than noise?
        out += ["", "paired per-user difference against EASE+recency (mean, its standard "
                "error; n users):", "| scorer | recall@10 | ndcg@10 |", "|---|---:|---:|"]
        base = per_user["EASE+recency"]
        for name in ("model", "easefull", "ease128", "trained"):
            cells = []
            for k in ("recall@10", "ndcg@10"):
                diff = per_user[name][k] - base[k]
                diff = diff[np.isfinite(diff)]
                cells.append(f"{diff.mean():+.4f} ± {diff.std(ddof=1) / np.sqrt(len(diff)):.4f}"
                             f" (n {len(diff)})")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def main(argv: list[str] | None = None) -> int:
    from recheck import VARIANTS, write_variants
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("ML100K")
                    or os.environ.get("TWOTOWER_ML100K_DIR"))
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--splits", nargs="+", choices=("random", "temporal"),
                    default=["temporal"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[11])
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for the results file (default benchmarks/results)")
    ap.add_argument("--force", action="store_true", help="overwrite a results file of that name")
    args = ap.parse_args(argv)
    from _results import claim, out_dir
    path = (out_dir(args.out, name="temporal-gap")
            / f"probe-temporal-gap-{time.strftime('%Y%m%d-%H%M%S')}.txt")
    claim(path, force=args.force)  # checked before the run: a kept result is not written over
    args.work.mkdir(parents=True, exist_ok=True)
    missing = [n for n in args.variants if not (args.work / f"{n}.csv").is_file()]
    if missing:
        if args.data is None:  # as the product finds it: the cache, or a download
            from twotower.data.fetch import fetch_movielens_100k
            args.data = str(fetch_movielens_100k())
        write_variants(Path(args.data), args.work, missing)
    cmd = ["python", "benchmarks/probes/temporal_gap.py", *(argv or sys.argv[1:])]
    lines = [f"# {' '.join(cmd)}"]
    for seed in args.seeds:
        for name in args.variants:
            for split in args.splits:
                out = probe(train_run(args.work, name, split, seed), split)
                print("\n".join(out), flush=True)
                lines += ["", *out]
    path.write_text("\n".join(lines) + "\n")
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
