"""Training checkpoints: a stopped training resumes where its checkpoint left it, and the
product loop's resumed run equals an uninterrupted one."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from twotower.data import Interactions
from twotower.errors import ConfigError, DataError
from twotower.models import ModelConfig, TwoTower
from twotower.models.progress import TrainProgress
from twotower.training import InteractionStream, StreamConfig, TrainLoop
from twotower.training.checkpoint import Checkpoint


def _data(n_users: int = 700, n_items: int = 400, seed: int = 0) -> Interactions:
    """Users like their group's items (rating 5) and meet a few others (rating 1)."""
    rng = np.random.default_rng(seed)
    users, items, ratings = [], [], []
    for u in range(n_users):
        own = rng.choice(np.arange(u % 5, n_items, 5), 12, replace=False)
        users += [u] * 16
        items += [*own, *rng.integers(0, n_items, 4)]
        ratings += [5.0] * 12 + [1.0] * 4
    return Interactions.from_ids(np.array(users), np.array(items),
                                 np.array(ratings, dtype=np.float32))


def _loop_cfg(**kw):  # 1,100 table rows >= 16 x batch 32: the product loop
    return ModelConfig.preset("tutorial", **{"batch_size": 32, "epochs": 3,
                                             "learning_rate": 0.5, **kw})


def _stop_at_epoch(n: int):
    """A Keras callback raising KeyboardInterrupt (as Ctrl-C does) when epoch ``n`` begins."""
    import keras

    class StopAt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == n:
                raise KeyboardInterrupt
    return StopAt()


def _stopped(tmp_path, monkeypatch):
    """A checkpoint directory left by the loop's training of ``_data()`` stopped at its 5th
    call."""
    ck = tmp_path / "ck"
    _Stop(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        TwoTower(_loop_cfg()).fit(_data(), verbose=0, checkpoint=ck)
    monkeypatch.undo()
    return ck


class _Stop:
    """Makes the loop's ``n``-th call raise KeyboardInterrupt (as Ctrl-C does there):
    ``before`` the call runs, or ``after`` it ran and took (donated) the state it was
    given, its result not kept."""

    def __init__(self, monkeypatch, n: int, when: str = "before") -> None:
        self.calls, self.n, self.when = 0, n, when
        run = TrainLoop._run

        def stopping(loop, state, stacked):
            self.calls += 1
            if self.calls == self.n and self.when == "before":
                raise KeyboardInterrupt
            out = run(loop, state, stacked)
            if self.calls == self.n:
                raise KeyboardInterrupt
            return out
        monkeypatch.setattr(TrainLoop, "_run", stopping)


@pytest.mark.parametrize("when,every_s", [("before", 1e9), ("after", 1e-6)])
def test_the_loop_resumes_as_if_never_stopped(tmp_path, monkeypatch, when, every_s):
    x = _data()
    cfg = _loop_cfg()
    whole = TwoTower(cfg).fit(x, verbose=0)
    assert whole.trained_with.startswith("TrainLoop")
    calls = _Stop(monkeypatch, 10**9)  # counts the calls of a whole fit
    TwoTower(cfg).fit(x, verbose=0)
    per_fit = calls.calls
    ck = tmp_path / "ck"
    # stopped in the second epoch: "before" saves on the stop; "after" (the state given
    # to the call is gone) keeps the checkpoint of the call before, written every call
    _Stop(monkeypatch, per_fit // 2, when)
    first = Checkpoint(ck, every_s=every_s)  # kept, as a notebook keeps the stopped cell's
    with pytest.raises(KeyboardInterrupt):
        TwoTower(cfg).fit(x, verbose=0, checkpoint=first)
    with np.load(ck / "state.npz") as z:
        position = json.loads(bytes(z["position"]).decode())
    assert position["epoch"] == 1 and position["batches"] > 0, position
    monkeypatch.undo()
    out = io.StringIO()
    resumed = TwoTower(cfg).fit(x, verbose=0, checkpoint=ck,
                                callbacks=[TrainProgress(every_s=60, out=out)])
    assert "resuming from" in out.getvalue() and "epoch 2/3" in out.getvalue()
    np.testing.assert_array_equal(resumed.item_embeddings, whole.item_embeddings)
    np.testing.assert_array_equal(resumed.user_embeddings, whole.user_embeddings)
    np.testing.assert_allclose(resumed.history["loss"], whole.history["loss"], rtol=1e-6)
    assert not ck.exists()  # trained: the checkpoint is gone
    assert first._held is None  # the stopped training let the directory go


def test_a_stop_inside_a_call_leaves_usable_variables(monkeypatch):
    # the state given to the stopped call was donated to it (deleted): the variables got
    # those deleted buffers, and a model caught after Ctrl-C (a notebook) could not be used
    from twotower.models.config import make_optimizer
    from twotower.models.net import TwoTowerNet
    cfg = _loop_cfg()
    x = _data()
    net = TwoTowerNet(x.n_users, x.n_items, cfg)
    net.build()
    loop = TrainLoop(net, make_optimizer(cfg))
    _Stop(monkeypatch, 3, "after")
    with pytest.raises(KeyboardInterrupt):
        loop.fit({"user": x.users, "item": x.items, "rating": x.ratings / 5}, batch_size=32)
    for v in [*net.trainable_variables, *loop.optimizer.variables]:
        assert np.isfinite(np.asarray(v.value)).all(), v.path


def test_a_checkpoint_of_another_training_is_refused(tmp_path, monkeypatch):
    x, ck = _data(), _stopped(tmp_path, monkeypatch)
    with pytest.raises(ConfigError, match=r"another training \(config\.learning_rate was "
                                          r"0\.5, now 0\.2"):
        TwoTower(_loop_cfg(learning_rate=0.2)).fit(x, verbose=0, checkpoint=ck)
    with pytest.raises(ConfigError, match="data_digest differs"):
        TwoTower(_loop_cfg()).fit(_data(seed=1), verbose=0, checkpoint=ck)
    assert (ck / "state.npz").exists()  # refused: nothing lost
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds other files"):
        TwoTower(_loop_cfg()).fit(x, verbose=0, checkpoint=other)
    (ck / "checkpoint.json").write_text("{not json")
    with pytest.raises(DataError, match="not a twotower checkpoint"):
        TwoTower(_loop_cfg()).fit(x, verbose=0, checkpoint=ck)
    with pytest.raises(ConfigError, match="every_s"):
        Checkpoint(ck, every_s=0)


def _stopped_model_fit(tmp_path):
    """(data, config, checkpoint directory) of a model.fit-path training (small tables)
    stopped as epoch 2 of 4 began, its checkpoint kept."""
    x = _data()
    cfg = ModelConfig.preset("tutorial", batch_size=1000, epochs=4)  # small tables: model.fit
    ck = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        TwoTower(cfg).fit(x, verbose=0, callbacks=[_stop_at_epoch(2)],
                          checkpoint=Checkpoint(ck, keep=True))
    return x, cfg, ck


def test_model_fit_resumes_at_the_epoch_with_its_optimizer(tmp_path):
    import keras
    x, cfg, ck = _stopped_model_fit(tmp_path)
    assert Checkpoint(ck).keras_epoch() == 2

    class Count(keras.callbacks.Callback):
        epochs: list[int] = []

        def on_epoch_begin(self, epoch, logs=None):
            Count.epochs.append(epoch)

    resumed = TwoTower(cfg).fit(x, verbose=0, callbacks=[Count()], checkpoint=ck)
    assert resumed.trained_with == "model.fit"
    assert Count.epochs == [2, 3]
    assert len(resumed.history["loss"]) == 4  # the 2 epochs before the stop, then 2
    steps = -(-len(x) // cfg.batch_size)
    # the optimizer's state came back with the weights: its step count goes on from 2 epochs
    assert int(resumed._net.optimizer.iterations.numpy()) == 4 * steps
    assert not ck.exists()


def _stop_at_batch(epoch: int, batch: int):
    """A Keras callback raising KeyboardInterrupt as batch ``batch`` of epoch ``epoch``
    begins (a stop mid-epoch)."""
    import keras

    class StopAt(keras.callbacks.Callback):
        def on_epoch_begin(self, e, logs=None):
            self.epoch = e

        def on_train_batch_begin(self, b, logs=None):
            if (self.epoch, b) == (epoch, batch):
                raise KeyboardInterrupt
    return StopAt()


def _fit_cfg():
    """The default preset (history tower with history dropout, multinomial, Adam: the
    model.fit path at any size) on the small log, with a cosine schedule and EMA: 3 epochs
    of 3 batches, no EASE part."""
    return ModelConfig.preset("default", epochs=3, batch_size=128, history_length=20,
                              item_features=(), ease_weight=0.0, learning_rate_decay="cosine",
                              ema_momentum=0.9)


@pytest.fixture(scope="module")
def uninterrupted_model_fit():
    x = _data(n_users=300, n_items=200)
    return x, TwoTower(_fit_cfg()).fit(x, verbose=0)


@pytest.mark.parametrize("stop", ["after epoch 1", "mid epoch 2"])
def test_model_fit_resumes_as_if_never_stopped(tmp_path, uninterrupted_model_fit, stop):
    """A resumed model.fit started at the next epoch with NumPy's global generator (Keras'
    per-epoch shuffle) and the history-dropout SeedGenerator as they were when the process
    started, not as the uninterrupted run had them: other shuffles and masks, other tables.
    A stop mid-epoch resumes from the epoch before (model.fit keeps one per epoch)."""
    x, whole = uninterrupted_model_fit
    assert whole.trained_with == "model.fit"
    cfg, ck = _fit_cfg(), tmp_path / "ck"
    stopper = _stop_at_epoch(1) if stop == "after epoch 1" else _stop_at_batch(1, 1)
    with pytest.raises(KeyboardInterrupt):
        TwoTower(cfg).fit(x, verbose=0, callbacks=[stopper],
                          checkpoint=Checkpoint(ck, keep=True))
    assert Checkpoint(ck).keras_epoch() == 1
    resumed = TwoTower(cfg).fit(x, verbose=0, checkpoint=ck)
    np.testing.assert_array_equal(resumed.item_embeddings, whole.item_embeddings)
    np.testing.assert_array_equal(resumed.user_embeddings, whole.user_embeddings)
    assert resumed.history["loss"] == whole.history["loss"]
    assert not ck.exists()


def test_a_model_fit_checkpoint_s_random_state_is_checked(tmp_path):
    """A damaged random state is one line naming state.json; a checkpoint written before
    the state was kept (none in state.json) still resumes."""
    x, cfg, ck = _stopped_model_fit(tmp_path)
    meta = ck / "keras" / "state.json"
    got = json.loads(meta.read_text())
    assert len(got["random"]["numpy"]["keys"]) == 624 and got["random"]["seed_generators"]
    meta.write_text(json.dumps({**got, "random": {"numpy": {"keys": [1, 2]}}}))
    with pytest.raises(DataError, match=rf"checkpoint {re.escape(str(meta))}: its random "
                                        r"state is unreadable \(.*\); remove the checkpoint"):
        TwoTower(cfg).fit(x, verbose=0, checkpoint=Checkpoint(ck, keep=True))
    meta.write_text(json.dumps({k: v for k, v in got.items() if k != "random"}))
    resumed = TwoTower(cfg).fit(x, verbose=0, checkpoint=ck)
    assert len(resumed.history["loss"]) == cfg.epochs and not ck.exists()


def _stream_log(tmp_path):
    """``_data()`` as a Parquet log (user, item, stars) in row groups of 1,000: (frame, path)."""
    x = _data()
    df = pd.DataFrame({"user": x.user_vocab.ids[x.users], "item": x.item_vocab.ids[x.items],
                       "stars": x.ratings})
    path = tmp_path / "log.parquet"
    df.to_parquet(path, row_group_size=1000)
    return df, path


def test_fit_stream_resumes_as_if_never_stopped(tmp_path, monkeypatch):
    df, path = _stream_log(tmp_path)
    cfg = _loop_cfg()

    def stream():
        return InteractionStream(path, StreamConfig(user_col="user", item_col="item",
                                                    rating_col="stars", read_rows=700,
                                                    shuffle_buffer=3000, seed=3))
    whole = TwoTower(cfg).fit_stream(stream(), progress_every_s=0)
    ck = tmp_path / "ck"
    _Stop(monkeypatch, 40)
    with pytest.raises(KeyboardInterrupt):
        TwoTower(cfg).fit_stream(stream(), progress_every_s=0,
                                 checkpoint=Checkpoint(ck, keep=True))
    monkeypatch.undo()
    resumed = TwoTower(cfg).fit_stream(stream(), progress_every_s=0, checkpoint=ck)
    np.testing.assert_array_equal(resumed.item_embeddings, whole.item_embeddings)
    np.testing.assert_allclose(resumed.history["loss"], whole.history["loss"], rtol=1e-6)
    # a copy of the file elsewhere (a job's local disk) is the same data: it resumes
    _Stop(monkeypatch, 40)
    with pytest.raises(KeyboardInterrupt):
        TwoTower(cfg).fit_stream(stream(), progress_every_s=0,
                                 checkpoint=Checkpoint(ck, keep=True))
    monkeypatch.undo()
    import shutil
    copy = tmp_path / "elsewhere" / "log.parquet"
    copy.parent.mkdir()
    shutil.copy(path, copy)
    path.unlink()
    path = copy
    again = TwoTower(cfg).fit_stream(stream(), progress_every_s=0,
                                     checkpoint=Checkpoint(ck, keep=True))
    np.testing.assert_array_equal(again.item_embeddings, whole.item_embeddings)
    # other content (one rating in the middle changed): another training's data
    mid = len(df) // 2
    df.loc[mid, "stars"] = 1.0 if df["stars"].iloc[mid] != 1.0 else 5.0
    df.to_parquet(path, row_group_size=1000)
    with pytest.raises(ConfigError, match=r"file\.content_digest differs"):
        TwoTower(cfg).fit_stream(stream(), progress_every_s=0, checkpoint=ck)


@pytest.mark.parametrize("stream", [False, True])
def test_train_command_resumes_a_stopped_run(capsys, tmp_path, monkeypatch, stream):
    from twotower.cli import main
    x = _data()
    data = tmp_path / "log.csv"
    pd.DataFrame({"user_id": x.user_vocab.ids[x.users], "item_id": x.item_vocab.ids[x.items],
                  "rating": x.ratings}).to_csv(data, index=False)
    ck, out = tmp_path / "ck", tmp_path / "run"
    argv = ["train", "--data", str(data), "--rating-col", "rating", "--preset", "tutorial",
            "--batch-size", "32", "--epochs", "2", "--learning-rate", "0.5",
            "--split", "none", "--checkpoint", str(ck), "--checkpoint-every", "0.001",
            *(["--stream"] if stream else [])]
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    assert not ck.exists()  # saved: the checkpoint is gone
    capsys.readouterr()
    _Stop(monkeypatch, 30)
    assert main([*argv, "--out", str(out)]) == 130
    assert (ck / "state.npz").exists() and not out.exists()
    monkeypatch.undo()
    capsys.readouterr()
    assert main([*argv, "--out", str(out)]) == 0
    assert "resuming from" in capsys.readouterr().err
    assert not ck.exists()
    whole, resumed = TwoTower.load(tmp_path / "whole"), TwoTower.load(out)
    np.testing.assert_array_equal(resumed.item_embeddings, whole.item_embeddings)
    # another command's data: refused, naming it, before any training
    x2 = _data(seed=5)
    pd.DataFrame({"user_id": x2.user_vocab.ids[x2.users], "item_id": x2.item_vocab.ids[x2.items],
                  "rating": x2.ratings}).to_csv(data, index=False)
    _Stop(monkeypatch, 30)
    assert main([*argv, "--out", str(out)]) == 130
    monkeypatch.undo()
    x3 = _data(seed=6)
    pd.DataFrame({"user_id": x3.user_vocab.ids[x3.users], "item_id": x3.item_vocab.ids[x3.items],
                  "rating": x3.ratings}).to_csv(data, index=False)
    capsys.readouterr()
    assert main([*argv, "--out", str(out)]) == 2
    assert "is of another training" in capsys.readouterr().err
    assert main(["train", "--data", str(data), "--out", str(out), "--checkpoint-every",
                 "5"]) == 2


def test_resume_on_two_devices_with_tables_split_by_columns(tmp_path):
    script = Path(__file__).with_name("checkpoint_check.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(script.parent), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "ck")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["stopped"] and report["trained_with"].startswith("TrainLoop")
    # the restored tables went back to their devices, split by columns
    assert report["devices"] == 2 and report["shard_shape"] == [report["shape"][0],
                                                                report["shape"][1] // 2]
    assert report["equal"], report
    # tables in blocks (parts moved between strata when stopped) resume exactly too
    assert report["blocks_stopped"] and "in blocks over 2 devices" in report[
        "blocks_trained_with"]
    assert report["blocks_equal"], report
    # the model.fit path with batches split over the 2 devices resumes exactly too
    assert report["fit_trained_with"] == "model.fit" and report["fit_equal"], report


def test_a_checkpoint_in_use_is_refused_to_a_second_training(tmp_path):
    first = Checkpoint(tmp_path / "ck")
    assert first.start({"a": 1}) is False
    # e.g. the same command started twice: the second would write over the first's state
    with pytest.raises(ConfigError, match="in use by another training"):
        Checkpoint(tmp_path / "ck").start({"a": 1})
    first.release()
    second = Checkpoint(tmp_path / "ck")
    assert second.start({"a": 1}) is False  # no state yet: nothing to resume
    second.remove()
    assert not (tmp_path / "ck").exists()


def test_a_stop_between_a_keras_epoch_s_two_writes_keeps_a_whole_pair(tmp_path, monkeypatch):
    """Keras' BackupAndRestore overwrote its weights, then its epoch count: a stop between
    the two resumed epoch N+1's weights as epoch N (an epoch trained twice)."""
    import keras

    from twotower.training import checkpoint as ckmod
    x = _data()
    cfg = ModelConfig.preset("tutorial", batch_size=1000, epochs=3)
    ck = tmp_path / "ck"
    writes = {"n": 0}
    real = ckmod._write_atomic

    def stop_on_second_epoch(path, write):
        if path.name == "state.json":
            writes["n"] += 1
            if writes["n"] == 2:  # epoch 2's weights are written, its count not yet
                raise KeyboardInterrupt
        return real(path, write)
    monkeypatch.setattr(ckmod, "_write_atomic", stop_on_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        TwoTower(cfg).fit(x, verbose=0, checkpoint=Checkpoint(ck, keep=True))
    monkeypatch.undo()
    assert Checkpoint(ck).keras_epoch() == 1
    # the weights the count names are epoch 1's: resumed, epochs 2 and 3 run once each
    seen = []

    class Count(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)
    m = TwoTower(cfg).fit(x, verbose=0, callbacks=[Count()], checkpoint=ck)
    assert seen == [1, 2] and len(m.history["loss"]) == 3
    steps = -(-len(x) // cfg.batch_size)
    assert int(m._net.optimizer.iterations.numpy()) == 3 * steps


@pytest.mark.parametrize("fails", ["weights", "state.json", "checkpoint.json"])
def test_a_full_disk_while_a_checkpoint_is_written_names_it(tmp_path, monkeypatch, fails):
    """A full disk while model.fit's checkpoint was written (epoch 2's weights or its
    state.json), or checkpoint.json at the start, was a bare "[Errno 28] No space left on
    device": no file, no checkpoint named. Now the checkpoint and what failed are named,
    and the previous epoch's checkpoint still resumes."""
    import errno

    import keras

    from twotower.training import checkpoint as ckmod
    x = _data()
    cfg = ModelConfig.preset("tutorial", batch_size=1000, epochs=3)
    ck = tmp_path / "ck"
    calls = {"weights": 0, "state.json": 0, "checkpoint.json": 0}

    def full():
        raise OSError(errno.ENOSPC, "No space left on device")
    real_write, real_weights = ckmod._write_atomic, keras.Model.save_weights

    def write(path, fn):
        calls[path.name] = calls.get(path.name, 0) + 1
        if path.name == fails and calls[path.name] == (1 if fails == "checkpoint.json" else 2):
            full()
        return real_write(path, fn)

    def save_weights(self, *a, **kw):
        calls["weights"] += 1
        if fails == "weights" and calls["weights"] == 2:
            full()
        return real_weights(self, *a, **kw)
    monkeypatch.setattr(ckmod, "_write_atomic", write)
    monkeypatch.setattr(keras.Model, "save_weights", save_weights)
    what = "checkpoint.json" if fails == "checkpoint.json" else "epoch 2's checkpoint"
    with pytest.raises(OSError, match=rf"checkpoint {re.escape(str(ck))}: cannot write "
                                      rf"{what} \(No space left on device\)") as got:
        TwoTower(cfg).fit(x, verbose=0, checkpoint=Checkpoint(ck, keep=True))
    assert got.value.errno == errno.ENOSPC
    monkeypatch.undo()
    if fails != "checkpoint.json":
        assert "the previous checkpoint is unchanged" in str(got.value)
        assert Checkpoint(ck).keras_epoch() == 1
        assert not list((ck / "keras").glob("tmp-*"))


def test_a_refused_resume_lets_the_directory_go(tmp_path, monkeypatch):
    x, ck = _data(), _stopped(tmp_path, monkeypatch)
    wrong = Checkpoint(ck)  # kept, as a notebook keeps the refused cell's objects
    with pytest.raises(ConfigError, match="another training"):
        TwoTower(_loop_cfg(learning_rate=0.2)).fit(x, verbose=0, checkpoint=wrong)
    TwoTower(_loop_cfg()).fit(x, verbose=0, checkpoint=ck)  # not "in use"
    assert not ck.exists() and wrong._held is None


def test_a_damaged_checkpoint_is_one_line(tmp_path, monkeypatch):
    x, ck = _data(), _stopped(tmp_path, monkeypatch)
    state = ck / "state.npz"
    state.write_bytes(state.read_bytes()[:1000])  # cut short (a copy that stopped)
    with pytest.raises(DataError, match="state.npz: unreadable"):
        TwoTower(_loop_cfg()).fit(x, verbose=0, checkpoint=ck)


def test_a_damaged_model_fit_checkpoint_names_its_weights_file(tmp_path):
    """A truncated weights file of the model.fit path's checkpoint gave h5py's "Unable to
    synchronously open file (truncated file: ...)", naming neither the file nor the fix."""
    x, cfg, ck = _stopped_model_fit(tmp_path)
    (weights,) = (ck / "keras").glob("epoch-*.weights.h5")
    weights.write_bytes(weights.read_bytes()[:2000])
    with pytest.raises(DataError, match=rf"checkpoint {re.escape(str(weights))}: unreadable "
                                        r"\(.*\); remove the checkpoint directory"):
        TwoTower(cfg).fit(x, verbose=0, checkpoint=ck)


def test_other_side_features_are_another_training(tmp_path):
    x = _data()
    genres = lambda seed: pd.DataFrame(  # noqa: E731
        {"genres": [["A", "B", "C"][(i + seed) % 3] for i in x.item_vocab.ids]},
        index=x.item_vocab.ids)
    a = Interactions.from_ids(x.user_vocab.ids[x.users], x.item_vocab.ids[x.items],
                              x.ratings, item_info=genres(0))
    b = Interactions.from_ids(x.user_vocab.ids[x.users], x.item_vocab.ids[x.items],
                              x.ratings, item_info=genres(1))
    cfg = ModelConfig.preset("tutorial", batch_size=1000, epochs=3, item_features=("genres",))

    ck = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        TwoTower(cfg).fit(a, verbose=0, callbacks=[_stop_at_epoch(1)], checkpoint=ck)
    with pytest.raises(ConfigError, match="features_digest differs"):
        TwoTower(cfg).fit(b, verbose=0, checkpoint=ck)


def test_the_train_command_saves_on_a_real_signal_even_when_the_save_is_slow(
        capsys, tmp_path, monkeypatch):
    """The CLI sends a stop again every second until it is seen: a stop-time write longer
    than that was cut by the next one, and nothing was saved."""
    import signal
    import time as _time

    from twotower.cli import main
    x = _data()
    data = tmp_path / "log.csv"
    pd.DataFrame({"user_id": x.user_vocab.ids[x.users], "item_id": x.item_vocab.ids[x.items],
                  "rating": x.ratings}).to_csv(data, index=False)
    ck = tmp_path / "ck"
    real = Checkpoint.save_state

    def slow(self, *a, **kw):
        _time.sleep(1.6)
        return real(self, *a, **kw)
    monkeypatch.setattr(Checkpoint, "save_state", slow)
    run, calls = TrainLoop._run, [0]

    def signalling(loop, state, stacked):
        calls[0] += 1
        if calls[0] == 20:
            os.kill(os.getpid(), signal.SIGINT)
        return run(loop, state, stacked)
    monkeypatch.setattr(TrainLoop, "_run", signalling)
    code = main(["train", "--data", str(data), "--rating-col", "rating", "--preset", "tutorial",
                 "--batch-size", "32", "--epochs", "2", "--split", "none", "--out",
                 str(tmp_path / "run"), "--checkpoint", str(ck)])
    assert code == 130
    assert "writing the checkpoint" in capsys.readouterr().err
    with np.load(ck / "state.npz") as z:  # the stop's own checkpoint (none was due before)
        assert json.loads(bytes(z["position"]).decode())["batches"] > 0


def test_a_real_stop_inside_a_call_is_saved_when_the_call_is_done(tmp_path, monkeypatch):
    """Ctrl-C lands mostly while the loop's call runs: its state was given (donated) to the
    call, and about half the stops saved nothing. With a checkpoint a stop now waits for
    the call and its bookkeeping."""
    import signal
    x, cfg = _data(), _loop_cfg()
    whole = TwoTower(cfg).fit(x, verbose=0)
    run, calls = TrainLoop._run, [0]

    def signalling(loop, state, stacked):
        calls[0] += 1
        out = run(loop, state, stacked)
        if calls[0] == 25:
            os.kill(os.getpid(), signal.SIGINT)  # handled before this call's result is kept
        return out
    monkeypatch.setattr(TrainLoop, "_run", signalling)
    ck = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        TwoTower(cfg).fit(x, verbose=0, checkpoint=Checkpoint(ck, every_s=1e9))
    with np.load(ck / "state.npz") as z:  # none was due: this is the stop's own
        assert json.loads(bytes(z["position"]).decode())["batches"] > 0
    monkeypatch.undo()
    resumed = TwoTower(cfg).fit(x, verbose=0, checkpoint=ck)
    np.testing.assert_array_equal(resumed.item_embeddings, whole.item_embeddings)


def test_checkpoint_and_run_directories_must_not_overlap(capsys, tmp_path):
    from twotower.cli import main
    data = tmp_path / "missing.csv"  # refused before it is read
    for ck, out in (("r", "r"), ("r/ck", "r"), ("c", "c/run")):
        code = main(["train", "--data", str(data), "--out", str(tmp_path / out),
                     "--checkpoint", str(tmp_path / ck)])
        assert code == 2 and "overlap" in capsys.readouterr().err


def test_a_checkpoint_json_without_a_fingerprint_is_one_line(tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "checkpoint.json").write_text('{"format": 1, "fingerprint": null}')
    with pytest.raises(DataError, match="not a twotower checkpoint"):
        Checkpoint(ck).start({"a": 1})


def test_a_write_killed_before_the_first_checkpoint_does_not_lock_the_directory_out(tmp_path):
    # a SIGKILL while checkpoint.json was first written leaves its temporary file: the same
    # command run again was refused ("holds other files, not a checkpoint") for good
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / ".lock").touch()
    (ck / ".checkpoint.json.tmp-12345").write_text('{"form')
    first = Checkpoint(ck)
    assert first.start({"a": 1}) is False
    assert not (ck / ".checkpoint.json.tmp-12345").exists()
    first.release()
    # a file of someone else's is still refused
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds other files"):
        Checkpoint(other).start({"a": 1})


def test_a_removal_cut_short_leaves_a_checkpoint_that_binds_again(tmp_path, monkeypatch):
    # remove() took checkpoint.json first, then the leftovers: a kill between them left a
    # directory that the next training refused as "other files"
    ck = Checkpoint(tmp_path / "ck")
    ck.start({"a": 1})
    (tmp_path / "ck" / ".state.npz.tmp-999").write_bytes(b"cut")  # a killed write's
    import shutil as _shutil

    def killed(*a, **kw):
        raise KeyboardInterrupt  # stands for the kill, part-way through remove()
    monkeypatch.setattr(_shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        ck.remove()
    monkeypatch.undo()
    ck.release()
    again = Checkpoint(tmp_path / "ck")
    assert again.start({"a": 1}) is False
    again.remove()
    assert not (tmp_path / "ck").exists()


def test_a_checkpoint_of_another_kind_of_training_says_so_first(tmp_path):
    # resuming an in-memory training's checkpoint with --stream: the line that mattered
    # (trains ...) sorted after five dumps of whole settings and was cut off
    ck = Checkpoint(tmp_path / "ck")
    ck.start({"trains": "TwoTower.fit", "path": "loop", "file": None, "stream": None,
              "config": {"epochs": 2}, "data": {"digest": "a"}})
    ck.release()
    with pytest.raises(ConfigError) as err:
        Checkpoint(tmp_path / "ck").start(
            {"trains": "TwoTower.fit_stream", "path": "loop",
             "file": {"path": "x.parquet", "columns": ["u", "i"]},
             "stream": {"user_col": "u", "item_col": "i", "shuffle_buffer": 7},
             "config": {"epochs": 3}, "data": {"digest": "b"}})
    msg = str(err.value)
    assert "(trains was 'TwoTower.fit', now 'TwoTower.fit_stream'; " in msg, msg
    assert "stream was absent, now given" in msg and "user_col" not in msg, msg


def test_a_checkpoint_written_before_a_setting_existed_resumes(tmp_path, monkeypatch):
    """A model setting added since the checkpoint was written (absent from its
    checkpoint.json) is read as the class default, as the older code trained it: the same
    training resumes; a value other than the default is another training."""
    x, ck = _data(), _stopped(tmp_path, monkeypatch)
    meta = json.loads((ck / "checkpoint.json").read_text())
    del meta["fingerprint"]["config"]["ease_weight_choice"]  # as the previous version wrote it
    (ck / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"config\.ease_weight_choice was 'always', now "
                                          r"'rank_check'"):
        TwoTower(_loop_cfg(ease_weight_choice="rank_check")).fit(x, verbose=0, checkpoint=ck)
    TwoTower(_loop_cfg()).fit(x, verbose=0, checkpoint=ck)
    assert not ck.exists()  # resumed and finished


def test_a_resumed_checkpoint_removes_a_killed_writes_temporary_file(tmp_path):
    """Only a new checkpoint swept its killed writes' temporary files: a resumed one kept
    each (as large as the state, 214 MB in the benchmark) until it was removed."""
    import numpy as np

    from twotower.training.checkpoint import Checkpoint
    fp = {"trains": "x"}
    ck = Checkpoint(tmp_path / "ck")
    ck.start(fp)
    ck.save_state([np.zeros(3)], {"epoch": 0, "batches": 1, "history": []}, {})
    ck.release()
    (tmp_path / "ck" / ".state.npz.tmp-99999").write_bytes(b"\0" * 1024)  # killed midway
    ck = Checkpoint(tmp_path / "ck")
    assert ck.start(fp)  # resumes
    assert not (tmp_path / "ck" / ".state.npz.tmp-99999").exists()
    ck.release()


def test_a_stop_at_an_epoch_boundary_resumes_at_the_next_epoch(tmp_path, monkeypatch):
    """A stop before the first call of epoch 2 records epoch 1 as done: the resume trains
    epochs 2-3 only, to the uninterrupted run's tables."""
    x, cfg = _data(), _loop_cfg()
    whole = TwoTower(cfg).fit(x, verbose=0)
    calls = _Stop(monkeypatch, 10**9)
    TwoTower(cfg).fit(x, verbose=0)
    per_epoch = calls.calls // cfg.epochs
    _Stop(monkeypatch, per_epoch + 1, "before")  # the first call of epoch 2
    ck = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        TwoTower(cfg).fit(x, verbose=0, checkpoint=Checkpoint(ck, every_s=1e9))
    with np.load(ck / "state.npz") as z:
        position = json.loads(bytes(z["position"]).decode())
    assert (position["epoch"], position["batches"]) == (1, 0), position
    monkeypatch.undo()
    resumed = TwoTower(cfg).fit(x, verbose=0, checkpoint=ck)
    assert len(resumed.history["loss"]) == cfg.epochs
    np.testing.assert_array_equal(resumed.item_embeddings, whole.item_embeddings)


def test_loop_step_losses_after_a_resume_equal_an_uninterrupted_run(tmp_path, monkeypatch):
    """``step_losses`` (every step's loss) keeps the steps before the checkpoint."""
    from tests.training.test_loop import _data as ldata, _net, BATCH
    from twotower.training import LoopConfig, make_optimizer
    cfg = ModelConfig.preset("tutorial", batch_size=BATCH, epochs=3)
    whole = TrainLoop(_net(cfg), make_optimizer(cfg), LoopConfig())
    whole.fit(ldata(), batch_size=BATCH, epochs=3)
    ck = Checkpoint(tmp_path / "ck", every_s=1e9)
    ck.start({"t": 1})
    _Stop(monkeypatch, 15)  # in epoch 2
    with pytest.raises(KeyboardInterrupt):
        TrainLoop(_net(cfg), make_optimizer(cfg), LoopConfig()).fit(
            ldata(), batch_size=BATCH, epochs=3, checkpoint=ck)
    monkeypatch.undo()
    ck.release()
    ck2 = Checkpoint(tmp_path / "ck", every_s=1e9)
    assert ck2.start({"t": 1})
    resumed = TrainLoop(_net(cfg), make_optimizer(cfg), LoopConfig())
    resumed.fit(ldata(), batch_size=BATCH, epochs=3, checkpoint=ck2)
    np.testing.assert_allclose(resumed.history["loss"], whole.history["loss"], rtol=1e-6)
    np.testing.assert_allclose(resumed.step_losses, whole.step_losses, rtol=1e-6)


def test_model_fit_checkpoint_keeps_one_weights_file_and_sweeps_stale_ones(tmp_path):
    """A kept ``model.fit`` checkpoint holds the latest epoch's weights only, and a resume
    removes a killed write's temporary file (the default removes the whole folder, which
    hid both)."""
    cfg = ModelConfig.preset("tutorial", batch_size=1000, epochs=3)
    ck = tmp_path / "ck"
    with pytest.raises(KeyboardInterrupt):
        TwoTower(cfg).fit(_data(), verbose=0, callbacks=[_stop_at_epoch(2)],
                          checkpoint=Checkpoint(ck, keep=True))
    stale = ck / "keras" / "tmp-999999.weights.h5"
    stale.write_bytes(b"x")
    TwoTower(cfg).fit(_data(), verbose=0, checkpoint=Checkpoint(ck, keep=True))
    assert not stale.exists()
    assert [p.name for p in (ck / "keras").glob("*.weights.h5")] == ["epoch-3.weights.h5"]


def test_fit_stream_says_what_its_passes_over_the_file_do(tmp_path, monkeypatch, capsys):
    """The scan said "scanning" then nothing until "scanned", and the pass for every
    user's items after training said nothing at all: minutes of silence on a large file.
    A line every ``progress_every_s`` now names each."""
    import time

    from twotower.training import stream as stream_mod
    x = _data(n_users=100, n_items=60)
    df = pd.DataFrame({"user": x.user_vocab.ids[x.users], "item": x.item_vocab.ids[x.items],
                       "stars": x.ratings})
    path = tmp_path / "log.parquet"
    df.to_parquet(path)
    for name in ("scan", "seen_matrix"):  # each pass made slow enough to be reported
        real = getattr(stream_mod.InteractionStream, name)
        monkeypatch.setattr(stream_mod.InteractionStream, name,
                            lambda self, *a, _real=real, **kw: time.sleep(0.3)
                            or _real(self, *a, **kw))
    stream = InteractionStream(path, StreamConfig(user_col="user", item_col="item",
                                                  rating_col="stars"))
    TwoTower(_loop_cfg(epochs=1)).fit_stream(stream, progress_every_s=0.1)
    err = capsys.readouterr().err
    assert f"scanning: {path}, 0 s so far" in err, err
    assert f"reading every user's items: {path}, 0 s so far" in err, err


def test_removal_keeps_a_directory_the_user_made_and_removes_one_it_made(tmp_path):
    """``remove`` deleted the directory whenever it was empty: an empty folder the user
    made for the checkpoint went too. Only the files, and a directory the checkpoint made
    (also when a later run resumed it), are removed."""
    mine = tmp_path / "mine"
    mine.mkdir()
    ck = Checkpoint(mine)
    ck.start({"a": 1})
    ck.save_state([np.zeros(3)], {"epoch": 0, "batches": 1, "history": []}, {})
    ck.release()
    resumed = Checkpoint(mine)
    assert resumed.start({"a": 1})
    resumed.remove()
    assert mine.is_dir() and list(mine.iterdir()) == []
    made = tmp_path / "made"
    first = Checkpoint(made)
    first.start({"a": 1})
    first.release()
    again = Checkpoint(made)
    assert again.start({"a": 1}) is False
    again.remove()
    assert not made.exists()
    # removed by an object that did not bind it: as checkpoint.json records it
    Checkpoint(mine).start({"a": 1})
    Checkpoint(mine).remove()
    assert mine.is_dir()


def test_cli_train_keeps_an_empty_checkpoint_folder_the_user_made(tmp_path, capsys):
    from twotower.cli import main
    x = _data(n_users=60, n_items=100)
    data = tmp_path / "d.csv"
    pd.DataFrame({"user_id": x.user_vocab.ids[x.users], "item_id": x.item_vocab.ids[x.items],
                  "rating": x.ratings}).to_csv(data, index=False)
    ck = tmp_path / "ck"
    ck.mkdir()
    assert main(["train", "--data", str(data), "--rating-col", "rating", "--preset",
                 "tutorial", "--epochs", "1", "--split", "none", "--checkpoint", str(ck),
                 "--out", str(tmp_path / "run")]) == 0, capsys.readouterr().err
    assert ck.is_dir() and list(ck.iterdir()) == []  # the files went, the folder stays
    assert (tmp_path / "run").is_dir()


def test_cli_refuses_a_checkpoint_it_cannot_use_before_reading_the_data(tmp_path, capsys,
                                                                        monkeypatch):
    """A file (or a folder of other files) given as --checkpoint was refused only once the
    data was read (minutes, for a large file), as "checkpoint afile: not a directory"; now
    first, naming --checkpoint."""
    from twotower import data as data_module
    from twotower.cli import main

    def unread(*a, **kw):
        raise AssertionError("the data was read")
    monkeypatch.setattr(data_module, "read_interactions", unread)
    (tmp_path / "d.csv").write_text("user_id,item_id,rating\nu1,i1,4\nu2,i2,3\n")
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    for ck, why in (("afile", "not a directory; give a new or empty directory"),
                    ("other", "the directory holds other files, not a checkpoint")):
        code = main(["train", "--data", str(tmp_path / "d.csv"), "--epochs", "1",
                     "--checkpoint", str(tmp_path / ck), "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert code == 2 and f"--checkpoint {tmp_path / ck}: {why}" in err, err
    assert (tmp_path / "afile").read_text() == "mine"
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["notes.txt"]


class _Bound(Exception):
    """Raised where a fit binds its checkpoint (``_fingerprints_of``): no training."""


def _fingerprints_of(monkeypatch) -> list:
    """The fingerprints the fits after this bind their checkpoints to, each fit stopped
    there (``_Bound``)."""
    import twotower.models.retriever as retriever
    fingerprints = []

    def start(checkpoint, fingerprint):
        fingerprints.append(fingerprint)
        raise _Bound

    monkeypatch.setattr(retriever, "_start_checkpoint", start)
    return fingerprints


def test_a_streamed_checkpoint_with_tables_in_blocks_records_their_schedule(tmp_path,
                                                                           monkeypatch):
    """With tables in blocks a resumed epoch skips the steps done in the blocks' schedule,
    which the devices, the buffer and the stream's feed (batches joined by
    ``blocks.coalesced`` since 2026-12-07) decide: the fingerprint records them, so a
    checkpoint of another schedule is refused (the shuffle's test shows a difference
    refused) instead of resuming by skipping other rows (rows trained twice, others
    never). Without blocks nothing is added: older checkpoints resume."""
    import twotower.models.retriever as retriever
    from twotower.training import LoopConfig
    from twotower.training.blocks import STREAM_FEED
    _, path = _stream_log(tmp_path)
    fingerprints = _fingerprints_of(monkeypatch)
    for devices in (2, 0):
        monkeypatch.setattr(retriever, "_blocks_devices", lambda d=devices: d)
        with pytest.raises(_Bound):
            TwoTower(_loop_cfg()).fit_stream(
                InteractionStream(path, StreamConfig(user_col="user", item_col="item",
                                                     rating_col="stars")),
                progress_every_s=0, checkpoint=tmp_path / "ck")
    assert fingerprints[0]["blocks"] == {
        "devices": 2, "feed": STREAM_FEED,
        "buffer_rows": LoopConfig().blocks_buffer_rows}
    assert "blocks" not in fingerprints[1]


def test_an_in_memory_checkpoint_with_tables_in_blocks_records_their_devices(tmp_path,
                                                                             monkeypatch):
    """TwoTower.fit in blocks: the strata, hence the steps a resumed epoch skips, depend on
    the number of devices; the fingerprint records it (a checkpoint of 2 devices resumed
    on 4 would skip steps of another schedule). Without blocks nothing is added."""
    import twotower.models.retriever as retriever
    fingerprints = _fingerprints_of(monkeypatch)
    for devices in (2, 4, 0):
        monkeypatch.setattr(retriever, "_blocks_devices", lambda d=devices: d)
        with pytest.raises(_Bound):
            TwoTower(_loop_cfg()).fit(_data(), verbose=0, checkpoint=tmp_path / "ck")
    assert [f.get("blocks") for f in fingerprints] == [{"devices": 2}, {"devices": 4}, None]


def test_a_streamed_checkpoint_of_the_older_shuffle_is_refused(tmp_path, monkeypatch):
    """A streamed checkpoint written by code whose shuffle buffer ordered rows otherwise
    (before ``stream.SHUFFLE_ORDER``) would resume mid-epoch skipping the batches it trained
    in its order, in another one: rows trained twice, others never. It is refused, naming
    the shuffle; a buffer in file order (0) is unaffected."""
    _, path = _stream_log(tmp_path)
    cfg = _loop_cfg()

    def stream(buffer):
        return InteractionStream(path, StreamConfig(user_col="user", item_col="item",
                                                    rating_col="stars", read_rows=700,
                                                    shuffle_buffer=buffer, seed=3))

    for buffer, refused in ((3000, True), (0, False)):
        ck = tmp_path / f"ck{buffer}"
        _Stop(monkeypatch, 40)
        with pytest.raises(KeyboardInterrupt):
            TwoTower(cfg).fit_stream(stream(buffer), progress_every_s=0,
                                     checkpoint=Checkpoint(ck, keep=True))
        monkeypatch.undo()
        meta = json.loads((ck / "checkpoint.json").read_text())
        assert ("shuffle_order" in meta["fingerprint"]) is refused
        meta["fingerprint"].pop("shuffle_order", None)  # as the older code wrote it
        (ck / "checkpoint.json").write_text(json.dumps(meta))
        if refused:
            # in words: "shuffle_order was None, now 'slot-windows'" named no setting
            with pytest.raises(ConfigError, match=r"another training \(the stream's shuffle "
                                                  r"order differs \(the checkpoint was "
                                                  r"written by a version of twotower that "
                                                  r"shuffled otherwise\)\)"):
                TwoTower(cfg).fit_stream(stream(buffer), progress_every_s=0, checkpoint=ck)
            assert (ck / "state.npz").exists()  # refused: nothing lost
        else:
            TwoTower(cfg).fit_stream(stream(buffer), progress_every_s=0, checkpoint=ck)
