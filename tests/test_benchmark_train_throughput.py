"""benchmarks/train_throughput.py's ``blocks_order``: one device fed it trains each step on
the examples the blocks' devices train in that step (the claim behind the ``1b`` variants)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from train_throughput import blocks_order  # noqa: E402

from twotower.training.blocks import array_calls, pack  # noqa: E402


@pytest.mark.parametrize("p", [2, 4])
def test_blocks_order_is_the_blocks_steps(p):
    rng = np.random.default_rng(3)
    n, n_users, n_items, batch = 5_003, 61, 90, 40
    x = {"user": rng.integers(0, n_users, n).astype(np.int32),
         "item": rng.integers(0, n_items, n).astype(np.int32),
         "idx": np.arange(1, n + 1, dtype=np.int32)}  # 0 marks a padding row
    packed = pack(x, devices=p, moving="user", n_rows={"user": n_users, "item": n_items})
    steps = []  # each step's examples as the devices hold them, device after device
    for call in array_calls(packed, devices=p, batch_size=batch, steps=4, shuffle=True,
                            seed=11, epoch=0):
        idx = call["idx"]  # [p, K, batch / p]
        for k in range(idx.shape[1]):
            steps.append(np.concatenate([row[row > 0] for row in idx[:, k]]))
    got = blocks_order(x, p, batch, 11, "user") + 1
    want = np.concatenate(steps)
    assert sorted(got.tolist()) == list(range(1, n + 1))  # every example once
    np.testing.assert_array_equal(got, want)
    # and not just any order: another seed lays the examples out otherwise
    assert not np.array_equal(blocks_order(x, p, batch, 12, "user") + 1, want)


@pytest.mark.parametrize("argv, said", [
    (["--c-variants", "1,mbp"], "--c-variants: unknown 'mbp'"),
    (["--skip", "a,b,e"], "--skip 'a,b,e'"),
])
def test_a_bad_variant_or_section_stops_the_run_before_it_starts(argv, said, monkeypatch,
                                                                 capsys, tmp_path):
    """An unknown --c-variants key was a KeyError in section (c), after the data were
    generated and sections (a) and (b) had run (an hour at the documented 20M rows); a
    --skip letter that names no section was ignored."""
    import train_throughput
    monkeypatch.setattr(train_throughput, "data_file",
                        lambda *a: pytest.fail("generated data before the check"))
    monkeypatch.setattr(sys, "argv", ["train_throughput.py", "--rows", "1000", "--out",
                                      str(tmp_path), *argv])
    with pytest.raises(SystemExit) as stop:
        train_throughput.main()
    assert stop.value.code == 2 and said in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
