"""benchmarks/search.py's command line."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.parametrize("argv, said", [
    (["--catalogues", "clustered,clustred"], "--catalogues: unknown 'clustred'"),
    (["--ann", "hnsw,flat"], "--ann: unknown 'flat'"),
])
def test_an_unknown_catalogue_or_ann_kind_stops_the_run_before_it_starts(
        argv, said, tmp_path, monkeypatch, capsys):
    """They were a KeyError once the run reached them: after the GEMM references, the
    hot path and every case before (an hour at 1M items)."""
    import search
    monkeypatch.setattr(search, "gemm_sample", lambda *a: pytest.fail("measured first"))
    with pytest.raises(SystemExit) as stop:
        search.main([*argv, "--out", str(tmp_path / "r")])
    assert stop.value.code == 2 and said in capsys.readouterr().err
    assert not (tmp_path / "r").exists()



def test_a_million_item_case_without_its_faiss_reference_is_reported_not_judged():
    """Above --refs-max the run measures no faiss IndexFlatIP, and goals() read
    case["faiss_flat"] for the 1M-item goal: a KeyError at the end of the run, before
    the results were written (e.g. --sizes 1000000 --refs-max 100000)."""
    import search
    exact = {"exclude_overhead": 0.05, "batch_qps": 900.0, "gflops": 60.0,
             "frac_gemm_peak": 0.6}
    res = {"gemm_peak_gflops": 100.0, "cases": [{
        "catalogue": "clustered", "n": 1_000_000, "d": 64, "exact": exact,
        "exact_full_scan": {**exact, "batch_qps": 300.0}}]}
    rows = {r["goal"]: r for r in search.goals(res)}
    faiss_row = rows["exact batch 1024 >= faiss IndexFlatIP (clustered N=1,000,000 d=64)"]
    assert faiss_row["pass"] is None and "--refs-max" in faiss_row["value"]
    # with the reference, judged as before
    res["cases"][0]["faiss_flat"] = {"batch_qps": 250.0}
    rows = {r["goal"]: r for r in search.goals(res)}
    assert rows["exact batch 1024 >= faiss IndexFlatIP (clustered N=1,000,000 d=64)"][
        "pass"] is True


@pytest.mark.parametrize("argv, said", [
    (["--sizes", "1k"], "--sizes: expected whole numbers separated by commas"),
    (["--dims", "64.0"], "--dims: expected whole numbers"),
    (["--sizes", "0"], "--sizes: every value must be at least 1"),
])
def test_sizes_that_are_not_whole_numbers_are_a_usage_error(argv, said, tmp_path,
                                                            monkeypatch, capsys):
    """--sizes 1k was a raw ValueError traceback from int()."""
    import search
    monkeypatch.setattr(search, "gemm_sample", lambda *a: pytest.fail("measured first"))
    with pytest.raises(SystemExit) as stop:
        search.main([*argv, "--out", str(tmp_path / "r")])
    assert stop.value.code == 2 and said in capsys.readouterr().err
