"""Training checkpoints: a training that stops (Ctrl-C, a killed job, a crash) resumes where
its last checkpoint left it, instead of from the start.

``TwoTower.fit(..., checkpoint=DIR)`` / ``fit_stream(..., checkpoint=DIR)`` and
``twotower train --checkpoint DIR`` keep one in ``DIR``:
- ``checkpoint.json``: what is being trained (the model config, a digest of the data, the
  training path). A checkpoint resumes only the same training: anything else is refused,
  naming what differs.
- the product loop (``TrainLoop``): ``state.npz``, the network's and the optimizer's
  variables, the epoch, the batches of it done and the losses so far; written at most every
  ``every_s`` seconds at a call boundary, at the end of an epoch when due, and on Ctrl-C or
  SIGTERM. A resumed run skips the batches done (they are read again, not trained) and
  trains on exactly as an uninterrupted one would (the loop's batch order is drawn from
  the seed and the epoch): the same losses and tables (tested). A streamed one also
  records how its shuffle buffer orders rows (``stream.SHUFFLE_ORDER``) and, with tables
  in blocks, the blocks' schedule (devices, buffer, ``blocks.STREAM_FEED``): one written
  by code that shuffled or scheduled otherwise is refused, as it would skip the wrong
  batches.
- ``model.fit`` (history towers, other objectives, validation, small catalogues):
  ``DIR/keras``, at the end of each epoch (Keras' ``save_weights``, with the optimizer's
  state: its step count, hence a cosine schedule's place, and EMA's averages; then the
  epochs done, their losses and the random state: ``_KerasCheckpoint``). A resumed run
  starts at the epoch after it with the checkpoint's weights and optimizer, NumPy's global
  generator (Keras shuffles in-memory arrays with it at each epoch) and the model's
  ``SeedGenerator`` states (history dropout; ``save_weights`` leaves them out), and, with
  batches split over devices, the product's batch stream past the epochs done: it trains
  on exactly as an uninterrupted run would, to the same losses and tables (tested, also
  over 2 devices). A stop mid-epoch resumes at that epoch's start. (A checkpoint of an
  older version, without the random state, resumes with other shuffles.)

Each file is written to a temporary name and renamed over the old one, so a stop during a
write leaves the previous checkpoint. The checkpoint is removed when the model is trained
(``TwoTower``) or, with the CLI, once the run is saved: its files, and the directory only
if the checkpoint made it (``checkpoint.json`` records whether; an empty folder the user
made stays).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import weakref
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from twotower.artifacts import _fsync_dir
from twotower.errors import ConfigError, DataError

FORMAT = 1
_META = "checkpoint.json"
_STATE = "state.npz"
_KERAS = "keras"
_LOCK = ".lock"
_KERAS_META = "state.json"


class Checkpoint:
    """Where and how often a training keeps its checkpoint.

    Args:
        directory: the checkpoint's directory (made if missing; it may hold nothing else
            of the training's: give each training its own).
        every_s: the loop writes its state at most this often (seconds, > 0).
        keep: leave the checkpoint when the training ends (the caller ``remove``-s it,
            e.g. once the trained model is saved); by default ``TwoTower.fit`` removes it.

    Example:
        >>> ck = Checkpoint("/tmp/run.ckpt", every_s=300)   # doctest: +SKIP
        >>> TwoTower(cfg).fit(train, checkpoint=ck)         # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike[str], *, every_s: float = 600.0,
                 keep: bool = False) -> None:
        if isinstance(every_s, bool) or not isinstance(every_s, (int, float)) \
                or not math.isfinite(every_s) or every_s <= 0:
            raise ConfigError(f"checkpoint every_s must be a number of seconds > 0, got "
                              f"{every_s!r}")
        self.directory = Path(directory)
        self.every_s = float(every_s)
        self.keep = bool(keep)
        self._last = time.monotonic()
        self._held: int | None = None  # the lock's file descriptor
        # whether this product made the directory (``remove`` deletes it only then: a
        # folder the user made stays); None until bound or read from checkpoint.json
        self._made: bool | None = None

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.directory)!r}, every_s={self.every_s:g})"

    @classmethod
    def of(cls, value: Any) -> Checkpoint | None:
        """``value`` as a ``Checkpoint``: one, a path, or None."""
        if value is None or isinstance(value, Checkpoint):
            return value
        if isinstance(value, (str, os.PathLike)):
            return cls(value)
        raise ConfigError(f"checkpoint must be a directory (str or path) or a Checkpoint, "
                          f"got {type(value).__name__}")

    # ------------------------------------------------------------------ the training's identity
    def start(self, fingerprint: dict[str, Any],
              defaults: dict[str, dict[str, Any]] | None = None) -> bool:
        """Bind the directory to one training. Returns whether it holds a checkpoint of
        that training (to resume). A checkpoint of another training is refused.
        ``defaults``: for a table of the fingerprint (``{"config": ...}``), the values of
        settings a checkpoint written before they existed lacks (the older code trained
        with them).

        Raises:
            ConfigError: the directory is of another training, or holds another format.
            DataError: ``checkpoint.json`` is not readable as a checkpoint's.
            OSError: the directory cannot be made or written.
        """
        import jax
        if jax.process_count() > 1:
            raise ConfigError("checkpoints with several processes are not supported: train "
                              "without --checkpoint, or on one process (--devices)")
        try:  # (a directory that cannot hold it is refused there: ``refusal``)
            return self._bind(fingerprint, defaults)
        except BaseException:  # refused or failed: the directory is not this training's
            self.release()
            raise

    def _bind(self, fingerprint: dict[str, Any],
              defaults: dict[str, dict[str, Any]] | None = None) -> bool:
        d = self.directory
        meta = d / _META
        fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back
        if meta.exists():
            try:
                saved = json.loads(meta.read_text(encoding="utf-8"))
                if not isinstance(saved, dict) or not isinstance(saved.get("fingerprint"),
                                                                 dict):
                    raise ValueError("no fingerprint")
            except (ValueError, UnicodeDecodeError) as exc:
                raise DataError(f"checkpoint {meta}: not a twotower checkpoint ({exc}); "
                                "remove the directory to start afresh") from None
            if saved.get("format") != FORMAT:
                raise ConfigError(f"checkpoint {d}: format {saved.get('format')!r}, this "
                                  f"version reads {FORMAT}; remove it to start afresh")
            self._lock()
            self._sweep()  # a killed write's temporary file (the lock is ours)
            # written before this was recorded: not known to be ours, so kept
            self._made = saved.get("made_dir") is True
            old = saved["fingerprint"]
            for key, values in json.loads(json.dumps(defaults or {})).items():
                if isinstance(old.get(key), dict):  # settings added since it was written
                    old[key] = {**values, **old[key]}
            differ = _differences(old, fingerprint)
            if differ:
                raise ConfigError(
                    f"checkpoint {d} is of another training ({'; '.join(differ[:5])}); "
                    "resume it with the same data and settings, or remove it (or give "
                    "another directory) to start afresh")
            self._last = time.monotonic()
            return (d / _STATE).exists() or (d / _KERAS / _KERAS_META).exists()
        refused = self.refusal()
        if refused:
            raise ConfigError(f"checkpoint {d}: {refused}")
        made = not d.exists()
        d.mkdir(parents=True, exist_ok=True)
        self._lock()
        self._sweep()
        self._made = made
        text = json.dumps({"format": FORMAT, "fingerprint": fingerprint, "made_dir": made},
                          indent=2, sort_keys=True).encode("utf-8")
        try:
            _write_atomic(meta, lambda fh: fh.write(text))
        except OSError as exc:  # a full disk, before any training
            raise OSError(exc.errno, f"checkpoint {d}: cannot write {_META} "
                          f"({exc.strerror or exc})") from None
        self._last = time.monotonic()
        return False

    def refusal(self) -> str | None:
        """Why the directory cannot hold this checkpoint (a file; a directory of other
        files, not a checkpoint), or None: checked by ``start``, and by the CLI before it
        reads the data."""
        d = self.directory
        if d.exists() and not d.is_dir():
            return "not a directory; give a new or empty directory for the checkpoint"
        if d.is_dir() and not (d / _META).exists() and any(
                p.name != _LOCK and not _own_leftover(p.name) for p in d.iterdir()):
            return ("the directory holds other files, not a checkpoint; give an empty or new "
                    "directory")
        return None

    def _sweep(self) -> None:
        """Remove the temporary files of writes killed midway (each as large as the
        state; a resumed checkpoint kept them until removed). The lock is held: none is
        being written."""
        for leftover in self.directory.iterdir():
            if _own_leftover(leftover.name):
                leftover.unlink(missing_ok=True)

    def _lock(self) -> None:
        """Hold the directory's lock while this training uses it: a second training given
        the same directory (the same command started twice) is refused, not mixed in."""
        if self._held is not None:
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return
        fd = os.open(self.directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(f"checkpoint {self.directory} is in use by another training "
                              "running now; wait for it to end, or give another "
                              "directory") from None
        self._held = fd
        # released when this object goes (or the process ends), or by ``release``
        self._finalizer = weakref.finalize(self, os.close, fd)

    def release(self) -> None:
        """Let another training use the directory (``remove`` does too)."""
        if self._held is not None:
            self._finalizer()
            self._held = None

    # ------------------------------------------------------------------ the loop's state
    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every_s

    def save_state(self, arrays: list[np.ndarray], position: dict[str, Any],
                   losses: dict[str, np.ndarray]) -> None:
        """Write the loop's state: ``arrays`` (variables, in the loop's order), its
        ``position`` (JSON: epoch, batches done, history) and loss arrays."""
        path = self.directory / _STATE
        payload = {f"v{i}": a for i, a in enumerate(arrays)}
        payload.update({f"loss_{k}": np.asarray(v) for k, v in losses.items()})
        payload["position"] = np.frombuffer(
            json.dumps({**position, "variables": len(arrays)}).encode("utf-8"), dtype=np.uint8)
        try:
            _write_atomic(path, lambda fh: np.savez(fh, **payload))
        except OSError as exc:  # a full disk: the previous state is still there
            raise OSError(exc.errno, f"checkpoint {self.directory}: cannot write the "
                          f"training's state ({exc.strerror or exc}); the previous checkpoint "
                          "is unchanged") from None
        self._last = time.monotonic()

    def load_state(self) -> dict[str, Any] | None:
        """The loop's saved state (``arrays``, ``position``, ``losses``), or None."""
        path = self.directory / _STATE
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                position = json.loads(bytes(z["position"]).decode("utf-8"))
                arrays = [z[f"v{i}"] for i in range(int(position["variables"]))]
                losses = {k[5:]: z[k] for k in z.files if k.startswith("loss_")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"checkpoint {path}: unreadable ({type(exc).__name__}: {exc}); "
                            "remove the directory to start afresh") from None
        return {"arrays": arrays, "position": position, "losses": losses}

    # ------------------------------------------------------------------ model.fit
    def keras_callback(self) -> Any:
        """A Keras callback keeping ``model.fit``'s checkpoint in ``DIR/keras`` (each
        epoch's end): see ``_KerasCheckpoint``."""
        return _KerasCheckpoint(self.directory / _KERAS)

    def keras_epoch(self) -> int | None:
        """The epochs a ``model.fit`` checkpoint holds as done, or None."""
        got = _KerasCheckpoint(self.directory / _KERAS).read()
        return None if got is None else int(got["epoch"])

    # ------------------------------------------------------------------ the end
    def remove(self) -> None:
        """Remove the checkpoint: its files, then the directory if the checkpoint made it
        and nothing else is in it (a directory the user made stays, empty)."""
        d = self.directory
        made = self._made
        if made is None:  # not bound by this object: as checkpoint.json records it
            try:
                made = json.loads((d / _META).read_text(encoding="utf-8")).get(
                    "made_dir") is True
            except (OSError, ValueError, UnicodeDecodeError, AttributeError):
                made = False
        # checkpoint.json last: a stop part-way leaves a checkpoint that binds again, not
        # a directory of leftovers that a new training refuses as "other files"
        (d / _STATE).unlink(missing_ok=True)
        shutil.rmtree(d / _KERAS, ignore_errors=True)
        for leftover in d.glob(".*.tmp-*"):
            leftover.unlink(missing_ok=True)
        for name in (_META, _LOCK):
            (d / name).unlink(missing_ok=True)
        self.release()
        if made:
            try:
                d.rmdir()
            except OSError:
                pass


def _own_leftover(name: str) -> bool:
    """Whether ``name`` is a temporary file of this checkpoint's own ``_write_atomic``
    (left by a process killed while writing)."""
    import re
    own = f"({re.escape(_META)}|{re.escape(_STATE)})"
    return re.fullmatch(rf"\.{own}\.tmp-\d+", name) is not None


#: fingerprint entries no setting names, said in words
_SAID = {"shuffle_order": "the stream's shuffle order differs (the checkpoint was written "
                          "by a version of twotower that shuffled otherwise)"}


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            if key in _SAID:
                out.append(_SAID[key])
            elif "digest" in key:
                out.append(f"{prefix}{key} differs")
            elif isinstance(a, dict) or isinstance(b, dict):  # a whole setting on one side
                out.append(f"{prefix}{key} was {_short(a)}, now {_short(b)}")
            else:
                out.append(f"{prefix}{key} was {a!r}, now {b!r}")
    # what trains (TwoTower.fit or fit_stream, the loop or model.fit) says the most: first
    first = ("trains", "path")
    return sorted(out, key=lambda d: next((i for i, k in enumerate(first)
                                           if d.startswith(f"{prefix}{k} ")), len(first)))


def _short(v: Any) -> str:
    return "absent" if v is None else "given" if isinstance(v, dict) else repr(v)


def _write_atomic(path: Path, write: Any) -> None:
    """``write(file)`` into a temporary file renamed over ``path`` once on disk: a stop or a
    crash during it leaves the previous ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _keras_callback_base() -> type:
    import keras
    return keras.callbacks.Callback


class _KerasCheckpoint(_keras_callback_base()):  # type: ignore[misc]
    """``model.fit``'s checkpoint, as Keras' ``BackupAndRestore`` keeps one (its
    ``save_weights``/``load_weights`` and ``_initial_epoch``), but whole at every moment:
    each epoch's weights (with the optimizer's state) go to a file of their own, then
    ``state.json``, written to a temporary name and renamed, names that file, the epochs
    done, the losses so far and the random state the next epoch draws from
    (``_random_state``), restored on resume. A stop at any point leaves the previous
    epoch's pair, never weights of one epoch with the count of another.
    (``BackupAndRestore`` overwrites one weights file in place, then its metadata: a stop
    between them trains an epoch twice, and one during the metadata leaves JSON it cannot
    read.)

    After ``fit``, ``history_before`` holds the losses of the epochs the checkpoint had done.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self.history_before: dict[str, list[float]] = {}
        self._logs: dict[str, list[float]] = {}

    def read(self) -> dict[str, Any] | None:
        meta = self.directory / _KERAS_META
        if not meta.exists():
            return None
        try:
            got = json.loads(meta.read_text(encoding="utf-8"))
            int(got["epoch"])
            if not (self.directory / str(got["weights"])).is_file():
                raise ValueError(f"its weights file {got['weights']} is missing")
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise DataError(f"checkpoint {meta}: unreadable ({type(exc).__name__}: {exc}); "
                            "remove the checkpoint directory to start afresh") from None
        return got

    def on_train_begin(self, logs: Any = None) -> None:
        # a killed write's temporary file (this training holds the directory's lock)
        for stale in self.directory.glob("tmp-*.weights.h5"):
            stale.unlink(missing_ok=True)
        got = self.read()
        self._logs = {}
        if got is None:
            return
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # its state is in the file
        weights = self.directory / got["weights"]
        try:
            model.load_weights(str(weights))
        except Exception as exc:  # noqa: BLE001 - h5py and Keras raise several types
            # a truncated or damaged file: h5py's own words named neither it nor the fix
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise DataError(f"checkpoint {weights}: unreadable ({type(exc).__name__}: "
                            f"{first[:200]}); remove the checkpoint directory to start "
                            "afresh") from None
        model._initial_epoch = int(got["epoch"])  # as BackupAndRestore resumes
        self._logs = {k: list(map(float, v)) for k, v in got.get("history", {}).items()}
        self.history_before = {k: list(v) for k, v in self._logs.items()}
        if "random" in got:  # (a checkpoint of an older version has none: later draws differ)
            _set_random_state(model, got["random"], self.directory / _KERAS_META)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        for k, v in (logs or {}).items():
            self._logs.setdefault(k, []).append(float(v))
        # the random state the next epoch starts from; save_weights keeps neither part
        drawn = _random_state(self.model)
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{epoch + 1}.weights.h5"
        tmp = self.directory / f"tmp-{os.getpid()}.weights.h5"
        try:
            try:
                self.model.save_weights(str(tmp), overwrite=True)
                _fsync_dir(tmp)
                os.replace(tmp, self.directory / name)
            finally:
                tmp.unlink(missing_ok=True)
            text = json.dumps({"epoch": epoch + 1, "weights": name, "history": self._logs,
                               "random": drawn}, sort_keys=True).encode("utf-8")
            _write_atomic(self.directory / _KERAS_META, lambda fh: fh.write(text))
        except OSError as exc:  # a full disk: state.json still names the previous pair
            # (h5py's own message runs over several lines, with the temporary file's name)
            why = (str(exc.strerror or exc).strip().splitlines() or ["?"])[0][:200]
            raise OSError(exc.errno, f"checkpoint {self.directory.parent}: cannot write epoch "
                          f"{epoch + 1}'s checkpoint ({why}); the previous checkpoint is "
                          "unchanged") from None
        for old in self.directory.glob("epoch-*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)


def _seed_states(model: Any) -> list[Any]:
    """The state variables of the model's ``SeedGenerator``s (history dropout, sampled
    negatives), in the model's order: ``model.variables`` holds them, ``model.weights``
    (what ``save_weights`` writes) does not."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _random_state(model: Any) -> dict[str, Any]:
    """What ``model.fit``'s next epoch draws from, as JSON: NumPy's global generator (Keras
    shuffles in-memory arrays with ``np.random.permutation`` at each epoch's first batch)
    and the model's ``SeedGenerator`` states."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"numpy": {"name": str(name), "keys": np.asarray(keys).tolist(), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
            "seed_generators": [np.asarray(v.value).tolist() for v in _seed_states(model)]}


def _set_random_state(model: Any, state: Any, where: Path) -> None:
    """Restore ``_random_state``'s ``state``: the resumed epochs draw the shuffles and
    dropout masks the uninterrupted run drew."""
    seeds = _seed_states(model)
    try:
        numpy = state["numpy"]
        keys = np.asarray(numpy["keys"], dtype=np.uint32)
        if len(state["seed_generators"]) != len(seeds):
            raise ValueError(f"{len(state['seed_generators'])} seed generator states, the "
                             f"model has {len(seeds)}")
        saved = [np.asarray(s, dtype=np.asarray(v.value).dtype)
                 for s, v in zip(state["seed_generators"], seeds)]
        if keys.shape != (624,) or any(s.shape != tuple(v.shape) for s, v in zip(saved, seeds)):
            raise ValueError("a state of another shape")
        np_state = (str(numpy["name"]), keys, int(numpy["pos"]), int(numpy["has_gauss"]),
                    float(numpy["cached_gaussian"]))
        np.random.set_state(np_state)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise DataError(f"checkpoint {where}: its random state is unreadable "
                        f"({type(exc).__name__}: {exc}); remove the checkpoint directory to "
                        "start afresh") from None
    for v, s in zip(seeds, saved):
        v.assign(s)
