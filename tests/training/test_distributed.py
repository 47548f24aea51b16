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
        if "accumulator" in path:
            continue
        assert s["devices"] == 4, path
        assert s["shard_rows"] == s["rows"] // 4, path
    for path, s in report["mesh_2x2"]["sharding"].items():
        if "accumulator" in path:
            continue
        assert s["devices"] == 4 and s["shard_rows"] == s["rows"] // 2, path
    for path, s in report["data_parallel"]["sharding"].items():  # replicated
        if "accumulator" in path:
            continue
        assert s["devices"] == 4 and s["shard_rows"] == s["rows"], path


def test_embedding_tables_are_sharded_by_columns_when_asked(report):
    for mode, parts in (("columns", 4), ("columns_2x2", 2)):
        tables = {p: s for p, s in report[mode]["sharding"].items() if "accumulator" not in p}
        assert len(tables) == 2
        for path, s in tables.items():
            assert s["devices"] == 4, (mode, path)
            assert s["shard_shape"] == [s["rows"], s["cols"] // parts], (mode, path)
        accs = {p: s for p, s in report[mode]["sharding"].items() if "accumulator" in p}
        assert len(accs) == 2  # Adagrad's accumulators are split alike
        for path, s in accs.items():
            assert s["shard_shape"][1] == 8 // parts, (mode, path)


def test_column_sharded_mse_adds_one_small_all_reduce_per_step(report):
    # each device scores its columns; one all-reduce of the batch's partial scores per step
    # completes them, and each device updates its own columns of the rows (no gathers)
    if report["objective"] != "mse":
        pytest.skip("the row-wise mse step only")
    assert report["columns"]["collectives"] == {"all-reduce": 1, "all-gather": 0,
                                                "reduce-scatter": 0, "all-to-all": 0,
                                                "collective-permute": 0}


@pytest.mark.parametrize("mode", ["data_parallel", "sharded", "mesh_2x2", "columns",
                                  "columns_2x2"])
def test_losses_match_single_device(report, mode):
    ref = np.array(report["single"]["losses"])
    got = np.array(report[mode]["losses"])
    assert len(ref) == len(got) == 20  # 2 epochs x 10 steps
    np.testing.assert_allclose(got, ref, rtol=RTOL)
    np.testing.assert_allclose(np.array(report[mode]["item_table"]),
                               np.array(report["single"]["item_table"]), rtol=RTOL, atol=1e-6)


def test_input_thread_yields_to_the_cpu_devices(report):
    # several CPU devices fill every core: the input thread runs at low priority (auto)
    assert report["single"]["input_nice"] == 0
    for mode in ("data_parallel", "sharded", "columns"):
        assert report[mode]["input_nice"] == 19, mode


def test_batch_and_width_must_split_over_the_devices():
    from twotower.errors import ConfigError
    from twotower.training import DistributionConfig, check_batch_size, check_embedding_dim
    with pytest.raises(ConfigError, match=r"batch_size 63 must be divisible by "
                                          r"distribution.data_parallel \(2\)"):
        check_batch_size(63, DistributionConfig(data_parallel=2))
    with pytest.raises(ConfigError, match=r"embedding_dim 33 must be divisible by "
                                          r"distribution.model_parallel \(2\)"):
        check_embedding_dim(33, DistributionConfig(model_parallel=2, shard_tables="columns"))
    check_batch_size(64, DistributionConfig(data_parallel=2))
    check_embedding_dim(32, DistributionConfig(model_parallel=2, shard_tables="columns"))
