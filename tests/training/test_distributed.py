"""Data parallel and row-sharded training on 4 simulated CPU devices (in a subprocess: the
device count is fixed when JAX is imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).with_name("distributed_check.py")
RTOL = 1e-4  # losses: same data order and seed, only the reduction order differs


@pytest.fixture(scope="module", params=[("mse", "on"), ("sampled_softmax", "on"),
                                        ("sampled_softmax", "off")],
                ids=["mse-sparse-updates", "sampled_softmax-sparse-updates",
                     "sampled_softmax-dense-updates"])
def report(request):
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run([sys.executable, str(SCRIPT), *request.param], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def test_embedding_tables_are_sharded_by_rows_over_4_devices(report):
    for path, s in report["sharded"]["sharding"].items():
        assert s["devices"] == 4, path
        assert s["shard_rows"] == s["rows"] // 4, path
    for path, s in report["mesh_2x2"]["sharding"].items():
        assert s["devices"] == 4 and s["shard_rows"] == s["rows"] // 2, path
    for path, s in report["data_parallel"]["sharding"].items():  # replicated
        assert s["devices"] == 4 and s["shard_rows"] == s["rows"], path


@pytest.mark.parametrize("mode", ["data_parallel", "sharded", "mesh_2x2"])
def test_losses_match_single_device(report, mode):
    ref = np.array(report["single"]["losses"])
    got = np.array(report[mode]["losses"])
    assert len(ref) == len(got) == 20  # 2 epochs x 10 steps
    np.testing.assert_allclose(got, ref, rtol=RTOL)
    np.testing.assert_allclose(np.array(report[mode]["item_table"]),
                               np.array(report["single"]["item_table"]), rtol=RTOL, atol=1e-6)
