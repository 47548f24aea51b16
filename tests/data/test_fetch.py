"""fetch_movielens_100k: each source, the cache, and the combined failure message.

Nothing here touches the network: GroupLens is played by a loopback HTTP server and pip by a
tiny script that copies a fake wheel built in tmp_path.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from twotower.data import fetch
from twotower.data.fetch import MANIFEST_NAME, fetch_movielens_100k
from twotower.errors import ConfigError, FetchError

ML100K = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "ml-100k"
FILES = ("u.data", "u.item", "u.user", "u.genre", "u.occupation")


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("TWOTOWER_ML100K_DIR", raising=False)
    monkeypatch.delenv("TWOTOWER_CACHE_DIR", raising=False)


@pytest.fixture(scope="module")
def pristine() -> Path:
    from conftest import skip_without_movielens  # tests/conftest.py
    skip_without_movielens(FILES)
    return ML100K


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, data in files.items():
            zf.writestr(f"ml-100k/{name}", data)
    return path


@pytest.fixture(scope="module")
def zips(pristine, tmp_path_factory) -> dict[str, bytes]:
    """Bodies the fake GroupLens serves: good, tampered, truncated."""
    d = tmp_path_factory.mktemp("zips")
    files = {n: (pristine / n).read_bytes() for n in FILES}
    good = _zip(d / "good.zip", files).read_bytes()
    tampered = dict(files, **{"u.data": files["u.data"].replace(b"\t5\t", b"\t4\t", 1)})
    bad = _zip(d / "tampered.zip", tampered).read_bytes()
    return {"good": good, "tampered": bad, "truncated": good[: len(good) // 2]}


class _Server:
    """A loopback HTTP server; ``bodies`` maps a path to the bytes served (else 404)."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        self.hits: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                outer.hits.append(self.path)
                body = outer.bodies.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server(zips):
    srv = _Server()
    srv.bodies = {f"/{k}.zip": v for k, v in zips.items()}
    yield srv
    srv.close()


def _manifest(directory: Path) -> dict:
    return json.loads((directory / MANIFEST_NAME).read_text())


def _leftovers(cache_root: Path) -> list[str]:
    return sorted(p.name for p in cache_root.iterdir() if p.name != "ml-100k") \
        if cache_root.exists() else []


# ---------------------------------------------------------------------------------------------
# "dir"

def test_explicit_dir_is_used_in_place(pristine, tmp_path):
    assert fetch_movielens_100k(pristine, cache_dir=tmp_path, progress=False) == pristine


def test_env_dir_is_used(pristine, tmp_path, monkeypatch):
    monkeypatch.setenv("TWOTOWER_ML100K_DIR", str(pristine))
    assert fetch_movielens_100k(cache_dir=tmp_path, progress=False) == pristine


def test_explicit_dir_missing_file_names_dir_and_file(tmp_path):
    d = tmp_path / "copy"
    d.mkdir()
    (d / "u.data").write_text("1\t1\t5\t881250949\n")
    with pytest.raises(FetchError) as err:
        fetch_movielens_100k(d, cache_dir=tmp_path / "cache", progress=False)
    msg = str(err.value)
    assert str(d) in msg and "u.item" in msg and "TWOTOWER_ML100K_DIR" in msg


def test_explicit_dir_that_does_not_exist(tmp_path):
    with pytest.raises(FetchError, match="does not exist"):
        fetch_movielens_100k(tmp_path / "nope", cache_dir=tmp_path, progress=False)


def test_unknown_source_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="`sources`.*'ftp'"):
        fetch_movielens_100k(cache_dir=tmp_path, sources=["cache", "ftp"])


# ---------------------------------------------------------------------------------------------
# "grouplens"

def test_grouplens_zip_is_verified_cached_and_reused(server, pristine, tmp_path, capfd):
    before = len(server.hits)
    path = fetch_movielens_100k(cache_dir=tmp_path, grouplens_url=server.url("/good.zip"),
                                sources=["dir", "cache", "grouplens"])
    assert path == tmp_path / "ml-100k"
    for name in FILES:
        assert (path / name).read_bytes() == (pristine / name).read_bytes()
    manifest = _manifest(path)
    assert manifest["source"] == "grouplens"
    assert manifest["files"]["u.data"]["sha256"] == fetch.PRISTINE_SHA256["u.data"]
    assert _leftovers(tmp_path) == []
    err = capfd.readouterr().err
    assert "bytes" in err and "100%" in err and "(from grouplens)" in err
    # stderr is no terminal here (a log): whole lines, at most one per 10%, no carriage
    # returns (a log got 100 updates joined by \r on one line)
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.endswith("%)")]
    assert 2 <= len(lines) <= 11 and lines[-1].endswith("(100%)"), lines

    # Second call: served from the cache, no request made.
    again = fetch_movielens_100k(cache_dir=tmp_path, grouplens_url=server.url("/good.zip"),
                                 progress=False)
    assert again == path
    assert len(server.hits) == before + 1


def test_grouplens_tampered_file_fails_checksum(server, tmp_path):
    with pytest.raises(FetchError) as err:
        fetch_movielens_100k(cache_dir=tmp_path, grouplens_url=server.url("/tampered.zip"),
                             sources=["grouplens"], progress=False)
    msg = str(err.value)
    assert "grouplens:" in msg and "sha256 mismatch for u.data" in msg
    assert not (tmp_path / "ml-100k").exists() and _leftovers(tmp_path) == []


def test_grouplens_truncated_zip_fails(server, tmp_path):
    with pytest.raises(FetchError, match=r"grouplens: .*not a valid zip, truncated or corrupt"):
        fetch_movielens_100k(cache_dir=tmp_path, grouplens_url=server.url("/truncated.zip"),
                             sources=["grouplens"], progress=False)
    assert _leftovers(tmp_path) == []


def test_grouplens_http_404_fails(server, tmp_path):
    with pytest.raises(FetchError, match=r"grouplens: .*/missing\.zip: HTTP 404"):
        fetch_movielens_100k(cache_dir=tmp_path, grouplens_url=server.url("/missing.zip"),
                             sources=["grouplens"], progress=False)


def test_half_written_cache_is_ignored_and_replaced(server, pristine, tmp_path):
    stale = tmp_path / "ml-100k"
    stale.mkdir()
    (stale / "u.data").write_text("garbage\n")  # no manifest: an interrupted extraction
    with pytest.raises(FetchError, match=r"cache: no complete cache"):
        fetch_movielens_100k(cache_dir=tmp_path, sources=["cache"], progress=False)
    path = fetch_movielens_100k(cache_dir=tmp_path, grouplens_url=server.url("/good.zip"),
                                sources=["cache", "grouplens"], progress=False)
    assert (path / "u.data").read_bytes() == (pristine / "u.data").read_bytes()
    assert _leftovers(tmp_path) == []


def test_cache_file_changed_after_manifest_is_rejected(server, tmp_path):
    path = fetch_movielens_100k(cache_dir=tmp_path, grouplens_url=server.url("/good.zip"),
                                sources=["grouplens"], progress=False)
    with open(path / "u.item", "ab") as f:
        f.write(b"x")
    with pytest.raises(FetchError, match=r"cache: .*u\.item differs from its manifest"):
        fetch_movielens_100k(cache_dir=tmp_path, sources=["cache"], progress=False)


def test_a_damaged_cache_fetched_again_says_why(server, pristine, tmp_path, capfd):
    """A damaged cache was downloaded again with no word of why: to a user it was a
    download every time, the cache seemingly never used."""
    path = fetch_movielens_100k(cache_dir=tmp_path, grouplens_url=server.url("/good.zip"),
                                sources=["grouplens"], progress=False)
    with open(path / "u.item", "ab") as f:
        f.write(b"x")
    capfd.readouterr()
    fetch_movielens_100k(cache_dir=tmp_path, grouplens_url=server.url("/good.zip"))
    err = capfd.readouterr().err
    assert re.search(rf"twotower: cache not used: cache file {re.escape(str(path))}/u\.item "
                     r"differs from its manifest\ntwotower: downloading", err), err
    assert (path / "u.item").read_bytes() == (pristine / "u.item").read_bytes()
    fetch_movielens_100k(cache_dir=tmp_path / "new", grouplens_url=server.url("/good.zip"))
    assert "cache not used" not in capfd.readouterr().err  # no cache yet: nothing to say


def test_hand_edited_manifest_entry_is_an_incomplete_cache(server, pristine, tmp_path):
    path = fetch_movielens_100k(cache_dir=tmp_path, grouplens_url=server.url("/good.zip"),
                                sources=["grouplens"], progress=False)
    manifest = json.loads((path / ".twotower-manifest.json").read_text())
    manifest["files"]["u.data"] = 1979173
    (path / ".twotower-manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FetchError, match=r"cache: .*entry 'u\.data' is not"):
        fetch_movielens_100k(cache_dir=tmp_path, sources=["cache"], progress=False)
    path = fetch_movielens_100k(cache_dir=tmp_path, grouplens_url=server.url("/good.zip"),
                                sources=["cache", "grouplens"], progress=False)
    assert (path / "u.data").read_bytes() == (pristine / "u.data").read_bytes()


def test_cache_dir_from_env(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TWOTOWER_CACHE_DIR", str(tmp_path / "envcache"))
    path = fetch_movielens_100k(grouplens_url=server.url("/good.zip"),
                                sources=["grouplens"], progress=False)
    assert path == tmp_path / "envcache" / "ml-100k"


# ---------------------------------------------------------------------------------------------
# "wheel"

INTER = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
         "196\t1\t3\t881250949\n186\t50\t5.0\t891717742\n22\t3\t1\t878887116\n")
ITEM = ("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Children's Comedy\n"
        "50\tStar Wars\t1977\tAction Adventure Romance Sci-Fi War\n"
        "3\tMisérables, Les\t1995\tDrama Musical\n"
        "4\tLand Before Time III: The Time of the Great Giving (1995)\tV\tAnimation\n"
        "267\tunkonwn\tunkonwn\tunknown\n")
USER = ("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "196\t49\tM\twriter\t55105\n186\t39\tF\texecutive\t00000\n22\t25\tM\twriter\t40206\n")

# Copies the wheel named by argv[1] into the directory after "-d", as pip download would.
FAKE_PIP = ("import shutil, sys; a = sys.argv[1:]; "
            "shutil.copy(a[0], a[a.index('-d') + 1] + '/recbole-1.2.1-py3-none-any.whl')")


@pytest.fixture
def fake_wheel(tmp_path) -> Path:
    wheel = tmp_path / "wheelsrc" / "recbole.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        for ext, text in (("inter", INTER), ("item", ITEM), ("user", USER)):
            zf.writestr(f"recbole/dataset_example/ml-100k/ml-100k.{ext}", text.encode("utf-8"))
    return wheel


def _pip(wheel: Path) -> list[str]:
    return [sys.executable, "-c", FAKE_PIP, str(wheel)]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_wheel_is_converted_to_grouplens_layout(fake_wheel, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "RECBOLE_WHEEL_SHA256", _sha(fake_wheel))
    path = fetch_movielens_100k(cache_dir=tmp_path / "c", sources=["wheel"],
                                pip_command=_pip(fake_wheel), progress=False)
    assert _manifest(path)["source"] == "wheel"
    assert (path / "u.data").read_text().splitlines() == [
        "196\t1\t3\t881250949", "186\t50\t5\t891717742", "22\t3\t1\t878887116"]
    items = [line.split("|") for line in (path / "u.item").read_text("latin-1").splitlines()]
    assert all(len(row) == 24 for row in items)
    by_id = {row[0]: row for row in items}
    genres = list(fetch.GENRES)

    def flagged(row):
        return [g for g, f in zip(genres, row[5:]) if f == "1"]

    assert by_id["1"][1:3] == ["Toy Story (1995)", "01-Jan-1995"]
    assert flagged(by_id["1"]) == ["Animation", "Children's", "Comedy"]
    assert by_id["50"][1] == "Star Wars (1977)"
    assert flagged(by_id["50"]) == ["Action", "Adventure", "Romance", "Sci-Fi", "War"]
    assert by_id["3"][1] == "Misérables, Les (1995)"  # read back as latin-1
    assert by_id["4"][1:3] == ["Land Before Time III: The Time of the Great Giving (1995) (V)",
                               "01-Jan-1995"]
    assert by_id["267"][1:3] == ["unknown", ""] and flagged(by_id["267"]) == ["unknown"]
    assert (path / "u.user").read_text().splitlines()[1] == "186|39|F|executive|00000"
    assert (path / "u.genre").read_text().splitlines()[15] == "Sci-Fi|15"
    assert (path / "u.occupation").read_text().split() == ["executive", "writer"]


def test_wheel_read_by_movielens_reader(fake_wheel, tmp_path, monkeypatch):
    from twotower.data import read_movielens_100k

    import twotower.data.movielens as movielens
    monkeypatch.setattr(fetch, "RECBOLE_WHEEL_SHA256", _sha(fake_wheel))
    path = fetch_movielens_100k(cache_dir=tmp_path / "c", sources=["wheel"],
                                pip_command=_pip(fake_wheel), progress=False)
    # the fake wheel's few rows, as the reader checks a copy's size against the real one's
    monkeypatch.setattr(movielens, "N_RATINGS", 3)
    monkeypatch.setattr(movielens, "N_ITEMS", (path / "u.item").read_text("latin-1").count("\n"))
    data = read_movielens_100k(path)
    assert len(data) == 3
    assert "Sci-Fi" in data.item_info.loc[data.item_vocab.index_of(50), "genres"]


def test_a_slow_pip_download_shows_progress(fake_wheel, tmp_path, monkeypatch, capfd):
    """pip's output is captured (for the error message): a download of up to 10 minutes
    said nothing after its first line."""
    monkeypatch.setattr(fetch, "RECBOLE_WHEEL_SHA256", _sha(fake_wheel))
    monkeypatch.setattr(fetch, "PROGRESS_EVERY_S", 0.05)
    slow = [sys.executable, "-c", "import time, sys; time.sleep(0.4); exec(sys.argv.pop(1))",
            FAKE_PIP, str(fake_wheel)]
    fetch_movielens_100k(cache_dir=tmp_path / "c", sources=["wheel"], pip_command=slow)
    err = capfd.readouterr().err
    assert re.search(r"twotower: pip download: waiting for pip, \d+ s so far", err), err


def test_wheel_with_wrong_hash_fails(fake_wheel, tmp_path):
    with pytest.raises(FetchError, match=r"wheel: recbole-1\.2\.1-py3-none-any\.whl: sha256 "
                                         r"mismatch: expected 9c9948"):
        fetch_movielens_100k(cache_dir=tmp_path / "c", sources=["wheel"],
                             pip_command=_pip(fake_wheel), progress=False)
    assert _leftovers(tmp_path / "c") == []


def test_grouplens_failure_falls_through_to_wheel(server, fake_wheel, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "RECBOLE_WHEEL_SHA256", _sha(fake_wheel))
    path = fetch_movielens_100k(cache_dir=tmp_path / "c", progress=False,
                                grouplens_url=server.url("/tampered.zip"),
                                pip_command=_pip(fake_wheel))
    assert _manifest(path)["source"] == "wheel"


# ---------------------------------------------------------------------------------------------
# everything fails

def test_all_sources_failing_lists_each(server, tmp_path):
    failing_pip = [sys.executable, "-c", "import sys; sys.exit('no network here')"]
    with pytest.raises(FetchError) as err:
        fetch_movielens_100k(cache_dir=tmp_path, grouplens_url=server.url("/missing.zip"),
                             pip_command=failing_pip, progress=False)
    msg = str(err.value)
    lines = msg.splitlines()
    for source in ("dir", "cache", "grouplens", "wheel"):
        assert any(line.startswith(f"  - {source}: ") for line in lines), msg
    assert "no directory given" in msg
    assert "HTTP 404" in msg
    assert "exited with 1: no network here" in msg
    assert "--data-dir DIR" in msg and "TWOTOWER_ML100K_DIR" in msg


def test_a_complete_cache_published_meanwhile_is_kept(server, tmp_path):
    """A fetch that finishes after another process published a complete cache keeps that
    one: replacing it pulled the files from under the other process's readers."""
    path = fetch_movielens_100k(cache_dir=tmp_path, grouplens_url=server.url("/good.zip"),
                                sources=["grouplens"], progress=False)
    inode = path.stat().st_ino
    with open(path / "u.data", "rb") as reader:  # another process reading it
        again = fetch_movielens_100k(cache_dir=tmp_path, sources=["grouplens"],
                                     grouplens_url=server.url("/good.zip"), progress=False)
        assert again == path and path.stat().st_ino == inode
        assert (path / "u.data").is_file() and reader.read(10)
    assert _leftovers(tmp_path) == []


def test_grouplens_asked_for_replaces_a_cache_of_the_wheel(server, pristine, fake_wheel,
                                                           tmp_path, monkeypatch):
    """A GroupLens download asked for over a complete cache of the wheel's rebuilt files
    was thrown away: the wheel's cache stayed, announced as "from grouplens"."""
    monkeypatch.setattr(fetch, "RECBOLE_WHEEL_SHA256", _sha(fake_wheel))
    path = fetch_movielens_100k(cache_dir=tmp_path / "c", sources=["wheel"],
                                pip_command=_pip(fake_wheel), progress=False)
    assert _manifest(path)["source"] == "wheel"
    again = fetch_movielens_100k(cache_dir=tmp_path / "c", sources=["grouplens"],
                                 grouplens_url=server.url("/good.zip"), progress=False)
    assert again == path and _manifest(path)["source"] == "grouplens"
    assert (path / "u.data").read_bytes() == (pristine / "u.data").read_bytes()
    assert _leftovers(tmp_path / "c") == []


def test_an_unreadable_cache_file_is_a_failed_source(server, pristine, tmp_path):
    path = fetch_movielens_100k(cache_dir=tmp_path, grouplens_url=server.url("/good.zip"),
                                sources=["grouplens"], progress=False)
    (path / "sub").mkdir()  # a manifest entry naming a directory: open() fails
    manifest = _manifest(path)
    manifest["files"]["sub"] = {"size": (path / "sub").stat().st_size, "sha256": "0"}
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(FetchError, match=r"cache: cache file .*sub is unreadable"):
        fetch_movielens_100k(cache_dir=tmp_path, sources=["cache"], progress=False)
    path = fetch_movielens_100k(cache_dir=tmp_path, grouplens_url=server.url("/good.zip"),
                                sources=["cache", "grouplens"], progress=False)
    assert (path / "u.data").read_bytes() == (pristine / "u.data").read_bytes()


def test_an_oversized_zip_member_is_refused_before_unpacking(server, pristine, tmp_path):
    files = {n: (pristine / n).read_bytes() for n in FILES}
    bomb = _zip(tmp_path / "bomb.zip", dict(files, **{"u.data": bytes(17 << 20)}))
    server.bodies["/bomb.zip"] = bomb.read_bytes()
    with pytest.raises(FetchError, match=r"u\.data would unpack to 17,825,792 bytes"):
        fetch_movielens_100k(cache_dir=tmp_path / "c", grouplens_url=server.url("/bomb.zip"),
                             sources=["grouplens"], progress=False)
    assert _leftovers(tmp_path / "c") == []


def test_cache_follows_the_umask_and_stale_stages_are_swept(server, tmp_path):
    """The cache is readable by others as the umask allows (not mkdtemp's 0700), and a
    killed fetch's staging directory (its process gone) is removed by the next fetch."""
    import os
    stale = tmp_path / ".ml-100k.tmp-999999999-dead"
    stale.mkdir()
    (stale / ".download.zip.part").write_bytes(b"half")
    path = fetch_movielens_100k(cache_dir=tmp_path, grouplens_url=server.url("/good.zip"),
                                sources=["grouplens"], progress=False)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o777 & ~umask
    assert _leftovers(tmp_path) == []


def test_a_file_given_as_the_directory_is_named_as_such(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(FetchError, match="afile .* is not a directory"):
        fetch_movielens_100k(f, cache_dir=tmp_path, progress=False)


@pytest.mark.parametrize("kind", ["own copy", "file"])
def test_someone_elses_ml100k_in_the_cache_root_is_not_deleted(server, pristine, tmp_path,
                                                               kind):
    """A GroupLens copy unzipped by hand as ``<cache root>/ml-100k`` (no manifest; its
    u1.base and notes among the files) or a file of that name was deleted and replaced by
    the download; now the fetch fails naming it, and leaves it as it was."""
    target = tmp_path / "ml-100k"
    if kind == "file":
        target.write_text("mine\n")
    else:
        target.mkdir()
        (target / "u.data").write_bytes((pristine / "u.data").read_bytes())
        (target / "u1.base").write_text("1\t1\t5\t874965758\n")
        (target / "NOTES.txt").write_text("mine\n")
    before = {p.name: p.read_bytes() for p in target.iterdir()} if target.is_dir() \
        else target.read_bytes()
    hits = len(server.hits)
    with pytest.raises(FetchError) as err:
        fetch_movielens_100k(cache_dir=tmp_path, grouplens_url=server.url("/good.zip"),
                             progress=False)
    msg = str(err.value)
    assert str(target) in msg and "TWOTOWER_CACHE_DIR" in msg and "--data-dir" in msg, msg
    if kind == "file":
        assert "is not a directory" in msg and target.read_bytes() == before
    else:
        assert "NOTES.txt, u1.base" in msg, msg
        assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert len(server.hits) == hits  # refused before downloading
    assert _leftovers(tmp_path) == []


def test_a_cache_root_that_is_a_file_is_named_once_with_where_it_came_from(
        server, tmp_path, monkeypatch):
    """TWOTOWER_CACHE_DIR naming a file gave "cannot write to cache directory X ([Errno 17]
    File exists)" once per source, naming neither the variable nor that X is a file."""
    root = tmp_path / "cache"
    root.write_text("not a directory\n")
    monkeypatch.setenv("TWOTOWER_CACHE_DIR", str(root))
    hits = len(server.hits)
    with pytest.raises(FetchError, match=rf"cache root {re.escape(str(root))} \(from "
                                         r"TWOTOWER_CACHE_DIR\) is a file, not a directory"):
        fetch_movielens_100k(grouplens_url=server.url("/good.zip"), progress=False)
    assert len(server.hits) == hits and root.read_text() == "not a directory\n"


def test_a_download_cut_short_on_a_terminal_ends_its_progress_line(zips, tmp_path, capfd,
                                                                   monkeypatch):
    """On a terminal the progress line is redrawn with carriage returns; a download cut
    short (here: the connection reset after half the body) left it unended, and
    'twotower: grouplens failed: ...' was printed on the same line."""
    import socket
    import struct

    class Reset(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            body = zips["good"]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            shown.wait(10)  # the client drew its progress line
            # closed with an RST (linger 0): the client's next read fails mid-body
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Reset)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    shown = threading.Event()
    progress_line = fetch._progress_line

    def drawn(*args):
        progress_line(*args)
        shown.set()

    monkeypatch.setattr(fetch, "_progress_line", drawn)
    monkeypatch.setattr(fetch, "_stderr_is_tty", lambda: True)
    try:
        with pytest.raises(FetchError, match="grouplens: "):  # (a reset, mid-body)
            fetch_movielens_100k(cache_dir=tmp_path, sources=["grouplens"],
                                 grouplens_url=f"http://127.0.0.1:{httpd.server_address[1]}/z")
    finally:
        httpd.shutdown()
        httpd.server_close()
    err = capfd.readouterr().err
    assert "\r" in err and "%)\ntwotower: grouplens failed: " in err, repr(err[-300:])


def test_the_directory_the_zip_was_unzipped_into_points_at_its_ml100k(pristine, tmp_path):
    """--data-dir given the folder the GroupLens zip was unzipped into said only 'has no
    u.data'; it now names the ml-100k directory inside, which has the files."""
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "ml-100k").symlink_to(pristine)
    with pytest.raises(FetchError) as err:
        fetch_movielens_100k(tmp_path / "downloads", cache_dir=tmp_path, progress=False)
    assert f"has no u.data (it holds {tmp_path / 'downloads' / 'ml-100k'}, which has them: " \
           "give that)" in str(err.value), str(err.value)


# ---------------------------------------------------------------------------------------------
# the download's deadline

def _serve_zip(handler: type) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A loopback server answering with ``handler`` (its request log silenced), and the URL
    of its zip."""
    handler.log_message = lambda self, *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/ml-100k.zip"


def test_a_download_closed_early_says_the_byte_counts_with_separators(tmp_path):
    """The server closes the connection after part of the body it announced: the message
    gave its counts as "2500 of 5000 bytes" where every other byte count reads "2,500"."""
    body = b"x" * 5000

    class Short(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:2500])  # then the handler returns: the connection closes

    httpd, url = _serve_zip(Short)
    try:
        with pytest.raises(FetchError) as err:
            fetch_movielens_100k(cache_dir=tmp_path, sources=["grouplens"], grouplens_url=url,
                                 progress=False)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert "download truncated (2,500 of 5,000 bytes)" in str(err.value), str(err.value)


class _Trickle:
    """A loopback server sending the good zip's first half at once, then a byte every
    20 ms for about 2 s (``stall``: for 0.8 s, then nothing for 3 s), then the rest: each
    read gets data well within its 60 s timeout."""

    def __init__(self, body: bytes, stall: bool = False) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                import time
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                half = len(body) // 2
                try:
                    self.wfile.write(body[:half])
                    self.wfile.flush()
                    n = 40 if stall else 100
                    for i in range(n):
                        self.wfile.write(body[half + i: half + i + 1])
                        self.wfile.flush()
                        time.sleep(0.02)
                    time.sleep(3 * stall)
                    self.wfile.write(body[half + n:])
                except OSError:  # the client gave up
                    pass

        self.httpd, self.url = _serve_zip(Handler)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(params=[False], ids=["trickle"])
def trickle(zips, request):
    srv = _Trickle(zips["good"], stall=request.param)
    yield srv
    srv.close()


@pytest.mark.parametrize("trickle", [False, True], ids=["trickle", "stall"], indirect=True)
def test_a_trickling_download_fails_at_its_deadline(trickle, tmp_path):
    """No read waited 60 s, so a server trickling bytes was waited on for as long as it
    took; the whole download now has a deadline, and the error says how far it got. A
    server falling silent near the deadline is given up on at the deadline, not when the
    read times out (which would be 0.8 s later here)."""
    import time
    start = time.monotonic()
    with pytest.raises(FetchError) as err:
        fetch_movielens_100k(cache_dir=tmp_path, sources=["grouplens"], progress=False,
                             grouplens_url=trickle.url, download_deadline_s=1.0)
    assert time.monotonic() - start < 1.5  # (the trickle lasts 2 s; the stall ends at 3.8)
    msg = str(err.value)
    assert re.search(rf"grouplens: {re.escape(trickle.url)}: download not finished within its "
                     r"1 s deadline \([\d,]+ of [\d,]+ bytes received in 1\.\d s\); allow "
                     r"it longer with TWOTOWER_DOWNLOAD_DEADLINE_S=SECONDS", msg), msg
    assert not (tmp_path / "ml-100k").exists() and _leftovers(tmp_path) == []


def test_past_its_deadline_grouplens_falls_back_to_the_wheel(trickle, fake_wheel, tmp_path,
                                                             monkeypatch, capfd):
    monkeypatch.setattr(fetch, "RECBOLE_WHEEL_SHA256", _sha(fake_wheel))
    monkeypatch.setenv("TWOTOWER_DOWNLOAD_DEADLINE_S", "0.5")
    path = fetch_movielens_100k(cache_dir=tmp_path / "c", grouplens_url=trickle.url,
                                pip_command=_pip(fake_wheel))
    assert _manifest(path)["source"] == "wheel"
    assert "twotower: grouplens failed: " in capfd.readouterr().err


def test_a_deadline_long_enough_lets_the_trickle_finish(trickle, pristine, tmp_path,
                                                        monkeypatch):
    monkeypatch.setenv("TWOTOWER_DOWNLOAD_DEADLINE_S", "0.5")  # the argument wins
    path = fetch_movielens_100k(cache_dir=tmp_path, sources=["grouplens"], progress=False,
                                grouplens_url=trickle.url, download_deadline_s=30)
    assert (path / "u.data").read_bytes() == (pristine / "u.data").read_bytes()


@pytest.mark.parametrize("env, arg", [("0", None), ("soon", None), ("inf", None),
                                      (None, -1.0), (None, "10")])
def test_a_bad_deadline_is_a_config_error_naming_it(tmp_path, monkeypatch, env, arg):
    if env is not None:
        monkeypatch.setenv("TWOTOWER_DOWNLOAD_DEADLINE_S", env)
    name = "TWOTOWER_DOWNLOAD_DEADLINE_S" if env is not None else "`download_deadline_s`"
    with pytest.raises(ConfigError, match=rf"{re.escape(name)} must be a positive number of "
                                          r"seconds .*got"):
        fetch_movielens_100k(cache_dir=tmp_path, progress=False, download_deadline_s=arg)


# ---------------------------------------------------------------------------------------------
# staging folders of killed fetches

class _Stall:
    """A loopback server sending half the body, then nothing until closed."""

    def __init__(self, body: bytes) -> None:
        self.release = threading.Event()
        release = self.release

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                except OSError:
                    return
                release.wait(60)

        self.httpd, self.url = _serve_zip(Handler)

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stall(zips):
    srv = _Stall(zips["good"])
    yield srv
    srv.close()


def _start_fetch(cache_root: Path, url: str, *extra: str):
    """A fetch in another process, returned once its download is under way, with the
    staging folder it downloads into."""
    import subprocess
    import time
    script = ("import sys; from twotower.data.fetch import fetch_movielens_100k; "
              "fetch_movielens_100k(cache_dir=sys.argv[1], sources=['grouplens'], "
              "grouplens_url=sys.argv[2], progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", script, str(cache_root), url, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        parts = list(cache_root.glob(".ml-100k.tmp-*/.download.zip.part"))
        if parts and parts[0].stat().st_size > 0:
            return proc, parts[0].parent
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"the fetch did not start its download: {proc.communicate()}")


def test_a_killed_fetchs_staging_folder_is_removed_by_a_fetch_from_the_cache(
        server, stall, tmp_path):
    """A fetch killed mid-download left its staging folder (half a zip) in the cache root
    until the next download: a fetch served by the cache passed it by. Now any fetch that
    looks at the cache removes it, but not that of a fetch still running, nor anything
    else that merely looks like one."""
    import os
    import signal
    fetch_movielens_100k(cache_dir=tmp_path, grouplens_url=server.url("/good.zip"),
                         sources=["grouplens"], progress=False)
    lookalikes = [tmp_path / ".ml-100k.tmp-my-notes", tmp_path / ".ml-100k.tmp-1-notes",
                  tmp_path / ".ml-100k.tmp-999999999-dead.d", tmp_path / ".ml-100k.tmp-2-ab"]
    for d in lookalikes[:3]:
        d.mkdir()
        (d / "keep").write_text("mine\n")
    lookalikes[3].symlink_to(lookalikes[0])  # named as a stage, but a link
    proc, stage = _start_fetch(tmp_path, stall.url)
    try:
        # running: its folder stays
        fetch_movielens_100k(cache_dir=tmp_path, sources=["cache"], progress=False)
        assert stage.is_dir() and stage.name.startswith(f".ml-100k.tmp-{proc.pid}-")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert stage.is_dir()  # killed: nothing removed it
    path = fetch_movielens_100k(cache_dir=tmp_path, sources=["cache"], progress=False)
    assert path == tmp_path / "ml-100k" and not stage.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ml-100k", *(d.name for d in lookalikes)])
    assert all((d / "keep").read_text() == "mine\n" for d in lookalikes)
    # nor does a download remove them
    fetch_movielens_100k(cache_dir=tmp_path, grouplens_url=server.url("/good.zip"),
                         sources=["grouplens"], progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["ml-100k", *(d.name for d in lookalikes)])
