"""Re-check of the quality claim on data and seeds the project never tuned on, through the
product's own commands (``twotower train`` then ``twotower evaluate --baselines``).

Variants of MovieLens 100k, written as plain CSV logs (the titles and genres of each
variant's items as an ``--items`` file), so each run reads them as a user's own data would be read:

- ``implicit``: ratings >= 4 only, the rating column dropped;
- ``users40``: a random 40% of the users (drawn with seed 1234);
- ``sparse``: only users with at most 50 ratings;
- ``items20``: only items with at least 20 ratings.

Each variant is trained with the default preset on a random and on a per-user temporal
80/20 split for each ``--seeds`` (which seeds both the split and the model), and evaluated
beside MostPop, ItemKNN, EASE and (temporal) EASE+recency tuned on a validation part of the
same training data; seen items excluded. The seeds 11, 23, 31 and 57 were used by no
tuning run (``benchmarks/tune.py`` used 0-2 and 42).

Usage:
    KERAS_BACKEND=jax python benchmarks/recheck.py [--variants implicit sparse]
        [--splits random temporal] [--seeds 11 23] [--data DIR] [--work DIR]

Writes ``benchmarks/results/recheck-<timestamp>.{json,md}`` (``--out DIR``: there; a file of
the same name is not overwritten without ``--force``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _results import claim, out_dir, stamp

VARIANTS = ("implicit", "users40", "sparse", "items20")
METHODS = ("model", "MostPop", "ItemKNN", "EASE", "EASE+recency")
SHOW = ("recall@10", "ndcg@10", "recall@100")


def write_variants(data_dir: Path, work: Path, names: list[str]) -> dict[str, dict]:
    """The variants' logs as CSV in ``work`` (and each one's ``items-<name>.csv``); their
    sizes."""
    from twotower.data.movielens import GENRES
    r = pd.read_csv(data_dir / "u.data", sep="\t",
                    names=["user_id", "item_id", "rating", "timestamp"])
    it = pd.read_csv(data_dir / "u.item", sep="|", encoding="latin-1", header=None)
    flags = it.iloc[:, 5:].to_numpy() == 1
    items = pd.DataFrame({"item_id": it[0], "title": it[1].astype(str).str.strip(),
                          "genres": ["|".join(g for g, f in zip(GENRES, row) if f)
                                     for row in flags]})
    rng = np.random.default_rng(1234)
    users = r.user_id.unique()
    per_user, per_item = r.user_id.value_counts(), r.item_id.value_counts()
    make = {
        "implicit": lambda: r[r.rating >= 4].drop(columns="rating"),
        "users40": lambda: r[r.user_id.isin(rng.choice(users, int(0.4 * len(users)),
                                                         replace=False))],
        "sparse": lambda: r[r.user_id.isin(per_user[per_user <= 50].index)],
        "items20": lambda: r[r.item_id.isin(per_item[per_item >= 20].index)],
    }
    sizes = {}
    for name in names:
        x = make[name]()
        x.to_csv(work / f"{name}.csv", index=False)
        # the variant's own items: its catalogue is its log's (an items file listing more
        # puts those in the catalogue as cold items, ModelConfig.catalogue = "items")
        items[items.item_id.isin(x.item_id)].to_csv(work / f"items-{name}.csv", index=False)
        sizes[name] = {"rows": len(x), "users": int(x.user_id.nunique()),
                       "items": int(x.item_id.nunique())}
        print(name, sizes[name], flush=True)
    return sizes


def run_one(work: Path, name: str, split: str, seed: int) -> dict:
    exe = [sys.executable, "-m", "twotower"]
    run = work / "runs" / f"{name}-{split}-{seed}"
    rating = [] if name == "implicit" else ["--rating-col", "rating"]
    t0 = time.perf_counter()
    subprocess.run([*exe, "train", "--data", str(work / f"{name}.csv"), "--items",
                    str(work / f"items-{name}.csv"), *rating, "--time-col", "timestamp",
                    "--split", split, "--seed", str(seed), "--out", str(run)],
                   check=True, stdout=subprocess.DEVNULL)
    t1 = time.perf_counter()
    out = work / "res" / f"{name}-{split}-{seed}.json"
    subprocess.run([*exe, "evaluate", str(run), "--baselines", "--json", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    table = json.loads(out.read_text())
    return {"variant": name, "split": split, "seed": seed, "table": table,
            "train_s": round(t1 - t0, 1), "evaluate_s": round(time.perf_counter() - t1, 1)}


def markdown(rows: list[dict], sizes: dict) -> str:
    lines = ["| variant | split | seed | method | " + " | ".join(SHOW)
             + " | model vs best baseline, recall@10 / ndcg@10 |", "|---|---|---:|---|"
             + "---:|" * (len(SHOW) + 1)]
    for row in rows:
        t = row["table"]
        base = [m for m in METHODS[1:] if m in t]
        best = {k: max(t[m][k] for m in base) for k in ("recall@10", "ndcg@10")}
        rel = " / ".join(f"{100 * (t['model'][k] / best[k] - 1):+.1f}%" for k in best)
        for m in ("model", *base):
            lines.append(f"| {row['variant']} | {row['split']} | {row['seed']} | {m} | "
                         + " | ".join(f"{t[m][k]:.4f}" for k in SHOW)
                         + f" | {rel if m == 'model' else ''} |")
    lines += ["", "sizes: " + "; ".join(f"{n}: {s['rows']:,} rows, {s['users']:,} users, "
                                        f"{s['items']:,} items" for n, s in sizes.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("ML100K"),
                    help="MovieLens 100k directory (default: $ML100K, else as the product "
                         "finds it: TWOTOWER_ML100K_DIR, its cache, or a download)")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--splits", nargs="+", choices=("random", "temporal"),
                    default=["random", "temporal"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 23])
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a "
                    "temporary one)")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for the results (default benchmarks/results)")
    ap.add_argument("--force", action="store_true",
                    help="overwrite result files of the same name")
    args = ap.parse_args(argv)
    out, when = out_dir(args.out, name="recheck"), stamp()
    claim(out / f"recheck-{when}.md", out / f"recheck-{when}.json", force=args.force)
    if args.data is None:
        from twotower.data.fetch import fetch_movielens_100k
        args.data = str(fetch_movielens_100k())
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        (work / "res").mkdir(parents=True, exist_ok=True)
        sizes = write_variants(Path(args.data), work, args.variants)
        rows = []
        for seed in args.seeds:
            for name in args.variants:
                for split in args.splits:
                    rows.append(run_one(work, name, split, seed))
                    t = rows[-1]["table"]
                    print(name, split, seed, {m: round(t[m]["recall@10"], 4) for m in t},
                          f"train {rows[-1]['train_s']} s, evaluate {rows[-1]['evaluate_s']} s",
                          flush=True)
    md = markdown(rows, sizes)
    print(md)
    (out / f"recheck-{when}.md").write_text(md)
    (out / f"recheck-{when}.json").write_text(json.dumps({
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "command": " ".join(["python", "benchmarks/recheck.py", *(argv or sys.argv[1:])]),
        "sizes": sizes, "rows": rows}, indent=1))
    print("wrote", out / f"recheck-{when}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
