"""Probe: where the peak memory of ``TwoTower.fit_stream`` goes, stage by stage.

``twotower train --stream`` = the scan, a training pass (bounded: buffers and the model),
the seen-items pass (grows with the file), the search indexes (grow with the catalogue) and
the save. This prints the process's RSS and peak (VmHWM) around each, on one file.

Usage: KERAS_BACKEND=jax python benchmarks/probes/stream_fit_rss.py FILE.parquet
(columns user_id, item_id, rating: the files benchmarks/train_throughput.py writes to
/tmp/twotower-bench). Output quoted in docs/scaling.md:
results/probe-stream-fit-rss-20261129.txt
"""
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) // 1024 for ln in f if ln.startswith(key))


def hwm() -> int:
    return _status("VmHWM")


def rss() -> int:
    return _status("VmRSS")


from twotower.models import ModelConfig, TwoTower  # noqa: E402
from twotower.training import InteractionStream, StreamConfig  # noqa: E402

path = sys.argv[1]
s = InteractionStream(path, StreamConfig(user_col="user_id", item_col="item_id",
                                         rating_col="rating"))
print(path)
orig_seen, orig_build = InteractionStream.seen_matrix, TwoTower._build_indexes


def seen(self):  # the seen-items pass, measured around
    print("training pass done: rss", rss(), "MB, peak", hwm(), flush=True)
    m = orig_seen(self)
    print("seen items collected: rss", rss(), "MB, peak", hwm(), flush=True)
    return m


def build(self):  # the search indexes, measured after
    orig_build(self)
    print("indexes built: rss", rss(), "MB, peak", hwm(), flush=True)


InteractionStream.seen_matrix, TwoTower._build_indexes = seen, build
m = TwoTower(ModelConfig.preset("tutorial", epochs=1)).fit_stream(s, progress_every_s=0)
with tempfile.TemporaryDirectory() as tmp:
    m.save(f"{tmp}/run")
    print("saved: rss", rss(), "MB, peak", hwm(), flush=True)
