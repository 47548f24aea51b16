"""Probe: the log-Q correction's floor on the sampling probability (``sampled_softmax``).

keras-rs' ``SamplingProbabilityCorrection`` clips the probability at ``epsilon`` (default
1e-6, which the product used until it passed ``LOGQ_FLOOR``) while the product's inputs
clip it at 1e-12: every item with fewer than rows/1e6
interactions got the correction of one with rows/1e6 (on the synthetic 20M set, most of its
1M items). This trains the same tutorial-preset net (``sampled_softmax``, the product loop,
same data order and seed) with each floor on a synthetic planted set and reports the
planted recall@100 (``benchmarks/train_throughput.py``'s measure) and the last loss.

Usage: KERAS_BACKEND=jax python benchmarks/probes/logq_floor.py [--rows 10_000_000
    --users 100_000 --items 500_000 --epochs 2 --floors 1e-6,1e-12 --seeds 0]
Output of that run: results/probe-logq-floor-<date>.txt
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
import train_throughput as T  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=T._int, default=10_000_000)
    p.add_argument("--users", type=T._int, default=100_000)
    p.add_argument("--items", type=T._int, default=500_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--floors", default="1e-6,1e-12")
    p.add_argument("--seeds", default="0")
    p.add_argument("--work", default="/tmp/twotower-bench")
    a = p.parse_args()
    import twotower.models.net as N
    from twotower.training.loop import LoopConfig, TrainLoop, make_optimizer
    for seed in [int(s) for s in a.seeds.split(",")]:
        ns = argparse.Namespace(rows=a.rows, users=a.users, items=a.items, seed=seed,
                                objective="sampled_softmax", batch_size=1000,
                                embedding_dim=32, learning_rate=0.1, shuffle_buffer=262_144,
                                work=a.work)
        path = T.data_file(ns, a.rows)
        x, uv, iv, _ = T.cached_inputs(ns, path)
        counts = T.np.bincount(x["item"], minlength=len(iv))
        below = float((counts[counts > 0] < a.rows * 1e-6).mean())
        for floor in [float(f) for f in a.floors.split(",")]:
            N.LOGQ_FLOOR = floor  # read when a net is built (the loop's shadow net too)
            net = T.new_net(len(uv), len(iv), ns)
            assert net.logq.epsilon == floor
            loop = TrainLoop(net, make_optimizer(T.model_config(ns)), LoopConfig())
            t0 = time.perf_counter()
            loop.fit(x, batch_size=1000, epochs=a.epochs, seed=seed)
            print(json.dumps({"seed": seed, "floor": floor, "rows": a.rows, "items": len(iv),
                              "items_below_1e-6": round(below, 3),
                              "planted_recall@100": T.planted_recall(net, uv, iv, ns),
                              "loss": [round(v, 4) for v in loop.history["loss"]],
                              "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
