"""`twotower train` refuses bad settings before it reads the data, names where each setting
came from (flag, --config file, preset), and shows progress through the EASE part."""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
import pandas as pd
import pytest

from twotower.data import Interactions
from twotower.models import ModelConfig, TwoTower
from twotower.models.progress import TrainProgress

from tests.cli_run import run


@pytest.fixture
def log(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "log.csv"
    pd.DataFrame({"user_id": rng.integers(0, 60, 900), "item_id": rng.integers(0, 40, 900),
                  "rating": rng.integers(1, 6, 900)}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("text,needle", [
    (b"[model]\nhard_negatives = 5\n",
     "model.hard_negatives (--config {cfg} [model]) is only used by objective"),
    (b"[model]\nepochs = 1\n# caf\xe9\n", "--config: {cfg}: line 3: not UTF-8 text (byte 0xe9)"),
])
def test_bad_settings_are_refused_before_the_data_is_read(capsys, tmp_path, text, needle):
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(text)
    missing = tmp_path / "not-there.csv"  # reading it would fail with another message
    code, _, err = run(capsys, "train", "--data", missing, "--config", cfg, "--out",
                       tmp_path / "r")
    assert code == 2 and needle.format(cfg=cfg) in err, err


@pytest.mark.parametrize("name", ["c.yaml", "c.YML"])
def test_a_yaml_config_file_is_named_as_such(capsys, tmp_path, log, name):
    """A YAML file was read as TOML: "Expected '=' after a key in a key/value pair (at line
    1, column 6)", which did not say that YAML is not taken."""
    cfg = tmp_path / name
    cfg.write_text("model:\n  epochs: 1\n")
    code, _, err = run(capsys, "train", "--data", log, "--config", cfg, "--out",
                       tmp_path / "r")
    assert code == 2 and f"--config: {cfg}: YAML is not read" in err and "TOML" in err, err


@pytest.mark.parametrize("argv,needle", [
    (["--test-fraction", "1.5"], "--test-fraction must be strictly between 0 and 1, got 1.5"),
    (["--split", "none", "--test-fraction", "0.5"],
     "--test-fraction (0.5) applies to --split random, temporal or global-temporal"),
    (["--preset", "tutorial", "--rating-col", "none"],
     "objective 'mse' trains on ratings, and --rating-col none was given"),
    (["--preset", "tutorial", "--rating-col", "none"], "or --preset clicks"),
    # one CPU device here: the count is the problem, not batch 1000 over 3 devices
    (["--preset", "tutorial", "--devices", "3"], "3 devices, but JAX sees 1"),
])
def test_train_refuses_what_cannot_work_first(capsys, tmp_path, log, argv, needle):
    code, out, err = run(capsys, "train", "--data", log, "--out", tmp_path / "r", *argv)
    assert code == 2 and needle in err, err
    assert "data:" not in out  # refused before the data was read and split


def test_errors_name_the_preset_or_the_file_for_each_setting(capsys, tmp_path, log):
    cfg = tmp_path / "hist.toml"
    cfg.write_text('[model]\nquery_tower = "history"\n')
    code, _, err = run(capsys, "train", "--data", log, "--preset", "tutorial", "--config",
                       cfg, "--out", tmp_path / "r")
    assert code == 2, err
    assert "model.objective (preset tutorial)" in err  # not the file: it does not set it
    assert f"query_tower (--config {cfg} [model])" in err


def test_a_config_file_with_a_byte_order_mark_and_crlf_is_read(capsys, tmp_path, log):
    cfg = tmp_path / "bom.toml"
    cfg.write_bytes(b"\xef\xbb\xbf[model]\r\nepochs = 1\r\nlearning_rate = 1\r\n")
    code, _, err = run(capsys, "train", "--data", log, "--preset", "tutorial", "--config",
                       cfg, "--out", tmp_path / "r", "--split", "none")
    assert code == 0, err


def test_an_integer_where_a_float_is_meant_is_that_float():
    # `learning_rate = 1` in TOML crashed Keras' optimizer after the data was read
    cfg = ModelConfig.preset("tutorial", learning_rate=1, ease_lambdas=[100, 200])
    assert isinstance(cfg.learning_rate, float) and cfg.learning_rate == 1.0
    assert all(isinstance(v, float) for v in cfg.ease_lambdas)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    from twotower.models.config import make_optimizer
    make_optimizer(cfg, 10)


def _users_items(seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    # 40 users with one interaction: a validation split leaves some with none to train on
    users = np.concatenate([np.repeat(np.arange(80), 12), np.arange(80, 120)])
    items = (users % 4) * 10 + rng.integers(0, 10, len(users))
    return Interactions.from_ids(users, items, timestamps=np.arange(len(users)))


def test_the_ease_part_shows_progress_and_its_inner_fit_keeps_quiet():
    x = _users_items()
    cfg = ModelConfig.preset("default", epochs=2, ease_weight_grid=(0.2, 0.6))
    out = io.StringIO()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        TwoTower(cfg).fit(x, verbose=0, callbacks=[TrainProgress(every_s=0.01, out=out)])
    lines = [ln for ln in out.getvalue().splitlines() if "EASE part:" in ln]
    assert lines and all(" so far" in ln for ln in lines), out.getvalue()[-2000:]
    assert any("fitting on all the training data" in ln or "validation split" in ln
               for ln in lines)
    # every user has training rows; the blend weight's inner fit (on a split of the data)
    # warned about the users of its own split
    untrained = [w for w in seen if "users have no training interactions" in str(w.message)]
    assert not untrained, [str(w.message) for w in untrained]


def test_a_split_that_leaves_no_test_rows_is_said_so_by_train_and_evaluate(capsys, tmp_path):
    """A one-row log split at random leaves no test row: evaluate blamed --split none."""
    data = tmp_path / "one.csv"
    data.write_text("user_id,item_id\na,x\n")
    code, out, err = run(capsys, "train", "--data", data, "--out", tmp_path / "run",
                         "--epochs", "1")
    assert code == 0, err
    assert "the random split left no test rows" in out + err
    code, _, err = run(capsys, "evaluate", tmp_path / "run")
    assert code == 2 and "has no held-out split (its random split left no test rows)" in err


def test_a_save_that_fails_on_the_disk_names_out(capsys, tmp_path, monkeypatch):
    """A full disk while train saved said "directory: cannot save the run ..."."""
    import errno

    import twotower.artifacts as art
    data = tmp_path / "d.csv"
    data.write_text("user_id,item_id\n" + "".join(f"{u},{u % 5}\n" for u in range(40)))

    def full(_path):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(art, "_fsync_tree", full)
    code, _, err = run(capsys, "train", "--data", data, "--out", tmp_path / "run",
                       "--epochs", "1")
    assert code == 2 and f"twotower: error: --out: cannot save the run {tmp_path / 'run'}: " \
        "no space left on the device; nothing was written" in err, err


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_an_out_where_no_directory_can_be_made_is_refused_before_training(capsys, tmp_path):
    """`train --out /proc/x` (root may "write" /proc by access(), yet no directory can be
    made there) trained the whole model, then failed with a raw "[Errno 2] No such file or
    directory: '/proc/.x.new-...'", naming neither --out nor the run."""
    data = tmp_path / "d.csv"
    data.write_text("user_id,item_id\n" + "".join(f"{u},{u % 5}\n" for u in range(40)))
    code, out, err = run(capsys, "train", "--data", data, "--out", "/proc/twotower-x",
                         "--epochs", "1")
    assert code == 2 and "twotower: error: --out: cannot save the run /proc/twotower-x: " \
        in err, err
    assert "recall@" not in out + err  # refused before any training


def _topic_log(path, users=300, items=200, topics=5, per_user=20, seed=0):
    """A click log with signal: each user clicks 80% in their topic (Zipf popularity within
    it), 20% anywhere by global popularity; MostPop finds some test items, a model that
    learnt the topics many more."""
    rng = np.random.default_rng(seed)
    item_topic = np.arange(items) % topics
    pop = 1.0 / np.arange(1, items + 1)
    rows = []
    for u in range(users):
        t = u % topics
        own = np.flatnonzero(item_topic == t)
        k_own = int(0.8 * per_user)
        picked = set(rng.choice(own, k_own, replace=False, p=pop[own] / pop[own].sum()))
        while len(picked) < per_user:
            picked.add(int(rng.choice(items, p=pop / pop.sum())))
        rows += [(f"u{u}", f"i{i}") for i in picked]
    pd.DataFrame(rows, columns=["user_id", "item_id"]).to_csv(path, index=False)
    return path


def test_train_says_mostpop_and_warns_when_the_model_trails_it(capsys, tmp_path):
    """`train` prints MostPop's figures on its test split beside the model's, and a warning
    when the model's recall@10 is below MostPop's (a model that trained nothing, as the
    tutorial preset's Adagrad 0.1 left sampled_softmax); the default model on a log with
    signal gets no warning."""
    log = _topic_log(tmp_path / "log.csv")
    (tmp_path / "c.toml").write_text("learning_rate = 1e-6\n")  # untrained: random lists
    code, out, err = run(capsys, "train", "--data", log, "--preset", "clicks", "--epochs", "1",
                         "--config", tmp_path / "c.toml", "--out", tmp_path / "r1")
    assert code == 0, err
    import re
    model = re.search(r"^test: recall@10 ([\d.]+)", out, re.M)
    popular = re.search(r"^test, MostPop: recall@10 ([\d.]+)  ndcg@10 [\d.]+  recall@100 ",
                        out, re.M)
    assert model and popular, out
    assert float(model.group(1)) < float(popular.group(1)), out
    assert ("warning: the model scores below the most-popular list on this split: recall@10 "
            f"{model.group(1)} against MostPop's {popular.group(1)}") in out, out
    assert "see README, Quality" in out
    code, out, err = run(capsys, "train", "--data", log, "--out", tmp_path / "r2")
    assert code == 0, err
    model = re.search(r"^test: recall@10 ([\d.]+)", out, re.M)
    popular = re.search(r"^test, MostPop: recall@10 ([\d.]+)", out, re.M)
    assert model and popular and float(model.group(1)) > float(popular.group(1)), out
    assert "most-popular" not in out + err, out


@pytest.mark.parametrize("text,instead", [
    ('objective = "softmax"\n', "use --preset clicks"),
    ('objective = "bpr"\n', "use --preset clicks"),
    ('objective = "sampled_softmax"\nquery_tower = "history"\n', "use --preset default"),
    ('objective = "multinomial"\nquery_tower = "id+history"\n', "use --preset default"),
])
def test_tutorial_preset_with_a_ranking_objective_is_refused(capsys, tmp_path, text, instead):
    """The tutorial's Adagrad 0.1 at temperature 1 (chosen for mse) leaves the ranking
    objectives' tables near their initial values (lists close to random,
    benchmarks/probes/objective_audit.py): refused before the data is read, with the preset
    to use; a learning rate or temperature of the user's own is taken."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    missing = tmp_path / "not-there.csv"  # reading it would fail with another message
    code, _, err = run(capsys, "train", "--data", missing, "--preset", "tutorial", "--config",
                       cfg, "--out", tmp_path / "r")
    assert code == 2 and "on the tutorial preset keeps the tutorial's Adagrad 0.1" in err, err
    assert instead in err, err
    cfg.write_text(text + "temperature = 0.1\n")
    code, _, err = run(capsys, "train", "--data", missing, "--preset", "tutorial", "--config",
                       cfg, "--out", tmp_path / "r")
    assert code == 2 and "not-there.csv" in err and "tutorial preset keeps" not in err, err


def test_clicks_preset_with_multinomial_is_refused(capsys, tmp_path):
    """The clicks preset's Adagrad 0.5 at temperature 0.1 diverges on the per-user
    multinomial loss (MovieLens: loss 483 -> 5,011, benchmarks/probes/objective_audit.py):
    refused with the default preset named; the per-pair objectives on its history tower
    are taken."""
    cfg = tmp_path / "c.toml"
    missing = tmp_path / "not-there.csv"
    cfg.write_text('objective = "multinomial"\nquery_tower = "id+history"\n')
    code, _, err = run(capsys, "train", "--data", missing, "--preset", "clicks", "--config",
                       cfg, "--out", tmp_path / "r")
    assert code == 2 and "on the clicks preset keeps its Adagrad 0.5" in err, err
    assert "use --preset default" in err, err
    cfg.write_text('objective = "softmax"\nquery_tower = "id+history"\n')
    code, _, err = run(capsys, "train", "--data", missing, "--preset", "clicks", "--config",
                       cfg, "--out", tmp_path / "r")
    assert code == 2 and "not-there.csv" in err and "preset keeps" not in err, err
