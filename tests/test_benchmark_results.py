"""Benchmark scripts never write over a kept (committed) results file by default, and
smoke runs do not write into benchmarks/results."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))


@pytest.fixture(autouse=True)
def _no_fetch(monkeypatch):
    """baselines.main without --data finds MovieLens 100k (a download where there is no
    copy): the tests stub its run, so a stand-in folder does."""
    import twotower.data.fetch
    monkeypatch.setattr(twotower.data.fetch, "fetch_movielens_100k",
                        lambda: Path("/nonexistent/ml-100k"))


def test_baselines_leaves_the_kept_results_and_writes_a_new_file(tmp_path, monkeypatch):
    # without --out it wrote benchmarks/results/baselines-ml100k.{json,md}, the committed
    # run, over; with --out DIR it wrote over DIR's files of those names
    import _results
    import baselines
    monkeypatch.setattr(baselines, "run", lambda data, seeds, splits: {"runs": []})
    monkeypatch.setattr(baselines, "summarise", lambda runs: {})
    monkeypatch.setattr(baselines, "markdown", lambda result: "# table\n")
    kept = {name: f"kept {name}" for name in ("baselines-ml100k.json", "baselines-ml100k.md")}
    for name, text in kept.items():
        (tmp_path / name).write_text(text)
    assert baselines.main(["--out", str(tmp_path)]) == 0
    for name, text in kept.items():
        assert (tmp_path / name).read_text() == text
    new = sorted(p.name for p in tmp_path.glob("baselines-ml100k-*.json"))
    assert len(new) == 1 and re.fullmatch(r"baselines-ml100k-\d{8}-\d{6}\.json", new[0])
    # the default folder is benchmarks/results (here a stand-in), again with a new name
    results = tmp_path / "results"
    monkeypatch.setattr(_results, "RESULTS", results)
    for name, text in kept.items():
        results.mkdir(exist_ok=True)
        (results / name).write_text(text)
    assert baselines.main([]) == 0
    assert all((results / n).read_text() == t for n, t in kept.items())
    assert len(list(results.glob("baselines-ml100k-*.md"))) == 1


def test_a_result_file_already_there_stops_the_run_before_it_starts(tmp_path, monkeypatch):
    import baselines
    ran = []
    monkeypatch.setattr(baselines, "run", lambda *a: ran.append(1) or {"runs": []})
    monkeypatch.setattr(baselines, "summarise", lambda runs: {})
    monkeypatch.setattr(baselines, "markdown", lambda result: "# table\n")
    monkeypatch.setattr(baselines, "stamp", lambda: "20990101-000000")
    (tmp_path / "baselines-ml100k-20990101-000000.md").write_text("kept")
    with pytest.raises(SystemExit) as stop:
        baselines.main(["--out", str(tmp_path)])
    msg = str(stop.value)
    assert "baselines-ml100k-20990101-000000.md exists" in msg and "--force" in msg, msg
    assert not ran and (tmp_path / "baselines-ml100k-20990101-000000.md").read_text() == "kept"
    assert baselines.main(["--out", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "baselines-ml100k-20990101-000000.md").read_text() == "# table\n"


def test_baselines_finds_movielens_as_the_product_does(tmp_path, monkeypatch):
    """Without --data it read ../shared/datasets/ml-100k beside the checkout, a folder of
    one machine ('MovieLens 100k directory ... has no u.data' anywhere else); it now finds
    the data as quality.py and tune.py do: $ML100K, else TWOTOWER_ML100K_DIR, the cache or
    a download (fetch_movielens_100k)."""
    import baselines

    import twotower.data.fetch
    got = []
    monkeypatch.setattr(baselines, "run", lambda data, seeds, splits: got.append(data)
                        or {"runs": []})
    monkeypatch.setattr(baselines, "summarise", lambda runs: {})
    monkeypatch.setattr(baselines, "markdown", lambda result: "# table\n")
    monkeypatch.setattr(twotower.data.fetch, "fetch_movielens_100k",
                        lambda: tmp_path / "fetched")
    monkeypatch.delenv("ML100K", raising=False)
    assert baselines.main(["--out", str(tmp_path / "a")]) == 0
    assert got == [tmp_path / "fetched"]
    assert baselines.main(["--out", str(tmp_path / "b"), "--data", "/some/ml-100k"]) == 0
    assert got[-1] == Path("/some/ml-100k")


def test_a_smoke_run_writes_to_a_temporary_folder(tmp_path, capsys):
    from _results import RESULTS, claim, out_dir
    d = out_dir(None, smoke=True, name="search")
    try:
        assert d.is_dir() and RESULTS not in d.parents and d != RESULTS
        assert str(d) in capsys.readouterr().err
    finally:
        d.rmdir()
    assert out_dir(tmp_path / "x", smoke=True) == tmp_path / "x"  # --out wins
    assert out_dir(None) == RESULTS
    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"r\.json exists .* another --tag, or --force"):
        claim(tmp_path / "r.json", hint="--tag")
    claim(tmp_path / "r.json", force=True)
    claim(tmp_path / "absent.json")


_WRITES = re.compile(r"\.write_text\(|\.write_bytes\(|savefig\(|plot_recall_curves\(|"
                     r"open\([^)]*[\"']w")


@pytest.mark.parametrize("script", sorted(p.relative_to(BENCH).as_posix()
                                          for p in [*BENCH.glob("*.py"),
                                                    *BENCH.glob("probes/*.py")]
                                          if not p.name.startswith("_")))
def test_every_script_that_writes_files_goes_through_the_results_guard(script):
    """A contract over benchmarks/ and benchmarks/probes/: a script that writes a file names
    it through ``_results`` (``out_dir``/``claim``), or writes only where its caller says
    (a required --out). New scripts are held to it too."""
    text = (BENCH / script).read_text()
    if not _WRITES.search(text):
        return
    own_out = re.search(r"add_argument\(\"--out\", required=True", text)
    guarded = re.search(r"from _results import .*\b(claim|results_log)\b", text) is not None
    assert guarded or own_out, (
        f"benchmarks/{script} writes files without _results.claim: a rerun can overwrite a "
        "committed result")
