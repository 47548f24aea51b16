"""Where a benchmark writes its results, so that no run overwrites a kept (committed) one.

- By default a script writes under ``benchmarks/results`` with the time in each file's name
  (``quality-20261206-153000.md``): a new file for every run.
- A smoke run (``--quick``: small sizes, one repeat) writes to a new temporary folder
  instead, printed on stderr; ``--out DIR`` names one.
- A file already there is never written over unless ``--force`` is given: ``claim`` checks
  every output name before the run starts (not after an hour of measuring), and the script
  stops with a message naming the file and the options.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def stamp() -> str:
    """The time for a result file's name: ``YYYYMMDD-HHMMSS`` (local time, as before)."""
    return time.strftime("%Y%m%d-%H%M%S")


def out_dir(out: str | Path | None, *, smoke: bool = False, name: str = "bench") -> Path:
    """The folder a run writes into: ``out`` when given; a new temporary folder for a smoke
    run (said on stderr); else ``benchmarks/results``. Made if missing."""
    if out is not None:
        d = Path(out)
    elif smoke:
        d = Path(tempfile.mkdtemp(prefix=f"twotower-{name}-"))
        print(f"{name}: a smoke run: results go to {d}, not benchmarks/results (--out DIR "
              "to choose)", file=sys.stderr)
    else:
        d = RESULTS
    d.mkdir(parents=True, exist_ok=True)
    return d


def claim(*paths: str | Path, force: bool = False, hint: str = "--out") -> None:
    """Stop (exit 2) when one of ``paths`` exists, unless ``force``: a results file there may
    be a committed one. ``hint``: the option that picks other names."""
    if force:
        return
    for p in map(Path, paths):
        if p.exists():
            raise SystemExit(f"error: {p} exists (a kept result?): not overwritten; give "
                             f"another {hint}, or --force to overwrite it")


def mean_rows(groups: dict, keys: tuple[str, ...]) -> list[str]:
    """Markdown table rows ``| label... | mean ± std | ...``: one per ``groups`` entry (a
    label tuple -> the per-seed result dicts), a cell per ``keys`` (NaN-aware, population
    std), as the probes print their summaries."""
    import numpy as np
    out = []
    for label, rs in groups.items():
        cells = []
        for key in keys:
            v = np.array([r[key] for r in rs], dtype=np.float64)
            cells.append(f"{np.nanmean(v):.4f} ± {np.nanstd(v):.4f}")
        out.append("| " + " | ".join(map(str, label)) + " | " + " | ".join(cells) + " |")
    return out


def proc_status_mb(key: str) -> int:
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``) in MB; 0 where there is none."""
    try:
        with open("/proc/self/status") as f:
            return next((int(ln.split()[1]) // 1024 for ln in f if ln.startswith(key)), 0)
    except OSError:
        return 0


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False where refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def results_log(out: str | Path | None, name: str, *, force: bool = False) -> tuple[Any, Any]:
    """A probe's results file, claimed (``claim``): ``out``, or
    ``results/probe-<name>-<time>.txt``. Returns ``(say, close)``: ``say(line)`` prints the
    line and appends it to the file at once (a run cut short keeps what it said)."""
    path = Path(out) if out else RESULTS / f"probe-{name}-{stamp()}.txt"
    claim(path, force=force)
    path.parent.mkdir(parents=True, exist_ok=True)
    f = path.open("w")

    def say(line: str) -> None:
        print(line, flush=True)
        f.write(line + "\n")
        f.flush()

    return say, f.close
