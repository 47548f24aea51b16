"""Probe: the service process's RSS over repeated reloads of one run, with the heap's free
pages given back after each swap (``service.state.release_freed_memory``, what
``ModelHolder.reload`` schedules) and without (the call made a no-op), each in a process
of its own. Needs a large run, e.g. (about 10 minutes here):

    python benchmarks/synthetic.py --rows 3_000_000 --users 100_000 --items 320_000 \\
        --alpha 0.5 --out /tmp/syn.parquet
    twotower train --data /tmp/syn.parquet --user-col user_id --item-col item_id \\
        --rating-col rating --preset tutorial --epochs 1 --out /tmp/big
    twotower index /tmp/big --kind hnsw

Usage: python benchmarks/probes/reload_rss.py --run /tmp/big [--reloads 6]
Output of the run quoted in docs/serving.md: results/probe-reload-rss-20261205.txt
"""
import argparse
import subprocess
import sys
import time


def rss_mb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS"))


def child(run: str, reloads: int, release: bool) -> None:
    from twotower.service import state
    if not release:
        state.release_freed_memory = lambda: False
    holder = state.ModelHolder(run)
    out = [rss_mb()]
    for _ in range(reloads):
        holder.reload(reuse=False)  # read the run anew (the same files: kept otherwise)
        time.sleep(state.RELEASE_AFTER_S + 1.0)  # the scheduled release has run
        out.append(rss_mb())
    print(f"{'released' if release else 'kept':>9}: RSS MB after load, then after each "
          f"reload: {out}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", required=True)
    p.add_argument("--reloads", type=int, default=6)
    p.add_argument("--child", choices=["kept", "released"])
    a = p.parse_args()
    if a.child:
        child(a.run, a.reloads, a.child == "released")
        return
    print(f"run {a.run}; {a.reloads} reloads, each in a fresh process", flush=True)
    for mode in ("kept", "released", "kept", "released"):
        subprocess.run([sys.executable, __file__, "--run", a.run, "--reloads",
                        str(a.reloads), "--child", mode], check=True)


if __name__ == "__main__":
    main()
