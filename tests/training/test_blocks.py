"""``shard_tables="blocks"``: each device trains the examples whose user and item rows it
holds, in strata of disjoint blocks (``twotower.training.blocks``).

The subprocess check (4 simulated CPU devices) trains on 2 devices from in-memory arrays
and on 4 from a stream of batches, and on one device the same initial model on the same
steps: the losses and tables must agree, since row-wise updates of disjoint rows commute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from twotower.errors import ConfigError
from twotower.training import DistributionConfig, check_batch_size
from twotower.training.blocks import (ROWS, STRATUM, _pair_of, array_calls, coalesced, pack,
                                      stratify)
from twotower.training.loop import _from_blocks, _to_blocks

SCRIPT = Path(__file__).with_name("blocks_check.py")


@pytest.fixture(scope="module")
def report():
    env = {**os.environ, "KERAS_BACKEND": "jax",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=SCRIPT.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return {**json.loads(line[len("RESULT "):]), "stderr": proc.stderr}


@pytest.mark.parametrize("case", ["p2_memory", "p4_stream"])
def test_blocks_train_as_one_device_on_the_same_steps(report, case):
    r = report[case]
    got, ref = r["got"], r["ref"]
    assert len(got["losses"]) == len(ref["losses"]) > 50
    np.testing.assert_allclose(got["losses"], ref["losses"], rtol=1e-5)
    for table in ("user", "item"):
        np.testing.assert_allclose(got[table], ref[table], rtol=1e-5, atol=1e-6)
    assert r["rows_trained"] == 2 * 1500  # every example once per epoch


def test_blocks_cases_cover_moves_padding_and_both_tables(report):
    # the checks above mean something only if the tables moved, devices ran short, and
    # each table took a turn at moving
    for case in ("p2_memory", "p4_stream"):
        assert report[case]["moves"] >= 2 and report[case]["padded_steps"] > 0, case
    assert {report["p2_memory"]["moving"], report["p4_stream"]["moving"]} == {"user", "item"}
    assert report["p4_stream"]["moves"] > 20  # a small buffer: many short strata


@pytest.mark.parametrize("case,p", [("p2_memory", 2), ("p4_stream", 4)])
def test_blocks_tables_are_split_by_rows_over_the_devices(report, case, p):
    tables = report[case]["sharding"]
    assert len(tables) == 4  # two tables and their Adagrad accumulators
    for t in tables:
        assert t["devices"] == p and t["rows"] % p == 0
        assert t["shard_rows"] == t["rows"] // p
    # (57 and 203 rows: the loop pads them; Keras' layout no longer says "replicated")
    assert "replicated instead of sharded" not in report["stderr"], report["stderr"][-2000:]


def test_blocks_refuse_what_one_device_would_train_otherwise(report):
    assert "'blocks'" in report["refused"]["sampled_softmax"]
    assert "sampled_softmax" in report["refused"]["sampled_softmax"]
    assert "sparse_updates is 'off'" in report["refused"]["dense"]


def test_blocks_config_checks():
    with pytest.raises(ConfigError, match="data_parallel 1"):
        DistributionConfig(data_parallel=2, model_parallel=2, shard_tables="blocks")
    with pytest.raises(ConfigError, match="divisible by distribution.model_parallel"):
        check_batch_size(1001, DistributionConfig(model_parallel=2, shard_tables="blocks"))
    check_batch_size(1000, DistributionConfig(model_parallel=2, shard_tables="blocks"))


@pytest.mark.parametrize("p,n", [(2, 7), (3, 10), (4, 16)])
def test_block_layout_round_trips_at_every_rotation(p, n):
    a = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    for rot in range(p):
        laid = _to_blocks(a, p, rot)
        assert laid.shape[0] == -(-n // p) * p
        # id r sits at row r // p of the part of device (r % p - rot) % p
        part = laid.reshape(p, -1, 3)
        for r in range(n):
            np.testing.assert_array_equal(part[(r % p - rot) % p, r // p], a[r])
        np.testing.assert_array_equal(_from_blocks(laid, p, rot, n), a)


def _examples(calls, p, moving, n_rows):
    """(user, item, rating) of every real row the calls hold, checking the block rule."""
    out = []
    for c in calls:
        s = c[STRATUM]
        k = len(c[ROWS])
        assert c["user"].shape == (p, k, c["user"].shape[2])
        for t in range(k):
            real = 0
            for j in range(p):
                u, i = c["user"][j, t], c["item"][j, t]
                keep = u < -(-n_rows["user"] // p)
                assert (keep == (i < -(-n_rows["item"] // p))).all()  # padding: both ids
                mb = (j + s) % p
                ub, ib = (mb, j) if moving == "user" else (j, mb)
                real += keep.sum()
                out += zip((u[keep] * p + ub).tolist(), (i[keep] * p + ib).tolist(),
                           c["rating"][j, t][keep].tolist())
            assert real == c[ROWS][t] > 0  # no empty step
    return sorted(out)


@pytest.mark.parametrize("p", [3, 4])  # 4: _pair_of's masks; 3: its int64 residues
@pytest.mark.parametrize("moving", ["user", "item"])
def test_stratify_and_array_calls_give_every_example_once_in_its_block(moving, p):
    rng = np.random.default_rng(0)
    n, n_rows = 5000, {"user": 31, "item": 101}
    x = {"user": rng.integers(0, 31, n).astype(np.int32),
         "item": (rng.zipf(1.3, n) % 101).astype(np.int32),
         "rating": rng.random(n).astype(np.float32)}
    want = sorted(zip(x["user"].tolist(), x["item"].tolist(), x["rating"].tolist()))
    batches = [{k: v[s:s + 60] for k, v in x.items()} for s in range(0, n, 60)]
    for buffer in (200, 10**6):
        calls = list(stratify(iter(batches), devices=p, batch_size=60, steps=4,
                              moving=moving, n_rows=n_rows, buffer_rows=buffer))
        assert _examples(calls, p, moving, n_rows) == want
    calls = list(array_calls(pack(x, devices=p, moving=moving, n_rows=n_rows), devices=p,
                             batch_size=60, steps=4, shuffle=True, seed=1, epoch=0))
    assert _examples(calls, p, moving, n_rows) == want
    assert len({c[STRATUM] for c in calls}) == p  # every stratum, each once, in turn
    strata = [c[STRATUM] for c in calls]
    assert sum(a != b for a, b in zip(strata, strata[1:])) == p - 1


def test_stratify_keeps_every_column_of_wide_batches_and_coalesced_chunks():
    # five columns (records wider than the four words pack takes), fed as the loop feeds a
    # stream: its batches joined into chunks by coalesced
    rng = np.random.default_rng(1)
    n, p, n_rows = 3000, 2, {"user": 40, "item": 70}
    x = {"user": rng.integers(0, 40, n).astype(np.int64),
         "item": rng.integers(0, 70, n).astype(np.int32),
         "rating": rng.random(n).astype(np.float32),
         "w": rng.random(n),  # float64: travels as float32
         "t": np.arange(n, dtype=np.int32)}
    batches = [{k: v[s:s + 50] for k, v in x.items()} for s in range(0, n, 50)]
    chunks = list(coalesced(iter(batches), 420))
    assert [len(c["user"]) for c in chunks] == [450] * 6 + [300]  # 9 batches each, the rest
    for k in x:  # joined in order, nothing lost
        np.testing.assert_array_equal(np.concatenate([c[k] for c in chunks]), x[k])
    big = [{k: v[:500] for k, v in x.items()}]
    assert next(coalesced(iter(big), 420)) is big[0]  # a batch of enough rows passes as is
    calls = list(stratify(iter(chunks), devices=p, batch_size=40, steps=3, moving="user",
                          n_rows=n_rows, buffer_rows=10**6))
    assert _examples(calls, p, "user", n_rows) == sorted(
        zip(x["user"].tolist(), x["item"].tolist(), x["rating"].tolist()))
    seen = {}
    for c in calls:
        for j in range(p):
            keep = c["user"][j] < n_rows["user"] // p
            for t, w in zip(c["t"][j][keep].tolist(), c["w"][j][keep].tolist()):
                seen[t] = w
    assert sorted(seen) == list(range(n))
    np.testing.assert_allclose([seen[t] for t in range(n)], x["w"].astype(np.float32))


@pytest.mark.parametrize("dtype", [np.int32, np.uint32, np.int64, np.uint64])
@pytest.mark.parametrize("p", [2, 3, 4, 8])
def test_pair_of_is_each_examples_stratum_and_device(p, dtype):
    rng = np.random.default_rng(p)
    x = {"user": rng.integers(0, 1000, 4000).astype(dtype),
         "item": rng.integers(0, 5000, 4000).astype(dtype)}
    for moving, fixed in (("user", "item"), ("item", "user")):
        key = _pair_of(x, p, moving)
        f, m = x[fixed].astype(np.int64), x[moving].astype(np.int64)
        np.testing.assert_array_equal(key, (m % p - f % p) % p * p + f % p)
        assert np.bincount(key, minlength=p * p).sum() == 4000
