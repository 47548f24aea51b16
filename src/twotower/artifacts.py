"""Saving and loading trained models as a directory of plain files.

Layout (format version 1)::

    RUN/
      format.json          format version, twotower version, created at, file checksums
      config.json          {"model": ModelConfig, "index": IndexConfig, ...extra}
      user_vocab.json      external user ids, in index order
      item_vocab.json      external item ids, in index order
      arrays.npz           item/user/history embeddings, history table, seen items (CSR),
                           item popularity (numpy arrays, loaded with allow_pickle=False)
      items.parquet        item metadata (title, genres, ...) when known
      users.parquet        user metadata when known
      training.json        per-epoch losses, fit time, when training ended
      model.weights.h5     Keras weights (weights only: no code is loaded from a model file)
      index/               the saved search index
      test.npz, eval.json  the held-out split and its metrics, when the run has them

``save_model`` writes into a temporary sibling directory and renames it into place, so an
interrupted save (crash, Ctrl-C) leaves the previous model loadable.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
import threading
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from twotower.data.vocabulary import Vocabulary
from twotower.errors import ArtifactError, ConfigError

if TYPE_CHECKING:
    from twotower.models.retriever import TwoTower

FORMAT_VERSION = 1
_FORMAT = "format.json"
#: files every run has, so in its manifest (checked there: none may go unverified)
_REQUIRED = ("config.json", "user_vocab.json", "item_vocab.json", "arrays.npz",
             "training.json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(json_safe(data), indent=2, sort_keys=True, allow_nan=False,
                               default=_json_default), encoding="utf-8")


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite number as None (null): bare ``NaN`` is not JSON,
    and strict readers (``jq``, browsers) refuse the whole document (e.g. a metric that no
    test user could be scored on)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(x) for k, x in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(x) for x in value]
    return value


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def check_replaceable(target: str | os.PathLike[str], what: str = "directory",
                      marker: str = _FORMAT, noun: str = "run") -> Path:
    """``target`` as an absolute path, if a save may write there: absent, an empty
    directory, or a twotower run (it has a ``format.json``; ``marker`` and ``noun`` for
    another kind of saved directory, e.g. an index's ``index.json``), which the save
    replaces.

    Raises:
        ArtifactError: ``target`` is a file, or a directory that is not a run (a save
            would replace it, and whatever it holds would be lost).
    """
    t = Path(os.path.abspath(target))
    if not _is_temp_sibling(t.parent):
        _check_writable_place(t, what, noun)
    if not t.exists() and not t.is_symlink():
        return t
    if t.is_symlink():
        raise ArtifactError(f"{what}: {t} is a symbolic link (to {os.readlink(t)}); a save "
                            f"replaces the directory itself, which would turn the link into "
                            f"a directory: give the {noun}'s own path, "
                            f"{os.path.realpath(t)}")
    if t.is_dir() and not t.is_symlink():
        try:
            here = Path.cwd()
        except OSError:  # the working directory itself is gone
            here = None
        real = Path(os.path.realpath(t))  # (the working directory is a real path)
        if here is not None and (here == real or real in here.parents):
            where = ("the current directory" if here == real
                     else f"a directory the current one ({here}) is in")
            raise ArtifactError(f"{what}: {t} is {where}; a save replaces the whole "
                                "directory, which would leave this process (and your shell) "
                                "in the deleted old one: run the command from outside it, "
                                f"e.g. after `cd {t.parent}`")
        if (t / marker).is_file() or not any(t.iterdir()):
            return t
        raise ArtifactError(f"{what}: {t} is a directory that is not a twotower {noun} (no "
                            f"{marker}); a save replaces the whole directory, so choose "
                            "a new or empty one")
    raise ArtifactError(f"{what}: {t} exists and is not a directory; choose a new or "
                        f"empty directory for the {noun}")


class _Saved:
    """The top-level saves ``atomic_directory`` completed in this process (not those inside
    another save's temporary directory): how many, and the last one's path. A command a
    signal ends after its save (or during it: the signal is held back until the new
    version is in place) can say the save is complete."""
    count = 0
    last: Path | None = None

    def add(self, target: Path) -> None:
        self.count += 1
        self.last = target


SAVED = _Saved()

#: called (when set) just before a save's renames; raising there leaves the previous
#: version in place (the CLI raises a Ctrl-C or SIGTERM that Python dropped)
BEFORE_COMMIT: Any = None


def atomic_directory(target: str | os.PathLike[str], write: Any, what: str = "directory",
                     marker: str = _FORMAT, noun: str = "run",
                     unchanged: Any = None) -> Path:
    """Call ``write(tmp_dir)`` then move ``tmp_dir`` to ``target`` atomically.

    ``target`` must be absent, empty or a twotower run (``check_replaceable``, with
    ``marker`` and ``noun``). The
    previous ``target`` stays in place until the new one is complete; the two are swapped
    in one step where the system can (Linux's ``renameat2`` exchange: no moment without
    ``target``), else with two renames (Ctrl-C and SIGTERM are held back until both are
    done; an error between them puts the previous version back); the previous one is
    then removed. Only a process killed outright between two renames leaves the previous
    version in ``.<name>.old``, which ``read_manifest``'s error names. Temporary directories of saves that were killed
    (their process is gone) are removed by the next save beside them. ``unchanged``: a
    callable run on ``target`` just before the renames, raising when another command
    replaced it meanwhile (then nothing is written).
    """
    target = check_replaceable(target, what, marker, noun)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(target)
    except OSError as exc:  # (checked above: the place changed since, or refuses late)
        raise ArtifactError(_save_failed(target, exc, what, noun, False)) from None
    old = target.parent / f".{target.name}.old"
    moved = placed = False
    try:
        write(tmp)
        _fsync_tree(tmp)  # the files' data on disk before a rename can publish them
        # one commit at a time in this directory: the check that the run is unchanged and
        # the renames are one step for every other save (a save between them was lost)
        # (inside another save's temporary directory, which that save holds, no one else
        # commits: no lock)
        with _dir_lock(None if _is_temp_sibling(target.parent) else target.parent):
            if old.exists() and not target.exists():
                # a save killed between its renames: this is the previous version, put
                # back before anything else (removing it first would lose it to a second
                # crash)
                os.rename(old, target)
            if old.exists():
                _discard(old, target)
            if unchanged is not None:
                unchanged(target)
            if BEFORE_COMMIT is not None:
                BEFORE_COMMIT()  # e.g. a stop the CLI was asked for
            with _signals_held():
                if target.exists() and _exchange(tmp, target):
                    # one step: no moment without the run (a process killed at any point
                    # leaves the old or the new one in place); the old one, now at tmp,
                    # goes where the renames below would put it
                    placed = True
                    try:
                        os.rename(tmp, old)
                        moved = True
                    except OSError:  # e.g. another save's sweep took it (it is unlocked
                        pass  # there), or a stuck .old: the next save's sweep removes it
                else:
                    if target.exists():
                        os.rename(target, old)
                        moved = True
                    os.rename(tmp, target)
                    placed = True
                if not _is_temp_sibling(target.parent):
                    SAVED.add(target)  # complete (a signal held back fires next)
                _fsync_dir(target.parent)
        _discard(old, target)
    except BaseException as exc:
        if moved and not target.exists():
            os.rename(old, target)  # the new version never arrived: the old one returns
        elif moved:
            _discard(old, target)  # the new one is in place
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and not placed and not _is_temp_sibling(target.parent):
            # (a save inside another's temporary directory leaves the message to that one,
            # which names the run rather than its temporary directory)
            raise ArtifactError(_save_failed(target, exc, what, noun, moved)) from None
        raise
    finally:
        _release(tmp)
    return target


#: libc's renameat2 (Linux), once looked up; False where there is none
_renameat2: Any = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap directories ``a`` and ``b`` in one step (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``); False where the system or the file system cannot (then nothing
    changed)."""
    global _renameat2
    if _renameat2 is None:
        _renameat2 = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes
                fn = ctypes.CDLL(None).renameat2
                fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                               ctypes.c_uint]
                fn.restype = ctypes.c_int
                _renameat2 = fn
            except (OSError, AttributeError):  # an older C library
                pass
    if _renameat2 is False:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if _renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    # refused (EINVAL: not on this file system; ENOSYS or EPERM: a kernel or a sandbox
    # without the call; anything else): nothing changed, so the two renames try instead
    # and report a real failure as a save's
    return False


def _save_failed(target: Path, exc: OSError, what: str, noun: str, moved: bool) -> str:
    """One line for a save that failed on the file system (a full disk, no permission):
    what, where, and that the previous version is unchanged."""
    import errno
    why = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "over the disk quota",
           errno.EROFS: "a read-only file system", errno.EACCES: "permission denied",
           errno.EPERM: "operation not permitted"}.get(exc.errno or -1,
                                                        exc.strerror or str(exc))
    before = ("the previous version is unchanged" if moved or target.exists()
              else "nothing was written")
    return f"{what}: cannot save the {noun} {target}: {why}; {before}"


def _check_writable_place(target: Path, what: str, noun: str) -> None:
    """Refuse at once, before any work, a place a save could not complete: a parent that
    is a file, a directory this process cannot write, a mount point as the run (a volume:
    the swap renames it), a non-directory in the way of the previous version's name."""
    parent = target.parent
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ArtifactError(f"{what}: cannot save the {noun} {target}: {probe} is a file, "
                            "not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ArtifactError(f"{what}: cannot save the {noun} {target}: {probe} is not "
                            "writable here (permissions, or a read-only file system)")
    # access() answers yes to root in places no directory can be made (/proc, a file
    # system full of inodes): make one, as the save will, and remove it (named as a
    # save's staging directory, which a later save beside it sweeps away if this process
    # dies in between)
    made = probe / f".{target.name}.new-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        made.mkdir()
    except OSError as exc:
        raise ArtifactError(_save_failed(target, exc, what, noun, False)) from None
    made.rmdir()
    if target.is_dir() and os.path.ismount(target):
        raise ArtifactError(f"{what}: {target} is a mount point; a save replaces the "
                            f"{noun} directory by renames, which a mount point refuses: save "
                            f"into a directory inside it, e.g. {target / 'run'}")
    old = parent / f".{target.name}.old"
    if (old.exists() or old.is_symlink()) and not old.is_dir():
        raise ArtifactError(f"{what}: {old} is in the way (the name a save moves the "
                            f"previous {noun} to) and is not a directory: remove it")


class _dir_lock:
    """An exclusive ``flock`` on a directory for the block (a no-op where the file
    system has no flock)."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.fd = path, None

    def __enter__(self) -> _dir_lock:
        if self.path is None:
            return self
        try:
            import fcntl
            self.fd = os.open(self.path, os.O_RDONLY)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except (ImportError, OSError):
            if self.fd is not None:
                os.close(self.fd)
            self.fd = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock


def _is_temp_sibling(path: Path) -> bool:
    """Whether ``path`` is a directory ``temp_sibling`` made (a save in progress)."""
    return bool(re.fullmatch(r"\..+\.tmp-\d+-[0-9a-f]+", path.name))


def _discard(path: Path, target: Path) -> None:
    """Remove ``path``, a replaced version of ``target`` no one needs any more: renamed
    first to ``.<name>.trash-<pid>-<hex>``, which any later save beside it removes, so a
    process killed while removing it leaves no half-removed directory under the name
    ``.<name>.old`` (a killed save's previous version, which ``read_manifest``'s error
    names and the next save renames back: a run of one file, ``training.json``, then)."""
    if path.exists():
        trash = path.parent / f".{target.name}.trash-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.rename(path, trash)
        except OSError:  # (not renamable here: removed in place, as before)
            shutil.rmtree(path, ignore_errors=True)
    # this process's (a removal a stop cut short, called again from the save's clean-up)
    for trash in path.parent.glob(f".{target.name}.trash-{os.getpid()}-*"):
        shutil.rmtree(trash, ignore_errors=True)


def temp_sibling(target: Path) -> Path:
    """A new directory ``.<name>.tmp-<pid>-<hex>`` beside ``target`` (whose parent must
    exist), after removing those of processes that are gone.

    mkdir, not mkdtemp: the umask's permissions (mkdtemp's 0700 would hide a run or a
    cache from a service or a colleague running as another user).
    """
    _sweep_stale(target)
    # made and locked under a name the sweep passes over, then renamed (the lock follows
    # the directory): a temporary directory is held from the moment it has its name
    mark = f"{os.getpid()}-{secrets.token_hex(4)}"
    staging = target.parent / f".{target.name}.new-{mark}"
    staging.mkdir()
    _hold(staging)
    tmp = target.parent / f".{target.name}.tmp-{mark}"
    try:
        os.replace(staging, tmp)  # (tmp is new: a plain rename)
    except BaseException:
        _release(staging)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fd = _HELD.pop(staging, None)
    if fd is not None:
        _HELD[tmp] = fd
    return tmp


#: a staging directory (``.<name>.new-*``: made, not yet locked and renamed) is left alone
#: this long after its last change
_SWEEP_AGE_S = 60.0

#: temporary directories of saves in progress in this process -> the descriptor whose
#: ``flock`` marks them as in use (other processes' sweeps leave them alone)
_HELD: dict[Path, int] = {}


def _hold(tmp: Path) -> None:
    try:
        import fcntl
        fd = os.open(tmp, os.O_RDONLY)
    except (ImportError, OSError):
        return
    try:  # blocking: another save's sweep may be probing it for a moment
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        os.close(fd)
        return
    _HELD[tmp] = fd


def _release(tmp: Path) -> None:
    fd = _HELD.pop(tmp, None)
    if fd is not None:
        os.close(fd)


def _unheld(p: Path) -> bool | None:
    """Whether no process holds ``p``'s lock (True), one does (False), or flock cannot
    tell (None: no flock here)."""
    try:
        import fcntl
        fd = os.open(p, os.O_RDONLY)
    except (ImportError, OSError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return None
    finally:
        os.close(fd)


def _sweep_stale(target: Path) -> None:
    """Remove ``.<name>.tmp-<pid>-<hex>`` directories beside ``target`` of saves that were
    killed: no process holds their lock (a save holds its own from the moment the
    directory has that name), which holds in a container too, where every command is
    PID 1. Where flock cannot tell, by their process id: gone, and not this process.
    Only directories named exactly as this module names them (not a link, not a file, not
    ``.<name>.tmp-my-notes``) are looked at."""
    import time
    try:
        entries = [p for p in target.parent.iterdir() if _is_ours(p, target)]
    except OSError:  # (no parent, or unreadable: nothing to sweep)
        return
    for p in entries:
        kind = p.name[len(target.name) + 2:].split("-", 1)[0]
        if p in _HELD:
            continue
        if kind == "tmp":
            free = _unheld(p)
            if free is None:  # no flock here: by process id
                pid = int(p.name.rsplit("-", 2)[1])
                free = pid != os.getpid() and not _alive(pid)
            # where flock answers, the process id does not count (it means nothing across
            # containers or hosts sharing a volume): nobody holds it, so it is a dead save's
            if free:
                shutil.rmtree(p, ignore_errors=True)
        elif kind == "new":  # killed between mkdir and rename (a moment): old ones
            try:
                old = time.time() - p.stat().st_mtime >= _SWEEP_AGE_S
            except OSError:
                continue
            if old and _unheld(p) is not False:
                shutil.rmtree(p, ignore_errors=True)
        else:  # (``_discard``) garbage by its name: a killed removal
            shutil.rmtree(p, ignore_errors=True)


def _is_ours(p: Path, target: Path) -> bool:
    """Whether ``p`` is a directory (not a link) named as ``temp_sibling`` or ``_discard``
    name them beside ``target``: ``.<name>.{tmp,new,trash}-<pid>-<hex>``."""
    return (re.fullmatch(rf"\.{re.escape(target.name)}\.(tmp|new|trash)-\d+-[0-9a-f]+",
                         p.name) is not None
            and not p.is_symlink() and p.is_dir())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


class _signals_held:
    """Hold SIGINT and SIGTERM back until the block is done, then raise them.

    Python runs its signal handlers in the main thread, whichever thread the signal
    reached: for the block, in the main thread, they only note the signal. Elsewhere
    (``signal.signal`` is for the main thread only), and for a handler not set from
    Python, a no-op.
    """

    _SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM") if hasattr(signal, n))

    def __init__(self, callables_only: bool = False) -> None:
        # callables_only: leave signals with the default action (SIGTERM outside the CLI
        # ends the process at once) or ignored as they are
        self.callables_only = callables_only

    def __enter__(self) -> _signals_held:
        self.saved: dict[int, Any] = {}
        self.pending: list[int] = []
        if threading.current_thread() is not threading.main_thread():
            return self
        with _blocked(self._SIGNALS):  # one arriving mid-swap waits for the recorder
            for sig in self._SIGNALS:
                handler = signal.getsignal(sig)
                if handler is None or (self.callables_only and not callable(handler)):
                    continue
                self.saved[sig] = signal.signal(sig, lambda n, _f: self.pending.append(n))
        return self

    def __exit__(self, *exc: Any) -> None:
        with _blocked(self._SIGNALS):  # every handler back before any of them runs
            for sig, handler in self.saved.items():
                signal.signal(sig, handler)
        if self.pending:  # one stop, the stronger if both came: SIGTERM
            term = getattr(signal, "SIGTERM", None)
            signal.raise_signal(term if term in self.pending else self.pending[0])


class _blocked:
    """``signals`` blocked for the thread (POSIX; elsewhere a no-op): one that arrives waits
    in the kernel until the block ends."""

    def __init__(self, signals: tuple[int, ...]) -> None:
        self.signals, self.old = signals, None

    def __enter__(self) -> None:
        if hasattr(signal, "pthread_sigmask"):
            self.old = signal.pthread_sigmask(signal.SIG_BLOCK, self.signals)

    def __exit__(self, *exc: Any) -> None:
        if self.old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.old)


def _fsync_tree(root: Path) -> None:
    """fsync every file under ``root``, then each directory (a power cut after the
    renames must not leave a run of empty or cut files, with no previous version)."""
    for d, _, files in os.walk(root, topdown=False):
        for name in files:
            _fsync_dir(Path(d, name))
        _fsync_dir(Path(d))


def _fsync_dir(path: Path) -> None:
    """fsync a directory (or a file) by path; best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_model(model: TwoTower, directory: str | os.PathLike[str], *,
               test: Any = None, metrics: dict[str, Any] | None = None,
               data: dict[str, Any] | None = None,
               unchanged_since: bytes | None = None) -> Path:
    """Save a fitted model (and optionally its held-out split and metrics).

    ``unchanged_since``: the run's ``format.json`` as it was read (``run_stamp``); the
    save is refused (ArtifactError, nothing written) when the run holds another since,
    e.g. a ``twotower train --out`` that finished while this command re-indexed the run.
    """
    import twotower

    if metrics is not None and (not isinstance(metrics, dict) or not all(
            isinstance(row, dict) for row in metrics.values())):
        raise ConfigError("`metrics` must map each method to its metrics (method -> metric "
                          "-> value, e.g. {\"model\": recommend_and_evaluate(...)}), as "
                          "eval.json is read back")

    def write(tmp: Path) -> None:
        _write_json(tmp / "config.json", {"model": model.config.to_dict(),
                                          "index": model.index_config.to_dict(),
                                          "data": data or {},
                                          "rating_range": list(model.rating_range)})
        model.user_vocab.save(tmp / "user_vocab.json")
        model.item_vocab.save(tmp / "item_vocab.json")
        arrays: dict[str, np.ndarray] = {
            "item_embeddings": model.item_embeddings,
            "seen_indptr": model._seen.indptr.astype(np.int64),
            "seen_indices": model._seen.indices.astype(np.int64),
            "item_popularity": model.item_popularity,
        }
        for name in ("user_embeddings", "history_embeddings"):
            if getattr(model, name) is not None:
                arrays[name] = getattr(model, name)
        if getattr(model, "_seen_recency", None) is not None:
            arrays["seen_recency"] = model._seen_recency
        if model._history is not None:
            arrays["history_table"] = model._history
        lin = getattr(model, "_linear", None)
        if lin is not None:  # the closed-form EASE part (its items are in item_embeddings)
            arrays.update(ease_query_table=lin.query_table, ease_item_table=lin.item_table,
                          ease_model_scale=np.float64(lin.model_scale),
                          ease_half_life=np.float64(lin.half_life),
                          ease_floor=np.float64(lin.floor), ease_lambda=np.float64(lin.lambda_))
            if lin.trained_recency is not None:  # (a run before it: the config's weights)
                arrays["ease_trained_recency"] = np.asarray(lin.trained_recency, np.float64)
        for what in ("item", "user"):  # side features (absent in older artifacts)
            matrix = getattr(model, f"_{what}_features", None)
            if matrix is not None and matrix.shape[1]:
                # sparse (CSR: each row's features); runs saved before held it dense
                from twotower.models.features import as_features
                matrix = as_features(matrix)
                arrays[f"{what}_features_indptr"] = matrix.indptr.astype(np.int64)
                arrays[f"{what}_features_indices"] = matrix.indices.astype(np.int64)
                arrays[f"{what}_features_data"] = matrix.data
                arrays[f"{what}_feature_names"] = np.array(
                    getattr(model, f"{what}_feature_names"), dtype=str)
        np.savez(tmp / "arrays.npz", **arrays)
        for name, info in (("items", model.item_info), ("users", model.user_info)):
            if info is not None:
                df = info.copy()
                df.columns = [str(c) for c in df.columns]
                if "id" in df:
                    df["id"] = df["id"].astype(str)
                _mixed_as_text(df)
                df.to_parquet(tmp / f"{name}.parquet", index=False)
        _write_json(tmp / "training.json", {"history": model.history,
                                            "fit_seconds": model.fit_seconds,
                                            "trained_at": model.trained_at,
                                            "trained_with": model.trained_with,
                                            "ease": getattr(model, "ease_tuning", None)})
        if getattr(model, "_net", None) is not None:
            model._net.save_weights(tmp / "model.weights.h5")
        elif getattr(model, "_weights_path", None) is not None:  # loaded without Keras
            shutil.copy2(model._weights_path, tmp / "model.weights.h5")
        model._index.save(tmp / "index")
        if model._similar.kind != "exact":  # an exact cosine scan is rebuilt at load
            model._similar.save(tmp / "similar")
        if test is not None:
            np.savez(tmp / "test.npz", users=test.users, items=test.items)
        if metrics is not None:
            _write_json(tmp / "eval.json", metrics)
        files = {str(p.relative_to(tmp)): _sha256(p) for p in sorted(tmp.rglob("*"))
                 if p.is_file()}
        _write_json(tmp / _FORMAT, {
            "format_version": FORMAT_VERSION, "twotower_version": twotower.__version__,
            "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "files": files})

    def unchanged(target: Path) -> None:
        if unchanged_since is not None and run_stamp(target) != unchanged_since:
            raise ArtifactError(f"{target} changed while this command ran (another command "
                                "saved a run there); nothing was written: run it again on "
                                "the run as it is now")

    # (the CLI names its flag for it: `train --out`)
    return atomic_directory(directory, write, "TwoTower.save", unchanged=unchanged)


def run_stamp(directory: str | os.PathLike[str]) -> bytes | None:
    """The run's ``format.json`` (its files' checksums and save time), or None: what
    ``save_model(unchanged_since=...)`` compares."""
    try:
        return (Path(directory) / _FORMAT).read_bytes()
    except OSError:
        return None


def _mixed_as_text(df: pd.DataFrame) -> None:
    """Object columns Parquet cannot type (``1.5`` beside ``"n/a"``) become text, blanks
    kept: metadata from a user's DataFrame must not fail the save after training."""
    import pyarrow as pa
    for col in df.columns[df.dtypes == object]:
        try:
            pa.array(df[col], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            df[col] = df[col].map(lambda v: v if v is None or (isinstance(v, float)
                                                               and v != v) else str(v))


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``format.json`` of a run, checked; ArtifactError names what is wrong."""
    d = Path(directory)
    if not d.exists():
        old = d.parent / f".{d.name}.old"
        hint = (f" (an interrupted save left the previous version in {old}; rename it back)"
                if old.exists() else "")
        raise ArtifactError(f"model directory not found: {d}{hint}")
    if not d.is_dir():
        raise ArtifactError(f"not a model directory: {d}")
    try:
        manifest = json.loads((d / _FORMAT).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{d} is not a twotower model directory (no {_FORMAT}); "
                            "train one with `twotower train --out DIR`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{d / _FORMAT} is corrupt: {exc}") from None
    except OSError as exc:  # a directory in its place, no permission, an I/O error
        raise ArtifactError(f"{d / _FORMAT} cannot be read: {exc.strerror or exc}") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ArtifactError(f"{d / _FORMAT} is corrupt: format_version must be an integer "
                            f">= 1, got {version!r}")
    if version > FORMAT_VERSION:  # before the files: a newer format may hold others
        raise ArtifactError(f"{d} has model format {version}, newer than this twotower "
                            f"understands ({FORMAT_VERSION}); upgrade twotower")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(f in files for f in _REQUIRED):
        raise ArtifactError(f"{d / _FORMAT} is corrupt: expected an object with a \"files\" "
                            f"object of checksums, {', '.join(_REQUIRED)} among them")
    return manifest


def verify_files(directory: str | os.PathLike[str], manifest: dict[str, Any],
                 keep: Any = None) -> dict[str, Any]:
    """The run's files match the checksums of its ``manifest``; ArtifactError naming the
    file otherwise. Returns the bytes of the files whose names ``keep(name)`` is true
    for, as read for their checksums: the loader reads them from there, each file once."""
    from twotower.index._base import read_hashed
    d = Path(directory)
    kept = {}
    for name, digest in manifest.get("files", {}).items():
        p = d / name
        if not p.is_file():
            raise ArtifactError(f"{d}: file {name} is missing")
        # an .npz is read through io.BytesIO, which copies an array but not bytes
        blob, got = read_hashed(p, writable=not name.endswith(".npz"))
        if got != digest:
            raise ArtifactError(f"{d}: file {name} is corrupt (checksum mismatch)")
        if keep is not None and keep(name):
            kept[name] = blob
    return kept


def _read_by_loader(name: str) -> bool:
    """A run's file that ``_load_once`` reads in whole: its arrays and index files (the
    large ones; the JSON and Parquet files are read from disk, the weights only by Keras)."""
    return name == "arrays.npz" or name.startswith(("index/", "similar/"))


def _index_blobs(blobs: dict[str, Any], sub: str) -> dict[str, Any]:
    """The bytes of the files in the run's ``sub`` index directory, by file name."""
    return {name[len(sub) + 1:]: blobs.pop(name) for name in list(blobs)
            if name.startswith(sub + "/")}


#: how often ``load_model`` reads a run again that another command replaced while it read
LOAD_TRIES = 5


def load_model(directory: str | os.PathLike[str], *, keras: bool = False) -> TwoTower:
    """Load a model saved by ``save_model``; ``keras=True`` also rebuilds the Keras net.

    The files are read one by one, and a save may replace the run between two of them
    (``twotower train --out RUN`` while a service reloads RUN): a load that saw the run's
    ``format.json`` change while it read is done again, so the model is one save's, never
    a mix of two (nor a false "corrupt" from checking one save's files against the
    other's checksums).

    Raises:
        ArtifactError: the run is missing, damaged, or was replaced during each of
            ``LOAD_TRIES`` reads.
    """
    d = Path(directory)
    return read_whole(d, lambda: _load_once(d, keras=keras))


def read_whole(directory: str | os.PathLike[str], read: Any) -> Any:
    """``read()``, done again while a save replaces the run ``directory`` under it (its
    ``format.json`` changed meanwhile), so what it returns comes from one save. An error
    from a run that stayed as it was is raised at once (it is damaged or missing).

    Raises:
        ArtifactError: the run was replaced during each of ``LOAD_TRIES`` reads.
    """
    import time
    for attempt in range(LOAD_TRIES):
        before = run_stamp(directory)
        try:
            got = read()
        except (ArtifactError, OSError):
            if run_stamp(directory) == before:
                raise  # the run as it is: damaged or missing
        else:
            if run_stamp(directory) == before:
                return got
        time.sleep(0.05 * (attempt + 1))  # replaced while read: read the new one
    raise ArtifactError(f"{directory} was replaced by another save each of the {LOAD_TRIES} "
                        "times it was read; read it again when the saves are done")


def _load_once(d: Path, *, keras: bool = False) -> TwoTower:
    from twotower.index import IndexConfig
    from twotower.index._base import _load_index
    from twotower.models.config import ModelConfig
    from twotower.models.retriever import TwoTower

    manifest = read_manifest(d)
    blobs = verify_files(d, manifest, keep=_read_by_loader)
    try:
        cfg = json.loads((d / "config.json").read_text(encoding="utf-8"))
        if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
            raise ArtifactError(f"{d / 'config.json'} is corrupt: no \"model\" settings")
        model = TwoTower(ModelConfig.from_dict(cfg["model"]), IndexConfig.from_dict(cfg["index"]))
        model.rating_range = tuple(cfg.get("rating_range", (0.0, 1.0)))
        model.data_source = cfg.get("data") or {}
        if not isinstance(model.data_source, dict) or not isinstance(
                model.data_source.get("columns", {}), dict):
            raise ArtifactError(f"{d / 'config.json'} is corrupt: \"data\" is not an object "
                                "of the training file's source and columns")
        model.user_vocab = Vocabulary.load(d / "user_vocab.json")
        model.item_vocab = Vocabulary.load(d / "item_vocab.json")
        import io
        packed = blobs.pop("arrays.npz", None)
        with np.load(d / "arrays.npz" if packed is None else io.BytesIO(packed),
                     allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        del packed
        model.item_embeddings = arrays["item_embeddings"]
        model.user_embeddings = arrays.get("user_embeddings")
        model.history_embeddings = arrays.get("history_embeddings")
        model._history = arrays.get("history_table")
        if "ease_query_table" in arrays:
            from twotower.models.linear import LinearPart
            tr = arrays.get("ease_trained_recency")
            if tr is not None and (tr.shape != (2,) or tr.dtype.kind not in "fiu"
                                   or not np.isfinite(tr).all() or tr[0] < 0
                                   or not 0 <= tr[1] <= 1):
                raise ArtifactError(f"{d / 'arrays.npz'} is corrupt: ease_trained_recency "
                                    "must be [half_life >= 0, floor in [0, 1]], got "
                                    f"{tr.tolist()!r}")
            model._linear = LinearPart(
                query_table=arrays["ease_query_table"], item_table=arrays["ease_item_table"],
                model_scale=float(arrays["ease_model_scale"]),
                half_life=float(arrays["ease_half_life"]), floor=float(arrays["ease_floor"]),
                lambda_=float(arrays["ease_lambda"]),
                trained_recency=(None if "ease_trained_recency" not in arrays else tuple(
                    float(v) for v in arrays["ease_trained_recency"])))
        for what in ("item", "user"):
            names = [str(n) for n in arrays.get(f"{what}_feature_names", [])]
            setattr(model, f"_{what}_features", _features(d, arrays, what, len(names), len(
                model.item_vocab if what == "item" else model.user_vocab)))
            setattr(model, f"{what}_feature_names", names)
        model.item_popularity = arrays["item_popularity"]
        n_users, n_items = len(model.user_vocab), len(model.item_vocab)
        model._seen = sp.csr_matrix(
            (np.ones(len(arrays["seen_indices"]), dtype=np.float32), arrays["seen_indices"],
             arrays["seen_indptr"]), shape=(n_users, n_items))
        model._seen_recency = arrays.get("seen_recency")  # runs saved before: None
        model.item_info = _read_info(d / "items.parquet", model.item_vocab)
        model.user_info = _read_info(d / "users.parquet", model.user_vocab)
        training = json.loads((d / "training.json").read_text(encoding="utf-8"))
        model.history, model.fit_seconds = training["history"], training["fit_seconds"]
        # runs saved before trained_at was kept: their save time, as close as there is
        model.trained_at = training.get("trained_at") or manifest.get("created_at")
        model.ease_tuning = training.get("ease")
        model.trained_with = training.get("trained_with")  # None: a run saved before it was kept
        model.manifest = manifest
    except ArtifactError:
        raise
    except (KeyError, ValueError, OSError, TypeError, AttributeError, IndexError,
            zipfile.BadZipFile, EOFError) as exc:
        raise ArtifactError(f"{d}: cannot load model ({type(exc).__name__}: {exc})") from None
    _check_loaded(d, model)
    model._fitted = True
    model._weights_path = d / "model.weights.h5" if (d / "model.weights.h5").is_file() else None
    model._loaded_from = d.resolve()  # (``TwoTower.save`` over it warns what it drops)
    # (the run's checksums, verified above, cover the index's files)
    model._index = _load_index(d / "index", verify=False, blobs=_index_blobs(blobs, "index"))
    if model._index.config.kind != model.index_config.kind:
        raise ArtifactError(f"{d} is corrupt: config.json names index kind "
                            f"{model.index_config.kind!r}, {d / 'index'} holds "
                            f"{model._index.config.kind!r}")
    if model._index.dim != model.item_embeddings.shape[1]:
        raise ArtifactError(f"{d / 'arrays.npz'} is corrupt: item_embeddings are "
                            f"{model.item_embeddings.shape[1]} wide, the index "
                            f"{model._index.dim}")
    model._similar = None
    try:
        if (d / "similar").is_dir():  # an HNSW or IVF run's own similar-items index
            model._similar = _load_index(d / "similar", verify=False,
                                         blobs=_index_blobs(blobs, "similar"))
            if (model._similar.config.metric != "cosine"
                    or model._similar.dim != model._trained_items().shape[1]
                    or len(model._similar) != model.n_items):
                raise ArtifactError(f"{d / 'similar'} is corrupt: it is not a cosine index "
                                    f"of the run's {model.n_items:,} items")
        else:  # exact (and runs saved before similar items had an index of their own)
            model._build_similar("exact")
        # one question of each kind: a run can hold arrays of matching sizes that still do
        # not fit together (e.g. a table of the wrong width)
        model.recommend(np.array([0]), 1, model.seen_items(np.array([0])))
        if model.n_items > 1:
            model.similar_items(np.array([0]), 1)
    except Exception as exc:  # noqa: BLE001 - any failure: the run is not usable
        raise ArtifactError(f"{d}: the run loads but a probe query fails "
                            f"({type(exc).__name__}: {exc})") from None
    if keras:
        model._load_net(d / "model.weights.h5")
    return model


def _features(d: Path, arrays: dict[str, np.ndarray], what: str, n_features: int,
              n_rows: int) -> Any:
    """The saved ``[n_rows, n_features]`` side-feature matrix as CSR (None: none saved):
    its CSR arrays, or the dense matrix of a run saved before the sparse form."""
    from twotower.models.features import as_features
    if f"{what}_features" in arrays:  # dense, as runs saved before kept it
        return as_features(arrays[f"{what}_features"])
    if f"{what}_features_indptr" not in arrays:
        return None
    import scipy.sparse as sp
    indptr, indices, data = (arrays[f"{what}_features_{k}"]
                             for k in ("indptr", "indices", "data"))
    if (indptr.ndim != 1 or len(indptr) != n_rows + 1 or indptr[0] != 0
            or np.any(np.diff(indptr) < 0) or indptr[-1] != len(indices)
            or len(indices) != len(data)
            or len(indices) and (indices.min() < 0 or indices.max() >= n_features)
            or not np.isfinite(data).all()):
        raise ArtifactError(f"{d / 'arrays.npz'} is corrupt: {what}_features_indptr/"
                            f"indices/data do not form a [{n_rows}, {n_features}] matrix "
                            f"({len(indptr)} row pointers, {len(indices)} indices, "
                            f"{len(data)} values)")
    return as_features(sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_features)))


def _check_loaded(d: Path, model: TwoTower) -> None:
    """ArtifactError unless the arrays agree with the vocabularies and the config."""
    n_users, n_items = len(model.user_vocab), len(model.item_vocab)
    checks = [("item_embeddings", model.item_embeddings, n_items),
              ("user_embeddings", model.user_embeddings, n_users),
              ("history_embeddings", model.history_embeddings, n_items + 1),
              ("history_table", model._history, n_users),
              ("item_popularity", model.item_popularity, n_items),
              ("seen_recency", getattr(model, "_seen_recency", None), model._seen.nnz)]
    for name, a, rows in checks:
        if a is None:
            continue
        if a.ndim < 1 or a.shape[0] != rows:
            raise ArtifactError(f"{d / 'arrays.npz'} is corrupt: {name} has shape "
                                f"{a.shape}, expected {rows} rows")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise ArtifactError(f"{d / 'arrays.npz'} is corrupt: {name} holds NaN or inf")
    if model.config.query_tower != "id" and model._history is None:
        raise ArtifactError(f"{d / 'arrays.npz'} is corrupt: no history_table, which the "
                            f"query tower {model.config.query_tower!r} needs")


def _read_info(path: Path, vocab: Vocabulary) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    df = pd.read_parquet(path)
    if "id" in df:
        df["id"] = vocab.ids
    return df


def load_test(directory: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """The (users, items) index arrays of a run's held-out split, or None."""
    p = Path(directory) / "test.npz"
    if not p.is_file():
        return None
    try:
        with np.load(p, allow_pickle=False) as z:
            users, items = z["users"], z["items"]
    except (KeyError, ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ArtifactError(f"{p} is corrupt: {type(exc).__name__}: {exc}") from None
    if users.ndim != 1 or users.shape != items.shape or users.dtype.kind not in "iu" \
            or items.dtype.kind not in "iu":
        raise ArtifactError(f"{p} is corrupt: users and items are not two integer arrays "
                            f"of one length ({users.dtype}{users.shape}, "
                            f"{items.dtype}{items.shape})")
    return users, items


def load_metrics(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run's ``eval.json`` (metrics on its held-out split), or None."""
    p = Path(directory) / "eval.json"
    if not p.is_file():
        return None
    try:
        metrics = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{p} is corrupt: {exc}") from None
    if not isinstance(metrics, dict) or not all(isinstance(row, dict)
                                                 for row in metrics.values()):
        raise ArtifactError(f"{p} is corrupt: not a JSON object of metrics (method -> "
                            "metric -> value)")
    return metrics


def reindex_run(directory: str | os.PathLike[str], config: Any, *, sample: int = 1000,
                k: int = 10, seed: int = 0, target_recall: float | None = None,
                stage: Any = None) -> dict[str, Any]:
    """Build the search index ``config`` for a saved run, check it, and save it into the run.
    ``stage``: called with what it does next (``twotower index`` shows it every 10 s).

    Recall@k is measured against exact search on the query embeddings of up to ``sample``
    of the run's users (real queries, seen items excluded). The run is re-saved atomically.

    ``target_recall`` (HNSW and IVF): the search knob (``ef_search``, ``nprobe``) starts
    at ``config``'s value and doubles until recall@k on half of the sampled users reaches
    the target, or the knob its limit (4,096; every list). The index keeps the value
    reached, and the report's recall and speed come from the other half of the users.
    Default settings that suit one catalogue can miss badly on another (IVF's on a run of
    unclustered embeddings, for one), and only real queries tell.

    Returns:
        A report: kind, config (as saved), build seconds, index size in bytes, recall@k vs
        exact, queries used, and the queries per second of one batch search of those
        queries, by this index and by exact search (one call each: a rough guide, not a
        benchmark); with ``target_recall``, ``tuned``: the knob, the target, the recall
        of every value tried (on the calibration users), the value kept and whether it
        reached the target.
    """
    import time

    from twotower.index import IndexConfig, make_index
    from twotower.models.retriever import TwoTower

    say = stage or (lambda _what: None)
    if not Path(directory).is_symlink():  # (a link: check_replaceable names it and its run)
        read_manifest(directory)  # a run to read first (a file was told to "choose a new one")
    check_replaceable(directory, "run directory")  # before minutes of building
    stamp = run_stamp(directory)
    say("loading the run")
    model = TwoTower.load(directory)
    test = load_test(directory)
    metrics = load_metrics(directory)
    rng = np.random.default_rng(seed)
    pool = model._trained_user_pool()  # an untrained user is never served by the index
    users = np.sort(rng.choice(pool, size=min(sample, len(pool)), replace=False))
    kk = min(k, model.n_items)
    exact = make_index(IndexConfig(kind="exact")).build(model.item_embeddings)
    tune = bool(target_recall) and config.kind != "exact" and len(users) >= 2
    # calibrate on every other user, report on the rest
    calib, users = (users[0::2], users[1::2]) if tune else (users[:0], users)
    queries = model.query_embeddings(users)
    exclude = model.seen_items(users)
    say(f"building the {config.kind} indexes (items, similar items) over "
        f"{model.n_items:,} items" + (f", tuning them to recall@10 {target_recall}"
                                       if tune else ""))
    t0 = time.perf_counter()
    tuned = model.set_index(config, target_recall=target_recall if tune else None,
                            users=calib)
    build_s = time.perf_counter() - t0 - (tuned["seconds"] if tuned else 0.0) - (
        tuned["similar"]["seconds"] if tuned and "similar" in tuned else 0.0)
    say(f"measuring recall@{kk} against exact search ({len(users):,} users)")
    measured = _against_exact(model._index, exact, queries, kk, exclude,
                              model._untrained_item_cache()[1])
    held = None
    if test is not None:
        from twotower.data.interactions import Interactions
        held = Interactions(users=test[0], items=test[1], user_vocab=model.user_vocab,
                            item_vocab=model.item_vocab)
    if metrics:  # the served index's row was the old index's: measured again, or dropped
        metrics = {name: row for name, row in metrics.items() if not name.startswith("model (")}
        cuts = sorted(int(key.split("@")[1]) for key in (metrics.get("model") or {})
                      if key.startswith("recall@"))
        if held is not None and cuts and config.kind != "exact":
            say(f"scoring the held-out split with the {config.kind} index")
            from twotower.evaluation.run import served_metrics, train_interactions
            metrics[f"model ({config.kind} index)"] = served_metrics(
                model, train_interactions(model), held, cuts)
    say("saving the run")
    save_model(model, directory, test=held, metrics=metrics, data=model.data_source,
               unchanged_since=stamp)
    report = {"kind": config.kind, "config": model.index_config.to_dict(),
              "build_seconds": round(build_s, 4),
              "index_bytes": _dir_bytes(Path(directory) / "index"), **measured}
    untrained = int(np.count_nonzero(model.untrained_items()))
    if untrained:  # in no list the run serves (and so not searched for)
        report["untrained_items"] = untrained
        report["items_listed"] = model.n_items - untrained
    if config.kind == "ivf":  # nlist/nprobe 0 in the config: the ones picked for this size
        report["nlist_used"], report["nprobe_used"] = model._index.nlist, model._index.nprobe
    if tuned is not None:
        report["tuned"] = tuned
    if model._similar.kind != "exact":  # (the ticker said "saving the run" meanwhile)
        say(f"measuring the similar-items index's recall@{min(k, model.n_items - 1)} "
            "against exact search")
    report["similar"] = _similar_report(model, sample, k, seed, tuned=tuned is not None)
    if (Path(directory) / "similar").is_dir():
        report["similar"]["index_bytes"] = _dir_bytes(Path(directory) / "similar")
    return report


def _dir_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _against_exact(index: Any, exact: Any, queries: np.ndarray, k: int, exclude: Any,
                   deny: Any = None) -> dict[str, Any]:
    """Recall@k of ``index`` against ``exact`` on ``queries`` (``exclude`` and ``deny``
    applied: the items the model never trained are in no list it serves), and the queries
    per second of each (one batch call each: a rough guide)."""
    if deny is not None:  # each index's own prepared list, as the model serves
        deny_exact, deny = exact.prepare_deny(deny), index.prepare_deny(deny)
    else:
        deny_exact = None
    import time

    from twotower.index import recall_at_k
    t0 = time.perf_counter()
    _, ref = exact.search(queries, k, exclude=exclude, deny=deny_exact)
    exact_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, got = index.search(queries, k, exclude=exclude, deny=deny)
    search_s = time.perf_counter() - t0
    n = len(queries)
    return {f"recall@{k}_vs_exact": round(recall_at_k(ref, got), 4), "queries": n,
            "queries_per_second": round(n / max(search_s, 1e-9), 1),
            "exact_queries_per_second": round(n / max(exact_s, 1e-9), 1)}


def _similar_report(model: TwoTower, sample: int, k: int, seed: int, *, tuned: bool
                    ) -> dict[str, Any]:
    """The similar-items index of a re-indexed run: its kind, and for HNSW and IVF its
    recall@k against an exact cosine scan on up to ``sample`` items (each itself excluded;
    tuned: items other than those it was tuned on, where there are any) and the queries
    per second of both (one batch call each)."""
    from twotower.index import IndexConfig, make_index
    index = model._similar
    out: dict[str, Any] = {"kind": index.kind}
    if index.kind == "exact" or model.n_items < 2:
        return out
    pool = np.flatnonzero(~model.untrained_items())  # the items it answers for
    if tuned:
        rest = np.setdiff1d(pool, model._similar_calibration())
        out["calibration_items_left_out"] = bool(len(rest))
        pool = rest if len(rest) else pool
    rng = np.random.default_rng(seed + 1)
    items = np.sort(rng.choice(pool, size=min(sample, len(pool)), replace=False))
    vectors, kk = model._trained_items(), min(k, model.n_items - 1)
    exclude = [np.array([i]) for i in items]
    exact = make_index(IndexConfig(kind="exact", metric="cosine")).build(vectors)
    knob = "nprobe" if index.kind == "ivf" else "ef_search"
    return {**out, knob: index.nprobe if knob == "nprobe" else index.config.ef_search,
            **_against_exact(index, exact, vectors[items], kk, exclude,
                             model._untrained_item_cache()[1])}


# ---------------------------------------------------------------- files of rows
class atomic_file:
    """``with atomic_file(out) as tmp:`` write ``tmp``, a name of this process's own beside
    ``out``, which replaces ``out`` when the block ends without an error (two commands
    writing one file each write their own, and a reader never sees a half-written one);
    on any error, Ctrl-C and SIGTERM included, ``tmp`` is removed and ``out`` left as it
    was. Temporary files of killed processes beside ``out`` are removed. A file system
    error is re-raised as one ``OSError`` naming ``out`` and saying it is unchanged."""

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = Path(out)
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        out = self.out
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot write {out}: {exc.strerror or exc}; "
                                     "nothing was written") from None
        for left in out.parent.glob(f".{out.name}.tmp-*-*"):
            pid = left.name[len(f".{out.name}.tmp-"):].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                left.unlink(missing_ok=True)
        self.tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        return self.tmp

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        assert self.tmp is not None
        try:
            if exc is None:
                os.replace(self.tmp, self.out)
                return
        except BaseException as late:  # (the rename itself failed)
            exc = late
        self.tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            kept = f"{self.out} is unchanged" if self.out.exists() else "nothing was written"
            raise OSError(exc.errno, f"cannot write {self.out}: {exc.strerror or exc}; "
                                     f"{kept}") from None
        if kind is None:
            raise exc


def save_keras(net: Any, out: str | os.PathLike[str]) -> Path:
    """Save a ``keras.Model`` (``TwoTower.to_keras``) to ``out``, a ``.keras`` file,
    atomically (``atomic_file``: Ctrl-C or a full disk leave the old file, or none).
    Keras writes only names ending in ``.keras``: the model goes to such a name beside
    the temporary one first (removed on any error; ``atomic_file`` clears one a killed
    process left, as its name starts with the temporary one's)."""
    out = Path(out)
    if out.suffix != ".keras":
        raise ConfigError(f"`out`: {out}: a Keras model is written to a .keras file, got "
                          f"{repr(out.suffix) if out.suffix else 'no suffix'}")
    with atomic_file(out) as tmp:
        named = tmp.with_name(tmp.name + ".keras")
        try:
            net.save(named)
            os.replace(named, tmp)
        finally:
            named.unlink(missing_ok=True)
    return out


#: ``export_embeddings`` formats by suffix
EMBEDDING_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv",
                     ".jsonl": "jsonl", ".ndjson": "jsonl", ".npz": "npz"}


def format_of(out: str | os.PathLike[str], formats: dict[str, str], name: str,
              expected: str) -> str:
    """The format ``out``'s suffix names in ``formats`` (suffix -> format), or ConfigError
    naming the argument (``name``) and the files written (``expected``)."""
    suffix = Path(out).suffix.lower()
    if suffix not in formats:
        got = repr(suffix) if suffix else "no suffix"
        raise ConfigError(f"{name}: {out}: expected {expected} file, got {got}")
    return formats[suffix]


def embeddings_format(out: str | os.PathLike[str]) -> str:
    """The format ``out``'s suffix names, or ConfigError naming the ones written."""
    return format_of(out, EMBEDDING_FORMATS, "`out`",
                     "a .parquet, .csv, .jsonl (JSON lines) or .npz (numpy)")


def write_embeddings(out: str | os.PathLike[str], id_name: str, ids: np.ndarray,
                     listed: np.ndarray | None, vectors: Any, dim: int, chunk_rows: int,
                     meta: dict[str, Any] | None = None) -> Path:
    """Write ``ids`` (external ids, their type kept), ``listed`` (bool, or None: no such
    column) and their vectors to ``out`` atomically (``atomic_file``). ``vectors(lo, hi)``
    gives rows ``lo:hi`` as ``[hi - lo, dim]`` float32, called ``chunk_rows`` rows at a
    time (``.npz``: once, for every row).

    Columns: ``{id_name}_id``, ``listed``, and ``vector``: a list of float32 in Parquet
    (``meta`` as JSON in the schema metadata, key ``twotower``), a JSON array in JSON
    lines, one column each ``v0 .. v{dim-1}`` in CSV, a ``[n, dim]`` float32 array in
    ``.npz``. Text holds each number with 9 significant digits: read back as float32, the
    exact values written.
    """
    fmt = embeddings_format(out)
    out = Path(out)
    n, key = len(ids), f"{id_name}_id"
    with atomic_file(out) as tmp, tmp.open("wb") as fh:
        if fmt == "npz":  # (a file object: given a name, numpy would add .npz to it)
            arrays = {key: ids.astype(str if ids.dtype.kind not in "iu" else np.int64),
                      "vector": vectors(0, n).reshape(n, dim)}
            np.savez(fh, **arrays, **({} if listed is None else {"listed": listed}))
            return out
        writer = _ChunkWriter(fh, fmt, key, dim, meta)
        try:
            for lo in range(0, max(n, 1), chunk_rows):
                hi = min(n, lo + chunk_rows)
                writer.write(ids[lo:hi], None if listed is None else listed[lo:hi],
                             np.asarray(vectors(lo, hi), np.float32).reshape(hi - lo, dim))
        except BaseException:
            writer.close(quiet=True)  # the first error is the one to say
            raise
        writer.close()
    return out


class _ChunkWriter:
    """``write_embeddings``' rows, a chunk at a time, into an open binary file: Parquet
    (one row group a chunk), CSV (the header once) or JSON lines."""

    def __init__(self, fh: Any, fmt: str, key: str, dim: int,
                 meta: dict[str, Any] | None) -> None:
        self.fh, self.fmt, self.key, self.dim, self.meta = fh, fmt, key, dim, meta
        self.parquet: Any = None
        self.header = True

    def write(self, ids: np.ndarray, listed: np.ndarray | None, v: np.ndarray) -> None:
        if self.fmt == "parquet":
            self._parquet(ids, listed, v)
            return
        frame = pd.DataFrame(v, columns=[f"v{j}" for j in range(self.dim)])
        if self.fmt == "csv":
            frame.insert(0, self.key, ids)
            if listed is not None:
                frame.insert(1, "listed", listed)
            frame.to_csv(self.fh, index=False, header=self.header, float_format="%.9g")
            self.header = False
            return
        # JSON lines: each row's numbers as the CSV writer formats them (9 digits)
        numbers = frame.to_csv(index=False, header=False, float_format="%.9g",
                               lineterminator="\n").splitlines()
        flags = [""] * len(ids) if listed is None else [
            f', "listed": {"true" if f else "false"}' for f in listed.tolist()]
        self.fh.write("".join(
            f'{{"{self.key}": {json.dumps(i, ensure_ascii=False)}{flag}, "vector": [{row}]}}\n'
            for i, flag, row in zip(ids.tolist(), flags, numbers)).encode("utf-8"))

    def _parquet(self, ids: np.ndarray, listed: np.ndarray | None, v: np.ndarray) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        cols = {self.key: pa.array(ids.tolist(), pa.int64() if ids.dtype.kind in "iu"
                                   else pa.string())}
        if listed is not None:
            cols["listed"] = pa.array(listed, pa.bool_())
        cols["vector"] = pa.FixedSizeListArray.from_arrays(
            pa.array(v.reshape(-1), pa.float32()), self.dim)
        table = pa.table(cols)
        if self.parquet is None:
            table = table.replace_schema_metadata({"twotower": json.dumps(self.meta or {})})
            self.parquet = pq.ParquetWriter(self.fh, table.schema)
        self.parquet.write_table(table)

    def close(self, quiet: bool = False) -> None:
        """Finish a Parquet file (its footer). ``quiet``: after an error, whose file is
        removed anyway (a writer left open complains when collected), errors ignored."""
        writer, self.parquet = self.parquet, None
        if writer is not None:
            try:
                writer.close()
            except Exception:
                if not quiet:
                    raise
