"""Bad command-line input: one clear line naming the flag or file, exit status 2, never a
traceback (each case fails before any training)."""

import pytest

from tests.cli_run import run


@pytest.fixture
def data(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("user_id,item_id\n1,2\n1,3\n2,2\n2,4\n")
    return p


def _train(tmp_path, data, *extra):
    return ("train", "--data", data, "--out", tmp_path / "run", "--epochs", "1", *extra)


@pytest.mark.parametrize("body, line", [('1,"2\n1,3\n', 2), ('1,2\n3,4\n1,"2\n1,3\n', 4)])
def test_unclosed_quote_names_the_file_and_line(capsys, tmp_path, body, line):
    """pandas' "EOF inside string starting at row 3" counts records, not lines."""
    bad = tmp_path / "q.csv"
    bad.write_text("user_id,item_id\n" + body)
    for argv in (("train", "--data", bad, "--out", tmp_path / "run"),
                 ("train", "--data", tmp_path / "ok.csv", "--out", tmp_path / "run",
                  "--items", bad)):
        (tmp_path / "ok.csv").write_text("user_id,item_id\n1,2\n")
        code, _, err = run(capsys, *argv)
        assert code == 2 and "malformed CSV" in err and "q.csv" in err, err
        assert f"a quote opened on line {line} is never closed" in err, err


@pytest.mark.parametrize("sep", ["\n", "\r", '"'])
def test_line_end_separator_refused(capsys, tmp_path, data, sep):
    code, _, err = run(capsys, *_train(tmp_path, data, "--sep", sep))
    assert code == 2 and "--sep" in err, err


def test_separator_hint_names_the_comma(capsys, tmp_path, data):
    code, _, err = run(capsys, *_train(tmp_path, data, "--sep", ";"))
    assert code == 2 and "separated by ','" in err and "--sep" in err, err


@pytest.mark.parametrize("flag", ["--user-col", "--item-col", "--rating-col", "--time-col"])
def test_empty_column_name_refused(capsys, tmp_path, data, flag):
    code, _, err = run(capsys, *_train(tmp_path, data, flag, ""))
    assert code == 2 and flag in err, err


@pytest.mark.parametrize("flag", ["--items-id-col", "--title-col", "--genres-col"])
def test_items_columns_without_items_refused(capsys, tmp_path, data, flag):
    code, _, err = run(capsys, *_train(tmp_path, data, flag, "x"))
    assert code == 2 and flag in err and "--items" in err, err


def test_duplicate_json_key_refused(capsys, tmp_path, data):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"epochs": 1, "epochs": 2}')
    code, _, err = run(capsys, "train", "--data", data, "--out", tmp_path / "run",
                       "--config", cfg)
    assert code == 2 and "'epochs'" in err and "twice" in err and "c.json" in err, err


def test_file_setting_named_where_its_value_is(capsys, tmp_path, data):
    cfg = tmp_path / "c.toml"
    cfg.write_text('objective = "softmax"\n')
    code, _, err = run(capsys, "train", "--data", data, "--out", tmp_path / "run",
                       "--config", cfg)
    assert code == 2, err
    assert f"got objective (--config {cfg} [model]) 'softmax'" in err, err
    assert f"by objective (--config" not in err, err


@pytest.mark.parametrize("argv", [("train", "--epoch", "1"), ("tutorial", "--data", "x")])
def test_abbreviated_flag_refused(capsys, tmp_path, data, argv):
    cmd, *rest = argv
    extra = ("--data", data, "--out", tmp_path / "run") if cmd == "train" else ()
    code, _, err = run(capsys, cmd, *extra, *rest)
    assert code == 2 and "unrecognized arguments" in err and rest[0] in err, err


@pytest.mark.parametrize("argv", [
    ("recommend", "RUN", "--user", "1", "--out", ""),
    ("evaluate", "RUN", "--json", ""),
    ("train", "--data", "D", "--out", "O", "--config", ""),
    ("train", "--out", "O", "--data", ""),  # was read as '.': "is a directory"
    ("train", "--data", "D", "--out", "O", "--checkpoint", ""),
])
def test_empty_path_refused(capsys, argv):
    code, _, err = run(capsys, *argv)
    flag = argv[-2]
    assert code == 2 and flag in err and "file or directory name" in err, err


def test_empty_run_directory_refused(capsys):
    code, _, err = run(capsys, "similar", "", "--item", "1")  # was read as '.'
    assert code == 2 and "argument run" in err and "file or directory name" in err, err


def test_recommend_json_with_out_refused(capsys, tmp_path):
    code, _, err = run(capsys, "recommend", tmp_path / "nope", "--user", "1", "--json",
                       "--out", tmp_path / "r.jsonl")
    assert code == 2 and "--json" in err and "--out" in err, err


@pytest.mark.parametrize("flag", ["--user-col", "--item-col", "--sep"])
def test_evaluate_test_data_flags_need_test_data(capsys, tmp_path, flag):
    code, _, err = run(capsys, "evaluate", tmp_path / "nope", flag, ";")
    assert code == 2 and flag in err and "--test-data" in err, err


@pytest.mark.parametrize("flag", ["--json", "--plot", "--plot-loss"])
def test_evaluate_output_directory_refused_before_the_work(capsys, tmp_path, flag):
    code, _, err = run(capsys, "evaluate", tmp_path / "nope", flag, tmp_path)
    assert code == 2 and flag in err and "is a directory" in err, err


def test_train_plot_loss_of_no_image_format_refused_before_training(capsys, tmp_path, data):
    code, _, err = run(capsys, *_train(tmp_path, data, "--plot-loss", tmp_path / "l.csv"))
    assert code == 2 and "--plot-loss" in err and "'.csv' is not an image format" in err, err
    assert not (tmp_path / "run").exists()


def test_train_plot_loss_directory_refused_before_training(capsys, tmp_path, data):
    code, _, err = run(capsys, *_train(tmp_path, data, "--plot-loss", tmp_path))
    assert code == 2 and "--plot-loss" in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
@pytest.mark.parametrize("command, flag, name", [
    ("train", "--plot-loss", "l.png"), ("evaluate", "--plot", "p.png"),
    ("evaluate", "--json", "e.json"), ("evaluate", "--plot-loss", "l.png"),
    ("recommend", "--out", "r.csv")])
def test_an_output_that_cannot_be_written_is_refused_before_the_work(
        capsys, tmp_path, data, where, command, flag, name):
    """An unwritable --plot-loss failed after training (the run saved, then exit status 2
    with the bare errno text); a folder that is a file read "File exists". Now refused
    first, naming the flag and why."""
    if where == "proc":  # a folder in which no file can be made, even by root
        import os
        if not os.path.isdir("/proc/self"):
            pytest.skip("no /proc here")
        path, why = f"/proc/{name}", "files cannot be made in /proc"
    else:
        path, why = data / name, f"{data} is not a directory"
    argv = (_train(tmp_path, data, flag, path) if command == "train"
            else (command, tmp_path / "nope", flag, path)
            + (("--all-users",) if command == "recommend" else ()))
    code, _, err = run(capsys, *argv)
    assert code == 2 and f"{flag}: cannot write {path}: {why}" in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, needle", [
    (["index", "{run}", "--kind", "hnsw", "--ef-search", "0"], "--ef-search must be between 1"),
    (["index", "{run}", "--kind", "hnsw", "--hnsw-m", "1"], "--hnsw-m must be between 2"),
    (["recommend", "{run}", "--user", "1", "-k", "0"], "-k must be between 1 and 1682"),
    (["similar", "{run}", "--item", "1", "-k", "0"], "-k must be between 1 and 1681"),
    (["tutorial", "--epochs", "0"], "--epochs must be between 1"),
    (["tutorial", "--seed", "-1"], "--seed must be between 0"),
    (["serve", "{run}", "--port", "70000"], "--port must be an integer between 0 and 65535"),
    (["serve", "{run}", "--workers", "0"], "--workers must be an integer >= 1"),
    (["serve", "{run}", "--max-k", "0"], "--max-k must be >= 1"),
])
def test_errors_name_the_flag_not_the_library_setting(capsys, tutorial_run, argv, needle):
    # they said IndexConfig.ef_search, `k`, model.epochs, `port`: names the user never typed
    _, rundir = tutorial_run
    code, _, err = run(capsys, *[a.format(run=rundir) for a in argv])
    assert code == 2 and f"twotower: error: {needle}" in err, err


def test_users_file_errors_name_its_line(capsys, tutorial_run, tmp_path):
    _, rundir = tutorial_run
    f = tmp_path / "users.txt"
    f.write_text("1\n\n2\n99999\n")  # the blank line counts
    code, _, err = run(capsys, "recommend", rundir, "--users", f)
    assert code == 2 and f"--users: {f}, line 4: unknown user id '99999'" in err, err
    f.write_text("user_id\n1\n2\n")
    code, _, err = run(capsys, "recommend", rundir, "--users", f)
    assert code == 2 and "line 1: unknown user id 'user_id'" in err and "no header" in err, err


@pytest.mark.parametrize("text, needle", [
    ('epochs = "1"\n', "must be an integer, got '1'"),
    ("epochs = 0\n", "must be between 1 and"),
])
def test_a_flag_does_not_hide_a_bad_value_in_the_config_file(capsys, tmp_path, data, text,
                                                              needle):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    code, _, err = run(capsys, *_train(tmp_path, data, "--config", cfg))  # --epochs 1 given
    assert code == 2 and f"model.epochs (--config {cfg} [model]) {needle}" in err, err
    assert not (tmp_path / "run").exists()


def test_a_bad_coordinator_in_the_file_is_not_blamed_on_the_flag(capsys, tmp_path, data):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[distribution]\ncoordinator_address = "nohost"\n')
    code, _, err = run(capsys, *_train(tmp_path, data, "--config", cfg))
    assert code == 2 and f"coordinator_address (--config {cfg} [distribution]) must be" in err
    assert "--coordinator)" not in err, err


@pytest.mark.parametrize("flags, needle", [
    (("--coordinator", "10.9.9.9:29500", "--process-id", "0"),
     "coordinator_address (--coordinator) is set but num_processes is 1"),
    (("--process-id", "1"), "process_id (--process-id) is 1 but num_processes is 1"),
    (("--num-processes", "1", "--coordinator", "10.9.9.9:29500"),
     "coordinator_address (--coordinator) is set but num_processes is 1"),
])
def test_multi_host_flags_without_num_processes_are_refused(capsys, tmp_path, data, flags,
                                                            needle):
    """--coordinator without --num-processes trained on one host and exited 0, saying
    nothing (each host of a job template missing it trained alone, all writing --out);
    --process-id 1 alone was 'must be between 0 and 0'."""
    code, _, err = run(capsys, *_train(tmp_path, data, *flags))
    assert code == 2 and needle in err and "--num-processes" in err, err
    assert not (tmp_path / "run").exists()


def test_several_processes_need_a_process_id_and_one_process_reads_none(capsys, tmp_path,
                                                                         data):
    """--num-processes 2 without --process-id made every process process 0: each waited out
    --join-timeout (300 s) before a word; --process-id 0 or --join-timeout with one process
    did nothing, in silence (--shard-tables said so)."""
    code, _, err = run(capsys, *_train(tmp_path, data, "--coordinator", "127.0.0.1:1",
                                       "--num-processes", "2", "--devices", "2"))
    assert code == 2 and err.strip() == (
        "twotower: error: --num-processes (2): give each process its own --process-id (0 .. "
        "1; 0 on the coordinator's host)"), err
    cfg = tmp_path / "c.toml"
    cfg.write_text('[distribution]\ncoordinator_address = "127.0.0.1:1"\nnum_processes = 3\n')
    code, _, err = run(capsys, *_train(tmp_path, data, "--config", cfg, "--devices", "3"))
    assert code == 2 and f"--config {cfg} [distribution] num_processes (3): give each " in err
    assert not (tmp_path / "run").exists()
    code, _, err = run(capsys, *_train(tmp_path, data, "--process-id", "0",
                                       "--join-timeout", "5"))
    assert code == 0, err
    for flag, value in (("--process-id", "0"), ("--join-timeout", "5.0")):
        assert (f"twotower: warning: {flag} ({value}) is not read: one process (a multi-host "
                "run needs --num-processes 2 or more)") in err, err


def test_blocks_refuse_a_model_they_cannot_train_before_the_data_is_read(capsys, tmp_path):
    """`--shard-tables blocks` with a sampled-softmax (or history) model was refused only
    after the data scan and the model build (minutes on a large file): the settings
    alone decide it. The file's bad line 3 is never reached."""
    bad = tmp_path / "d.csv"
    bad.write_text("user_id,item_id\n1,2\n1,2,3\n")
    for preset, why in (("clicks", "objective 'sampled_softmax' reads rows outside each "
                                   "example's own user and item (only 'mse' does not)"),
                        ("default", "query_tower 'id+history' reads rows outside the batch "
                                    "(histories)")):
        code, _, err = run(capsys, "train", "--data", bad, "--out", tmp_path / "run",
                           "--preset", preset, "--devices", "2", "--model-parallel", "2",
                           "--shard-tables", "blocks")
        assert code == 2 and err.strip().splitlines()[-1] == (
            "twotower: error: distribution.shard_tables 'blocks' trains each example on the "
            "device that holds its user and item rows, with row-wise updates; not here: "
            f"{why}. Use 'rows' or 'columns'"), err
    assert not (tmp_path / "run").exists()


def test_version_and_plain_help(capsys):
    from twotower import __version__
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"twotower {__version__}"
    code, out, _ = run(capsys, "-h")
    assert code == 0 and "``" not in out and "COMMAND -h" in out
    for cmd in ("index", "serve", "similar", "tutorial"):
        code, out, _ = run(capsys, cmd, "-h")
        assert code == 0 and "(default" in out, cmd


@pytest.mark.parametrize("flag", ["--data", "--items", "--config"])
def test_a_directory_given_for_a_file_is_called_one(capsys, tmp_path, data, flag):
    given = () if flag == "--data" else ("--data", data)  # (a flag is given once)
    argv = ("train", *given, "--out", tmp_path / "run", flag, tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 2 and f"{flag}: {tmp_path} is a directory; expected a file" in err, err


def test_a_pairwise_objective_on_the_default_preset_warns_of_its_batch(capsys, tmp_path, data,
                                                                      recwarn):
    # batch_size 64 counts users for multinomial; a reviewer's sampled_softmax run took
    # 1,200 steps an epoch with it, unsaid
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\nobjective = "sampled_softmax"\nitem_bias = false\n')
    run(capsys, "train", "--data", data, "--out", tmp_path / "r", "--config", cfg,
        "--epochs", "1")
    assert any("batch_size 64, chosen for 'multinomial'" in str(w.message) for w in recwarn)
    recwarn.clear()
    run(capsys, "train", "--data", data, "--out", tmp_path / "r2", "--config", cfg,
        "--epochs", "1", "--batch-size", "512")
    assert not any("chosen for 'multinomial'" in str(w.message) for w in recwarn)


def test_serve_refuses_an_empty_host(capsys, tutorial_run):
    _, rundir = tutorial_run
    code, _, err = run(capsys, "serve", rundir, "--host", "")
    assert code == 2 and "--host: expected an address" in err, err


def test_index_of_what_is_no_run_says_so(capsys, tmp_path):
    """`twotower index FILE` said "choose a new or empty directory for the run", advice for
    a save, not for a command that reads a run."""
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    for name, needle in (("afile", "not a model directory"),
                         ("nope", "model directory not found"),
                         ("empty", "is not a twotower model directory (no format.json)")):
        code, _, err = run(capsys, "index", tmp_path / name, "--kind", "hnsw")
        assert code == 2 and needle in err and "choose a new" not in err, err


def test_time_unit_flag_is_checked_and_read(capsys, tmp_path):
    """--time-unit: one of auto, s, ms, us, ns, yyyymmdd (any case), for a --data file;
    millisecond times are read as such (they were kept as seconds), said on stderr, and the
    run records the unit given."""
    import json
    data = tmp_path / "ms.csv"
    data.write_text("user_id,item_id,rating,timestamp\n" + "".join(
        f"u{u},i{i},{1 + (u + i) % 5},{1700000000000 + 1000 * (u * 7 + i)}\n"
        for u in range(8) for i in range(6)))
    code, _, err = run(capsys, *_train(tmp_path, data, "--time-unit", "days"))
    assert code == 2 and "--time-unit" in err and "'days'" in err, err
    assert "'auto', 's', 'ms', 'us', 'ns', 'yyyymmdd'" in err and "Traceback" not in err, err
    code, _, err = run(capsys, "train", "--out", tmp_path / "ml", "--time-unit", "ms")
    assert code == 2 and "--time-unit: for a --data file" in err, err
    argv = _train(tmp_path, data, "--split", "temporal", "--preset", "tutorial")
    with pytest.warns(UserWarning, match="column 'timestamp': times read as milliseconds "
                                         "since 1970"):  # (on stderr, out of pytest)
        code, _, err = run(capsys, *argv)
    assert code == 0, err
    import warnings
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        code, _, err = run(capsys, *argv[:4], tmp_path / "run2", *argv[5:], "--time-unit", "MS")
    assert code == 0, err
    assert not [w for w in seen if "times read as" in str(w.message)]
    saved = json.loads((tmp_path / "run2" / "config.json").read_text())
    assert saved["data"]["time_unit"] == "ms", saved["data"]
    # ISO 8601 times carry their own unit: a --time-unit for them is never read, refused
    # naming the column and what it holds (it was ignored without a word)
    iso = tmp_path / "iso.csv"
    iso.write_text("user_id,item_id,timestamp\n" + "".join(
        f"u{u},i{i},2024-03-{1 + i:02d}T10:00:00Z\n" for u in range(8) for i in range(6)))
    code, _, err = run(capsys, *_train(tmp_path, iso, "--time-unit", "ms"))
    assert code == 2 and "Traceback" not in err, err
    assert (f"{iso}, column 'timestamp': time_unit (--time-unit) ms is never read: the column "
            "holds ISO 8601 text (e.g. '2024-03-01T10:00:00Z')") in err, err
    # ...and with no time column read at all (--time-col none; a file without one)
    code, _, err = run(capsys, *_train(tmp_path, data, "--time-col", "none", "--time-unit", "s"))
    assert code == 2 and "Traceback" not in err, err
    assert (f"{data}: time_unit (--time-unit) s is never read: no time column is read") in err


@pytest.mark.parametrize("argv, needle", [
    (("recommend", "RUN", "--user", "1", "--user", "2"),
     "recommend: --user given twice ('1', then '2'): give it once; several users: --users"),
    (("recommend", "RUN", "--user", "1", "-k", "3", "-k", "5"), "-k given twice (3, then 5)"),
    (("similar", "RUN", "--item", "1", "--item=2"), "--item given twice ('1', then '2')"),
    (("evaluate", "RUN", "-k", "10", "20", "-k", "5"), "-k given twice (10 20, then 5)"),
    (("index", "RUN", "--kind", "hnsw", "--kind", "ivf"), "--kind given twice"),
    (("serve", "RUN", "--port", "1", "--port", "2"), "--port given twice (1, then 2)"),
    (("train", "--out", "O", "--epochs", "1", "--epochs", "5"), "--epochs given twice"),
])
def test_a_flag_given_twice_is_refused(capsys, argv, needle):
    """The second value replaced the first in silence: `--user 1 --user 2` listed user 2's
    items alone, `--epochs 1 --epochs 5` trained 5 epochs."""
    code, _, err = run(capsys, *argv)
    assert code == 2 and needle in err and "Traceback" not in err, err


def test_sep_with_no_text_file_to_read_is_refused(capsys, tmp_path):
    """--sep beside Parquet files (or MovieLens) was taken and did nothing, in silence."""
    import pandas as pd
    pq = tmp_path / "d.parquet"
    pd.DataFrame({"user_id": [1, 1, 2], "item_id": [2, 3, 2]}).to_parquet(pq)
    code, _, err = run(capsys, *_train(tmp_path, pq, "--sep", ";"))
    assert code == 2 and ("--sep (';') is the field separator of a CSV/TSV file, and "
                          f"--data {pq} is not one (Parquet has no separator)") in err, err
    code, _, err = run(capsys, *_train(tmp_path, pq, "--sep", ";", "--items", pq))
    assert code == 2 and f"neither --data {pq} nor --items {pq} is one" in err, err
    assert not (tmp_path / "run").exists()
    # evaluate's held-out file too (it was taken in silence there), before the run is read
    code, _, err = run(capsys, "evaluate", tmp_path / "run", "--test-data", pq, "--sep", ";")
    assert code == 2 and err.strip() == (
        f"twotower: error: --sep (';') is the field separator of a CSV/TSV file, and "
        f"--test-data {pq} is not one (Parquet has no separator): leave --sep out"), err


def test_an_items_file_and_a_log_both_without_the_default_item_column(capsys, tmp_path):
    """A shop's log and items file both name the id ``sku``: with no --item-col the error
    blamed --items alone and sent the user to --items-id-col, after which --data failed.
    It names --data's columns and --item-col, which names both files' id column."""
    (tmp_path / "log.csv").write_text("user_id,sku\nu1,S1\nu2,S2\n")
    (tmp_path / "products.csv").write_text("sku,title\nS1,One\nS2,Two\n")
    code, _, err = run(capsys, "train", "--data", tmp_path / "log.csv", "--items",
                       tmp_path / "products.csv", "--out", tmp_path / "run")
    assert code == 2 and "log.csv has no column 'item_id'" in err, err
    assert "['user_id', 'sku']" in err and "--item-col" in err, err


@pytest.mark.parametrize("preset", ["tutorial"])  # (clicks reads them since 2026-12-07)
def test_event_weights_on_a_preset_that_reads_none_say_which_flags_to_drop(capsys, tmp_path,
                                                                           preset):
    """--event-weights on a preset whose objective reads no weights: the advice was the
    library's ('set interaction_weights to 'none' and event_weights to {}'), settings the
    command line never set; it names the flags given."""
    (tmp_path / "shop.csv").write_text("user_id,item_id,event,rating\nu1,a,view,1\n"
                                       "u2,b,transaction,1\n")
    code, _, err = run(capsys, "train", "--data", tmp_path / "shop.csv", "--preset", preset,
                       "--event-col", "event", "--event-weights", "view=1,transaction=5",
                       "--out", tmp_path / "run")
    assert code == 2 and "is not read by objective 'mse'" in err, err
    assert "leave out --event-col and --event-weights" in err and "{}" not in err, err


@pytest.mark.parametrize("flags", [("--event-weights", "view=1,buy=10"),
                                   ("--interaction-weights", "event")])
def test_a_flag_over_half_of_the_config_files_event_pair_trains(capsys, tmp_path, flags):
    """A file's valid ``interaction_weights = "event"`` with its ``event_weights``: a flag
    over one of the two (new weights, or the same 'event' given again) was refused, the
    file's other half checked alone against the preset's ('model.event_weights ... is only
    read with interaction_weights 'event'')."""
    import json
    data = tmp_path / "e.csv"
    data.write_text("user_id,item_id,event\n" + "".join(
        f"{u},{i},{'buy' if (u + i) % 3 == 0 else 'view'}\n"
        for u in range(8) for i in range(u % 4, u % 4 + 5)))
    cfg = tmp_path / "c.toml"
    cfg.write_text('[model]\ninteraction_weights = "event"\n'
                   'event_weights = {view = 1, buy = 5}\n')
    code, _, err = run(capsys, *_train(tmp_path, data, "--preset", "clicks", "--config", cfg,
                                       "--event-col", "event", "--split", "none", *flags))
    assert code == 0, err
    model = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert model["interaction_weights"] == "event"
    assert model["event_weights"] == ({"view": 1.0, "buy": 10.0} if "view=1,buy=10" in flags
                                      else {"view": 1.0, "buy": 5.0})
    import shutil
    shutil.rmtree(tmp_path / "run")
    cfg.write_text('[model]\ninteraction_weights = "events"\n'  # a bad value still is one
                   'event_weights = {view = 1, buy = 5}\n')
    code, _, err = run(capsys, *_train(tmp_path, data, "--preset", "clicks", "--config", cfg,
                                       "--event-col", "event", "--interaction-weights",
                                       "event"))
    assert code == 2 and (f"model.interaction_weights (--config {cfg} [model]) must be one "
                          "of ['none', 'rating', 'event'], got 'events'") in err, err


@pytest.mark.parametrize("text, flags, needle", [
    ('model_parallel = "x"\n', ["--model-parallel", "1"],
     "model_parallel (--config {cfg} [distribution]) must be an integer, got 'x'"),
    ("data_parallel = -5\n", ["--devices", "1"],
     "data_parallel (--config {cfg} [distribution]) must be between 1 and 65536, got -5"),
    ("join_timeout_s = nan\n", ["--join-timeout", "5"],
     "join_timeout_s (--config {cfg} [distribution]) must be a finite number"),
    ('coordinator_address = "nohost"\n', ["--coordinator", "h:1", "--num-processes", "2",
                                          "--process-id", "1"],
     "coordinator_address (--config {cfg} [distribution]) must be 'host:port'"),
])
def test_a_flag_does_not_hide_a_bad_distribution_value_in_the_config_file(
        capsys, tmp_path, data, text, flags, needle):
    """As for [model] (dad794c): `model_parallel = "x"` in the file beside --model-parallel 1
    trained without a word; the file's value is checked on its own, then the flag wins."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[distribution]\n" + text)
    code, _, err = run(capsys, *_train(tmp_path, data, "--preset", "tutorial", "--config",
                                       cfg, *flags))
    assert code == 2 and needle.format(cfg=cfg) in err, err
    assert not (tmp_path / "run").exists()
