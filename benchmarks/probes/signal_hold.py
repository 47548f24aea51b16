"""Probe: what the training loop's per-call signal hold costs (with a checkpoint, a stop
waits for the call in progress: ``artifacts._signals_held(callables_only=True)`` around
each call, Python's own SIGINT handler installed as in a library process).

Usage: python benchmarks/probes/signal_hold.py
Output of the run quoted in docs/scaling.md: results/probe-signal-hold-20261205.txt
"""
import timeit


def main() -> None:
    from twotower.artifacts import _signals_held

    def held() -> None:
        with _signals_held(callables_only=True):
            pass
    runs = timeit.repeat(held, number=10_000, repeat=5)
    print(f"_signals_held(callables_only=True), empty block: {min(runs) / 10_000 * 1e6:.1f} us "
          f"per hold (best of 5 x 10,000; all: "
          f"{', '.join(f'{r / 10_000 * 1e6:.1f}' for r in runs)})")


if __name__ == "__main__":
    main()
