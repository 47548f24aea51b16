"""TwoTower.fit_stream and `twotower train --stream`: a model trained from a file read in
record batches is a whole model (vocabularies, popularity, seen items, titles, index) and
learns the data's structure."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from twotower.data import read_interactions
from twotower.errors import ConfigError, DataError
from twotower.models import ModelConfig, TwoTower
from twotower.training import InteractionStream, StreamConfig


def _blocks(n_users=120, n_items=80, per_user=20, seed=0):
    """Two communities: even users rate only even items, odd users only odd ones."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        items = rng.choice(np.arange(u % 2, n_items, 2), per_user, replace=False)
        rows += [(f"u{u}", 1000 + int(i), float(rng.integers(1, 6))) for i in items]
    return pd.DataFrame(rows, columns=["user", "item", "stars"])


def _write(df, path):
    if path.suffix == ".parquet":
        df.to_parquet(path, row_group_size=500)
    else:
        df.to_csv(path, index=False)
    return path


def _stream(path, **kw):
    cfg = dict(user_col="user", item_col="item", rating_col="stars", read_rows=300,
               shuffle_buffer=700, seed=3)
    return InteractionStream(path, StreamConfig(**{**cfg, **kw}))


def _tutorial(**kw):
    return ModelConfig.preset("tutorial", **{"epochs": 3, "batch_size": 64, **kw})


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_fit_stream_builds_the_whole_model(tmp_path, suffix):
    df = _blocks()
    path = _write(df, tmp_path / f"log{suffix}")
    info = pd.DataFrame({"title": [f"film {i}" for i in range(1000, 1080)]},
                        index=[str(i) for i in range(1000, 1080)])
    model = TwoTower(_tutorial()).fit_stream(_stream(path), item_info=info,
                                             progress_every_s=0)
    assert model.trained_with == "TrainLoop on a stream"
    assert len(model.history["loss"]) == 3
    assert model.history["loss"][-1] < model.history["loss"][0]
    # the same vocabularies, popularity and seen items as the log read into memory
    x = read_interactions(path, user_col="user", item_col="item", rating_col="stars")
    assert sorted(model.user_vocab.ids.tolist()) == sorted(x.user_vocab.ids.tolist())
    assert sorted(model.item_vocab.ids.tolist()) == sorted(x.item_vocab.ids.tolist())
    pop = dict(zip(model.item_vocab.ids.tolist(), model.item_popularity.tolist()))
    assert pop == dict(zip(x.item_vocab.ids.tolist(), x.item_popularity().tolist()))
    assert model.rating_range == (1.0, 5.0)
    names = model.user_vocab.ids.tolist()  # every user's seen items, all chunks
    for u, seen in zip(names, model.seen_items(np.arange(len(names)))):
        want = set(df.loc[df.user == u, "item"])
        assert set(model.item_vocab.ids[seen].tolist()) == want, u
    assert model.titles(model.item_vocab.lookup([1003]))[0] == "film 1003"
    # recommendations exclude the seen items, and survive a save/load
    scores, items = model.recommend_ids(["u0", "u7"], k=10)
    for u, row in zip(["u0", "u7"], items):
        assert not set(row.tolist()) & set(df.loc[df.user == u, "item"])
    model.save(tmp_path / "run")
    again = TwoTower.load(tmp_path / "run")
    s2, i2 = again.recommend_ids(["u0", "u7"], k=10)
    np.testing.assert_array_equal(i2, items)
    np.testing.assert_allclose(s2, scores, rtol=1e-6)


def test_fit_stream_learns_the_communities(tmp_path):
    # in-batch softmax on the stream: each user's top items come from their own community
    path = _write(_blocks(per_user=30), tmp_path / "log.parquet")
    cfg = _tutorial(objective="sampled_softmax", epochs=25, learning_rate=0.5)
    model = TwoTower(cfg).fit_stream(_stream(path, rating_col=None), progress_every_s=0)
    users = [f"u{u}" for u in range(0, 120, 7)]
    _, items = model.recommend_ids(users, k=5)
    same = [(int(i) % 2 == int(u[1:]) % 2) for u, row in zip(users, items) for i in row]
    assert np.mean(same) > 0.9, np.mean(same)


def test_fit_stream_without_seen_items_excludes_nothing(tmp_path):
    path = _write(_blocks(), tmp_path / "log.parquet")
    model = TwoTower(_tutorial(epochs=1)).fit_stream(_stream(path), seen=False,
                                                     progress_every_s=0)
    assert model.seen_rows(np.arange(len(model.user_vocab))).nnz == 0
    from twotower.errors import DataError
    from twotower.evaluation import evaluate_run
    with pytest.raises(DataError, match="keeps no training interactions"):  # not "all new"
        evaluate_run(model, (np.array([0]), np.array([0])))


def test_fit_stream_refuses_what_a_stream_cannot_train(tmp_path):
    path = _write(_blocks(), tmp_path / "log.parquet")
    with pytest.raises(ConfigError, match="query_tower must be 'id'"):
        TwoTower(ModelConfig.preset("default")).fit_stream(_stream(path))
    with pytest.raises(ConfigError, match="side features"):
        TwoTower(_tutorial(item_features=("genres",))).fit_stream(_stream(path))
    with pytest.raises(ConfigError, match="multinomial"):
        TwoTower(_tutorial(objective="multinomial")).fit_stream(_stream(path),
                                                                progress_every_s=0)
    s = _stream(path, rating_col=None)
    # it names the preset that trains a click log (the old advice, sampled_softmax on the
    # tutorial preset, left the lists close to random: benchmarks/probes/click_softmax.py)
    with pytest.raises(DataError, match="needs ratings.*--preset clicks"):
        TwoTower(_tutorial()).fit_stream(s, progress_every_s=0)
    assert s.stats is None  # refused before the pass over the file


def test_cli_train_stream_then_recommend(tmp_path, capsys):
    from twotower.cli import main
    df = _blocks()
    path = _write(df, tmp_path / "log.parquet")
    code = main(["train", "--data", str(path), "--user-col", "user", "--item-col", "item",
                 "--rating-col", "stars", "--stream", "--shuffle-buffer", "500",
                 "--preset", "tutorial", "--epochs", "2", "--batch-size", "64",
                 "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "data (streamed): 2,400 interactions, 120 users, 80 items" in out
    assert "scanned 2,400 interactions" in err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["streamed"] is True and config["data"]["shuffle_buffer"] == 500
    # the columns read: a stream reads no times
    assert config["data"]["columns"] == {"user": "user", "item": "item", "rating": "stars",
                                         "time": None}
    code = main(["recommend", str(tmp_path / "run"), "--user", "u3", "--json", "-k", "5"])
    out, err = capsys.readouterr()
    assert code == 0, err
    row = json.loads(out)
    assert len(row["items"]) == 5
    assert not {r["item_id"] for r in row["items"]} & set(df.loc[df.user == "u3", "item"])
    # a split needs the whole log: refused, before any pass over the file
    code = main(["train", "--data", str(path), "--stream", "--split", "random",
                 "--out", str(tmp_path / "r2")])
    assert code == 2 and "--split must be none" in capsys.readouterr().err
    code = main(["train", "--data", str(path), "--shuffle-buffer", "10",
                 "--out", str(tmp_path / "r2")])
    assert code == 2 and "applies to --stream only" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()


def test_cli_train_stream_takes_the_clicks_preset(tmp_path, capsys):
    """A click log streams with --preset clicks (sampled_softmax on the id tower); the
    recommendations keep to the user's community."""
    from twotower.cli import main
    df = _blocks().drop(columns="stars")
    path = _write(df, tmp_path / "clicks.parquet")
    code = main(["train", "--data", str(path), "--user-col", "user", "--item-col", "item",
                 "--stream", "--preset", "clicks", "--batch-size", "100",
                 "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "trained id/sampled_softmax" in out + err
    code = main(["recommend", str(tmp_path / "run"), "--user", "u3", "--json", "-k", "5"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert all(int(r["item_id"]) % 2 == 1 for r in json.loads(out)["items"])  # odd users


def test_cli_train_stream_with_the_default_preset_drops_its_feature_columns(tmp_path, capsys):
    """The default preset names genres and year, which --stream refused ("side features
    are not streamed") even when the user had not asked for them: they are cut, in a line."""
    from twotower.cli import main
    path = _write(_blocks(), tmp_path / "log.parquet")
    conf = tmp_path / "c.toml"
    conf.write_text('[model]\nquery_tower = "id"\nobjective = "bpr"\nease_weight = 0.0\n'
                    'item_bias = false\nepochs = 1\nbatch_size = 256\n')
    code = main(["train", "--data", str(path), "--user-col", "user", "--item-col", "item",
                 "--rating-col", "none", "--stream", "--config", str(conf),
                 "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "item features: none (side features are not streamed)" in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["item_features"] == []
    # named in --config: still refused, naming the setting
    conf.write_text(conf.read_text() + 'item_features = ["genres"]\n')
    code = main(["train", "--data", str(path), "--user-col", "user", "--item-col", "item",
                 "--rating-col", "none", "--stream", "--config", str(conf),
                 "--out", str(tmp_path / "run2")])
    assert code == 2 and "side features are not streamed" in capsys.readouterr().err


def test_cli_train_stream_on_two_simulated_devices_matches_one(tmp_path):
    """`train --stream --devices 2` in a process with 2 simulated devices trains the same
    model as one device: same data order (the stream's seed), same per-epoch losses; with
    the tables in blocks, close ones (another order of the same examples)."""
    import os
    import subprocess
    import sys
    path = _write(_blocks(), tmp_path / "log.parquet")
    losses, models = [], []
    for devices, extra in ((1, []), (2, []),
                           (2, ["--model-parallel", "2", "--shard-tables", "blocks"])):
        env = {**os.environ, "KERAS_BACKEND": "jax",
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        out = tmp_path / f"run{len(losses)}"
        proc = subprocess.run(
            [sys.executable, "-m", "twotower.cli", "train", "--data", str(path), "--stream",
             "--user-col", "user", "--item-col", "item", "--rating-col", "stars",
             "--preset", "tutorial", "--epochs", "2", "--batch-size", "64", "--devices",
             str(devices), *extra, "--out", str(out)],
            capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert ("distribution: 2 data parallel" in proc.stdout) == (devices == 2
                                                                    and not extra)
        models.append(TwoTower.load(out))
        losses.append(models[-1].history["loss"])
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    # tables in blocks: the same examples in another order (stratum by stratum), through
    # the stream's bounded buffer: close to one device's losses, not equal
    assert "tables in blocks over 2 devices" in proc.stdout
    np.testing.assert_allclose(losses[2], losses[0], rtol=2e-2)
    assert not np.allclose(losses[2], losses[0], rtol=1e-6)


def test_seen_matrix_refuses_a_file_changed_since_the_scan(tmp_path):
    df = _blocks()
    path = _write(df, tmp_path / "log.parquet")
    s = _stream(path)
    s.scan()
    assert s.seen_matrix().nnz == len(df)
    _write(pd.concat([df, df.head(5)]), path)  # five more rows (repeats of known pairs)
    with pytest.raises(DataError, match="changed since it was scanned"):
        s.seen_matrix()


def test_cli_evaluate_a_streamed_run_on_a_held_out_file(tmp_path, capsys):
    from twotower.cli import main
    from twotower.evaluation import evaluate_run, held_out_pairs
    df = _blocks(per_user=30)
    rng = np.random.default_rng(0)
    test_rows = rng.random(len(df)) < 0.2
    train, test = df[~test_rows], df[test_rows]
    _write(train, tmp_path / "train.parquet")
    extra = pd.DataFrame({"user": ["zz", "zz", "u1"], "item": [1000, 1001, 999_999],
                          "stars": [3.0, 4.0, 5.0]})  # an unknown user, an unknown item
    held = pd.concat([test, extra, train.head(2)])  # and two pairs the run trained on
    _write(held, tmp_path / "held.csv")
    code = main(["train", "--data", str(tmp_path / "train.parquet"), "--user-col", "user",
                 "--item-col", "item", "--rating-col", "none", "--stream", "--preset",
                 "tutorial", "--config", str(_softmax_config(tmp_path)), "--epochs", "5",
                 "--batch-size", "64", "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    code = main(["evaluate", str(tmp_path / "run")])  # no split of its own
    assert code == 2 and "--test-data" in capsys.readouterr().err
    code = main(["evaluate", str(tmp_path / "run"), "--test-data", str(tmp_path / "held.csv"),
                 "--user-col", "user", "--item-col", "item", "--json",
                 str(tmp_path / "m.json")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert (f"{len(held):,} pairs; 3 with a user or item unknown to the run and 2 it "
            f"trained on are left out; {len(test):,} evaluated") in err
    got = json.loads((tmp_path / "m.json").read_text())
    model = TwoTower.load(tmp_path / "run")
    users, items, _ = held_out_pairs(model, read_interactions(
        tmp_path / "held.csv", user_col="user", item_col="item"))
    want, _ = evaluate_run(model, (users, items), ks=(10, 100))
    assert got["model"]["recall@10"] == pytest.approx(want["model"]["recall@10"])
    assert got["model"]["recall@10"] > got["MostPop"]["recall@10"]  # it learned something


def _softmax_config(tmp_path):
    p = tmp_path / "model.toml"
    p.write_text('objective = "sampled_softmax"\nlearning_rate = 0.5\n')
    return p


def test_fit_stream_mse_refuses_ratings_that_do_not_vary(tmp_path):
    df = _blocks().assign(stars=4.0)
    path = _write(df, tmp_path / "log.csv")
    with pytest.raises(DataError, match=r"'mse' needs ratings that vary \(all ratings are "
                                        r"4.0\)"):
        TwoTower(_tutorial()).fit_stream(_stream(path), progress_every_s=0)


def test_fit_stream_metadata_ids_written_two_ways_keep_the_first(tmp_path):
    """'1003' and '1003.0' name one item of an int catalogue: the first row is kept (as
    read_interactions does), not a reindex error."""
    path = _write(_blocks(), tmp_path / "log.parquet")
    info = pd.DataFrame({"title": ["first", "second"]}, index=["1003", "1003.0"])
    model = TwoTower(_tutorial(epochs=1)).fit_stream(_stream(path), item_info=info,
                                                     progress_every_s=0)
    assert model.titles(model.item_vocab.lookup([1003]))[0] == "first"


def test_cli_stream_refuses_a_model_it_cannot_train_before_reading_the_file(tmp_path,
                                                                              capsys,
                                                                              monkeypatch):
    """A click log (no ratings) with the tutorial's mse, or with --items (which scans the
    file first): one line naming how to fix it, before any pass over the file."""
    from twotower.cli import main
    from twotower.training import InteractionStream
    df = _blocks().drop(columns="stars")
    path = _write(df, tmp_path / "clicks.parquet")
    items = tmp_path / "items.csv"
    pd.DataFrame({"item": sorted(df["item"].unique()), "title": "t"}).to_csv(items,
                                                                            index=False)

    def no_scan(self):
        raise AssertionError("the file was scanned")
    monkeypatch.setattr(InteractionStream, "scan", no_scan)
    code = main(["train", "--data", str(path), "--user-col", "user", "--item-col", "item",
                 "--stream", "--preset", "tutorial", "--items", str(items),
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    # the preset that trains clicks (sampled_softmax on the tutorial preset, the former
    # advice, left the lists close to random)
    assert code == 2 and "--preset clicks" in err, err


def test_cli_stream_with_a_model_that_needs_a_history_tower_says_stream_cannot(tmp_path,
                                                                               capsys):
    """multinomial (or an EASE part) with the id tower needs a history tower, which --stream
    refuses too: the message says so instead of only steering to a history tower."""
    from twotower.cli import main
    path = _write(_blocks(), tmp_path / "log.parquet")
    for line in ('objective = "multinomial"', "ease_weight = 0.4"):
        cfg = tmp_path / "m.toml"
        cfg.write_text(f"[model]\n{line}\n")
        code = main(["train", "--data", str(path), "--user-col", "user", "--item-col", "item",
                     "--rating-col", "stars", "--stream", "--preset", "tutorial",
                     "--config", str(cfg), "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert code == 2 and "needs a history tower" in err, err
        assert "--stream trains the id query tower only" in err, err
        assert not (tmp_path / "run").exists()


def test_stream_reads_what_memory_reads_and_refuses_what_it_refuses(tmp_path, capsys):
    """A latin-1 CSV trained in memory but failed streamed ("invalid UTF8"); one column
    named for two roles was refused in memory but trained streamed; --shard-tables without
    --model-parallel was silently not read."""
    from twotower.cli import main
    from twotower.training import InteractionStream, StreamConfig
    path = tmp_path / "latin1.csv"
    path.write_bytes(("usu\u00e1rio,item,stars\n" + "".join(  # an accent in the header too
        f"caf\u00e9{u},i{i},{1 + (u + i) % 5}\n" for u in range(6) for i in range(4)
    )).encode("latin-1"))
    stats = InteractionStream(path, StreamConfig(user_col="usu\u00e1rio", item_col="item",
                                                 rating_col="stars")).scan()
    assert "caf\u00e90" in stats.user_vocab.ids.tolist() and stats.rows == 24
    code = main(["train", "--data", str(path), "--user-col", "item", "--item-col", "item",
                 "--rating-col", "stars", "--stream", "--preset", "tutorial",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "column 'item' is named for several roles (user, item)" in err, err
    code = main(["train", "--data", str(path), "--user-col", "usu\u00e1rio", "--item-col", "item",
                 "--rating-col", "stars", "--stream", "--preset", "tutorial", "--epochs", "1",
                 "--shard-tables", "columns", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "warning: --shard-tables ('columns') is not read" in err, err


def test_cli_stream_reads_no_time_column_and_says_so(tmp_path, capsys):
    """A streamed run never reads times: it announced "using column 'timestamp' as the
    time" and then took any text there, where the in-memory reader refuses it."""
    from twotower.cli import main
    df = _blocks()
    df["timestamp"] = "notatime"
    path = tmp_path / "log.csv"
    df.to_csv(path, index=False)
    argv = ["train", "--data", str(path), "--user-col", "user", "--item-col", "item",
            "--rating-col", "stars", "--stream", "--preset", "tutorial", "--epochs", "1",
            "--batch-size", "64"]
    code = main(argv + ["--out", str(tmp_path / "a")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "as the time" not in out + err
    # a time column named: refused, as --time-unit (it was a note, and the run went on)
    code = main(argv + ["--time-col", "timestamp", "--out", str(tmp_path / "b")])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert "--time-col timestamp: a streamed run (--stream) reads no times" in err, err
    assert not (tmp_path / "b").exists()
    # --time-unit says how to read times the run never reads: refused before any work
    # (it was noted as not read, and the run went on)
    code = main(argv + ["--time-unit", "ms", "--out", str(tmp_path / "c")])
    out, err = capsys.readouterr()
    assert code == 2 and "--time-unit ms: a streamed run (--stream) reads no times" in err, err
    assert "leave --time-unit out, or train without --stream" in err, err
    assert not (tmp_path / "c").exists()
