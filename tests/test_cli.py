import json
import os
import re
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.cli_run import run


def test_recommend_one_user(capsys, tutorial_run):
    _, rundir = tutorial_run
    code, out, err = run(capsys, "recommend", rundir, "--user", "42", "-k", "5")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "user 42:" and len(lines) == 6


def test_recommend_json_excludes_seen(capsys, tutorial_run):
    model, rundir = tutorial_run
    code, out, _ = run(capsys, "recommend", rundir, "--user", "42", "--json", "-k", "20")
    row = json.loads(out)
    seen = set(model.item_vocab.ids[model.seen_items(model.user_vocab.lookup([42]))[0]].tolist())
    assert code == 0 and len(row["items"]) == 20
    assert not seen & {it["item_id"] for it in row["items"]}
    code, out, _ = run(capsys, "recommend", rundir, "--user", "42", "--json", "-k", "20",
                       "--include-seen")
    assert seen & {it["item_id"] for it in json.loads(out)["items"]}


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_recommend_all_users_to_file(capsys, tutorial_run, tmp_path, suffix):
    _, rundir = tutorial_run
    out_file = tmp_path / f"recs.{suffix}"
    code, out, err = run(capsys, "recommend", rundir, "--all-users", "--out", out_file)
    assert code == 0, err
    if suffix == "jsonl":
        rows = [json.loads(ln) for ln in out_file.read_text().splitlines()]
        assert len(rows) == 943 and all(len(r["items"]) == 10 for r in rows)
    else:
        df = pd.read_parquet(out_file)
        assert len(df) == 9430 and df["user_id"].nunique() == 943


def test_recommend_users_file(capsys, tutorial_run, tmp_path):
    # a byte order mark (Excel, Notepad) is not part of the first id; int ids stay ints
    _, rundir = tutorial_run
    (tmp_path / "u.txt").write_bytes(b"\xef\xbb\xbf1\n2\n\n3\n")
    code, out, err = run(capsys, "recommend", rundir, "--users", tmp_path / "u.txt", "--json")
    assert code == 0, err
    assert [json.loads(x)["user_id"] for x in out.splitlines()] == [1, 2, 3]


def test_recommend_ids_keep_their_type_in_every_output(capsys, tutorial_run, tmp_path):
    # int ids are ints in --json, .jsonl, .parquet (int64 columns, to join an int catalogue)
    # and .csv, however the user was named
    _, rundir = tutorial_run
    code, out, err = run(capsys, "recommend", rundir, "--user", "42", "--json", "-k", "3")
    assert code == 0, err
    row = json.loads(out)
    assert row["user_id"] == 42 and all(type(it["item_id"]) is int for it in row["items"])
    (tmp_path / "u.txt").write_text("42\n7\n")
    for suffix in ("jsonl", "parquet", "csv"):
        out_file = tmp_path / f"recs.{suffix}"
        code, _, err = run(capsys, "recommend", rundir, "--users", tmp_path / "u.txt", "--out",
                           out_file, "-k", "3")
        assert code == 0, err
        if suffix == "jsonl":
            rows = [json.loads(ln) for ln in out_file.read_text().splitlines()]
            assert [r["user_id"] for r in rows] == [42, 7]
            assert rows[0]["items"] == row["items"]
            continue
        df = pd.read_parquet(out_file) if suffix == "parquet" else pd.read_csv(out_file)
        assert list(df.columns) == ["user_id", "rank", "item_id", "title", "score"]
        assert df["user_id"].dtype == df["item_id"].dtype == "int64"
        assert df["user_id"].tolist() == [42] * 3 + [7] * 3
        assert df["rank"].tolist() == [1, 2, 3] * 2
        assert df["item_id"].tolist()[:3] == [it["item_id"] for it in row["items"]]
        assert df["title"].tolist()[:3] == [it["title"] for it in row["items"]]


def test_recommend_refuses_an_unknown_output_suffix(capsys, tutorial_run, tmp_path):
    _, rundir = tutorial_run
    code, _, err = run(capsys, "recommend", rundir, "--all-users", "--out", tmp_path / "r.txt")
    assert code == 2 and "--out: " in err and "expected a .jsonl (JSON lines), .parquet or " \
        ".csv file, got '.txt'" in err
    assert not (tmp_path / "r.txt").exists()


def test_recommend_into_a_closed_pipe_stops_quietly(tutorial_run):
    # `twotower recommend RUN --all-users | head -3`: when the reader goes, exit 141 (what a
    # shell reports for `seq` or `cat` there) without a traceback
    _, rundir = tutorial_run
    proc = subprocess.Popen([sys.executable, "-m", "twotower.cli", "recommend", str(rundir),
                             "--all-users", "-k", "5"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # 943 users x 6 lines is well over a pipe buffer: writes go on
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert first.startswith(b"user ") and err == ""


def test_users_from_standard_input_and_a_pipe(capsys, tutorial_run, tmp_path, monkeypatch):
    """`--users -`, `/dev/stdin` and `<(...)` were "file not found"."""
    import io
    _, rundir = tutorial_run
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"42\n\n 7 \n")))
    code, out, err = run(capsys, "recommend", rundir, "--users", "-", "--json", "-k", "2")
    assert code == 0, err
    assert [json.loads(ln)["user_id"] for ln in out.splitlines()] == [42, 7]
    fifo = tmp_path / "ids"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text("43\n"))
    writer.start()
    code, out, err = run(capsys, "recommend", rundir, "--users", fifo, "--json", "-k", "2")
    writer.join(10)
    assert code == 0 and json.loads(out)["user_id"] == 43, err
    monkeypatch.setattr(sys, "stdin", None)  # started with standard input closed
    code, out, err = run(capsys, "recommend", rundir, "--users", "-")
    assert code == 2 and "--users -: there is no standard input" in err, err


def test_a_blank_user_is_refused_and_an_unknown_one_echoed_stripped(capsys, tutorial_run):
    """`--user "   "` was served the popular items as user "   "; " ghost " was echoed with
    its spaces where a known " 42 " is 42."""
    _, rundir = tutorial_run
    code, out, err = run(capsys, "recommend", rundir, "--user", "   ", "--fallback", "popular")
    assert code == 2 and "--user: expected a user id, got '   '" in err
    code, out, err = run(capsys, "recommend", rundir, "--user", " ghost ", "--fallback",
                         "popular", "--json", "-k", "1")
    assert code == 0 and json.loads(out)["user_id"] == "ghost", out


def test_users_file_empty_is_an_error(capsys, tutorial_run, tmp_path):
    _, rundir = tutorial_run
    (tmp_path / "u.txt").write_text("\n  \n")
    code, out, err = run(capsys, "recommend", rundir, "--users", tmp_path / "u.txt")
    assert code == 2 and out == ""
    assert f"--users: {tmp_path / 'u.txt'} holds no user id (expected one id a line)" in err


def test_similar_by_title_and_id(capsys, tutorial_run):
    _, rundir = tutorial_run
    code, out, _ = run(capsys, "similar", rundir, "--item", "Star Wars (1977)", "--json")
    data = json.loads(out)
    assert code == 0 and data["item_id"] == 50 and len(data["items"]) == 10
    assert 50 not in {it["item_id"] for it in data["items"]}
    code2, out2, _ = run(capsys, "similar", rundir, "--item", "50", "--json")
    assert json.loads(out2) == data


@pytest.mark.parametrize("argv,needle", [
    (["recommend", "{run}", "--user", "99999"], "unknown user id '99999'"),
    (["similar", "{run}", "--item", "No Such Movie"],
     "'No Such Movie' is neither an item id nor an item's exact title"),
    (["similar", "{run}", "--item", "star wars"], "titles containing it: 'Star Wars (1977)'"),
    (["recommend", "{run}", "--user", "42", "-k", "5000"], "between 1 and 1682"),
    (["recommend", "{tmp}/nope", "--user", "42"], "model directory not found"),
    (["train", "--data", "{tmp}/missing.csv", "--out", "{tmp}/r"], "file not found"),
    (["train", "--data", "movielens-100k", "--out", "{tmp}/r", "--split", "weird"],
     "argument --split: invalid choice: 'weird'"),
    (["recommend"], "the following arguments are required"),
    (["train", "--out", "{tmp}/r", "--devices", "3", "--model-parallel", "2"],
     "--devices 3 must be a multiple of --model-parallel (2)"),
    # one device here: the count comes first (the batch and width checks: test_distributed)
    (["train", "--out", "{tmp}/r", "--devices", "2", "--batch-size", "63"],
     "2 devices, but JAX sees 1"),
    (["train", "--out", "{tmp}/r", "--devices", "2"],
     "XLA_FLAGS=--xla_force_host_platform_device_count=2"),
    (["train", "--out", "{tmp}/r", "--devices", "0"], "data_parallel"),
    (["train", "--out", "{tmp}/r", "--shard-tables", "diagonal"], "invalid choice"),
    (["train", "--out", "{tmp}/r", "--index-kind", "ivf", "--target-recall", "1.5"],
     "--target-recall: expected a recall in [0, 1], got '1.5'"),
    (["index", "{run}", "--kind", "ivf", "--target-recall", "high"],
     "--target-recall: expected a recall in [0, 1], got 'high'"),
    (["train", "--out", "{tmp}/r", "--devices", "4", "--model-parallel", "2", "--coordinator",
      "127.0.0.1:1", "--num-processes", "2", "--process-id", "0"],
     "--model-parallel with several processes"),
    # faiss' k-means needs an item per list (the run is left as it was)
    (["index", "{run}", "--kind", "ivf", "--nlist", "5000"],
     "IndexConfig.nlist (--nlist) must be at most the number of items indexed, 1,682"),
    (["index", "{run}", "--sample", "0"], "--sample: expected a whole number >= 1, got '0'"),
    (["index", "{run}", "--sample", "-5"], "--sample: expected a whole number >= 1, got '-5'"),
    (["evaluate", "{run}", "-k", "0"], "-k must be between 1 and 1682 (the catalogue size)"),
    (["evaluate", "{run}", "-k", "10", "-1"], "between 1 and 1682 (the catalogue size), got -1"),
    (["evaluate", "{run}", "-k", "1683"], "between 1 and 1682 (the catalogue size), got 1683"),
    (["similar", "{run}", "--item", "Chasing Amy (1997)"],
     "item title 'Chasing Amy (1997)' is shared by 2 items (ids 246, 268); give the id"),
])
def test_user_errors_exit_2_with_one_line(capsys, tutorial_run, tmp_path, argv, needle):
    _, rundir = tutorial_run
    argv = [a.format(run=rundir, tmp=tmp_path) for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err


def test_train_on_csv_with_string_ids(capsys, tmp_path, ml100k):
    from twotower.data import write_interactions
    small = ml100k.take(ml100k.users < 200)
    data = tmp_path / "r.csv"
    write_interactions(small, data)
    text = data.read_text().replace("\n", "\n").splitlines()
    header, rows = text[0], text[1:]
    # string user ids, not ASCII
    data.write_text("\n".join([header] + [f"ü{r}" for r in rows]) + "\n", encoding="utf-8")
    code, out, err = run(capsys, "train", "--data", data, "--rating-col", "rating",
                         "--time-col", "timestamp", "--split", "temporal", "--out",
                         tmp_path / "run", "--preset", "tutorial", "--epochs", "2")
    assert code == 0, err
    assert "saved to" in out
    # spaces around a text id are dropped, as the reader drops them from the file's
    code, out, err = run(capsys, "recommend", tmp_path / "run", "--user", " ü1 ", "--json")
    assert code == 0 and json.loads(out)["user_id"] == "ü1", err
    assert '"ü1"' in out and "\\u00fc" not in out  # written as it is, as the service does
    code, out, err = run(capsys, "recommend", tmp_path / "run", "--user", "ü1", "--out",
                         tmp_path / "r.jsonl")
    assert code == 0, err
    assert '"user_id": "ü1"' in (tmp_path / "r.jsonl").read_text(encoding="utf-8")


def test_train_with_an_ann_index_tunes_it_to_the_target(capsys, tmp_path, ml100k):
    # --index-kind ivf: after training, nprobe is raised until recall@10 on the run's users
    # reaches --target-recall, announced, and kept in the saved run.
    from twotower import TwoTower
    from twotower.data import write_interactions
    small = ml100k.take(ml100k.users < 300)
    data = tmp_path / "r.csv"
    write_interactions(small, data)
    code, out, err = run(capsys, "train", "--data", data, "--rating-col", "rating",
                         "--out", tmp_path / "run", "--preset", "tutorial", "--epochs", "2",
                         "--index-kind", "ivf", "--target-recall", "0.999")
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if "index ivf: nprobe" in ln)
    nprobe = int(line.split("nprobe ")[1].split()[0])
    assert float(line.split("recall@10 ")[1].split()[0]) >= 0.999 and "not reached" not in line
    loaded = TwoTower.load(tmp_path / "run")
    assert loaded.index_config.nprobe == loaded._index.nprobe == nprobe
    # its untrained items denied, the IVF index answers these few items by exact search:
    # the tuned recall is exact search's, and the line says so (as `twotower index` does)
    untrained = int(loaded.untrained_items().sum())
    assert untrained > 0 and (f"(the {loaded.n_items - untrained:,} items this run lists "
                              f"(the {untrained:,} it never trained are in no list) are at "
                              "most 4,096: the ivf index answers them by exact search)") in line


def test_tutorial_command_prints_titles(capsys, ml100k_dir):
    code, out, err = run(capsys, "tutorial", "--data-dir", ml100k_dir, "--epochs", "2")
    assert code == 0, err
    assert "Top-10 for user 42" in out and "similar to Star Wars (1977)" in out
    section = out.split("Top-10 for user 42")[1].split("The tutorial's raw list")[0]
    assert len([ln for ln in section.splitlines() if ln.strip()[:3].strip(". ").isdigit()]) == 10


def test_tutorial_says_which_epoch_its_val_loss_is_from(capsys, ml100k_dir):
    """The tutorial validates every 5 epochs: with --epochs 6 its "final ... val loss" was
    epoch 5's, unsaid (training.json holds 6 losses and 1 val_loss)."""
    code, out, err = run(capsys, "tutorial", "--data-dir", ml100k_dir, "--epochs", "6")
    assert code == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("final train loss"))
    assert re.search(r"val loss \d\.\d{4} \(epoch 5 of 6\) \(tutorial: 0\.4743\)", line), line


def test_real_process_user_error(tutorial_run):
    _, rundir = tutorial_run
    proc = subprocess.run([sys.executable, "-m", "twotower.cli", "recommend", str(rundir),
                           "--user", "nobody"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("twotower: error: unknown user id")
    assert "Traceback" not in proc.stderr


def test_a_save_into_the_working_directory_is_refused_before_any_work(capsys, tutorial_run,
                                                                     tmp_path, monkeypatch):
    """`twotower index .` (or `train --out .`) from inside the run swapped the directory the
    shell was in for a new one: the save completed, and the next command, in the deleted
    old directory, said the run was not there. Refused, naming the way out, before any
    work; the run is untouched."""
    import shutil
    _, rundir = tutorial_run
    run_copy = tmp_path / "run"
    shutil.copytree(rundir, run_copy)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run_copy.iterdir())
    for where, argv in ((run_copy, ["index", ".", "--kind", "exact"]),
                        (run_copy / "index", ["index", "..", "--kind", "exact"]),
                        (run_copy, ["train", "--preset", "tutorial", "--epochs", "1",
                                    "--out", "."])):
        monkeypatch.chdir(where)
        code, out, err = run(capsys, *argv)
        here = "the current directory" if where == run_copy else \
            f"a directory the current one ({where}) is in"
        assert code == 2 and err.strip() == (
            f"twotower: error: {'--out' if argv[0] == 'train' else 'run directory'}: "
            f"{run_copy} is {here}; a save replaces the whole directory, which would leave "
            f"this process (and your shell) in the deleted old one: run the command from "
            f"outside it, e.g. after `cd {tmp_path}`"), err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run_copy.iterdir()) == before
    monkeypatch.chdir(tmp_path)  # from outside: saved
    code, out, err = run(capsys, "index", "run", "--kind", "exact", "--json")
    assert code == 0, err


def test_a_stop_after_the_save_says_the_save_is_complete(capsys, tutorial_run, tmp_path,
                                                         monkeypatch):
    """Ctrl-C while `index` printed its report (its save done, the new index in use) said
    a bare "interrupted", as if nothing had changed: only saves a signal waited for were
    counted. Any save the command completed is named."""
    import shutil

    import twotower.cli as cli
    from twotower import TwoTower
    _, rundir = tutorial_run
    run_copy = tmp_path / "run"
    shutil.copytree(rundir, run_copy)

    def stop(*a, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "_say", stop)
    code, out, err = run(capsys, "index", run_copy, "--kind", "ivf", "--nprobe", "4")
    assert code == 130
    assert err.strip().splitlines()[-1] == (f"twotower: interrupted (after {run_copy} was "
                                            "saved, complete)")
    assert TwoTower.load(run_copy).index_config.kind == "ivf"
    # a stop before the save (in a later command of the same process): nothing claimed
    import twotower.artifacts as art
    monkeypatch.setattr(art, "reindex_run", stop)
    code, out, err = run(capsys, "index", run_copy, "--kind", "exact")
    assert code == 130 and err.strip().splitlines()[-1] == "twotower: interrupted"
    assert TwoTower.load(run_copy).index_config.kind == "ivf"


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "exact"])
def test_index_command_builds_reports_and_is_used(capsys, tutorial_run, tmp_path, kind):
    import shutil

    from twotower import TwoTower
    _, rundir = tutorial_run
    run_copy = tmp_path / "run"
    shutil.copytree(rundir, run_copy)
    code, out, err = run(capsys, "index", run_copy, "--kind", kind, "--json")
    assert code == 0, err
    report = json.loads(out)
    # hnsw/ivf tune their search knob on every other user and report on the rest
    assert report["kind"] == kind and report["queries"] == (943 if kind == "exact" else 471)
    if kind != "exact":
        tuned = report["tuned"]
        assert tuned["reached"] and tuned["calibration_queries"] == 472
        assert tuned["recall_tried"][str(tuned["value"])] >= 0.95
        assert report["config"][tuned["knob"]] == tuned["value"]
    floor = {"exact": 1.0, "hnsw": 0.9, "ivf": 0.9}[kind]
    assert floor <= report["recall@10_vs_exact"] <= 1.0
    if kind == "ivf":  # the list count picked for 1,682 items, not the config's 0
        from twotower.index.faiss_ann import IVFIndex
        assert report["config"]["nlist"] == 0 and report["nlist_used"] == IVFIndex.auto_nlist(1682)
        assert report["nprobe_used"] == report["config"]["nprobe"] == report["tuned"]["value"]
    assert report["queries_per_second"] > 0 and report["exact_queries_per_second"] > 0
    loaded = TwoTower.load(run_copy)
    assert loaded.index_config.kind == kind and type(loaded._index).__name__.lower().startswith(
        kind)
    code, out, _ = run(capsys, "recommend", run_copy, "--user", "42", "--json")
    assert code == 0 and len(json.loads(out)["items"]) == 10
    # similar items: an index of the run's kind (cosine), tuned on 500 items, reported on
    # others, saved with the run (exact: a scan rebuilt at load, nothing saved)
    sim = report["similar"]
    assert sim["kind"] == kind and loaded._similar.kind == kind
    assert loaded._similar.config.metric == "cosine"
    assert (run_copy / "similar").is_dir() == (kind != "exact")
    if kind != "exact":
        assert report["tuned"]["similar"]["reached"]
        assert sim["calibration_items_left_out"] and sim["queries"] == 1000
        assert sim["index_bytes"] > 1682 * 32 * 4  # at least its vectors
        assert 0.95 <= sim["recall@10_vs_exact"] <= 1.0
        knob = "nprobe" if kind == "ivf" else "ef_search"
        assert sim[knob] == report["tuned"]["similar"]["value"]
        exact = TwoTower.load(rundir)  # the run before: similar items by an exact scan
        assert exact._similar.kind == "exact"
        items = np.arange(0, 1682, 7)
        got, ref = loaded.similar_items(items, 10)[1], exact.similar_items(items, 10)[1]
        assert (got != items[:, None]).all()  # never the item itself
        hits = np.mean([len(set(g) & set(r)) / 10 for g, r in zip(got, ref)])
        assert hits >= 0.95
    code, out, err = run(capsys, "similar", run_copy, "--item", "Star Wars (1977)", "--json")
    assert code == 0, err
    want = loaded.similar_ids([50], 10)[1][0].tolist()  # Star Wars: the run's index
    assert [it["item_id"] for it in json.loads(out)["items"]] == want


def test_index_tuning_raises_the_knob_to_the_target_and_saves_it(capsys, tutorial_run,
                                                                   tmp_path, monkeypatch):
    # IVF from nprobe 1 of 40 lists: the tuning doubles nprobe until recall@10 on the
    # calibration users reaches 0.99, and the run keeps that value. A knob given on the
    # command line is kept as given. The run's few untrained items are not denied here:
    # with a deny list, an ANN index answers a catalogue this small by exact search
    import shutil

    from twotower.models import TwoTower as _T
    monkeypatch.setattr(_T, "_untrained_item_cache", lambda self: (
        np.zeros(self.n_items, dtype=bool), None))

    from twotower import TwoTower
    from twotower.artifacts import reindex_run
    from twotower.index import IndexConfig
    _, rundir = tutorial_run
    run_copy = tmp_path / "run"
    shutil.copytree(rundir, run_copy)
    stages = []
    report = reindex_run(run_copy, IndexConfig(kind="ivf", nlist=40, nprobe=1),
                         target_recall=0.99, stage=stages.append)
    # what it does, said as it goes (`twotower index` shows it every 10 s: minutes of
    # silence at a million items)
    assert stages == [
        "loading the run",
        "building the ivf indexes (items, similar items) over 1,682 items, tuning them to "
        "recall@10 0.99",
        "measuring recall@10 against exact search (471 users)",
        "saving the run",  # (no eval.json here: no held-out metrics to redo)
        # then the similar-items index (it was measured under "saving the run")
        "measuring the similar-items index's recall@10 against exact search"], stages
    tuned = report["tuned"]
    tried = list(tuned["recall_tried"])
    assert tried[0] == 1 and tried == [min(40, 2 ** i) for i in range(len(tried))]
    assert tuned["value"] == tried[-1] > 1 and tuned["reached"]
    assert tuned["recall_tried"][tuned["value"]] >= 0.99 > tuned["recall_tried"][1]
    assert tuned["seconds"] > 0 and report["build_seconds"] >= 0
    assert TwoTower.load(run_copy).index_config.nprobe == tuned["value"]
    assert TwoTower.load(run_copy)._index.nprobe == tuned["value"]
    code, out, err = run(capsys, "index", run_copy, "--kind", "ivf", "--nlist", "40",
                         "--nprobe", "1", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert "tuned" not in report and report["config"]["nprobe"] == 1
    assert report["queries"] == 943


def test_index_refuses_to_save_over_a_run_replaced_while_it_built(capsys, tutorial_run,
                                                                  tmp_path, monkeypatch):
    # `twotower index RUN` beside a `twotower train --out RUN` that finished first: the
    # index step saved the old model over the new one (both said they succeeded). It now
    # refuses and writes nothing; the newer run stays.
    import shutil

    from twotower import TwoTower
    from twotower.artifacts import read_manifest
    _, rundir = tutorial_run
    run_copy = tmp_path / "run"
    shutil.copytree(rundir, run_copy)
    other = TwoTower.load(rundir)
    set_index = TwoTower.set_index

    def build_then_other_save(self, *a, **kw):
        out = set_index(self, *a, **kw)
        other.save(run_copy)  # the other command's save lands while this one builds
        return out
    monkeypatch.setattr(TwoTower, "set_index", build_then_other_save)
    newer = None
    code, out, err = run(capsys, "index", run_copy, "--kind", "hnsw")
    newer = read_manifest(run_copy)
    assert code == 2 and "changed while this command ran" in err and "nothing was written" \
        in err, err
    assert TwoTower.load(run_copy).index_config.kind == "exact"  # the other save's run
    assert read_manifest(run_copy) == newer
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers
    # a symbolic link to a run is refused at once, naming the link and the run's own path
    monkeypatch.setattr(TwoTower, "set_index", set_index)
    (tmp_path / "link").symlink_to(run_copy)
    code, out, err = run(capsys, "index", tmp_path / "link", "--kind", "hnsw")
    assert code == 2 and "is a symbolic link" in err and str(run_copy) in err, err
    (tmp_path / "loop").symlink_to(tmp_path / "loop")  # a loop: one line too
    code, out, err = run(capsys, "index", tmp_path / "loop", "--kind", "hnsw")
    assert code == 2 and "is a symbolic link" in err and len(err.splitlines()) == 1, err


def test_evaluate_command_with_baselines_json_and_plot(capsys, tutorial_run, tmp_path):
    _, rundir = tutorial_run
    code, out, err = run(capsys, "evaluate", rundir, "--baselines", "--json",
                         tmp_path / "t.json", "--plot", tmp_path / "r.png",
                         "--plot-loss", tmp_path / "loss.png")
    assert code == 0, err
    table = json.loads((tmp_path / "t.json").read_text())
    assert set(table) == {"model", "MostPop", "ItemKNN", "EASE"}
    assert table["EASE"]["recall@10"] > table["MostPop"]["recall@10"] > 0.05
    # each stage is announced on stderr (EASE on a large catalogue takes minutes)
    assert ("twotower: tuning ItemKNN and EASE on a random validation split of train "
            "(1,682 items)") in err
    assert "twotower: evaluating EASE (" in err
    # which settings the tuning chose, an edge of the grid said so (a better one may lie
    # beyond it): the output and the JSON named none
    assert re.search(r"twotower: tuned: ItemKNN neighbors \d+( \(the grid's \w+\))?, shrink "
                     r"[\d.]+; EASE lambda \d+( \(the grid's \w+\))? \(\d+ s so far\)", err), err
    assert "recall@10" in out and (tmp_path / "r.png").stat().st_size > 1000
    assert (tmp_path / "loss.png").stat().st_size > 1000


def test_evaluate_json_dash_writes_the_json_alone_to_stdout(capsys, tutorial_run, tmp_path,
                                                            monkeypatch):
    """`--json -` wrote a file named '-' (`--users -` reads stdin): now stdout holds the
    JSON alone (for a pipe), the markdown table and the 'wrote' lines go to stderr."""
    _, rundir = tutorial_run
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "evaluate", rundir, "--json", "-", "-k", "5", "--plot-loss",
                         tmp_path / "loss.png")
    assert code == 0, err
    table = json.loads(out)
    assert set(table) == {"model", "MostPop"} and table["model"]["recall@5"] > 0
    assert "| method |" in err and f"wrote {tmp_path / 'loss.png'}" in err
    assert not (tmp_path / "-").exists()


def test_evaluate_json_that_fails_midway_leaves_the_previous_file(capsys, tutorial_run,
                                                                  tmp_path, monkeypatch):
    """`evaluate --json FILE` wrote FILE in place: a Ctrl-C or a full disk midway left the
    previous table cut short (invalid JSON). Now, as recommend --out, the previous file
    stays whole, no temporary file is left, and the error says FILE is unchanged."""
    import errno
    _, rundir = tutorial_run
    out = tmp_path / "t.json"
    out.write_text('{"previous": {}}', encoding="utf-8")
    stops = [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")]
    real = Path.write_text

    def cut(self, text, *a, **kw):  # the disk fills (or Ctrl-C) after 10 characters
        if self.parent == tmp_path:
            real(self, text[:10], *a, **kw)
            raise stops.pop(0)
        return real(self, text, *a, **kw)
    monkeypatch.setattr(Path, "write_text", cut)
    code, _, err = run(capsys, "evaluate", rundir, "-k", "5", "--json", out)
    assert code == 130 and "interrupted" in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]
    assert out.read_text(encoding="utf-8") == '{"previous": {}}'
    code, _, err = run(capsys, "evaluate", rundir, "-k", "5", "--json", out)
    assert code == 2 and err.strip().endswith(
        f"twotower: error: --json: cannot write {out}: No space left on device; {out} is "
        "unchanged"), err
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]
    assert out.read_text(encoding="utf-8") == '{"previous": {}}'
    monkeypatch.undo()
    code, _, err = run(capsys, "evaluate", rundir, "-k", "5", "--json", out)
    assert code == 0 and json.loads(out.read_text())["model"]["recall@5"] > 0, err


def test_above_the_dense_limit_evaluate_runs_the_sparse_itemknn_and_skips_ease(tutorial_run,
                                                                               monkeypatch):
    """Above DENSE_BASELINE_MAX_ITEMS only EASE is skipped (its matrix is dense); ItemKNN,
    sparse, is tuned on LARGE_KNN_GRID, and the progress lines say what and how long."""
    import pytest

    from twotower import TwoTower
    from twotower.artifacts import load_test
    from twotower.evaluation import run as run_module
    _, rundir = tutorial_run
    monkeypatch.setattr(run_module, "DENSE_BASELINE_MAX_ITEMS", 1000)  # ML-100k: 1,682
    grids = []
    real_tune = run_module.tune
    monkeypatch.setattr(run_module, "tune", lambda cls, train, grid, *a, **kw: (
        grids.append((cls.__name__, grid)), real_tune(cls, train, grid, *a, **kw))[1])
    lines = []
    with pytest.warns(UserWarning, match="EASE skipped: 1,682 items") as caught:
        table, _ = run_module.evaluate_run(TwoTower.load(rundir), load_test(rundir),
                                           baselines=True, log=lines.append)
    assert not any("ItemKNN and EASE skipped" in str(w.message) for w in caught)
    assert set(table) == {"model", "MostPop", "ItemKNN"}
    assert table["ItemKNN"]["recall@10"] > table["MostPop"]["recall@10"]
    assert grids == [("ItemKNN", run_module.LARGE_KNN_GRID)]
    assert any(ln.startswith("tuning ItemKNN (neighbors 100; shrink 0, 10: 2 settings")
               for ln in lines), lines
    assert any(ln.startswith("tuned: ItemKNN neighbors 100, shrink ") and
               "(ItemKNN's 2 settings in " in ln for ln in lines), lines


def test_evaluate_run_reports_every_cutoff_asked_for(tutorial_run):
    # a cut-off < 1 is an error, one beyond the catalogue (1,682) scored on the whole
    # ranked catalogue: none is left out of the table unsaid
    from twotower import TwoTower
    from twotower.artifacts import load_test
    from twotower.errors import ConfigError
    from twotower.evaluation import evaluate_run
    _, rundir = tutorial_run
    model, test = TwoTower.load(rundir), load_test(rundir)
    with pytest.raises(ConfigError, match="`ks` must be non-empty positive integers"):
        evaluate_run(model, test, ks=(0, 10))
    table, curves = evaluate_run(model, test, ks=(5, 2000))
    assert {"recall@5", "recall@2000", "ndcg@2000"} <= set(table["model"])
    # every item is listed but those never trained on (no training row: the model lists
    # them nowhere), so recall@2000 is each user's share of trained test items
    users, items = test
    untrained = model.untrained_items()
    share = []
    for u in np.unique(users):
        if model.untrained_users()[u]:
            continue
        rel = {int(i) for i in items[users == u] if not model._seen[u, i]}
        if rel:
            share.append(sum(not untrained[i] for i in rel) / len(rel))
    assert untrained.any() and np.mean(share) < 1
    assert table["model"]["recall@2000"] == pytest.approx(np.mean(share))
    assert 2000 in curves["model"]



def test_index_says_when_an_ann_index_answers_by_exact_search(capsys, tutorial_run,
                                                               tmp_path):
    """With the items a run never trained denied, an HNSW index over at most 4,096 listed
    items answers by exact search; its report showed recall 1.0 and exact search's speed
    as the index's, unsaid."""
    import shutil

    from twotower import TwoTower
    _, rundir = tutorial_run
    shutil.copytree(rundir, tmp_path / "run")
    n_untrained = int(TwoTower.load(rundir).untrained_items().sum())
    code, out, err = run(capsys, "index", tmp_path / "run", "--kind", "hnsw", "--json")
    assert code == 0 and n_untrained > 0, err
    report = json.loads(out)
    assert report["untrained_items"] == n_untrained
    assert report["items_listed"] == 1682 - n_untrained
    assert (f"the {1682 - n_untrained:,} items this run lists (the {n_untrained:,} it never "
            "trained are in no list) are at most 4,096: the hnsw index answers them by "
            "exact search") in err, err


def test_evaluate_scores_the_model_and_an_ann_index_as_served(capsys, tutorial_run, tmp_path,
                                                              monkeypatch):
    # an IVF index of 1 list in 40: recall@10 read off a list of 100 came from its exact
    # fall-back, not from what it serves. "model" is the model's own ranking (the exact
    # run's numbers); "model (ivf index)" is each cut-off from a request of that size.
    # The run's few untrained items are not denied here: with a deny list, an ANN index
    # answers a catalogue this small (<= EXACT_BELOW candidates) by exact search
    from twotower.models import TwoTower as _T
    monkeypatch.setattr(_T, "_untrained_item_cache", lambda self: (
        np.zeros(self.n_items, dtype=bool), None))
    from twotower import TwoTower
    from twotower.artifacts import load_test
    from twotower.data.interactions import Interactions
    from twotower.evaluation import evaluate_run, recommend_and_evaluate
    from twotower.evaluation.run import train_interactions
    _, rundir = tutorial_run
    run_copy = tmp_path / "run"
    test = load_test(rundir)
    exact = TwoTower.load(rundir)
    held = Interactions(users=test[0], items=test[1], user_vocab=exact.user_vocab,
                        item_vocab=exact.item_vocab)
    exact_table, _ = evaluate_run(exact, test, ks=(10, 100))
    # a copy whose eval.json also holds a row of an index it no longer has
    exact.save(run_copy, test=held, metrics={"model": exact_table["model"],
                                             "model (hnsw index)": exact_table["model"]})
    code, _, err = run(capsys, "index", run_copy, "--kind", "ivf", "--nlist", "40",
                       "--nprobe", "1")
    assert code == 0, err
    ann = TwoTower.load(run_copy)
    table, curves = evaluate_run(ann, test, ks=(10, 100))
    assert table["model"] == exact_table["model"]
    served = table["model (ivf index)"]
    train = train_interactions(ann)
    for k in (10, 100):
        alone = recommend_and_evaluate(ann, train, held, ks=(k,))
        assert served[f"recall@{k}"] == alone[f"recall@{k}"]
        assert curves["model (ivf index)"][k] == alone[f"recall@{k}"]
    assert served != table["model"]  # (recall@10 of the index against exact: 0.44)
    code, out, _ = run(capsys, "evaluate", run_copy)
    assert code == 0 and "model (ivf index)" in out
    # the run's eval.json holds the served row of the index it has, not of an earlier one
    saved = json.loads((run_copy / "eval.json").read_text())
    assert set(saved) == {"model", "model (ivf index)"}
    assert saved["model (ivf index)"]["recall@10"] == pytest.approx(served["recall@10"])
    code, _, err = run(capsys, "index", run_copy, "--kind", "exact")
    assert code == 0, err
    assert set(json.loads((run_copy / "eval.json").read_text())) == {"model"}

def test_train_on_two_simulated_devices(tmp_path, ml100k):
    """`twotower train --devices 2` in a process that sees 2 (simulated CPU) devices: the
    batch is split over both, whole batches only, and the run serves like any other."""
    import os

    from twotower.data import write_interactions
    data = tmp_path / "r.csv"
    write_interactions(ml100k.take(ml100k.users < 300), data)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-m", "twotower.cli", "train", "--data", str(data),
                           "--out", str(tmp_path / "run"), "--devices", "2", "--epochs", "2",
                           "--batch-size", "32"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distribution: 2 data parallel x 1 model parallel" in proc.stdout
    from twotower import TwoTower
    model = TwoTower.load(tmp_path / "run")
    assert len(model.history["loss"]) == 2
    _, items = model.recommend(model.user_vocab.lookup([1]), 10)
    assert items.shape == (1, 10) and (items >= 0).all()


@pytest.mark.parametrize("how,said", [
    ("columns", "tables split by columns"),
    ("blocks", "tables split in blocks (each device trains the examples whose rows it holds)")])
def test_train_with_sharded_tables_on_two_simulated_devices(tmp_path, ml100k, how, said):
    """`--model-parallel 2 --shard-tables columns|blocks`: the tutorial model trains with
    each table split by columns (or in blocks, by rows, each device training the examples
    whose rows it holds) over 2 devices, and the run serves like any other."""
    import os

    from twotower.data import write_interactions
    data = tmp_path / "r.csv"
    write_interactions(ml100k.take(ml100k.users < 300), data)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-m", "twotower.cli", "train", "--data", str(data),
                           "--out", str(tmp_path / "run"), "--preset", "tutorial",
                           "--devices", "2", "--model-parallel", "2", "--shard-tables",
                           how, "--epochs", "2"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"distribution: 1 data parallel x 2 model parallel, {said}" in proc.stdout
    from twotower import TwoTower
    model = TwoTower.load(tmp_path / "run")
    assert len(model.history["loss"]) == 2
    _, items = model.recommend(model.user_vocab.lookup([1]), 10)
    assert items.shape == (1, 10) and (items >= 0).all()


def test_warnings_are_one_line(tmp_path, ml100k):
    """Warnings are one line each (a real process: pytest intercepts warnings in
    process): a setting the model never reads, and recency without times."""
    from twotower.data import write_interactions
    data = tmp_path / "r.csv"
    write_interactions(ml100k.take(ml100k.users < 100), data)
    conf = tmp_path / "c.toml"
    conf.write_text('[model]\nease_weight = 0\nease_split = "temporal"\n')
    proc = subprocess.run([sys.executable, "-m", "twotower.cli", "train", "--data", str(data),
                           "--out", str(tmp_path / "run"), "--epochs", "1", "--split", "none",
                           "--time-col", "none", "--config", str(conf)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stderr.splitlines() if "ease_split" in ln]
    assert line and line[0].startswith("twotower: warning: settings the chosen model never")
    # --time-col none: the default's recency weighting falls back to row order, and says so
    rec = [ln for ln in proc.stderr.splitlines() if "recency_half_life" in ln]
    assert rec and rec[0].startswith("twotower: warning: model.recency_half_life weights")
    assert "cli.py" not in proc.stderr


def test_movielens_csv_columns_are_found_by_name(capsys, tmp_path, ml100k):
    """``userId,movieId,rating,timestamp`` (the MovieLens CSV layout) needs no --*-col; what
    was taken is announced, and explicit flags (or 'none') win."""
    from twotower.cli import _columns, build_parser
    x = ml100k.take(ml100k.users < 50)
    data = tmp_path / "ratings.csv"
    pd.DataFrame({"userId": x.user_vocab.ids_of(x.users), "movieId": x.item_vocab.ids_of(x.items),
                  "rating": x.ratings, "timestamp": x.timestamps}).to_csv(data, index=False)
    args = build_parser().parse_args(["train", "--data", str(data), "--out", "o"])
    assert _columns(args) == {"user": "userId", "item": "movieId", "rating": "rating",
                              "time": "timestamp"}
    out = capsys.readouterr().out
    assert "using column 'movieId' as the item (--item-col)" in out
    assert "using column 'timestamp' as the time (--time-col)" in out
    args = build_parser().parse_args(["train", "--data", str(data), "--out", "o",
                                      "--time-col", "none", "--rating-col", "none",
                                      "--user-col", "userId"])
    assert _columns(args) == {"user": "userId", "item": "movieId", "rating": None,
                              "time": None}
    # (the tutorial preset: the columns are the subject, not the default preset's EASE
    # tuning, which took most of this test's time)
    code, out, err = run(capsys, "train", "--data", data, "--epochs", "1", "--split",
                         "temporal", "--preset", "tutorial", "--out", tmp_path / "run")
    assert code == 0, err
    assert "split temporal" in out


def test_evaluate_table_shows_the_cutoffs_asked_for(capsys, tutorial_run, tmp_path):
    _, rundir = tutorial_run
    code, out, err = run(capsys, "evaluate", rundir, "-k", "20", "5", "--json",
                         tmp_path / "t.json")
    assert code == 0, err
    header, _, *rows = out.split("\n\n")[0].splitlines()
    assert header == ("| method | recall@5 | ndcg@5 | recall@20 | hit_rate@5 | mrr@5 | "
                      "coverage@5 |")
    assert [r.split(" | ")[0] for r in rows] == ["| model", "| MostPop"]
    assert "–" not in out  # every cell a number
    table = json.loads((tmp_path / "t.json").read_text())
    assert set(table["model"]) >= {"recall@5", "ndcg@20", "users"}


def test_index_json_never_holds_nan(capsys, tutorial_run, monkeypatch):
    # a recall with no reference result is NaN: written as null, which JSON readers accept
    import twotower.artifacts
    _, rundir = tutorial_run
    monkeypatch.setattr(twotower.artifacts, "reindex_run", lambda *a, **kw: {
        "kind": "hnsw", "recall@10_vs_exact": float("nan"), "queries": 1,
        "tuned": {"recall_tried": {128: float("nan")}}})

    def refuse(constant):
        raise AssertionError(f"not JSON: {constant}")

    code, out, err = run(capsys, "index", rundir, "--json")
    assert code == 0, err
    report = json.loads(out, parse_constant=refuse)
    assert report["recall@10_vs_exact"] is None and report["tuned"]["recall_tried"] == {
        "128": None}


def test_index_warns_when_tuning_misses_the_target(capsys, tutorial_run, monkeypatch):
    # the run keeps the index all the same (exit 0), so the miss is said on stderr, in the
    # plain and the JSON report alike (it sat inside the `tuned` dict only)
    import twotower.artifacts
    _, rundir = tutorial_run
    report = {"kind": "hnsw", "recall@10_vs_exact": 0.52, "queries": 100,
              "tuned": {"knob": "ef_search", "target_recall": 1.0, "value": 4096,
                        "recall_tried": {16: 0.4, 4096: 0.522}, "reached": False}}
    monkeypatch.setattr(twotower.artifacts, "reindex_run", lambda *a, **kw: report)
    for extra in ([], ["--json"]):
        code, out, err = run(capsys, "index", rundir, "--kind", "hnsw", *extra)
        assert code == 0, err
        assert "warning: hnsw did not reach --target-recall 1.0: ef_search 4096" in err
        assert "0.522" in err and "--hnsw-m" in err
    report["tuned"]["reached"] = True
    code, out, err = run(capsys, "index", rundir, "--kind", "hnsw")
    assert code == 0 and "warning" not in err
    # tuning skipped (every sampled user has seen the whole catalogue): a note, no KeyError
    report["tuned"] = {"knob": "ef_search", "target_recall": 0.95, "value": 128,
                       "recall_tried": {}, "reached": False,
                       "skipped": "each of the 2 users sampled has seen the whole catalogue"}
    code, out, err = run(capsys, "index", rundir, "--kind", "hnsw")
    assert code == 0 and "note: hnsw not tuned: each of the 2 users" in err, err


def test_index_config_bounds_the_graph_walk():
    # ef_search 2e9 grew the process by 0.6 GB/s inside faiss (signals ignored); 2**31 gave
    # an OverflowError traceback
    from twotower.errors import ConfigError
    from twotower.index import IndexConfig
    for name in ("ef_search", "ef_construction"):
        with pytest.raises(ConfigError, match=f"IndexConfig.{name} must be between 1 and "
                                              "1048576, got 2147483648"):
            IndexConfig(kind="hnsw", **{name: 2**31})
    IndexConfig(kind="hnsw", ef_search=1 << 20)  # the bound itself is fine


def test_recommend_and_similar_default_k_fits_a_tiny_catalogue(capsys, tmp_path):
    # no -k given: 10 results, or the catalogue when it is smaller (it failed: "`k` must be
    # between 1 and 2"); a given -k is still checked as given
    from twotower import ModelConfig, TwoTower
    from twotower.data import Interactions
    data = Interactions.from_ids(["u1", "u1", "u2", "u3"], ["a", "b", "a", "b"],
                                 ratings=[5, 3, 4, 2])
    TwoTower(ModelConfig.preset("tutorial", epochs=1, embedding_dim=4)).fit(
        data, verbose=0).save(tmp_path / "one")
    code, out, err = run(capsys, "recommend", tmp_path / "one", "--user", "u2", "--json",
                         "--include-seen")
    assert code == 0, err
    assert len(json.loads(out)["items"]) == 2
    code, out, err = run(capsys, "similar", tmp_path / "one", "--item", "a", "--json")
    assert code == 0, err
    assert [it["item_id"] for it in json.loads(out)["items"]] == ["b"]
    code, out, err = run(capsys, "recommend", tmp_path / "one", "--user", "u2", "-k", "3")
    assert code == 2 and "between 1 and 2" in err


def test_similar_text_lists_no_padding_past_the_items_left(capsys, tmp_path):
    # -k past the items a list can hold (the item itself and the untrained ones are in
    # none): the text printed the padding as blank "(-inf)" rows; it stops, with a note
    from twotower import ModelConfig, TwoTower
    from twotower.data import Interactions
    from twotower.data.vocabulary import Vocabulary
    data = Interactions.from_ids(["u1", "u1", "u2", "u3"], ["a", "b", "a", "c"],
                                 ratings=[5, 3, 4, 2], item_vocab=Vocabulary(["a", "b", "c", "d"]))
    TwoTower(ModelConfig.preset("tutorial", epochs=1, embedding_dim=4)).fit(
        data, verbose=0).save(tmp_path / "one")
    code, out, err = run(capsys, "similar", tmp_path / "one", "--item", "a", "-k", "3")
    assert code == 0, err
    assert "inf" not in out and out.count(". ") == 2, out
    assert "only 2 items left" in out and "1 was never trained" in out, out


def test_recommend_out_leaves_no_temporary_file_when_interrupted(capsys, tutorial_run,
                                                                tmp_path, monkeypatch):
    import pandas as pd
    _, rundir = tutorial_run

    def interrupted(self, path, *a, **kw):
        Path(path).write_text("half")
        raise KeyboardInterrupt
    monkeypatch.setattr(pd.DataFrame, "to_csv", interrupted)
    code, out, err = run(capsys, "recommend", rundir, "--all-users", "--out",
                         tmp_path / "r.csv")
    assert code == 130 and "interrupted" in err
    assert list(tmp_path.iterdir()) == []  # neither the file nor its .r.csv.tmp
    monkeypatch.undo()
    # a killed command's temporary file (its process gone) is removed by the next one;
    # one of a live process (this one's parent) is its own
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / f".r.csv.tmp-{dead}-deadbeef").write_text("half")
    (tmp_path / f".r.csv.tmp-{os.getppid()}-0000beef").write_text("someone's")
    code, out, err = run(capsys, "recommend", rundir, "--user", "1", "--out",
                         tmp_path / "r.csv")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f".r.csv.tmp-{os.getppid()}-0000beef", "r.csv"]


def test_a_file_system_error_is_one_line(capsys, tutorial_run, tmp_path, monkeypatch):
    # e.g. a directory another command removed meanwhile: no traceback
    import twotower.artifacts
    _, rundir = tutorial_run

    def gone(*a, **kw):
        raise FileNotFoundError(2, "No such file or directory", str(tmp_path / ".x.old"))
    monkeypatch.setattr(twotower.artifacts, "reindex_run", gone)
    code, out, err = run(capsys, "index", rundir)
    assert code == 2 and err.strip() == (f"twotower: error: [Errno 2] No such file or "
                                         f"directory: '{tmp_path / '.x.old'}'")


def test_your_own_file_edge_cases(capsys, tmp_path, ml100k_dir):
    """Found by a tester: each was a traceback, a wrong line, a silent drop or bare NaN."""
    base = "user_id,item_id,rating\n" + "".join(
        f"u{u},i{i},{1 + (u + i) % 5}\n" for u in range(6) for i in range(5))
    # --sep '\t' as a shell passes it (two characters) is a tab; longer ones are refused
    (tmp_path / "tab.csv").write_text(base.replace(",", "\t"))
    code, out, err = run(capsys, "train", "--data", tmp_path / "tab.csv", "--sep", "\\t",
                         "--preset", "tutorial", "--epochs", "1", "--split", "none",
                         "--out", tmp_path / "r1")
    assert code == 0, err
    code, out, err = run(capsys, "train", "--data", tmp_path / "tab.csv", "--sep", "||",
                         "--out", tmp_path / "r2")
    assert code == 2 and "a field separator is one character" in err, err
    assert "Traceback" not in err
    # the line of a bad value counts blank lines and quoted fields over several lines
    (tmp_path / "lines.csv").write_text('user_id,item_id,rating\n\n"u\n1",i1,4\n\n'
                                        'u2,i2,bad\n')
    code, out, err = run(capsys, "train", "--data", tmp_path / "lines.csv",
                         "--out", tmp_path / "r3")
    assert code == 2 and "line 6, column 'rating'" in err, err
    # times beyond int64 seconds are refused, naming the line; fractions are kept
    (tmp_path / "t.csv").write_text("user_id,item_id,timestamp\nu1,i1,100.7\nu1,i2,1e20\n")
    code, out, err = run(capsys, "train", "--data", tmp_path / "t.csv", "--out",
                         tmp_path / "r4")
    assert code == 2 and "line 3, column 'timestamp': 1e+20 is beyond the times int64" \
        in err, err
    from twotower.data import read_interactions
    (tmp_path / "t.csv").write_text("user_id,item_id,timestamp\nu1,i1,100.7\nu1,i2,100\n")
    x = read_interactions(tmp_path / "t.csv", time_col="timestamp")
    assert (x.timestamps.tolist(), x.time_unit) == ([100700, 100000], "ms")
    # nanoseconds since the epoch (an int64 export) are read as such, said in a warning
    # (they were kept as seconds: the year 5e10); time_unit="s" keeps the numbers
    (tmp_path / "t.csv").write_text("user_id,item_id,timestamp\nu1,i1,1704067200000000000\n"
                                    "u1,i2,1704067201000000000\n")
    with pytest.warns(UserWarning, match="times read as nanoseconds since 1970"):
        assert read_interactions(tmp_path / "t.csv", time_col="timestamp").timestamps.tolist(
        ) == [1704067200, 1704067201]
    assert read_interactions(tmp_path / "t.csv", time_col="timestamp", time_unit="s"
                             ).timestamps.tolist() == [1704067200000000000, 1704067201000000000]
    # an id written "NaN" is an id, not an empty one
    (tmp_path / "nan.csv").write_text(base.replace("u0,", "NaN,"))
    x = read_interactions(tmp_path / "nan.csv", rating_col="rating")
    assert "NaN" in x.user_vocab.ids.tolist()
    # every test pair also in training (a log of repeats): a note, and null in eval.json
    (tmp_path / "dups.csv").write_text("user_id,item_id\n" + "".join(
        f"u{u},i{i}\n" for _ in range(4) for u in range(5) for i in range(3)))
    code, out, err = run(capsys, "train", "--data", tmp_path / "dups.csv", "--preset",
                         "default", "--epochs", "1", "--out", tmp_path / "r5")
    assert code == 0, err
    assert "note: no test user has an item left to find" in out, out
    evaluation = json.loads((tmp_path / "r5" / "eval.json").read_text())  # valid JSON
    # 3 items: the cut-off is the catalogue (as `evaluate` reports), not a recall@10 of 3
    assert "test: recall@3 " in out and "recall@10" not in out, out
    assert evaluation["model"]["recall@3"] is None and evaluation["model"]["users"] == 0
    assert "recall@10" not in evaluation["model"]
    # file flags with MovieLens, and --data-dir with a file, are refused, not ignored
    code, out, err = run(capsys, "train", "--data-dir", ml100k_dir, "--items",
                         tmp_path / "dups.csv", "--user-col", "foo", "--out", tmp_path / "r6")
    assert code == 2 and "--user-col, --items: for a --data file" in err, err
    code, out, err = run(capsys, "train", "--data", tmp_path / "dups.csv", "--data-dir",
                         ml100k_dir, "--out", tmp_path / "r7")
    assert code == 2 and "--data-dir: the MovieLens 100k directory" in err, err
    # an --items file that repeats an id: the later rows are dropped with a warning
    (tmp_path / "items.csv").write_text("item_id,title\ni1,first\ni1,second\ni2,two\n")
    from twotower.data.readers import read_item_info
    with pytest.warns(UserWarning, match="1 row\\(s\\) repeat an item id \\(first: 'i1', line 3"):
        assert read_item_info(tmp_path / "items.csv", id_col="item_id")["title"].tolist() \
            == ["first", "two"]


@pytest.fixture(scope="module")
def string_id_files(tmp_path_factory, ml100k):
    """A 60-item interaction CSV with string ids 'M-<movie id>', and item files whose ids
    match all, some or none (other case) of them."""
    import numpy as np
    d = tmp_path_factory.mktemp("strings")
    x = ml100k.take(np.isin(ml100k.items, np.arange(60)))
    items = np.unique(x.item_vocab.ids_of(x.items))
    pd.DataFrame({"user_id": x.user_vocab.ids_of(x.users),
                  "item_id": [f"M-{i}" for i in x.item_vocab.ids_of(x.items)],
                  "rating": x.ratings}).to_csv(d / "r.csv", index=False)
    meta = pd.DataFrame({"item_id": [f"M-{i}" for i in items],
                         "title": [f"Movie {i}" for i in items]})
    meta.to_csv(d / "all.csv", index=False)
    meta.iloc[:20].to_csv(d / "some.csv", index=False)
    meta.assign(item_id=meta["item_id"].str.lower()).to_csv(d / "none.csv", index=False)
    return d


def test_train_items_file_matching_no_item_is_an_error(capsys, string_id_files, tmp_path):
    d = string_id_files
    with pytest.warns(UserWarning, match="60 of the 60 items .* have no interaction"):
        code, _, err = run(capsys, "train", "--data", d / "r.csv", "--items", d / "none.csv",
                           "--out", tmp_path / "run", "--preset", "tutorial", "--epochs", "1")
    assert code == 2 and "Traceback" not in err
    assert (f"--items: none of the 60 items of --data has a row in {d / 'none.csv'} (ids there "
            "like 'm-1', 'm-2'; in --data like 'M-1', 'M-10')") in err
    assert not (tmp_path / "run").exists()


def test_train_items_file_matching_some_items_warns(capsys, string_id_files, tmp_path):
    # ...and the run trains; its titles come from the file where it has them. On 60 items
    # `evaluate` reports @10 alone by default (no @100 column of dashes).
    d = string_id_files
    with pytest.warns(UserWarning, match=r"--items: 20 of 60 items found in .*some\.csv; the "
                                         r"other 40 \(e\.g\. 'M-21', 'M-22'\) have no row "
                                         r"there or only empty cells: no title; they show as "
                                         r"their ids$"):
        code, _, err = run(capsys, "train", "--data", d / "r.csv", "--items", d / "some.csv",
                           "--out", tmp_path / "run", "--preset", "tutorial", "--epochs", "1")
    assert code == 0, err
    code, out, err = run(capsys, "similar", tmp_path / "run", "--item", "Movie 1", "--json")
    assert code == 0, err
    assert json.loads(out)["item_id"] == "M-1"
    code, out, err = run(capsys, "evaluate", tmp_path / "run")
    assert code == 0, err
    assert out.splitlines()[0] == ("| method | recall@10 | ndcg@10 | hit_rate@10 | mrr@10 | "
                                   "coverage@10 |")
    out_file = tmp_path / "recs.parquet"  # string ids stay strings
    code, _, err = run(capsys, "recommend", tmp_path / "run", "--all-users", "--out", out_file)
    assert code == 0, err
    df = pd.read_parquet(out_file)
    assert df["item_id"].map(type).eq(str).all() and df["item_id"].str.startswith("M-").all()


def test_default_preset_features_missing_from_the_data_are_said_not_warned(
        capsys, string_id_files, tmp_path):
    """The default preset names MovieLens' genres and year: a log without them trains
    without them, says so in one line and saves the columns it used; no warning."""
    import warnings
    d = string_id_files
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run(capsys, "train", "--data", d / "r.csv", "--out", tmp_path / "run",
                             "--epochs", "1", "--time-col", "none")
    assert code == 0, err
    assert not [w for w in caught if "item_features" in str(w.message)]
    assert ("item features: none (the preset's genres, year not in the data; name your own "
            "item metadata columns with --item-features or item_features in --config "
            "[model])") in out
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["item_features"] == []
    # titles that give no year ("Movie 1") are no year column
    code, out, err = run(capsys, "train", "--data", d / "r.csv", "--items", d / "all.csv",
                         "--out", tmp_path / "run2", "--epochs", "1", "--time-col", "none")
    assert code == 0, err
    assert "item features: none (the preset's genres, year not in the data" in out
    # titles that end in MovieLens' "(1995)" give the year: only genres is missing
    import pandas as pd
    meta = pd.read_csv(d / "all.csv")
    meta.assign(title=[f"{t} ({1990 + i % 9})" for i, t in enumerate(meta["title"])]).to_csv(
        tmp_path / "dated.csv", index=False)
    code, out, err = run(capsys, "train", "--data", d / "r.csv", "--items",
                         tmp_path / "dated.csv", "--out", tmp_path / "run3", "--epochs", "1",
                         "--time-col", "none")
    assert code == 0, err
    # one line for the tower, after training: the column used, what it gave and why the
    # preset's other column is not used (it printed a line before training and another
    # after: "item features: year (the preset's ...)", then "item features: year (9 ...)")
    lines = [x for x in out.splitlines() if x.startswith("item features:")]
    assert len(lines) == 1, out
    assert re.fullmatch(r"item features: year \(\d+ values, quantile bins\); the preset's "
                        r"genres not in the data; name your own item metadata columns with "
                        r"--item-features or item_features in --config \[model\]",
                        lines[0]), lines
    saved = json.loads((tmp_path / "run3" / "config.json").read_text())
    assert saved["model"]["item_features"] == ["year"]
    from twotower import TwoTower
    assert TwoTower.load(tmp_path / "run3").item_feature_names[0].startswith("year:q")


def test_train_names_the_items_columns_it_does_not_read_as_features(capsys, tmp_path):
    """A shop's --items file with brand, price and tags but no MovieLens genres or year: the
    default preset trains with no item features, and its line names the flag and the
    file's columns left unread (it said only "item_features in --config [model]", so the
    tags were left out with no word of them)."""
    rng = np.random.default_rng(0)
    skus = [f"SKU-{i:03d}" for i in range(30)]
    pd.DataFrame({"customer": [f"cust-{u:03d}" for u in rng.integers(0, 40, 400)],
                  "sku": rng.choice(skus, 400)}).to_csv(tmp_path / "log.csv", index=False)
    pd.DataFrame({"sku": skus, "title": [f"Shoe {s}" for s in skus], "brand": "Acme",
                  "price": 9.5, "tags": "red|sale"}).to_csv(tmp_path / "items.csv", index=False)
    code, out, err = run(capsys, "train", "--data", tmp_path / "log.csv", "--user-col",
                         "customer", "--item-col", "sku", "--items", tmp_path / "items.csv",
                         "--out", tmp_path / "run", "--epochs", "1", "--split", "none")
    assert code == 0, err
    assert ("name your own item metadata columns with --item-features or item_features in "
            f"--config [model]; {tmp_path / 'items.csv'} has brand, price, tags, not read as "
            "features)") in out


def test_train_refuses_an_out_that_is_not_a_run_before_training(capsys, tmp_path):
    """A save replaces the whole --out directory: one holding other files (or a file) is
    refused at once, and keeps what it holds."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "notes.txt").write_text("keep me")
    code, out, err = run(capsys, "train", "--preset", "tutorial", "--out", victim)
    assert code == 2 and "--out:" in err and "not a twotower run" in err
    assert "data:" not in out and "trained" not in out  # refused before reading and training
    assert [p.name for p in victim.iterdir()] == ["notes.txt"]
    afile = tmp_path / "data.csv"
    afile.write_text("user_id,item_id\n1,2\n")
    code, _, err = run(capsys, "train", "--data", afile, "--out", afile)
    assert code == 2 and "not a directory" in err
    assert afile.read_text() == "user_id,item_id\n1,2\n"


def test_evaluate_test_data_errors_name_that_flag(capsys, tutorial_run, tmp_path):
    _, rundir = tutorial_run
    bad = tmp_path / "held.csv"
    bad.write_text("user_id,item_id\n1,2\n1\n")
    code, _, err = run(capsys, "evaluate", rundir, "--test-data", bad)
    assert code == 2 and "--test-data:" in err and "line 3" in err and "--data:" not in err


@pytest.mark.parametrize("text, suffix, needle", [
    ('[model]\nepochs = 1\n[index]\nkind = "hnsw"\n', ".toml",
     "unknown table(s) or key(s) ['index'] beside ['model']"),
    ('epochs = 1\n[model]\nlearning_rate = 0.05\n', ".toml",
     "unknown table(s) or key(s) ['epochs'] beside ['model']"),
    ('epochs = 1\n[distribution]\nmodel_parallel = 1\n', ".toml",
     "['epochs']: ModelConfig field(s), which a file with tables holds under [model]"),
    ('{"model": 5}', ".json", "[model] must be a table of settings, got int 5"),
    ('{"distribution": [1, 2]}', ".JSON", "[distribution] must be a table of settings, got list"),
])
def test_config_file_with_unknown_tables_or_untabled_values_is_refused(capsys, tmp_path, text,
                                                                       suffix, needle):
    cfg = tmp_path / f"c{suffix}"
    cfg.write_text(text)
    code, _, err = run(capsys, "train", "--preset", "tutorial", "--config", cfg,
                       "--out", tmp_path / "run")
    assert code == 2 and needle in err and "Traceback" not in err


def test_a_runs_saved_config_fed_back_reproduces_its_settings(capsys, tmp_path):
    """`--config RUN/config.json` was refused ("unknown table(s) or key(s) ['data', 'index',
    'rating_range']"): a run's settings could not be trained again without editing them.
    The line naming that run's flags named no columns: those it read follow."""
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n" + "".join(
        f"u{u % 9},i{u % 7},{1 + u % 5}\n" for u in range(120)))
    code, _, err = run(capsys, "train", "--data", tmp_path / "r.csv", "--preset", "tutorial",
                       "--epochs", "1", "--embedding-dim", "8", "--seed", "3",
                       "--test-fraction", "0.3", "--out", tmp_path / "a")
    assert code == 0, err
    code, out, err = run(capsys, "train", "--data", tmp_path / "r.csv", "--config",
                         tmp_path / "a" / "config.json", "--out", tmp_path / "b")
    assert code == 0, err
    assert ("a run's saved config: its [model] settings are read; its data, split and index "
            "are not (flags: that run had --split random --test-fraction 0.3 --index-kind "
            f"exact; it read --data {tmp_path / 'r.csv'} --user-col user_id --item-col "
            "item_id --rating-col rating --time-col none)") in out
    a, b = (json.loads((tmp_path / r / "config.json").read_text()) for r in "ab")
    assert a["model"] == b["model"] and a["model"]["embedding_dim"] == 8
    assert b["data"]["seed"] == 3 and b["data"]["test_fraction"] == 0.2


def test_a_runs_read_as_flags_name_its_columns_and_items():
    """The flags that read a run's file as it was read: a separator and paths quoted for a
    shell, --items' columns where they are not the defaults; an older run's missing keys
    and a MovieLens run's absent columns give none."""
    from twotower.cli import _read_as_flags
    src = {"source": "my log.csv", "split": "random", "sep": ";",
           "columns": {"user": "userId", "item": "movieId", "rating": None,
                       "time": "timestamp", "event": "kind"},
           "time_unit": "ms", "items": "movies.csv",
           "items_columns": {"id": "movieId", "title": "name", "genres": "genres"}}
    assert " ".join(_read_as_flags(src)) == (
        "--data 'my log.csv' --user-col userId --item-col movieId --rating-col none "
        "--time-col timestamp --event-col kind --time-unit ms --sep ';' --items movies.csv "
        "--title-col name")
    src["items_columns"]["id"] = "sku"
    assert _read_as_flags(src)[-2:] == ["--items-id-col sku", "--title-col name"]
    assert "--sep '\\t'" in _read_as_flags({**src, "sep": "\t"})  # as a shell passes it
    older = {"source": "log.csv", "columns": {"user": "userId", "item": "movieId"},
             "sep": None}
    assert _read_as_flags(older) == ["--data log.csv", "--user-col userId",
                                     "--item-col movieId"]
    assert _read_as_flags({"source": "movielens-100k", "split": "random"}) == []


def test_a_movielens_run_records_the_columns_it_read(capsys, tmp_path, ml100k_dir):
    """MovieLens runs recorded no ``data.columns`` (file runs do): they record u.data's
    four fields by the names the readers look for first; the flags that read the run's
    data so are --data alone (the file flags are refused with MovieLens)."""
    from twotower.cli import _read_as_flags
    out = tmp_path / "ml"
    code, _, err = run(capsys, "train", "--data-dir", ml100k_dir, "--preset", "tutorial",
                       "--epochs", "1", "--split", "none", "--out", out)
    assert code == 0, err
    data = json.loads((out / "config.json").read_text())["data"]
    assert data["columns"] == {"user": "user_id", "item": "item_id", "rating": "rating",
                               "time": "timestamp"}
    assert _read_as_flags(data) == ["--data movielens-100k"]


def test_seed_in_the_config_file_is_used_unless_the_flag_is_given(capsys, tmp_path, ml100k):
    from twotower.data import write_interactions
    data = tmp_path / "r.csv"
    write_interactions(ml100k.take(ml100k.users < 50), data)
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\nepochs = 1\nseed = 7\n")
    for extra, want in (((), 7), (("--seed", "3"), 3)):
        out = tmp_path / f"run{want}"
        code, _, err = run(capsys, "train", "--data", data, "--rating-col", "rating",
                           "--preset", "tutorial", "--config", cfg, "--out", out, *extra)
        assert code == 0, err
        saved = json.loads((out / "config.json").read_text())
        assert saved["model"]["seed"] == want and saved["data"]["seed"] == want


def test_tutorial_checks_out_and_seed_before_training_and_excludes_every_rated_movie(
        capsys, tmp_path, ml100k_dir, ml100k):
    victim = tmp_path / "notrun"
    victim.mkdir()
    (victim / "x").write_text("hi")
    code, out, err = run(capsys, "tutorial", "--data-dir", ml100k_dir, "--out", victim)
    assert code == 2 and "--out:" in err and "==" not in out  # before the data and training
    code, _, err = run(capsys, "tutorial", "--data-dir", ml100k_dir, "--seed", "-1")
    assert code == 2 and "seed" in err and "Traceback" not in err
    code, out, err = run(capsys, "tutorial", "--data-dir", ml100k_dir, "--epochs", "1",
                         "--out", tmp_path / "t")
    assert code == 0, err
    # the columns it read, as `train` on MovieLens records them (none were recorded)
    assert json.loads((tmp_path / "t" / "config.json").read_text())["data"]["columns"] == {
        "user": "user_id", "item": "item_id", "rating": "rating", "time": "timestamp"}
    assert "val loss none (validated every 5 epochs)" in out  # it printed "val loss nan"
    assert "data: 100,000 ratings, 943 users, 1,682 movies;" in out  # (was "1682 movies")
    rated = set(ml100k.item_vocab.ids_of(ml100k.items[ml100k.users == ml100k.user_vocab
                                                       .index_of(42)]).tolist())
    titles = dict(zip(ml100k.item_vocab.ids.tolist(), ml100k.titles().tolist()))
    block = out.split("Top-10 for user 42")[1].split("The tutorial's raw list")[0]
    shown = [ln.split(". ", 1)[1].rsplit("  (", 1)[0] for ln in block.splitlines()
             if ln.strip()[:1].isdigit()]
    assert len(shown) == 10 and not set(shown) & {titles[i] for i in rated}


def test_model_parallel_errors_name_where_it_was_set(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--preset", "tutorial", "--devices", "2",
                       "--model-parallel", "0", "--out", tmp_path / "r")
    assert code == 2 and "--model-parallel must be a whole number >= 1, got 0" in err
    cfg = tmp_path / "c.toml"
    cfg.write_text("[distribution]\nmodel_parallel = 2\n")
    code, _, err = run(capsys, "train", "--preset", "tutorial", "--devices", "3",
                       "--config", cfg, "--out", tmp_path / "r")
    assert code == 2 and (f"--devices 3 must be a multiple of --config {cfg} [distribution] "
                          "model_parallel") in err


def test_distribution_divisibility_errors_name_where_the_numbers_came_from(
        capsys, tmp_path, monkeypatch):
    """`--devices 2 --batch-size 999` said "batch_size 999 must be divisible by
    distribution.data_parallel (2)", naming no flag (and a file's batch size no file)."""
    from twotower.training import distribution
    monkeypatch.setattr(distribution, "check_devices", lambda dist: None)  # as if JAX had 2
    code, _, err = run(capsys, "train", "--preset", "tutorial", "--devices", "2",
                       "--batch-size", "999", "--out", tmp_path / "r")
    assert code == 2 and ("batch_size 999 must be divisible by distribution.data_parallel (2)"
                          in err) and ("(batch_size from --batch-size, embedding_dim from "
                                       "preset tutorial, data_parallel from --devices)") in err
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\nembedding_dim = 33\n[distribution]\nmodel_parallel = 2\n"
                   "shard_tables = 'columns'\n")
    code, _, err = run(capsys, "train", "--preset", "tutorial", "--devices", "2",
                       "--config", cfg, "--out", tmp_path / "r")
    assert code == 2 and "embedding_dim 33 must be divisible" in err and (
        f"embedding_dim from --config {cfg} [model], data_parallel from --devices, "
        f"model_parallel from --config {cfg} [distribution])") in err, err
    assert not (tmp_path / "r").exists()


def test_an_empty_config_file_is_refused(capsys, tmp_path):
    """An empty TOML file (or one of comments only) trained on the preset in silence; an
    empty JSON file was refused (it is not JSON)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("# epochs = 5\n")
    code, _, err = run(capsys, "train", "--preset", "tutorial", "--config", cfg,
                       "--out", tmp_path / "r")
    assert code == 2 and f"--config: {cfg}: holds no settings" in err, err


@pytest.mark.parametrize("argv, needle", [
    (["--kind", "ivf", "--ef-search", "5"], "--ef-search: not a setting of --kind ivf"),
    (["--kind", "exact", "--nprobe", "5"], "--nprobe: not a setting of --kind exact"),
    (["--kind", "hnsw", "--nlist", "8", "--nprobe", "2"],
     "--nlist, --nprobe: not a setting of --kind hnsw"),
])
def test_index_refuses_knobs_of_another_kind(capsys, tutorial_run, argv, needle):
    _, rundir = tutorial_run
    code, _, err = run(capsys, "index", rundir, *argv)
    assert code == 2 and needle in err


def test_sigterm_during_training_exits_143_and_keeps_the_old_run(tmp_path, ml100k):
    """SIGTERM (a scheduler's stop, `kill`) ends `twotower train` as Ctrl-C does: one line,
    exit status 143, the previous run at --out untouched and no temporary directory left."""
    import os
    import signal
    import time as _time

    from twotower.data import write_interactions
    data = tmp_path / "r.csv"
    write_interactions(ml100k, data)
    out = tmp_path / "run"
    out.mkdir()
    (out / "format.json").write_text('{"old": true}')
    proc = subprocess.Popen([sys.executable, "-m", "twotower.cli", "train", "--data",
                             str(data), "--out", str(out), "--preset", "tutorial",
                             "--epochs", "500"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "KERAS_BACKEND": "jax"})
    try:
        for line in proc.stdout:  # reading done, training next
            if line.startswith("data:"):
                break
        _time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == "twotower: terminated"
    assert (out / "format.json").read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "run"]


def test_given_settings_the_model_never_reads_are_warned_about_not_a_presets_own(
        tmp_path, capsys, recwarn):
    """temperature with mse or EASE settings with the EASE part off were kept and ignored
    in silence. Only settings the user gave count: a preset's own values do not (the
    default preset with ease_weight 0 keeps its EASE settings)."""
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n" + "".join(
        f"u{u % 9},i{u % 7},{1 + u % 5}\n" for u in range(120)))
    cfg = tmp_path / "c.toml"
    cfg.write_text("[model]\nepochs = 1\ntemperature = 0.5\nease_rank = 4\n")
    base = ["train", "--data", tmp_path / "r.csv", "--rating-col", "rating", "--split", "none",
            "--config", cfg]
    with pytest.warns(UserWarning, match=r"never reads.*temperature \(objective 'mse'\), "
                                         r"ease_rank \(ease_weight 0\)"):
        code, _, err = run(capsys, *base, "--preset", "tutorial", "--out", tmp_path / "a")
    assert code == 0, err
    recwarn.clear()
    cfg.write_text("[model]\nepochs = 1\nease_weight = 0\n")
    code, _, err = run(capsys, *base, "--out", tmp_path / "b")
    assert code == 0, err
    assert not [w for w in recwarn if "never reads" in str(w.message)]


def test_a_complete_config_warns_only_of_unread_settings_off_their_default(
        tmp_path, capsys, recwarn):
    """A run's saved [model] table fed back (every key, most at the class default) warned
    of 18 settings the tutorial's model never reads, none of them chosen by the user."""
    from twotower.models import ModelConfig
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n" + "".join(
        f"u{u % 9},i{u % 7},{1 + u % 5}\n" for u in range(120)))
    settings = ModelConfig.preset("tutorial", epochs=1).to_dict()
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"model": settings}))
    base = ["train", "--data", tmp_path / "r.csv", "--split", "none", "--preset", "tutorial",
            "--config", cfg]
    code, _, err = run(capsys, *base, "--out", tmp_path / "a")
    assert code == 0, err
    assert not [w for w in recwarn if "never reads" in str(w.message)]
    cfg.write_text(json.dumps({"model": {**settings, "temperature": 0.5}}))
    with pytest.warns(UserWarning, match=r"never reads, so training ignores them: "
                                         r"temperature \(objective 'mse'\)$"):
        code, _, err = run(capsys, *base, "--out", tmp_path / "b")
    assert code == 0, err


def test_flag_mistakes_are_named_by_their_subcommand(capsys, tmp_path):
    """An unknown flag was reported with the top-level usage and a doubled prefix; a
    choice's case did not count (`--kind HNSW`)."""
    code, _, err = run(capsys, "recommend", tmp_path, "--user", "1", "--top", "5")
    assert code == 2 and "usage: twotower recommend" in err
    assert "twotower: error: recommend: unrecognized arguments: --top 5" in err
    code, _, err = run(capsys, "index", tmp_path / "none", "--kind", "HNSW")
    assert code == 2 and "invalid choice" not in err and "--kind" not in err.splitlines()[-1]


def test_an_items_file_with_its_own_column_names(tmp_path, capsys):
    """A shop's items file names its columns its own way (item_id, name, category): the id
    column could only be the --item-col name, and the title was dropped in silence."""
    import numpy as np
    rng = np.random.default_rng(0)
    pd.DataFrame({"customer": [f"c{u}" for u in rng.integers(0, 50, 2000)],
                  "sku": [f"S{i}" for i in rng.integers(0, 40, 2000)]}).to_csv(
        tmp_path / "clicks.csv", index=False)
    pd.DataFrame({"item_id": [f"S{i}" for i in range(40)],
                  "name": [f'Name, "{i}"' for i in range(40)],
                  "category": ["a|b"] * 40}).to_csv(tmp_path / "products.csv", index=False)
    (tmp_path / "c.json").write_text('{"model": {"objective": "softmax", "epochs": 1}}')
    base = ["train", "--data", tmp_path / "clicks.csv", "--user-col", "customer",
            "--item-col", "sku", "--items", tmp_path / "products.csv", "--preset", "clicks",
            "--config", tmp_path / "c.json"]
    code, _, err = run(capsys, *base, "--out", tmp_path / "r0")
    assert code == 2 and "has no column 'sku' (--item-col)" in err and "--items-id-col" in err
    with pytest.warns(UserWarning, match="no 'title' or 'genres' column"):
        code, _, err = run(capsys, *base, "--items-id-col", "item_id", "--out", tmp_path / "r1")
    assert code == 0, err
    code, _, err = run(capsys, *base, "--items-id-col", "item_id", "--title-col", "name",
                       "--genres-col", "category", "--out", tmp_path / "r2")
    assert code == 0, err
    code, out, _ = run(capsys, "recommend", tmp_path / "r2", "--user", "c1", "-k", "3")
    assert code == 0 and 'Name, "' in out
    code, _, err = run(capsys, *base, "--items-id-col", "item_id", "--title-col", "nme",
                       "--out", tmp_path / "r3")
    assert code == 2 and "has no column 'nme' (--title-col)" in err


def test_a_semicolon_export_and_text_times_are_named(tmp_path, capsys):
    """A ';'-separated export read as one column said "no column 'customer'"; --sep reads
    it. Text times said only "expected a finite number"."""
    (tmp_path / "c.csv").write_text("customer;sku;ts\n" + "".join(
        f"c{u % 7};s{u % 5};{1_700_000_000 + u}\n" for u in range(200)))
    (tmp_path / "c.json").write_text('{"model": {"objective": "softmax", "epochs": 1}}')
    base = ["train", "--data", tmp_path / "c.csv", "--user-col", "customer", "--item-col",
            "sku", "--preset", "clicks", "--config", tmp_path / "c.json"]
    code, _, err = run(capsys, *base, "--out", tmp_path / "r0")
    assert code == 2 and "separated by ';'" in err and "--sep" in err
    code, out, err = run(capsys, *base, "--sep", ";", "--out", tmp_path / "r1")
    assert code == 0 and "200 interactions" in out, err
    (tmp_path / "t.csv").write_text("user_id,item_id,ts\nu1,i1,30/08/2024 06:43:21\n")
    code, _, err = run(capsys, "train", "--data", tmp_path / "t.csv", "--time-col", "ts",
                       "--out", tmp_path / "r2")
    assert code == 2 and "expected a time" in err and "seconds since the epoch" in err \
        and "ISO 8601" in err


def test_evaluate_test_data_reads_a_file_like_the_runs_own_without_flags(tmp_path, capsys):
    """`evaluate --test-data` found columns by name only: a held-out file with the training
    file's own columns ('customer', 'sku') and separator needed every flag again."""
    (tmp_path / "c.csv").write_text("customer;sku\n" + "".join(
        f"c{u};s{(u + j) % 30}\n" for u in range(20) for j in range(8)))
    (tmp_path / "held.csv").write_text("customer;sku\n" + "".join(
        f"c{u};s{(u + 8 + j) % 30}\n" for u in range(20) for j in range(3)))
    (tmp_path / "c.json").write_text('{"model": {"objective": "softmax", "epochs": 1}}')
    code, _, err = run(capsys, "train", "--data", tmp_path / "c.csv", "--user-col", "customer",
                       "--item-col", "sku", "--sep", ";", "--split", "none", "--preset",
                       "clicks", "--config", tmp_path / "c.json", "--out", tmp_path / "r")
    assert code == 0, err
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["data"]
    assert saved["columns"] == {"user": "customer", "item": "sku", "rating": None,
                                "time": None} and saved["sep"] == ";"
    code, out, err = run(capsys, "evaluate", tmp_path / "r", "-k", "10",
                         "--test-data", tmp_path / "held.csv")
    assert code == 0, err
    assert "60 pairs" in err and "54 evaluated" in err and "using column 'customer' as the user" in out
    assert "| model |" in out
    # what was left out stays with the table: on stdout and in the JSON
    assert "held out: 54 of the 60 pairs" in out and "6 with a user or item unknown" in out
    code, out, err = run(capsys, "evaluate", tmp_path / "r", "-k", "10",
                         "--test-data", tmp_path / "held.csv", "--json", tmp_path / "t.json")
    held = json.loads((tmp_path / "t.json").read_text())["held_out"]
    assert held == {"file": str(tmp_path / "held.csv"), "pairs": 60, "unknown": 6,
                    "trained": 0, "evaluated": 54}
    # flags still win over the run's names
    code, _, err = run(capsys, "evaluate", tmp_path / "r", "--test-data",
                       tmp_path / "held.csv", "--user-col", "client")
    assert code == 2 and "client" in err


def test_train_records_the_columns_it_found_by_name(tmp_path, capsys):
    """config.json's ``data.columns`` (and GET /v1/model's ``data``) kept the user and item
    columns only: a time column found by name (``timestamp``, each user's history order),
    a rating column, and the --items file with its id column went unrecorded. A run saved
    before these keys (their absence: not recorded) still loads and evaluates."""
    from fastapi.testclient import TestClient

    from twotower.service import create_app
    (tmp_path / "log.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{(u + j) % 30},{1 + j % 5},{1_700_000_000 + 60 * j}\n"
        for u in range(20) for j in range(8)))
    (tmp_path / "movies.csv").write_text("movieId,name,genres\n" + "".join(
        f"{i},Film {i},Drama\n" for i in range(27)))
    (tmp_path / "held.csv").write_text("userId,movieId\n" + "".join(
        f"{u},{(u + 8 + j) % 30}\n" for u in range(20) for j in range(3)))
    (tmp_path / "c.json").write_text('{"model": {"objective": "softmax", "epochs": 1}}')
    code, out, err = run(capsys, "train", "--data", tmp_path / "log.csv", "--items",
                         tmp_path / "movies.csv", "--title-col", "name", "--split", "none",
                         "--preset", "clicks", "--config", tmp_path / "c.json",
                         "--rating-col", "none", "--out", tmp_path / "r")
    assert code == 0, err
    assert "using column 'timestamp' as the time" in out
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["data"]
    assert saved["columns"] == {"user": "userId", "item": "movieId", "rating": None,
                                "time": "timestamp"}
    assert saved["items"] == str(tmp_path / "movies.csv")
    assert saved["items_columns"] == {"id": "movieId", "title": "name", "genres": "genres"}
    with TestClient(create_app(tmp_path / "r")) as client:
        assert client.get("/v1/model").json()["data"] == saved
    # read back by evaluate --test-data: the run's user and item columns, as before
    code, out, err = run(capsys, "evaluate", tmp_path / "r", "-k", "10",
                         "--test-data", tmp_path / "held.csv")
    assert code == 0 and "60 pairs" in err and "| model |" in out, err
    # a rating column found by name is recorded as read
    code, _, err = run(capsys, "train", "--data", tmp_path / "log.csv", "--split", "none",
                       "--preset", "clicks", "--config", tmp_path / "c.json",
                       "--time-col", "none", "--out", tmp_path / "r2")
    assert code == 0, err
    saved = json.loads((tmp_path / "r2" / "config.json").read_text())["data"]
    assert saved["columns"] == {"user": "userId", "item": "movieId", "rating": "rating",
                                "time": None} and "items" not in saved
    # a run saved before: data.columns of user and item only, no items: loads, serves and
    # evaluates as it did
    from twotower.artifacts import _sha256
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    cfg["data"] = {k: v for k, v in cfg["data"].items() if k not in ("items", "items_columns")}
    cfg["data"]["columns"] = {"user": "userId", "item": "movieId"}
    (tmp_path / "r" / "config.json").write_text(json.dumps(cfg))
    fmt = json.loads((tmp_path / "r" / "format.json").read_text())
    fmt["files"]["config.json"] = _sha256(tmp_path / "r" / "config.json")
    (tmp_path / "r" / "format.json").write_text(json.dumps(fmt))
    with TestClient(create_app(tmp_path / "r")) as client:
        assert client.get("/v1/model").json()["data"] == cfg["data"]
    code, out, err = run(capsys, "evaluate", tmp_path / "r", "-k", "10",
                         "--test-data", tmp_path / "held.csv")
    assert code == 0 and "60 pairs" in err and "| model |" in out, err


def test_train_notes_when_the_objective_does_not_read_ratings(tmp_path, capsys):
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n" + "".join(
        f"u{u % 7},i{u % 5},{1 + u % 5}\n" for u in range(100)))
    (tmp_path / "c.json").write_text('{"model": {"objective": "softmax", "epochs": 1}}')
    code, out, err = run(capsys, "train", "--data", tmp_path / "r.csv", "--preset",
                         "clicks", "--config", tmp_path / "c.json", "--out", tmp_path / "r")
    assert code == 0, err
    assert "note: objective 'softmax' does not read ratings" in out


def test_a_config_table_of_another_name_is_named(tmp_path, capsys):
    (tmp_path / "c.toml").write_text('[data]\nuser_col = "customer"\n')
    code, _, err = run(capsys, "train", "--config", tmp_path / "c.toml", "--out",
                       tmp_path / "r")
    assert code == 2 and "unknown table(s) ['data']" in err and "--user-col" in err


def test_recommend_falls_back_to_popular_items_for_unknown_users(tmp_path, capsys,
                                                                 tutorial_run):
    """One unknown user in --users failed the whole run; --fallback popular serves it the
    most popular items, flagged, as the HTTP API's fallback does."""
    import numpy as np
    model, run_dir = tutorial_run
    (tmp_path / "u.txt").write_text("1\nnobody\n2\n")
    code, _, err = run(capsys, "recommend", run_dir, "--users", tmp_path / "u.txt")
    assert code == 2 and "--fallback popular" in err
    code, out, err = run(capsys, "recommend", run_dir, "--users", tmp_path / "u.txt",
                         "--fallback", "popular", "--json", "-k", "3")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["user_id"] for r in rows] == [1, "nobody", 2]
    assert [r["fallback"] for r in rows] == [None, "popular", None]  # a key on every row
    popular = np.argsort(-np.asarray(model.item_popularity, np.float64), kind="stable")[:3]
    assert [it["item_id"] for it in rows[1]["items"]] == model.item_vocab.ids[popular].tolist()
    _, top = model.recommend_ids([1], k=3)
    assert [it["item_id"] for it in rows[0]["items"]] == top[0].tolist()


def test_recommend_serves_users_never_trained_on_as_new_users(tmp_path, capsys):
    """Without --fallback, a user the run knows but never trained on got a list from an
    untrained query, silently (the HTTP API answers 404 for them)."""
    import numpy as np

    from twotower import ModelConfig, TwoTower
    from twotower.data import Interactions
    rng = np.random.default_rng(0)
    users = [f"u{u}" for u in range(20) for _ in range(8)] + ["lone"]
    x = Interactions.from_ids(users, [f"i{j}" for j in rng.integers(0, 15, len(users))])
    train = x.take(np.asarray(users) != "lone")  # the vocabulary keeps "lone"
    cfg = ModelConfig.preset("tutorial", objective="softmax", epochs=1, embedding_dim=8)
    with pytest.warns(UserWarning, match="no training interactions"):
        TwoTower(cfg).fit(train, verbose=0).save(tmp_path / "run")
    code, _, err = run(capsys, "recommend", tmp_path / "run", "--user", "lone")
    assert code == 2 and "'lone' has no training interactions" in err
    assert "--fallback popular" in err
    code, out, err = run(capsys, "recommend", tmp_path / "run", "--all-users", "--json")
    assert code == 0, err
    assert "1 user with no training interactions is left out" in err
    assert sorted(json.loads(line)["user_id"] for line in out.splitlines()) == \
        sorted(f"u{u}" for u in range(20))
    code, out, err = run(capsys, "recommend", tmp_path / "run", "--user", "u1",
                         "--out", tmp_path / "one.csv")
    assert code == 0 and "wrote 1 user's top-" in out, (out, err)
    code, out, err = run(capsys, "recommend", tmp_path / "run", "--user", "lone",
                         "--fallback", "popular", "--json")
    assert code == 0 and json.loads(out)["fallback"] == "popular", err
    # said as what it is (it was "unknown"), beside a user the run does not know
    for who, said in (("lone", "never trained on"), ("ghost", "unknown")):
        code, out, err = run(capsys, "recommend", tmp_path / "run", "--user", who,
                             "--fallback", "popular", "-k", "1")
        assert code == 0 and f"user {who}: ({said}: the most popular items, with their " \
            "training interactions)" in out, out
        # the count as a count (it read "60.000" beside model scores)
        top = json.loads(run(capsys, "recommend", tmp_path / "run", "--user", who, "--fallback",
                             "popular", "-k", "1", "--json")[1])["items"][0]
        assert f"({int(top['score']):,} interactions)" in out and ".000" not in out, out


def test_a_ctrl_c_dropped_inside_a_callback_is_sent_again():
    """Python can run a signal handler inside JAX's gc callback, which prints and drops
    its exception: a Ctrl-C was then lost, and training went on to replace the run. The
    handler sends the signal again each second until main has seen it."""
    import signal
    import time

    from twotower import cli
    old = signal.signal(signal.SIGINT, cli._raise_signal)
    try:
        try:
            cli._raise_signal(signal.SIGINT, None)
        except KeyboardInterrupt:
            pass  # dropped, as in the gc callback
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            while time.monotonic() - t0 < 5:
                time.sleep(0.02)
        assert time.monotonic() - t0 < 3
    finally:
        cli._PENDING["signum"] = None
        signal.signal(signal.SIGINT, old)


def test_a_dropped_stop_prints_no_traceback_of_its_own():
    """The stop dropped inside JAX's gc callback printed a 7-line "Exception ignored"
    traceback above "twotower: interrupted"; it is sent again, so it goes unsaid. Other
    unraisable exceptions, and a KeyboardInterrupt that is no stop of ours, still show."""
    import types

    from twotower import cli
    seen = []
    quiet = cli._quiet_dropped_stop(seen.append)

    def dropped(exc):
        return types.SimpleNamespace(exc_value=exc)
    cli._PENDING["signum"] = 2
    try:
        quiet(dropped(KeyboardInterrupt()))
        quiet(dropped(cli._Terminated()))
        assert seen == []
        quiet(dropped(ValueError("x")))
        assert len(seen) == 1
    finally:
        cli._PENDING["signum"] = None
    quiet(dropped(KeyboardInterrupt()))
    assert len(seen) == 2


def test_stream_refuses_a_test_fraction_it_would_ignore(tmp_path, capsys):
    """--test-fraction with --stream trained on the whole file, silently."""
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n1,2,3\n")
    code, _, err = run(capsys, "train", "--data", tmp_path / "r.csv", "--stream",
                       "--test-fraction", "0.3", "--out", tmp_path / "r")
    assert code == 2 and "--test-fraction (0.3) does not apply" in err and "--test-data" in err


@pytest.mark.parametrize("argv, needle", [
    (["--devices", "0"], "distribution.data_parallel (--devices) must be"),
    (["--stream", "--shuffle-buffer", "-1"], "stream.shuffle_buffer (--shuffle-buffer) must"),
    (["--num-processes", "2"], "distribution.num_processes (--num-processes) is 2"),
    (["--epochs", "0"], "model.epochs (--epochs) must be"),
    (["--config", "{tmp}/d.toml"], "--config {tmp}/d.toml: DistributionConfig: unknown key"),
    (["--config", "{tmp}/m.toml"], "model.epochs (--config {tmp}/m.toml [model]) must be"),
])
def test_setting_errors_name_the_flag_or_file_that_set_them(tmp_path, capsys, argv, needle):
    """Errors named config keys (distribution.data_parallel) for values typed as flags, and
    did not name the --config file."""
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n1,2,3\n")
    (tmp_path / "d.toml").write_text("[distribution]\ndata_paralel = 2\n")
    (tmp_path / "m.toml").write_text("[model]\nepochs = -3\n")
    argv = [a.format(tmp=tmp_path) for a in argv]
    code, _, err = run(capsys, "train", "--data", tmp_path / "r.csv", *argv,
                       "--out", tmp_path / "run")
    assert code == 2 and needle.format(tmp=tmp_path) in err, err


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_stop_after_the_command_is_done_is_ignored(tmp_path, sig):
    # a Ctrl-C during the interpreter's exit (after "saved to RUN") landed in JAX's exit
    # handler: a KeyboardInterrupt traceback under status 0, or the process ended by SIGINT;
    # a SIGTERM there ended the process by SIGTERM with no word, where a Ctrl-C exited 0
    script = tmp_path / "late.py"
    script.write_text(
        "import atexit, os, signal, time\n"
        "import jax  # noqa: F401\n"
        "import twotower.cli as c\n"
        "c.main = lambda argv=None: 0\n"
        "def late():\n"
        f"    os.kill(os.getpid(), signal.{sig})\n"
        "    time.sleep(0.2)\n"
        "    print('after', flush=True)\n"
        "atexit.register(late)  # runs before JAX's own exit handler\n"
        "c.run()\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "after" in out.stdout, out
    assert "KeyboardInterrupt" not in out.stderr, out.stderr
@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_recommend_out_table_keeps_the_fallback_flag_and_mixed_ids(tmp_path, capsys, suffix):
    """A Parquet/CSV --out dropped the fallback flag (popularity counts read as model
    scores), and on a run with integer ids a fallback user such as 'ghost' made the
    Parquet writer fail with a traceback (one column, int64 and text)."""
    import numpy as np

    from twotower import ModelConfig, TwoTower
    from twotower.data import Interactions
    rng = np.random.default_rng(0)
    users = [10**12 + u for u in range(20) for _ in range(8)]
    x = Interactions.from_ids(users, [int(j) for j in rng.integers(0, 15, len(users))])
    cfg = ModelConfig.preset("tutorial", objective="softmax", epochs=1, embedding_dim=8)
    TwoTower(cfg).fit(x, verbose=0).save(tmp_path / "run")
    (tmp_path / "u.txt").write_text(f"{10**12}\nghost\n")
    out_file = tmp_path / f"recs.{suffix}"
    code, _, err = run(capsys, "recommend", tmp_path / "run", "--users", tmp_path / "u.txt",
                       "--fallback", "popular", "-k", "2", "--out", out_file)
    assert code == 0, err
    df = pd.read_parquet(out_file) if suffix == "parquet" else pd.read_csv(out_file, dtype=str)
    assert list(df.columns) == ["user_id", "rank", "item_id", "title", "score", "fallback"]
    assert df["user_id"].tolist() == [str(10**12)] * 2 + ["ghost"] * 2
    assert df["fallback"].fillna("").tolist() == ["", "", "popular", "popular"]
    # without --fallback the table keeps its five columns and int64 ids
    (tmp_path / "v.txt").write_text(f"{10**12}\n")
    code, _, err = run(capsys, "recommend", tmp_path / "run", "--users", tmp_path / "v.txt",
                       "-k", "2", "--out", out_file)
    assert code == 0, err
    df = pd.read_parquet(out_file) if suffix == "parquet" else pd.read_csv(out_file)
    assert list(df.columns) == ["user_id", "rank", "item_id", "title", "score"]
    assert df["user_id"].dtype == "int64"


def test_recommend_out_parquet_keeps_its_column_types_when_lists_are_empty(tmp_path,
                                                                            capsys):
    """A Parquet --out whose lists are all empty (an --allow of items the users had) had
    columns of no type (null: item_id, score, rank, user_id), and one where no user fell
    back a null-typed fallback column: files of one job that a reader joins or stacks
    disagreed on their schema."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from twotower import ModelConfig, TwoTower
    from twotower.data import Interactions
    users = [10**12 + u for u in range(4) for _ in range(3)]
    x = Interactions.from_ids(users, [u % 4 + j for u in range(4) for j in range(3)])
    cfg = ModelConfig.preset("tutorial", objective="softmax", epochs=1, embedding_dim=4)
    TwoTower(cfg).fit(x, verbose=0).save(tmp_path / "run")
    (tmp_path / "allow.txt").write_text("0\n")  # only user 10**12 had item 0
    out_file = tmp_path / "recs.parquet"
    want = {"user_id": pa.int64(), "rank": pa.int64(), "item_id": pa.int64(),
            "score": pa.float64()}
    for extra in ([], ["--fallback", "popular"]):
        code, _, err = run(capsys, "recommend", tmp_path / "run", "--user", str(10**12),
                           "--allow", tmp_path / "allow.txt", "--out", out_file, *extra)
        assert code == 0, err
        schema = pq.read_schema(out_file)
        assert pq.read_table(out_file).num_rows == 0
        assert {c: schema.field(c).type for c in want} == want, schema
        assert pa.types.is_string(schema.field("title").type) or \
            pa.types.is_large_string(schema.field("title").type), schema
    assert pa.types.is_string(schema.field("fallback").type) or \
        pa.types.is_large_string(schema.field("fallback").type), schema
    code, _, err = run(capsys, "recommend", tmp_path / "run", "--all-users", "-k", "2",
                       "--fallback", "popular", "--out", out_file)  # nobody falls back
    schema = pq.read_schema(out_file)
    assert code == 0 and not pa.types.is_null(schema.field("fallback").type), schema


def test_test_users_with_only_repeated_items_are_counted_in_a_note(tmp_path, capsys):
    """A log of repeat purchases: test users whose every test item they already had in
    training have nothing to find (seen items are excluded), and the metrics leave them
    out; train and evaluate say how many (a reviewer's e-commerce log lost 43% of its test
    users that way, silently)."""
    import random
    rng = random.Random(1)
    rows = []
    for u in range(60):
        items = rng.sample(range(40), 8)
        rows += [(u, i) for i in items] + [(u, i) for i in items[:4] if u % 3 == 0]
    (tmp_path / "log.csv").write_text("user_id,item_id\n" + "".join(
        f"u{u},i{i}\n" for u, i in rows))
    code, out, err = run(capsys, "train", "--data", tmp_path / "log.csv", "--epochs", "1",
                         "--out", tmp_path / "r")
    assert code == 0, err
    note = re.search(r"note: (\d+) of the (\d+) test users with training interactions have "
                     r"only test items they already had in training", out)
    assert note, out
    scored = json.loads((tmp_path / "r" / "eval.json").read_text())["model"]["users"]
    assert int(note[1]) > 0 and int(note[2]) - int(note[1]) == scored
    code, out, err = run(capsys, "evaluate", tmp_path / "r")
    assert code == 0 and f"note: {note[1]} of the {note[2]} test users" in err, err
    # MovieLens has no repeats: no note
    from twotower.cli import _pair_notes
    from types import SimpleNamespace
    import scipy.sparse as sp
    fake = SimpleNamespace(untrained_users=lambda: np.zeros(3, bool),
                           seen_rows=lambda u: sp.csr_matrix(np.eye(3))[u],
                           item_popularity=np.ones(3))
    assert _pair_notes(fake, np.array([0, 1]), np.array([1, 2]))[0] is None
    assert _pair_notes(fake, np.array([0, 0, 1]), np.array([0, 1, 1]))[0].startswith(
        "note: 1 of the 2 test users")


def test_a_global_time_cutoff_split(tmp_path, capsys):
    """--split global-temporal: one cutoff for the log (no training row later than a test
    row); the EASE part and evaluate's baselines are tuned on each user's latest (the
    nearest carve a run keeps); items first seen after the cutoff are said to be new."""
    rows = ["user_id,item_id,timestamp"]
    rng = np.random.default_rng(0)
    for t in range(600):  # items 30-39 appear only in the last 15% of the time
        item = rng.integers(0, 40 if t >= 510 else 30)
        rows.append(f"u{rng.integers(0, 40)},i{item},{t}")
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    code, out, err = run(capsys, "train", "--data", tmp_path / "log.csv", "--split",
                         "global-temporal", "--epochs", "1", "--out", tmp_path / "r")
    assert code == 0, err
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["data"]["split"] == "global-temporal"
    assert cfg["model"]["ease_split"] == "temporal"
    new = re.search(r"note: (\d+) of the (\d+) test pairs the metrics score are of (\d+) "
                    r"items that no training row has", out)
    assert new and int(new[1]) > 0 and 0 < int(new[3]) <= 10, out
    # the pairs the metrics score: of trained users, each once, not seen in training
    from twotower.artifacts import load_test
    from twotower.models import TwoTower
    m, (tu, ti) = TwoTower.load(tmp_path / "r"), load_test(tmp_path / "r")
    warm = np.diff(m._seen.indptr)[tu] > 0
    scored = {(u, i) for u, i in zip(tu[warm], ti[warm]) if not m._seen[u, i]}
    assert int(new[2]) == len(scored) < 120
    assert int(new[1]) == sum(m.item_popularity[i] == 0 for _, i in scored)
    code, out, err = run(capsys, "evaluate", tmp_path / "r", "--baselines")
    assert code == 0, err
    assert "tuning ItemKNN, EASE and EASE+recency on a temporal (each user's latest" in err, err
    assert f"note: {new[1]} of the {new[2]} test pairs" in err


def test_the_new_items_note_counts_the_pairs_the_metrics_score():
    """New items are most often a new user's (a global time cutoff): pairs of users with
    no training interactions are left out of the metrics, and a pair repeated in test is
    one item to find, so neither counts as a miss; the note counted both."""
    import scipy.sparse as sp
    from types import SimpleNamespace

    from twotower.cli import _pair_notes
    seen = sp.csr_matrix(np.array([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]))
    pop = np.asarray(seen.sum(0)).ravel()
    fake = SimpleNamespace(untrained_users=lambda: np.diff(seen.indptr) == 0,
                           seen_rows=lambda u: seen[u], item_popularity=pop,
                           untrained_items=lambda: pop == 0)
    # user 2 is new (items 3, 4 new); user 0 finds new item 3 twice and item 0 is seen
    users, items = np.array([2, 2, 0, 0, 0, 1]), np.array([3, 4, 3, 3, 0, 1])
    assert _pair_notes(fake, users, items)[1].startswith(
        "note: 1 of the 2 test pairs the metrics score are of 1 items that no training row "
        "has")
    assert "the model lists none of them" in _pair_notes(fake, users, items)[1]
    fake.untrained_items = lambda: np.zeros(5, dtype=bool)  # item features describe them
    assert "the model finds them only by their item features, and" in _pair_notes(
        fake, users, items)[1]
    assert _pair_notes(fake, np.array([2, 1]), np.array([3, 1]))[1] is None  # a new user's
    # some described by a feature, some by none: "(1 that no trained feature describes it
    # lists nowhere)" did not parse
    fake.untrained_items = lambda: np.arange(5) == 3
    users, items = np.array([0, 0, 1]), np.array([3, 4, 4])
    pop[4] = 0
    assert ("the model finds them only by their item features (1 of them, which no trained "
            "feature describes, in no list), and") in _pair_notes(fake, users, items)[1]


def test_train_note_on_an_unscorable_temporal_split_does_not_advise_temporal(tmp_path,
                                                                              capsys):
    """Every test pair repeated in training: the note advised `--split temporal` to a run
    already split that way."""
    rows = ["user_id,item_id,timestamp"] + [f"u{u},i{u % 3},{t}" for u in range(6)
                                              for t in range(4)]
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "c.toml").write_text('[model]\nobjective = "softmax"\nepochs = 1\n'
                                      'embedding_dim = 8\n')
    code, out, err = run(capsys, "train", "--data", tmp_path / "log.csv", "--preset", "clicks",
                       "--config", tmp_path / "c.toml", "--split", "temporal",
                       "--out", tmp_path / "r")
    assert code == 0, err
    assert "no test user has an item left to find" in out + err
    assert "--split temporal" not in out + err


def test_test_users_with_no_training_rows_are_left_out_and_said_to_be(tmp_path, capsys):
    """A log with one-interaction users: a random split puts some users' only row in test.
    They were scored, each method by its own fallback, and decided the comparison."""
    rows = ["user_id,item_id"] + [f"u{u},i{(u * 7 + j) % 40}" for u in range(40)
                                  for j in range(12)]
    rows += [f"solo{u},i{u % 40}" for u in range(200)]  # one row each
    (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "c.toml").write_text('[model]\nobjective = "softmax"\nepochs = 1\n'
                                      'embedding_dim = 8\n')
    code, out, err = run(capsys, "train", "--data", tmp_path / "log.csv", "--preset",
                         "clicks", "--config", tmp_path / "c.toml", "--out", tmp_path / "r")
    assert code == 0, err
    import re
    m = re.search(r"note: ([\d,]+) of the ([\d,]+) test users have no training interactions "
                  r"and are left out of the metrics:", out)
    assert m, out
    n_cold, n_test = int(m.group(1)), int(m.group(2))
    assert 0 < n_cold < n_test
    ev = json.loads((tmp_path / "r" / "eval.json").read_text())
    assert ev["model"]["users"] <= n_test - n_cold
    code, out, err = run(capsys, "evaluate", tmp_path / "r")
    assert code == 0 and f"note: {n_cold} of the {n_test} test users" in err, err
    # every test user cold: the run is saved, with no metrics
    (tmp_path / "solo.csv").write_text(
        "user_id,item_id\n" + "\n".join(f"s{u},i{u % 9}" for u in range(60)) + "\n")
    code, out, err = run(capsys, "train", "--data", tmp_path / "solo.csv", "--preset",
                         "clicks", "--config", tmp_path / "c.toml", "--out", tmp_path / "r2")
    assert code == 0 and "(all of them: no metrics)" in out, out + err


def test_a_user_who_saw_nearly_everything_is_told_why_the_list_is_short(tmp_path, capsys):
    rows = ["user_id,item_id"] + [f"whale,i{j}" for j in range(12)] + \
        [f"u{u},i{(u + j) % 12}" for u in range(30) for j in range(3)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "c.toml").write_text('[model]\nobjective = "softmax"\nepochs = 1\n')
    code, _, err = run(capsys, "train", "--data", tmp_path / "d.csv", "--preset", "clicks",
                       "--config", tmp_path / "c.toml", "--split", "none",
                       "--out", tmp_path / "r")
    assert code == 0, err
    code, out, _ = run(capsys, "recommend", tmp_path / "r", "--user", "whale")
    assert code == 0 and ("user whale:\n  (no items left: of the 12, 12 are items this user "
                          "interacted with in training (--include-seen ranks them too))") in out
    code, out, _ = run(capsys, "recommend", tmp_path / "r", "--user", "u0", "-k", "12")
    assert "(only 9 items left: of the 12, 3 are items" in out


def test_a_short_list_names_the_items_never_trained_as_well(tmp_path, capsys):
    """With items a split left untrained, the note blamed the user's seen items for all
    the missing ones, and told a user who had given --include-seen to give it."""
    rows = ["user_id,item_id,t"] + [f"u{u},i{(u + j) % 10},{u * 3 + j}" for u in range(30)
                                    for j in range(3)] + ["u0,late1,1000", "u1,late2,1001"]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "c.toml").write_text('[model]\nobjective = "softmax"\nepochs = 1\n')
    code, _, err = run(capsys, "train", "--data", tmp_path / "d.csv", "--time-col", "t",
                       "--preset", "clicks", "--config", tmp_path / "c.toml", "--split",
                       "global-temporal", "--test-fraction", "0.05", "--out", tmp_path / "r")
    assert code == 0, err
    code, out, _ = run(capsys, "recommend", tmp_path / "r", "--user", "u5", "-k", "12",
                       "--include-seen")
    assert code == 0 and ("(only 10 items left: of the 12, 2 were never trained (no "
                          "training row, no trained item feature), which no list holds)") in out, out
    assert "--include-seen ranks" not in out
    code, out, _ = run(capsys, "recommend", tmp_path / "r", "--user", "u5", "-k", "12")
    assert "(only 7 items left: of the 12, 3 are items this user interacted with in " \
        "training (--include-seen ranks them too) and 2 were never trained" in out, out


def test_text_output_tells_items_of_one_title_apart(tutorial_run, capsys):
    # MovieLens has two "Chasing Amy (1997)" (ids 246 and 268): the lists showed titles only
    _, rundir = tutorial_run
    code, out, _ = run(capsys, "similar", rundir, "--item", "268", "-k", "3")
    assert code == 0 and out.startswith("similar to Chasing Amy (1997) [id 268]:"), out
    code, out, _ = run(capsys, "similar", rundir, "--item", "Star Wars (1977)", "-k", "3")
    assert "[id" not in out  # a title of its own keeps the usual form


def test_item_features_the_data_lacks_are_refused_naming_the_file_s_columns(tmp_path,
                                                                            capsys):
    """A typo (`item_features = ["colour"]`) warned, listing the columns read (['title'])
    rather than the file's, and trained for minutes without it; a preset's own feature
    names (the default's genres and year) are still cut to what the data has."""
    rows = [f"u{u},i{(u * 7 + j) % 40}" for u in range(60) for j in range(6)]
    (tmp_path / "log.csv").write_text("user_id,item_id\n" + "\n".join(rows) + "\n")
    (tmp_path / "items.csv").write_text("item_id,title,color,brand\n" + "".join(
        f"i{i},Item {i},red,acme\n" for i in range(40)))
    (tmp_path / "c.toml").write_text('[model]\nitem_features = ["colour", "brand"]\n'
                                     "epochs = 1\n")
    code, out, err = run(capsys, "train", "--data", tmp_path / "log.csv", "--items",
                         tmp_path / "items.csv", "--config", tmp_path / "c.toml",
                         "--split", "none", "--out", tmp_path / "r")
    assert code == 2 and not (tmp_path / "r").exists()
    assert ("item_features in --config [model] names ['colour'], but --items "
            f"{tmp_path / 'items.csv'} has no such column (its columns: ['item_id', 'title', "
            "'color', 'brand']; one it reads as its title or genres column is named 'title' "
            "or 'genres' there") in err, err
    code, out, err = run(capsys, "train", "--data", tmp_path / "log.csv", "--config",
                         tmp_path / "c.toml", "--split", "none", "--out", tmp_path / "r")
    assert code == 2 and "no item metadata was read (give it with --items FILE)" in err, err


def test_items_columns_named_in_item_features_are_read_and_trained_on(tmp_path, capsys):
    """--items kept only id, title and genres: `item_features = ["price", "brand"]`, as the
    train line advises, warned that the data had no such columns."""
    rows = [f"u{u},i{(u * 7 + j) % 40}" for u in range(60) for j in range(6)]
    (tmp_path / "log.csv").write_text("user_id,item_id\n" + "\n".join(rows) + "\n")
    items = ["item_id,title,price,brand,blurb"] + [
        f"i{i},Item {i},{'' if i == 3 else 5 + i % 7},{'acme' if i % 2 else 'zed'},x"
        for i in range(40)]
    (tmp_path / "items.csv").write_text("\n".join(items) + "\n")
    (tmp_path / "c.toml").write_text('[model]\nitem_features = ["price", "brand"]\n'
                                     "epochs = 1\n")
    code, out, err = run(capsys, "train", "--data", tmp_path / "log.csv", "--items",
                         tmp_path / "items.csv", "--config", tmp_path / "c.toml",
                         "--split", "none", "--out", tmp_path / "r")
    assert code == 0, err
    assert "item_features" not in err, err
    from twotower import TwoTower
    m = TwoTower.load(tmp_path / "r")
    names = m.item_feature_names
    assert {"brand=acme", "brand=zed"} <= set(names), names
    assert any(n.startswith("price:q") for n in names), names  # numbers: quantile bins
    assert "blurb" not in m.item_info.columns  # not named: not read
    i3 = m.item_vocab.index_of("i3")
    assert np.isnan(m.item_info["price"].to_numpy(float)[i3])  # an empty field: missing


def test_items_missing_from_the_items_file_are_said_to_lack_their_features(tmp_path,
                                                                           capsys):
    """Items the --items file lacks were said to have "no title or genres" when the file
    gave features too (and had no genres column): the warning names what they lack."""
    rows = [f"u{u},i{(u * 7 + j) % 40}" for u in range(60) for j in range(6)]
    (tmp_path / "log.csv").write_text("user_id,item_id\n" + "\n".join(rows) + "\n")
    (tmp_path / "items.csv").write_text("item_id,title,price,brand\n" + "".join(
        f"i{i},Item {i},{5 + i % 7},{'acme' if i % 2 else 'zed'}\n" for i in range(30)))
    (tmp_path / "c.toml").write_text('[model]\nitem_features = ["price", "brand"]\n'
                                     "epochs = 1\n")
    with pytest.warns(UserWarning) as caught:
        code, out, err = run(capsys, "train", "--data", tmp_path / "log.csv", "--items",
                             tmp_path / "items.csv", "--config", tmp_path / "c.toml",
                             "--split", "none", "--out", tmp_path / "r")
    assert code == 0, err
    said = [str(w.message) for w in caught if "items found in" in str(w.message)]
    assert said == [f"--items: 30 of 40 items found in {tmp_path / 'items.csv'}; the other 10 "
                    "(e.g. 'i30', 'i31') have no row there or only empty cells: no title or "
                    "item features (price, brand); they show as their ids; the model places "
                    "them by their interactions alone"], said
    (tmp_path / "bare.csv").write_text("item_id,brand\n" + "".join(
        f"i{i},{'acme' if i % 2 else 'zed'}\n" for i in range(30)) + "i30,\n")  # empty
    (tmp_path / "c.toml").write_text('[model]\nitem_features = ["brand"]\nepochs = 1\n')
    with pytest.warns(UserWarning) as caught:
        code, out, err = run(capsys, "train", "--data", tmp_path / "log.csv", "--items",
                             tmp_path / "bare.csv", "--config", tmp_path / "c.toml",
                             "--split", "none", "--out", tmp_path / "r2")
    assert code == 0, err
    said = [str(w.message) for w in caught if "items found in" in str(w.message)]
    assert said and said[0].endswith("have no row there or only empty cells: no item "
                                     "features (brand); the model places them by their "
                                     "interactions alone"), said
    assert "items found in" in said[0] and "the other 10 (e.g. 'i30', 'i31')" in said[0], said


def test_multi_valued_item_feature_columns_are_declared_by_flag_or_config(tmp_path, capsys):
    """A CSV items file's `tags` column holding `x|y` was one feature value, with no way to
    declare it a list: --multi-valued-features (multi_valued_features in --config) splits
    it; --item-features names the feature columns on the command line."""
    rows = [f"u{u},i{(u * 7 + j) % 40}" for u in range(60) for j in range(6)]
    (tmp_path / "log.csv").write_text("user_id,item_id\n" + "\n".join(rows) + "\n")
    (tmp_path / "items.csv").write_text("item_id,title,tags,price\n" + "".join(
        f"i{i},Item {i},{['red|big', 'red', 'big|blue', ''][i % 4]},{5 + i % 7}\n"
        for i in range(40)))
    code, out, err = run(capsys, "train", "--data", tmp_path / "log.csv", "--items",
                         tmp_path / "items.csv", "--item-features", "tags,price",
                         "--multi-valued-features", "tags", "--epochs", "1", "--split",
                         "none", "--out", tmp_path / "r")
    assert code == 0, err
    from twotower import TwoTower
    m = TwoTower.load(tmp_path / "r")
    assert m.config.item_features == ("tags", "price")
    assert m.config.multi_valued_features == ("tags",)
    assert [n for n in m.item_feature_names if n.startswith("tags")] == [
        "tags=big", "tags=blue", "tags=red"]
    (tmp_path / "c.toml").write_text('[model]\nitem_features = ["tags"]\n'
                                     'multi_valued_features = ["tags"]\n'
                                     'multi_value_sep = ";"\nepochs = 1\n')
    (tmp_path / "semi.csv").write_text("item_id,tags\n" + "".join(
        f"i{i},{['red;big', 'red'][i % 2]}\n" for i in range(40)))
    code, out, err = run(capsys, "train", "--data", tmp_path / "log.csv", "--items",
                         tmp_path / "semi.csv", "--config", tmp_path / "c.toml",
                         "--split", "none", "--out", tmp_path / "r2")
    assert code == 0, err
    assert TwoTower.load(tmp_path / "r2").item_feature_names == ["tags=big", "tags=red"]
    code, out, err = run(capsys, "train", "--data", tmp_path / "log.csv", "--items",
                         tmp_path / "items.csv", "--item-features", "price",
                         "--multi-valued-features", "tags",
                         "--split", "none", "--out", tmp_path / "r3")
    assert code == 2 and not (tmp_path / "r3").exists()
    assert ("model.multi_valued_features (--multi-valued-features) names ['tags'], which "
            "neither item_features ['price'] nor user_features [] lists") in err, err
    code, out, err = run(capsys, "train", "--data", tmp_path / "log.csv", "--items",
                         tmp_path / "items.csv", "--item-features", "colour",
                         "--split", "none", "--out", tmp_path / "r3")
    assert code == 2 and "--item-features names ['colour'], but --items" in err, err


def test_every_model_flag_reaches_the_config():
    """train's --epochs, --embedding-dim, --learning-rate, --batch-size and --seed win over
    --config's [model] (a test compared two runs that both ignored --learning-rate)."""
    import argparse

    from twotower.cli import _model_config
    flags = dict(epochs=3, embedding_dim=6, learning_rate=0.02, batch_size=77, seed=5)
    args = argparse.Namespace(preset="tutorial", split="none", **flags)
    cfg = _model_config(args, {"model": {"learning_rate": 0.5, "epochs": 9}})
    assert {k: getattr(cfg, k) for k in flags} == flags


def test_python_dash_m_twotower_is_the_command():
    """``python -m twotower`` failed with "No module named twotower.__main__"."""
    from twotower import __version__
    proc = subprocess.run([sys.executable, "-m", "twotower", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert __version__ in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "twotower", "recommend"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "usage: twotower recommend" in proc.stderr


def test_train_says_it_is_reading_a_file_that_takes_a_while(capsys, tmp_path, monkeypatch):
    """3M rows took 10 s to read with no word between "using column ..." and "data: ...";
    a line every 10 s names the file and its size (made 0.1 s here, the read slowed)."""
    import time

    import twotower.data
    import twotower.models._ticker as ticker
    data = tmp_path / "d.csv"
    data.write_text("user_id,item_id\n" + "".join(f"{u},{u % 7}\n" for u in range(50)))
    real_read, real_init = twotower.data.read_interactions, ticker.Ticker.__init__
    monkeypatch.setattr(twotower.data, "read_interactions",
                        lambda *a, **kw: time.sleep(0.35) or real_read(*a, **kw))
    monkeypatch.setattr(ticker.Ticker, "__init__", lambda self, what, every_s=10.0, *a, **kw:
                        real_init(self, what, 0.1, *a, **kw))
    code, _, err = run(capsys, "train", "--data", data, "--out", tmp_path / "run",
                       "--epochs", "1")
    assert code == 0, err
    assert f"twotower: reading --data: {data} (0 MB), 0 s so far" in err, err


def test_index_help_says_which_knobs_take_0_for_their_default(capsys):
    """`--nprobe 0` / `--nlist 0` are accepted (the default: nprobe untuned), but the help
    did not say 0 was allowed, nor the range of the knobs that refuse it."""
    code, out, _ = run(capsys, "index", "--help")
    assert code == 0
    text = " ".join(out.split())  # argparse wraps the help
    assert "--nprobe NPROBE ivf: lists scanned per query, at most --nlist (default: tuned " \
           "to --target-recall; 0: max(32, nlist / 32), not tuned)" in text, text
    assert "(default, or 0: min(4 sqrt(n), n / 39))" in text, text
    assert "candidates walked per query, at least 1" in text, text
    assert "graph neighbours per node, 2 to 512" in text, text


def test_train_names_the_feature_columns_it_used_and_their_values(tmp_path, capsys):
    """A run with side features said nothing of the columns it used nor how many feature
    values each gave; now a line per tower with features says them."""
    rng = np.random.default_rng(0)
    n_items = 1200
    pd.DataFrame({"user_id": [f"u{u}" for u in rng.integers(0, 60, 4000)],
                  "item_id": [f"i{i}" for i in rng.integers(0, n_items, 4000)]}).to_csv(
        tmp_path / "log.csv", index=False)
    pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)],
                  "brand": [f"b{i % 4}" for i in range(n_items)],
                  "year": [1990 + i % 30 for i in range(n_items)],
                  "tags": [f"t{i}|t{i + 1}" for i in range(n_items)]}).to_csv(
        tmp_path / "items.csv", index=False)
    (tmp_path / "c.json").write_text('{"model": {"objective": "softmax", "epochs": 1}}')
    argv = ["train", "--data", tmp_path / "log.csv", "--items", tmp_path / "items.csv",
            "--preset", "clicks", "--config", tmp_path / "c.json", "--split", "none",
            "--item-features", "brand,year,tags", "--multi-valued-features", "tags"]
    code, out, err = run(capsys, *argv, "--out", tmp_path / "r")
    assert code == 0, err
    line = next((x for x in out.splitlines() if x.startswith("item features: ")), out)
    # the log's items only (the items file lists every one of them here)
    seen = sorted(pd.read_csv(tmp_path / "log.csv")["item_id"].str[1:].astype(int).unique())
    tags = len({t for i in seen for t in (i, i + 1)})
    assert re.fullmatch(r"item features: brand \(4 values\), year \(\d+ values, quantile "
                        rf"bins\), tags \({tags:,} values, multi-valued\)", line), line
    assert tags > 1000 and "user features" not in out


def _cold_catalogue_files(d):
    """A log of 60 users over 20 items, users u0-u29 on genre A's a0-a9 only, u30-u59 on
    B's; the items file also lists newa (genre A, no interaction), nofeat (no genre) and
    newc (genre C, which no item with interactions has)."""
    rows = [f"u{u},{'a' if u < 30 else 'b'}{(u * 3 + j) % 10}" for u in range(60)
            for j in range(5)]
    (d / "log.csv").write_text("user_id,item_id\n" + "\n".join(rows) + "\n")
    items = [f"{g}{i},{g.upper()} {i},{g.upper()}" for g in "ab" for i in range(10)]
    (d / "items.csv").write_text("item_id,title,genres\n" + "\n".join(
        items + ["newa,New A,A", "nofeat,No features,", "newc,New C,C"]) + "\n")
    (d / "logged.csv").write_text("item_id,title,genres\n" + "\n".join(items) + "\n")
    (d / "c.toml").write_text('[model]\nquery_tower = "history"\nobjective = "softmax"\n'
                              'item_features = ["genres"]\nembedding_dim = 8\nepochs = 3\n'
                              'batch_size = 32\noptimizer = "adam"\nlearning_rate = 0.05\n')


def test_items_listed_without_interactions_are_served_from_their_features(tmp_path, capsys):
    """`train --items` dropped every listed item with no interaction: a new product with
    its genre could never be recommended or be similar. Now (catalogue "items", the
    default) such an item is served from its features, saved and loaded alike; one with
    no feature, or only a feature value no trained item has, is in no list; train says
    how many of each."""
    _cold_catalogue_files(tmp_path)
    code, out, err = run(capsys, "train", "--preset", "tutorial", "--data",
                         tmp_path / "log.csv", "--items", tmp_path / "items.csv", "--config",
                         tmp_path / "c.toml", "--split", "none", "--out", tmp_path / "r")
    assert code == 0, err
    assert ("catalogue: 23 items: 20 with training interactions, 1 cold (none: placed by "
            "their item features), 2 in no list (none, and no item feature value that a "
            "trained item has)") in out, out
    code, out, err = run(capsys, "similar", tmp_path / "r", "--item", "newa", "-k", "5",
                         "--json")
    assert code == 0, err
    assert all(it["item_id"].startswith("a") for it in json.loads(out)["items"]), out
    for item in ("nofeat", "newc"):
        code, out, err = run(capsys, "similar", tmp_path / "r", "--item", item)
        assert code == 2 and "has no training interactions and no trained item features" \
            in err, err
    code, out, err = run(capsys, "recommend", tmp_path / "r", "--all-users", "-k", "19",
                         "--json")
    assert code == 0, err
    rows = {r["user_id"]: [it["item_id"] for it in r["items"]]
            for r in map(json.loads, out.splitlines())}
    for user, items in rows.items():
        assert not {"nofeat", "newc"} & set(items), (user, items)
        assert "newa" in items, (user, items)
        b_first = next((n for n, i in enumerate(items) if i.startswith("b")), len(items))
        if int(user[1:]) < 30:  # an A user: the new A item above every B item
            assert items.index("newa") < b_first, (user, items)
    from twotower import TwoTower
    m = TwoTower.load(tmp_path / "r")
    assert m.untrained_items()[m.item_vocab.lookup(["newa", "nofeat", "newc"])].tolist() \
        == [False, True, True]
    scores, ids = m.recommend_ids(["u0", "u40"], k=19)
    assert [[i for i in r if i is not None] for r in ids] == [rows["u0"], rows["u40"]]


def test_catalogue_interactions_trains_as_before_on_the_log_s_items(tmp_path, capsys):
    """`--catalogue interactions` keeps the log's items only: the items file's other rows
    change nothing (the metrics and lists equal a run whose file lists the log's items
    alone)."""
    _cold_catalogue_files(tmp_path)
    saved = []
    for items, out_dir in (("items.csv", "r1"), ("logged.csv", "r2")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code, out, err = run(capsys, "train", "--preset", "tutorial", "--data",
                                 tmp_path / "log.csv", "--items", tmp_path / items,
                                 "--config", tmp_path / "c.toml", "--catalogue",
                                 "interactions", "--split", "random", "--out",
                                 tmp_path / out_dir)
        assert code == 0, err
        assert "catalogue:" not in err + out, out
        left = [str(w.message) for w in caught if "left out of the catalogue" in str(w.message)]
        assert len(left) == (items == "items.csv"), left
        saved.append(json.loads((tmp_path / out_dir / "eval.json").read_text()))
    assert saved[0] == saved[1] and saved[0]
    from twotower import TwoTower
    assert TwoTower.load(tmp_path / "r1").config.catalogue == "interactions"
    assert TwoTower.load(tmp_path / "r1").item_vocab.ids.tolist() == \
        TwoTower.load(tmp_path / "r2").item_vocab.ids.tolist()


@pytest.mark.parametrize("stream", [False, True], ids=["in-memory", "streamed"])
def test_an_items_row_of_empty_cells_is_not_counted_as_found(tmp_path, capsys, stream):
    """A row of --items whose title and genres are empty was counted among the items
    "found" (in memory; streamed, any row was), while the warning said the others had "no
    row there or only empty cells": the count and the words now agree, in both paths."""
    rows = [f"u{u},i{(u * 7 + j) % 40}" for u in range(60) for j in range(6)]
    (tmp_path / "log.csv").write_text("user_id,item_id\n" + "\n".join(rows) + "\n")
    (tmp_path / "items.csv").write_text("item_id,title,genres\n" + "".join(
        f"i{i},Item {i},Drama\n" for i in range(29)) + "i29,,Comedy\ni30, ,\n")
    argv = ["train", "--data", tmp_path / "log.csv", "--items", tmp_path / "items.csv",
            "--preset", "clicks", "--epochs", "1", "--out", tmp_path / "r"]
    with pytest.warns(UserWarning) as caught:
        code, _, err = run(capsys, *argv, *(["--stream"] if stream else ["--split", "none"]))
    assert code == 0, err
    said = [str(w.message) for w in caught if "items found in" in str(w.message)]
    # i29 (an empty title, a genre) is found, but shows as its id: the count says so
    assert said and said[0].startswith(
        f"--items: 30 of 40 items found in {tmp_path / 'items.csv'} (1 of them with an empty "
        "title, e.g. 'i29': they show as their ids); the other 10 (e.g. 'i30', 'i31') have "
        "no row there or only empty cells: no title or genres"), said


@pytest.mark.parametrize("stream", [False, True], ids=["in-memory", "streamed"])
def test_items_missing_from_an_items_file_of_other_column_names_lack_what_it_has(
        tmp_path, capsys, stream):
    """`train --stream --items` told the items missing from the file that they had "no
    title or genres" whatever columns the file had (the check was given the default
    names): it says what was read, as in memory (here a title, named `name`, and no
    genres column)."""
    rows = [f"u{u},i{(u * 7 + j) % 40}" for u in range(60) for j in range(6)]
    (tmp_path / "log.csv").write_text("user_id,item_id\n" + "\n".join(rows) + "\n")
    (tmp_path / "items.csv").write_text("sku,name\n" + "".join(
        f"i{i},Item {i}\n" for i in range(30)))
    argv = ["train", "--data", tmp_path / "log.csv", "--items", tmp_path / "items.csv",
            "--items-id-col", "sku", "--title-col", "name", "--preset", "clicks",
            "--epochs", "1", "--out", tmp_path / "r"]
    with pytest.warns(UserWarning) as caught:
        code, _, err = run(capsys, *argv, *(["--stream"] if stream else ["--split", "none"]))
    assert code == 0, err
    said = [str(w.message) for w in caught if "items found in" in str(w.message)]
    assert said == [f"--items: 30 of 40 items found in {tmp_path / 'items.csv'}; the other 10 "
                    "(e.g. 'i30', 'i31') have no row there or only empty cells: no title; "
                    "they show as their ids"], said
    # a file of ids alone: its own warning, and no count of items "found" by no column
    (tmp_path / "ids.csv").write_text("sku\n" + "".join(f"i{i}\n" for i in range(30)))
    argv[4:9] = [tmp_path / "ids.csv", "--items-id-col", "sku"]  # (no --title-col)
    argv[-1] = tmp_path / "r2"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run(capsys, *argv, *(["--stream"] if stream else ["--split", "none"]))
    assert code == 0, err
    said = [str(w.message) for w in caught if "--items" in str(w.message)]
    assert len(said) == 1 and "has no 'title' or 'genres' column" in said[0], said


def test_items_found_with_an_empty_title_are_said_when_every_item_is_found():
    """Every item has a row, but some an empty title (genres only): they show as their
    ids, as missing ones do, and were counted found without a word; the warning says so.
    With every title there, nothing is said."""
    from twotower.cli import _check_items_file
    ids = np.array(["a", "b", "c"], dtype=object)
    with pytest.warns(UserWarning, match=r"^--items: 3 of 3 items found in it\.csv \(2 of "
                                         r"them with an empty title, e\.g\. 'a', 'c': they "
                                         r"show as their ids\)$"):
        _check_items_file("it.csv", "item_id", np.ones(3, bool), ids,
                          untitled=np.array([True, False, True]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check_items_file("it.csv", "item_id", np.ones(3, bool), ids,
                          untitled=np.zeros(3, bool))
