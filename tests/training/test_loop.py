"""The product loop trains exactly as ``model.fit`` does for the same data order."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from twotower.errors import ConfigError, DataError
from twotower.models.config import ModelConfig
from twotower.models.net import TwoTowerNet
from twotower.training import (DistributionConfig, InteractionStream, LoopConfig, StreamConfig,
                               TrainLoop, apply_distribution, make_optimizer)

N_USERS, N_ITEMS, ROWS, BATCH = 30, 50, 1050, 100  # 11 steps: the last one has 50 rows


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return {"user": rng.integers(0, N_USERS, ROWS).astype("int32"),
            "item": rng.integers(0, N_ITEMS, ROWS).astype("int32"),
            "rating": rng.random(ROWS).astype("float32"),
            "logq": np.full(ROWS, np.log(1 / N_ITEMS), "float32")}


def _net(cfg):
    keras.utils.set_random_seed(1)
    net = TwoTowerNet(N_USERS, N_ITEMS, cfg)
    net.build()
    return net


@pytest.mark.parametrize("objective,optimizer,sparse", [
    ("mse", "adagrad", "on"), ("mse", "adagrad", "off"), ("sampled_softmax", "sgd", "on"),
    ("bpr", "adam", "auto"), ("softmax", "adagrad", "auto"), ("mse", "adagrad", "auto")])
def test_same_losses_and_weights_as_model_fit(objective, optimizer, sparse):
    cfg = ModelConfig.preset("tutorial", objective=objective, optimizer=optimizer, l2=0.01,
                             batch_size=BATCH, epochs=2)
    x = _data()
    ref = _net(cfg)
    ref.compile(optimizer=make_optimizer(cfg))
    hist = ref.fit(x, batch_size=BATCH, epochs=2, shuffle=False, verbose=0).history["loss"]
    net = _net(cfg)
    loop = TrainLoop(net, make_optimizer(cfg), LoopConfig(steps_per_call=4,
                                                          sparse_updates=sparse))
    got = loop.fit(x, batch_size=BATCH, epochs=2, shuffle=False)["loss"]
    # "auto" keeps dense updates for these tiny tables (80 rows < 16 x batch)
    assert loop.sparse == (sparse == "on")
    assert len(loop.step_losses) == 22
    np.testing.assert_allclose(got, hist, rtol=1e-5)
    for a, b in zip(ref.trainable_variables, net.trainable_variables):
        np.testing.assert_allclose(np.asarray(b.value), np.asarray(a.value), rtol=1e-5,
                                   atol=1e-7, err_msg=a.path)


def test_host_unique_matches_jnp_unique_with_distinct_padding():
    import jax.numpy as jnp

    from twotower.training.loop import _host_unique
    ids = np.array([[5, 3, 5, 9, 3, 0], [1, 1, 1, 1, 1, 1]], dtype=np.int32)
    uniq, inv = _host_unique(ids, n_rows=10)
    for s in range(2):
        u, i = jnp.unique(ids[s], size=6, fill_value=10, return_inverse=True)
        n = len(np.unique(ids[s]))
        np.testing.assert_array_equal(uniq[s, :n], np.asarray(u)[:n])
        np.testing.assert_array_equal(inv[s], np.asarray(i).reshape(-1))
        # padding: out-of-range rows (reads as zeros, writes dropped), all distinct
        assert (uniq[s, n:] >= 10).all() and len(set(uniq[s, n:])) == 6 - n
    np.testing.assert_array_equal(uniq[np.arange(2)[:, None], inv], ids)


def test_host_unique_one_sort_equals_per_step_unique():
    # the packed one-sort path against np.unique per step, on skewed ids with many repeats;
    # and tables too large to pack take the per-step path with the same result
    from twotower.training.loop import _host_unique, _host_unique_steps
    rng = np.random.default_rng(3)
    ids = np.minimum(rng.zipf(1.3, (16, 1000)), 5000).astype(np.int32) - 1
    for got, want in zip(_host_unique(ids, 5000), _host_unique_steps(ids, 5000)):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype
    assert [len(np.unique(r)) for r in ids] != [1000] * 16  # repeats were exercised
    # 32-bit keys (ids below 2**21 at B = 1,000) from int64 ids, and 64-bit keys
    for n_rows, kind in ((5000, np.int64), (3_000_000, np.int32), (3_000_000, np.int64)):
        wide = (ids.astype(np.int64) * (n_rows // 5000)).astype(kind)
        for got, want in zip(_host_unique(wide, n_rows), _host_unique_steps(wide, n_rows)):
            np.testing.assert_array_equal(got, want)
            assert got.dtype == want.dtype == kind
    big = ids.astype(np.int64) * (1 << 40)
    uniq, inv = _host_unique(big, 1 << 52)
    np.testing.assert_array_equal(uniq[np.arange(16)[:, None], inv], big)
    np.testing.assert_array_equal(uniq, _host_unique_steps(big, 1 << 52)[0])


@pytest.mark.parametrize("objective", ["mse", "sampled_softmax"])
def test_row_wise_step_finds_rows_on_the_host_as_in_the_graph(objective, monkeypatch):
    """The input thread finds each step's unique rows (numpy); with several processes the
    step finds them itself (``jnp.unique``). Both train the same model."""
    import jax
    cfg = ModelConfig.preset("tutorial", objective=objective, batch_size=BATCH, epochs=1)
    x = _data()
    host = TrainLoop(_net(cfg), make_optimizer(cfg), LoopConfig(steps_per_call=4,
                                                                 sparse_updates="on"))
    host._setup()
    placed = host._put([{k: v[:BATCH] for k, v in x.items()}])
    assert {"user__unique", "user__inverse", "item__unique", "item__inverse"} <= set(placed)
    host.fit(x, batch_size=BATCH, shuffle=False)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    # this one process feeds the whole batches (not the half a real process 0 would)
    from twotower.training import loop as loop_module
    monkeypatch.setattr(loop_module, "process_parts", lambda batches, dp: batches)
    graph = TrainLoop(_net(cfg), make_optimizer(cfg), LoopConfig(steps_per_call=4,
                                                                  sparse_updates="on"))
    graph._setup()
    assert not any(k.endswith("__unique") for k in
                   graph._put([{k: v[:BATCH] for k, v in x.items()}]))
    graph.fit(x, batch_size=BATCH, shuffle=False)
    np.testing.assert_allclose(host.step_losses, graph.step_losses, rtol=1e-6)
    for a, b in zip(host.net.trainable_variables, graph.net.trainable_variables):
        np.testing.assert_allclose(np.asarray(a.value), np.asarray(b.value), rtol=1e-6,
                                   atol=1e-8, err_msg=a.path)


def test_weight_averaging_matches_model_fit():
    """``ema_momentum``: the loop ends on the optimizer's moving average, as ``fit`` does."""
    cfg = ModelConfig.preset("tutorial", optimizer="adam", learning_rate=0.05,
                             batch_size=BATCH, epochs=2, ema_momentum=0.9)
    assert make_optimizer(cfg).use_ema
    x = _data()
    ref = _net(cfg)
    ref.compile(optimizer=make_optimizer(cfg))
    ref.fit(x, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    net = _net(cfg)
    loop = TrainLoop(net, make_optimizer(cfg), LoopConfig(steps_per_call=4))
    loop.fit(x, batch_size=BATCH, epochs=2, shuffle=False)
    plain = _net(cfg)
    TrainLoop(plain, make_optimizer(ModelConfig.from_dict({**cfg.to_dict(), "ema_momentum": 0})),
              LoopConfig(steps_per_call=4)).fit(x, batch_size=BATCH, epochs=2, shuffle=False)
    for a, b, c in zip(ref.trainable_variables, net.trainable_variables,
                       plain.trainable_variables):
        np.testing.assert_allclose(np.asarray(b.value), np.asarray(a.value), rtol=1e-5,
                                   atol=1e-7, err_msg=a.path)
        assert not np.allclose(np.asarray(b.value), np.asarray(c.value)), a.path


def test_sparse_on_refuses_where_not_exact():
    cfg = ModelConfig.preset("tutorial", objective="softmax", batch_size=BATCH)
    loop = TrainLoop(_net(cfg), make_optimizer(cfg), LoopConfig(sparse_updates="on"))
    with pytest.raises(ConfigError, match="softmax"):
        loop.fit(_data(), batch_size=BATCH)


@pytest.mark.parametrize("make, why", [
    (lambda: keras.optimizers.SGD(0.1, momentum=0.9), "SGD with momentum"),
    (lambda: keras.optimizers.Adagrad(0.1, clipnorm=1.0), "clipnorm"),
    (lambda: keras.optimizers.Adagrad(0.1, global_clipnorm=1.0), "global_clipnorm"),
    (lambda: keras.optimizers.Adagrad(0.1, clipvalue=1.0), "clipvalue"),
    (lambda: keras.optimizers.SGD(0.1, weight_decay=0.01), "weight_decay"),
    (lambda: keras.optimizers.SGD(0.1, use_ema=True), "EMA"),
    (lambda: keras.optimizers.Adam(0.1), "Adam moves rows"),
    (lambda: keras.optimizers.Adagrad(keras.optimizers.schedules.CosineDecay(0.1, 100)),
     "learning-rate schedule"),
])
def test_sparse_updates_are_refused_where_they_would_differ_from_fit(make, why):
    """Each case where a row-wise update is not ``model.fit``'s: `auto` falls back to
    dense updates, `on` is an error naming the reason."""
    from twotower.training.loop import sparse_reason
    cfg = ModelConfig.preset("tutorial", batch_size=BATCH)
    net, opt = _net(cfg), make()
    assert why in (sparse_reason(net, opt) or "")
    assert sparse_reason(net, keras.optimizers.Adagrad(0.1)) is None
    assert sparse_reason(net, keras.optimizers.SGD(0.1)) is None
    with pytest.raises(ConfigError, match=why):
        TrainLoop(net, opt, LoopConfig(sparse_updates="on")).fit(_data(), batch_size=BATCH)


def test_steps_per_call_does_not_change_the_result():
    cfg = ModelConfig.preset("tutorial", batch_size=BATCH)
    out = []
    for k in (1, 3, 16):
        loop = TrainLoop(_net(cfg), make_optimizer(cfg), LoopConfig(steps_per_call=k,
                                                                    sparse_updates="on"))
        out.append(loop.fit(_data(), batch_size=BATCH, epochs=1, seed=5)["loss"][0])
    assert out[0] == pytest.approx(out[1], rel=1e-6) == pytest.approx(out[2], rel=1e-6)


@pytest.mark.parametrize("keys", [("user", "item", "rating"),
                                  ("user", "item", "rating", "logq")])
def test_packed_shuffle_gives_the_same_batches(monkeypatch, keys):
    """Large in-memory data is shuffled through 16-byte packed rows: the same permutation,
    the same values bit for bit, the same batch sizes (the last one short)."""
    from twotower.training import loop as loop_module
    x = {k: v for k, v in _data(3).items() if k in keys}
    x["rating"] = x["rating"] - 0.5  # negative floats survive the bit packing
    assert loop_module._pack_rows(x) is None  # small: not packed
    monkeypatch.setattr(loop_module, "PACK_MIN_ROWS", 1)
    packed = loop_module._pack_rows(x)
    assert packed is not None and packed.shape == (ROWS,)
    for batch in (7, 100):  # 1050 rows: not a multiple of 16 batches either way
        plain = list(loop_module._array_batches(x, batch, True, 11))
        fast = list(loop_module._array_batches(x, batch, True, 11, packed))
        assert len(plain) == len(fast) == -(-ROWS // batch)
        for a, b in zip(plain, fast):
            assert list(a) == list(b)
            for k in a:
                assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    wide = {**x, "when": np.zeros(ROWS, np.int64)}  # an 8-byte column: not packable
    assert loop_module._pack_rows(wide) is None


def test_input_thread_priority(monkeypatch):
    import os
    import threading

    from twotower.training.loop import _prefetch

    def nice_of_producer():
        yield os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert list(_prefetch(nice_of_producer(), 2)) == [base]
    assert list(_prefetch(nice_of_producer(), 2, 19)) == [19]
    cfg = ModelConfig.preset("tutorial", batch_size=BATCH)
    loop = TrainLoop(_net(cfg), make_optimizer(cfg))
    loop._setup()
    assert loop._input_nice() == 0  # one device: auto is normal
    loop.config = LoopConfig(input_priority="low")
    assert loop._input_nice() == 19
    with pytest.raises(ConfigError, match="input_priority"):
        LoopConfig(input_priority="high")


def test_streamed_training_equals_in_memory(tmp_path):
    import pandas as pd
    x = _data()
    pd.DataFrame({"u": x["user"], "i": x["item"], "r": x["rating"]}).to_parquet(
        tmp_path / "x.parquet", row_group_size=300)
    from twotower.data import Vocabulary
    stream = InteractionStream(tmp_path / "x.parquet",
                               StreamConfig(user_col="u", item_col="i", rating_col="r",
                                            shuffle_buffer=0, read_rows=128),
                               user_vocab=Vocabulary(np.arange(N_USERS), "user"),
                               item_vocab=Vocabulary(np.arange(N_ITEMS), "item"))
    stats = stream.scan()
    cfg = ModelConfig.preset("tutorial", batch_size=BATCH)
    lo, hi = stats.rating_range
    mem = {"user": x["user"], "item": x["item"], "rating": (x["rating"] - lo) / (hi - lo)}
    a = TrainLoop(_net(cfg), make_optimizer(cfg)).fit(mem, batch_size=BATCH, shuffle=False)
    inputs = stream.model_inputs("mse")
    b = TrainLoop(_net(cfg), make_optimizer(cfg)).fit(
        lambda e: stream.batches(BATCH, e, inputs=inputs))
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-6)


def test_one_device_config_clears_the_distribution():
    assert apply_distribution(DistributionConfig()) is None
    assert keras.distribution.distribution() is None


def test_too_many_devices_is_a_config_error():
    with pytest.raises(ConfigError, match="xla_force_host_platform_device_count=8 set before"):
        apply_distribution(DistributionConfig(data_parallel=8))
    # the flag counts one process's devices: 8 in 2 processes are 4 each (it said 8)
    from twotower.training.distribution import check_devices
    with pytest.raises(ConfigError, match="xla_force_host_platform_device_count=4 set in each "
                                          "process before"):
        check_devices(DistributionConfig(data_parallel=8, coordinator_address="10.0.0.1:1",
                                         num_processes=2, process_id=1))


@pytest.mark.parametrize("cls,kwargs", [
    (DistributionConfig, dict(data_parallel=2, model_parallel=4,
                              coordinator_address="10.0.0.1:1234", num_processes=2,
                              process_id=1)),
    (LoopConfig, dict(steps_per_call=8, sparse_updates="off", prefetch=0)),
    (StreamConfig, dict(user_col="u", rating_col="r", shuffle_buffer=10, unknown="skip"))])
def test_configs_round_trip_json(cls, kwargs):
    cfg = cls(**kwargs)
    assert cls.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("kwargs,match", [
    (dict(data_parallel=0), "data_parallel"), (dict(num_processes=2), "coordinator_address"),
    (dict(coordinator_address="x:1", num_processes=2, process_id=2), "process_id"),
    (dict(coordinator_address="nohostport", num_processes=2), "host:port"),
    # a port that is not a number crashed inside jax (or aborted the process)
    (dict(coordinator_address="127.0.0.1:notaport", num_processes=2), "port in 1-65535"),
    (dict(coordinator_address="127.0.0.1:70000", num_processes=2), "port in 1-65535"),
    (dict(coordinator_address=":1234", num_processes=2), "host:port")])
def test_distribution_config_errors_name_the_field(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DistributionConfig(**kwargs)


@pytest.mark.parametrize("sparse", ["on", "off"])
def test_out_of_range_ids_are_refused_naming_the_row(sparse):
    """An id outside the net's table would be read as zeros and never trained (JAX gathers
    fill, scatters drop): fit refuses it, in memory (naming the row) and streamed."""
    cfg = ModelConfig.preset("tutorial", batch_size=BATCH, epochs=1)
    x = _data()
    x["item"] = x["item"].copy()
    x["item"][7] = N_ITEMS  # one past the table
    loop = TrainLoop(_net(cfg), make_optimizer(cfg), LoopConfig(sparse_updates=sparse))
    with pytest.raises(DataError, match=rf"item id {N_ITEMS} at row 7 is outside \[0, {N_ITEMS}\)"):
        loop.fit(x, batch_size=BATCH)
    x = _data()
    x["user"] = x["user"].copy()
    x["user"][3] = -1

    def batches(epoch):
        for s in range(0, ROWS, BATCH):
            yield {k: v[s:s + BATCH] for k, v in x.items()}
    with pytest.raises(DataError, match=r"user id -1 at position 3 .* outside \[0, 30\)"):
        TrainLoop(_net(cfg), make_optimizer(cfg), LoopConfig(sparse_updates=sparse)).fit(batches)


def test_restoring_arrays_of_another_shape_names_the_variable():
    # as many variables, one of another shape: it said "6 saved variables do not fit this
    # network's 6"
    cfg = ModelConfig.preset("tutorial", batch_size=BATCH)
    loop = TrainLoop(_net(cfg), make_optimizer(cfg), LoopConfig())
    loop._setup()
    arrays = [np.asarray(v.value) for v in loop._variables()]
    arrays[0] = np.zeros((arrays[0].shape[0] + 1,) + arrays[0].shape[1:], arrays[0].dtype)
    with pytest.raises(DataError, match=r"checkpoint: its variable 0 \(.+\) has shape "
                                        r"\(\d+, 32\), this network's \(\d+, 32\)"):
        loop._restore(arrays)
    with pytest.raises(DataError, match="its 1 saved variables do not fit"):
        loop._restore(arrays[:1])


def test_loop_progress_counts_each_example_once():
    """The loop's progress line counts each example once (only ``Progress`` alone was
    tested)."""
    import io
    cfg = ModelConfig.preset("tutorial", batch_size=BATCH, epochs=1)
    out = io.StringIO()
    loop = TrainLoop(_net(cfg), make_optimizer(cfg), LoopConfig(progress_every_s=1e-9),
                     progress_out=out)
    loop.fit(_data(), batch_size=BATCH, epochs=1, shuffle=False)
    last = out.getvalue().strip().splitlines()[-1]
    assert last.startswith(f"epoch 1/1: {ROWS:,} examples"), last
