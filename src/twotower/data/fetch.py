"""Obtain MovieLens 100k in the GroupLens layout from the first source that works.

Sources, tried in order (``sources`` picks a subset or another order):

``"dir"``
    A local copy: the ``data_dir`` argument or the ``TWOTOWER_ML100K_DIR`` environment
    variable. It must hold ``u.data`` and ``u.item``; it is used in place, not copied.
``"cache"``
    A previous fetch under ``<cache root>/ml-100k``. The cache root is ``cache_dir``, else
    ``TWOTOWER_CACHE_DIR``, else ``platformdirs.user_cache_dir("twotower")``. The cache counts
    only if its manifest (written last, after a complete and verified extraction) exists and
    every file it lists has the recorded size and sha256.
``"grouplens"``
    The official zip, whose ``u.data``, ``u.item`` and ``u.user`` must match the pristine
    sha256 values in :data:`PRISTINE_SHA256`. The download must finish within
    ``download_deadline_s``, else ``TWOTOWER_DOWNLOAD_DEADLINE_S``, else
    :data:`DOWNLOAD_DEADLINE_S` seconds (a server trickling bytes never trips the timeout of
    one read); past it, this source fails as any failed download does.
``"wheel"``
    The ``recbole==1.2.1`` wheel, fetched with ``pip download`` (never installed), checked
    against :data:`RECBOLE_WHEEL_SHA256`; its atomic ``ml-100k.inter/.item/.user`` files are
    converted to the GroupLens layout.

Downloads are staged in a temporary sibling of the cache directory and renamed into place, so
a crash never leaves a cache that looks complete. The staging folders of killed fetches
(``.ml-100k.tmp-<pid>-<hex>``, which no live process holds) are removed by the next fetch
that looks at the cache, whether it downloads or not; nothing else in the cache root is.
A ``ml-100k`` there that a fetch did not write (a file, or a directory holding other files
and no manifest) is never replaced: the fetch fails with a :class:`FetchError` naming it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from twotower.errors import ConfigError, FetchError

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
"""The official MovieLens 100k archive."""

PRISTINE_SHA256 = {
    "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
    "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
}
"""sha256 of the pristine GroupLens files; the GroupLens zip must reproduce them."""

RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
"""sha256 of ``recbole-1.2.1-py3-none-any.whl``."""

SOURCES = ("dir", "cache", "grouplens", "wheel")
"""Every source name, in the default order."""

DIR_ENV = "TWOTOWER_ML100K_DIR"
CACHE_ENV = "TWOTOWER_CACHE_DIR"
DEADLINE_ENV = "TWOTOWER_DOWNLOAD_DEADLINE_S"
MANIFEST_NAME = ".twotower-manifest.json"
PROGRESS_EVERY_S = 10.0
"""Seconds between the progress lines of a pip download (its own output is captured)."""
DOWNLOAD_TIMEOUT_S = 60.0
"""Socket timeout for the GroupLens download (seconds without data, not the total)."""
DOWNLOAD_DEADLINE_S = 600.0
"""Default limit on the whole GroupLens download, connection included (seconds); the zip is
about 5 MB. ``download_deadline_s`` or ``TWOTOWER_DOWNLOAD_DEADLINE_S`` sets another."""
PIP_TIMEOUT_S = 600.0

REQUIRED_FILES = ("u.data", "u.item")
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western")

_ZIP_PREFIX = "ml-100k/"
_ZIP_FILES = ("u.data", "u.item", "u.user", "u.genre", "u.occupation", "u.info", "README")
_WHEEL_DIR = "recbole/dataset_example/ml-100k/"
_CHUNK = 1 << 16
#: A zip member larger than this is refused before anything is unpacked (u.data, the
#: largest file, has 1,979,173 bytes): a zip bomb fills no disk
_MAX_MEMBER = 16 << 20
_HINT = (f"To use a local copy, pass --data-dir DIR (data_dir=DIR) or set {DIR_ENV}=DIR to a "
         "directory holding the GroupLens files u.data and u.item.")


class _SourceFailed(Exception):
    """One source could not deliver; the message says why (collected, not raised to users)."""


def fetch_movielens_100k(data_dir: str | Path | None = None, *,
                         cache_dir: str | Path | None = None,
                         sources: Sequence[str] | None = None,
                         progress: bool = True,
                         grouplens_url: str = GROUPLENS_URL,
                         pip_command: Sequence[str] | None = None,
                         download_deadline_s: float | None = None) -> Path:
    """Return a directory holding MovieLens 100k in the GroupLens layout.

    The directory holds ``u.data`` (user, item, rating, timestamp; tab-separated),
    ``u.item`` (``|``-separated, latin-1: id|title|release date|video release date|IMDb URL|
    19 genre flags), ``u.user`` (id|age|gender|occupation|zip) and, when the source has them,
    ``u.genre`` and ``u.occupation``.

    Args:
        data_dir: a local copy to use as is (else ``TWOTOWER_ML100K_DIR``).
        cache_dir: cache root; the data set lives in ``cache_dir/ml-100k``. Defaults to
            ``TWOTOWER_CACHE_DIR``, else ``platformdirs.user_cache_dir("twotower")``.
        sources: which of ``"dir"``, ``"cache"``, ``"grouplens"``, ``"wheel"`` to try, in
            order. Defaults to all four in that order.
        progress: report download progress and the chosen source on stderr.
        grouplens_url: where to download the GroupLens zip from.
        pip_command: the command that runs pip, default ``[sys.executable, "-m", "pip"]``;
            ``download --no-deps --only-binary=:all: -d TMP recbole==1.2.1`` is appended.
        download_deadline_s: seconds the GroupLens download may take in all (else
            ``TWOTOWER_DOWNLOAD_DEADLINE_S``, else :data:`DOWNLOAD_DEADLINE_S`); one that takes
            longer is a failed source, and the next source is tried.

    Returns:
        The directory: ``data_dir`` itself for the ``"dir"`` source, else the cache directory.

    Raises:
        FetchError: the explicit directory lacks a required file, or every source failed
            (the message lists each source and why).
        ConfigError: ``sources`` is empty or names an unknown source, or the download
            deadline is not a positive number of seconds.

    Example:
        >>> path = fetch_movielens_100k("/data/ml-100k", sources=["dir"])  # doctest: +SKIP
    """
    order = _check_sources(sources)
    deadline = (_deadline(download_deadline_s) if "grouplens" in order
                else DOWNLOAD_DEADLINE_S)
    cache_root = _cache_root(cache_dir)
    target = cache_root / "ml-100k"
    say: Callable[[str], None] = _stderr if progress else (lambda _msg: None)

    failures: list[str] = []
    for name in order:
        try:
            if name == "dir":
                return _from_dir(data_dir)
            if name == "cache":
                _sweep_stages(target)
                _check_cache(target)
                return target
            if cache_root.exists() and not cache_root.is_dir():  # no source can write it
                origin = ("cache_dir" if cache_dir is not None else
                          CACHE_ENV if os.environ.get(CACHE_ENV) else "the default cache root")
                raise FetchError(f"MovieLens 100k cache root {cache_root} (from {origin}) is "
                                 "a file, not a directory; point it at a directory (the data "
                                 "set goes in its ml-100k/), or give a local copy with "
                                 f"--data-dir DIR or {DIR_ENV}=DIR")
            if name == "grouplens":
                return _build(target, "grouplens",
                              lambda stage: _from_grouplens(stage, grouplens_url, progress, say,
                                                            deadline),
                              say)
            return _build(target, "wheel",
                          lambda stage: _from_wheel(stage, pip_command, say), say)
        except _SourceFailed as exc:
            failures.append(f"  - {name}: {exc}")
            if name in ("grouplens", "wheel"):
                say(f"twotower: {name} failed: {exc}")
            elif name == "cache" and (target.exists() or target.is_symlink()):
                # a damaged cache is fetched again: say why (it looked like a download
                # for no reason, each time the cache was damaged again)
                say(f"twotower: cache not used: {exc}")
    raise FetchError("Could not obtain MovieLens 100k from any source tried:\n"
                     + "\n".join(failures) + "\n" + _HINT)


# ---------------------------------------------------------------------------------------------
# Source selection and cache location

def _check_sources(sources: Sequence[str] | None) -> tuple[str, ...]:
    if sources is None:
        return SOURCES
    if isinstance(sources, str):
        sources = [sources]
    order = tuple(sources)
    unknown = [s for s in order if s not in SOURCES]
    if not order or unknown:
        raise ConfigError(f"`sources` must be a non-empty subset of {list(SOURCES)}, "
                          f"got {list(order)!r}")
    return order


def _deadline(download_deadline_s: float | None) -> float:
    value: object
    if download_deadline_s is not None:
        value, origin = download_deadline_s, "`download_deadline_s`"
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif os.environ.get(DEADLINE_ENV):
        value, origin, number = os.environ[DEADLINE_ENV], DEADLINE_ENV, True
    else:
        return DOWNLOAD_DEADLINE_S
    try:
        seconds = float(value) if number else float("nan")  # type: ignore[arg-type]
    except ValueError:  # (the variable's text)
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ConfigError(f"{origin} must be a positive number of seconds (the GroupLens "
                          f"download's limit, default {DOWNLOAD_DEADLINE_S:g}), got {value!r}")
    return seconds


def _cache_root(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("twotower"))


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# "dir" and "cache"

def _from_dir(data_dir: str | Path | None) -> Path:
    if data_dir is None:
        env = os.environ.get(DIR_ENV)
        if not env:
            raise _SourceFailed(f"no directory given (data_dir argument or {DIR_ENV})")
        data_dir, origin = env, f"{DIR_ENV}={env}"
    else:
        origin = "data_dir"
    d = Path(data_dir).expanduser()
    if not d.is_dir():
        # An explicit request is not silently replaced by a download.
        what = "is not a directory" if d.exists() else "does not exist"
        raise FetchError(f"MovieLens 100k directory {d} (from {origin}) {what}. " + _HINT)
    for name in REQUIRED_FILES:
        if not (d / name).is_file():
            # the directory the GroupLens zip was unzipped into, rather than its ml-100k/
            inner = next((sub for sub in (d / "ml-100k", d / "ml-100k" / "ml-100k")
                          if all((sub / n).is_file() for n in REQUIRED_FILES)), None)
            there = f" (it holds {inner}, which has them: give that)" if inner else ""
            raise FetchError(f"MovieLens 100k directory {d} (from {origin}) has no "
                             f"{name}{there}. " + _HINT)
    return d


def _read_manifest(target: Path) -> dict:
    path = target / MANIFEST_NAME
    if not path.is_file():
        raise _SourceFailed(f"no complete cache at {target} (no {MANIFEST_NAME})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files, _ = manifest["files"], manifest["source"]
    except (ValueError, KeyError, TypeError) as exc:
        raise _SourceFailed(f"cache manifest {path} is unreadable ({exc})") from None
    if not isinstance(files, dict) or any(n not in files for n in REQUIRED_FILES):
        raise _SourceFailed(f"cache manifest {path} does not list {', '.join(REQUIRED_FILES)}")
    bad = [n for n, meta in files.items() if not isinstance(meta, dict)]
    if bad:  # e.g. edited by hand: an incomplete cache, fetched again
        raise _SourceFailed(f"cache manifest {path}: entry {bad[0]!r} is not "
                            "{\"size\": ..., \"sha256\": ...}")
    return manifest


def _check_cache(target: Path) -> dict:
    manifest = _read_manifest(target)
    for name, meta in manifest["files"].items():
        path = target / name
        try:
            size = path.stat().st_size
        except OSError:
            raise _SourceFailed(f"cache {target} is missing {name}") from None
        try:
            same = size == meta.get("size") and _sha256(path) == meta.get("sha256")
        except OSError as exc:  # unreadable, or a directory
            raise _SourceFailed(f"cache file {path} is unreadable ({exc})") from None
        if not same:
            raise _SourceFailed(f"cache file {path} differs from its manifest")
    return manifest


# ---------------------------------------------------------------------------------------------
# Staging and atomic publication

def _sweep_stages(target: Path) -> None:
    """Remove the staging folders killed fetches left beside ``target`` (a download sweeps
    them as it makes its own; a fetch served by the cache did not, so they stayed until
    the next download). Those a live fetch holds, and anything not named as a fetch names
    them, are left alone (``artifacts._sweep_stale``)."""
    from twotower.artifacts import _sweep_stale
    if target.parent.is_dir():
        _sweep_stale(target)


def _build(target: Path, source: str, fill: Callable[[Path], str],
           say: Callable[[str], None]) -> Path:
    """Fill a temp sibling of ``target``, write its manifest, rename it into place."""
    from twotower.artifacts import _release, temp_sibling
    root = target.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        stage = temp_sibling(target)  # readable by others as the umask allows
    except OSError as exc:
        raise _SourceFailed(f"cannot write to cache directory {root} ({exc})") from None
    try:
        _check_replaceable(target)  # before the download: nothing fetched in vain
        origin = fill(stage)
        _write_manifest(stage, source, origin)
        _publish(stage, target)
    except FetchError:
        raise
    except OSError as exc:
        raise _SourceFailed(f"cannot write the cache at {target} ({exc})") from None
    finally:
        _release(stage)
        shutil.rmtree(stage, ignore_errors=True)
    say(f"twotower: MovieLens 100k ready at {target} (from {source})")
    return target


#: what a fetch writes into ``<cache root>/ml-100k``: a directory there without a manifest
#: that holds nothing else (an extraction cut short) is replaced; one holding other files is
#: someone's own (a copy unzipped there by hand, say), which a fetch does not delete
_OURS = frozenset({*_ZIP_FILES, MANIFEST_NAME, MANIFEST_NAME + ".part", ".download.zip.part"})


def _check_replaceable(target: Path) -> None:
    """Refuse to replace ``target`` when it is not a cache a fetch wrote (or began)."""
    if not target.exists() and not target.is_symlink():
        return
    hint = (f"move it away or choose another cache root ({CACHE_ENV}); a copy of MovieLens "
            f"100k is used in place with --data-dir DIR or {DIR_ENV}=DIR")
    if not target.is_dir():
        raise FetchError(f"MovieLens 100k cache {target} exists and is not a directory; a "
                         f"fetch would replace it: {hint}")
    if (target / MANIFEST_NAME).is_file():
        return  # a cache (complete or damaged): a fetch's own
    foreign = sorted(p.name for p in target.iterdir() if p.name not in _OURS)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3
                                          else "")
        raise FetchError(f"MovieLens 100k cache {target} has no {MANIFEST_NAME} and holds "
                         f"files a fetch does not write ({shown}); a fetch would replace the "
                         f"whole directory: {hint}")


def _write_manifest(stage: Path, source: str, origin: str) -> None:
    files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(stage.iterdir()) if p.is_file() and p.name != MANIFEST_NAME}
    manifest = {"dataset": "movielens-100k", "format": 1, "source": source, "origin": origin,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "files": files}
    tmp = stage / (MANIFEST_NAME + ".part")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    tmp.replace(stage / MANIFEST_NAME)


def _publish(stage: Path, target: Path) -> None:
    from twotower.artifacts import _release, temp_sibling
    old = None
    if target.exists():
        try:  # a complete cache of this source (another process's, published meanwhile):
            # keep it, as other readers may be reading it now; one of another source (the
            # wheel's rebuilt files, when GroupLens' own were asked for) is replaced
            if _check_cache(target).get("source") == _read_manifest(stage).get("source"):
                return
        except _SourceFailed:
            pass
        _check_replaceable(target)  # (someone's own files put there meanwhile)
        # A stale, half-written or other-source cache: move it aside (atomic), then swap
        # the new one in.
        old = temp_sibling(target)
        try:
            target.rename(old / "x")
        except FileNotFoundError:
            pass  # another process removed it meanwhile
    try:
        stage.rename(target)
    except OSError:
        _check_cache(target)  # another process published first: use theirs if complete
    finally:
        if old is not None:
            _release(old)
            shutil.rmtree(old, ignore_errors=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# "grouplens"

def _from_grouplens(stage: Path, url: str, progress: bool, say: Callable[[str], None],
                    deadline: float = DOWNLOAD_DEADLINE_S) -> str:
    say(f"twotower: downloading MovieLens 100k from {url}")
    archive = stage / ".download.zip.part"
    _download(url, archive, progress, deadline)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = {n[len(_ZIP_PREFIX):]: n for n in zf.namelist()
                       if n.startswith(_ZIP_PREFIX)}
            missing = [n for n in (*REQUIRED_FILES, "u.user") if n not in members]
            if missing:
                raise _SourceFailed(f"{url}: zip has no {_ZIP_PREFIX}{missing[0]}")
            for name in _ZIP_FILES:
                if name in members and zf.getinfo(members[name]).file_size > _MAX_MEMBER:
                    raise _SourceFailed(
                        f"{url}: {members[name]} would unpack to "
                        f"{zf.getinfo(members[name]).file_size:,} bytes; MovieLens 100k's "
                        f"files are under {_MAX_MEMBER:,}")
            for name in _ZIP_FILES:
                if name in members:
                    with zf.open(members[name]) as src, open(stage / name, "wb") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise _SourceFailed(f"{url}: not a valid zip, truncated or corrupt ({exc})") from None
    except zlib.error as exc:  # a damaged deflate stream
        raise _SourceFailed(f"{url}: corrupt zip ({exc})") from None
    finally:
        archive.unlink(missing_ok=True)
    for name, expected in PRISTINE_SHA256.items():
        got = _sha256(stage / name)
        if got != expected:
            raise _SourceFailed(f"{url}: sha256 mismatch for {name}: expected {expected}, "
                                f"got {got}")
    return url


def _download(url: str, dest: Path, progress: bool,
              deadline: float = DOWNLOAD_DEADLINE_S) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "twotower"})
    start = time.monotonic()
    done, total = 0, None
    short = deadline < DOWNLOAD_TIMEOUT_S  # a read's timeout is what the deadline leaves

    def past_deadline() -> _SourceFailed:
        of = f" of {total:,}" if total else ""
        return _SourceFailed(
            f"{url}: download not finished within its {deadline:g} s deadline ({done:,}{of} "
            f"bytes received in {time.monotonic() - start:.1f} s); allow it longer with "
            f"{DEADLINE_ENV}=SECONDS (download_deadline_s=SECONDS)")

    try:
        with urllib.request.urlopen(request, timeout=min(DOWNLOAD_TIMEOUT_S, deadline)) \
                as resp, open(dest, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            shown = None
            # a terminal: one line redrawn per percent (or MiB when the size is unknown); a
            # log (not a terminal): a line per 10% (or 10 MiB), no carriage returns
            tty = _stderr_is_tty()
            # read1: what one receive brings (read(n) waits for all n bytes, however slowly
            # they come); each receive may wait only as long as the deadline leaves
            read = getattr(resp, "read1", resp.read)
            sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
            try:
                while True:
                    left = deadline - (time.monotonic() - start)
                    if left <= 0:
                        raise past_deadline()
                    short = left < DOWNLOAD_TIMEOUT_S
                    if sock is not None:
                        sock.settimeout(min(DOWNLOAD_TIMEOUT_S, left))
                    block = read(_CHUNK)
                    if not block:
                        break
                    out.write(block)
                    done += len(block)
                    step = 100 * done // total if total else done >> 20
                    if not tty:
                        step //= 10
                    if progress and step != shown:
                        shown = step
                        _progress_line(done, total, tty)
            finally:
                # the redrawn line ended, also when a reset, a timeout or Ctrl-C cuts the
                # download short (the next message was appended to it)
                if progress and tty and shown is not None:
                    print(file=sys.stderr, flush=True)
            if total is not None and done < total:
                raise _SourceFailed(f"{url}: download truncated ({done:,} of {total:,} bytes)")
    except urllib.error.HTTPError as exc:
        raise _SourceFailed(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError) and short:
            raise past_deadline() from None
        raise _SourceFailed(f"{url}: cannot connect ({exc.reason})") from None
    except TimeoutError:
        if short:
            raise past_deadline() from None
        raise _SourceFailed(f"{url}: timed out after {DOWNLOAD_TIMEOUT_S:g} s") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # resets, IncompleteRead
        raise _SourceFailed(f"{url}: download failed ({type(exc).__name__}: {exc})") from None


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced, or closed
        return False


def _progress_line(done: int, total: int | None, tty: bool = True) -> None:
    if total:
        msg = f"  {done:,}/{total:,} bytes ({100 * done // total}%)"
    else:
        msg = f"  {done:,} bytes"
    if tty:
        print("\r" + msg, end="", file=sys.stderr, flush=True)
    else:
        print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# "wheel"

def _from_wheel(stage: Path, pip_command: Sequence[str] | None,
                say: Callable[[str], None]) -> str:
    prefix = list(pip_command) if pip_command is not None else [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory(prefix="twotower-wheel-") as tmp:
        cmd = [*prefix, "download", "--no-deps", "--only-binary=:all:", "-d", tmp,
               RECBOLE_REQUIREMENT]
        say(f"twotower: fetching the {RECBOLE_REQUIREMENT} wheel with pip (not installed)")
        from twotower.models._ticker import Ticker
        try:  # pip's own output is captured (for the error): a line every 10 s meanwhile
            with Ticker("pip download", PROGRESS_EVERY_S, stage="waiting for pip",
                        emit=lambda line: say(f"twotower: {line}")):
                proc = subprocess.run(cmd, capture_output=True, text=True,
                                      timeout=PIP_TIMEOUT_S, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise _SourceFailed(f"cannot run pip ({type(exc).__name__}: {exc})") from None
        if proc.returncode != 0:
            tail = " | ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-3:])
            raise _SourceFailed(f"pip download {RECBOLE_REQUIREMENT} exited with "
                                f"{proc.returncode}: {tail or 'no output'}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise _SourceFailed(f"pip download {RECBOLE_REQUIREMENT} produced no wheel")
        wheel = wheels[0]
        got = _sha256(wheel)
        if got != RECBOLE_WHEEL_SHA256:
            raise _SourceFailed(f"{wheel.name}: sha256 mismatch: expected "
                                f"{RECBOLE_WHEEL_SHA256}, got {got}")
        try:
            with zipfile.ZipFile(wheel) as zf:
                texts = {ext: zf.read(f"{_WHEEL_DIR}ml-100k.{ext}").decode("utf-8")
                         for ext in ("inter", "item", "user")}
        except KeyError as exc:
            raise _SourceFailed(f"{wheel.name}: missing {exc}") from None
        except (zipfile.BadZipFile, UnicodeDecodeError, EOFError, ValueError) as exc:
            raise _SourceFailed(f"{wheel.name}: unreadable ({exc})") from None
    _convert_recbole(texts, stage)
    return f"{RECBOLE_REQUIREMENT} wheel (sha256 {RECBOLE_WHEEL_SHA256})"


def _atomic_rows(text: str, what: str, columns: Sequence[str]) -> list[list[str]]:
    """Rows of a RecBole atomic file, columns picked by name from its typed header."""
    lines = text.splitlines()
    if not lines:
        raise _SourceFailed(f"{what} is empty")
    header = [h.split(":", 1)[0] for h in lines[0].split("\t")]
    try:
        idx = [header.index(c) for c in columns]
    except ValueError:
        raise _SourceFailed(f"{what}: header {lines[0]!r} lacks one of {list(columns)}") from None
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) < len(header):
            raise _SourceFailed(f"{what} line {n}: expected {len(header)} fields, "
                                f"got {len(fields)}")
        rows.append([fields[i] for i in idx])
    return rows


_YEAR = re.compile(r"\d{4}")
_TITLE_YEAR = re.compile(r"\((\d{4})\)")
_MISSING = {"", "unknown", "unkonwn"}  # RecBole's placeholder (sic) for the unknown movie


def _item_line(item_id: str, title: str, year: str, classes: str) -> str:
    title, year = title.strip(), year.strip()
    if title in _MISSING and year in _MISSING:
        title, year = "unknown", ""
    elif year in _MISSING:
        year = ""
    # RecBole split GroupLens titles at their last "(...)"; rejoin them. The "year" is then
    # sometimes a tag such as "V" (video), so the release year falls back to the title's.
    full = f"{title} ({year})" if year else title
    if _YEAR.fullmatch(year):
        release_year = year
    else:
        found = _TITLE_YEAR.findall(title)
        release_year = found[-1] if found else ""
    release = f"01-Jan-{release_year}" if release_year else ""
    tokens = set(classes.split())
    flags = "|".join("1" if g in tokens else "0" for g in GENRES)
    if "|" in full:
        raise _SourceFailed(f"ml-100k.item: title of item {item_id} contains '|'")
    return f"{item_id}|{full}|{release}|||{flags}"


def _convert_recbole(texts: dict[str, str], stage: Path) -> None:
    """Write u.data, u.item, u.user, u.genre, u.occupation from RecBole atomic files."""
    inter = _atomic_rows(texts["inter"], "ml-100k.inter",
                         ("user_id", "item_id", "rating", "timestamp"))
    try:
        data = "".join(f"{u}\t{i}\t{int(float(r))}\t{int(float(t))}\n" for u, i, r, t in inter)
    except ValueError as exc:
        raise _SourceFailed(f"ml-100k.inter: non-numeric rating or timestamp ({exc})") from None
    items = _atomic_rows(texts["item"], "ml-100k.item",
                         ("item_id", "movie_title", "release_year", "class"))
    item_text = "".join(_item_line(*row) + "\n" for row in items)
    users = _atomic_rows(texts["user"], "ml-100k.user",
                         ("user_id", "age", "gender", "occupation", "zip_code"))
    user_text = "".join("|".join(row) + "\n" for row in users)
    occupations = sorted({row[3] for row in users})

    (stage / "u.data").write_text(data, encoding="ascii", newline="\n")
    with open(stage / "u.item", "w", encoding="latin-1", errors="replace",
                 newline="\n") as f:
        f.write(item_text)
    (stage / "u.user").write_text(user_text, encoding="latin-1", errors="replace",
                                  newline="\n")
    (stage / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(GENRES)) + "\n",
                                   encoding="ascii", newline="\n")
    (stage / "u.occupation").write_text("".join(f"{o}\n" for o in occupations),
                                        encoding="latin-1", errors="replace", newline="\n")


__all__ = ["DOWNLOAD_DEADLINE_S", "GROUPLENS_URL", "PRISTINE_SHA256", "RECBOLE_WHEEL_SHA256",
           "SOURCES", "fetch_movielens_100k"]
