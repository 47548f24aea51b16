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

