"""Shared fixtures: the pristine MovieLens 100k files and small trained runs."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")


def _share_compiled_programs() -> None:
    """One JAX compilation cache for the whole run: the suite fits hundreds of small models
    whose programs repeat (in this process, in pytest-xdist's workers and in the processes
    tests start), and compiling is most of their time. A fresh folder per run, so nothing
    carries over between runs; the process that made it (the first to load this file:
    pytest-xdist's controller, whose environment its workers inherit) removes it at exit.
    A size cap turns on the cache's file lock (``filelock``), so processes sharing it never
    read an entry another is writing. A ``JAX_COMPILATION_CACHE_DIR`` already set is kept."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="twotower-tests-jax-cache-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=folder,
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
                      JAX_COMPILATION_CACHE_MAX_SIZE=str(4 << 30))
    if "jax" in sys.modules:  # imported before this file (by a plugin): read no more
        import jax
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        jax.config.update("jax_compilation_cache_max_size", 4 << 30)


_share_compiled_programs()

import pytest

# A run started in the background by a shell without job control (`cmd &`, nohup) starts
# with SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the tests that
# send themselves (or a child they start) a real Ctrl-C would fail for the launcher's sake.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ML100K = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "ml-100k"


def skip_without_movielens(files=("u.data",)) -> None:
    """Skip the calling test when the pristine MovieLens 100k files are missing, or fail it
    under ``TWOTOWER_REQUIRE_DATA=1`` (CI sets it: a missing ``../shared`` must not pass
    as a green run of mostly skipped tests)."""
    missing = [n for n in files if not (ML100K / n).is_file()]
    if missing:
        msg = f"MovieLens 100k not found at {ML100K} (missing {', '.join(missing)})"
        if os.environ.get("TWOTOWER_REQUIRE_DATA") == "1":
            pytest.fail(msg + "; TWOTOWER_REQUIRE_DATA=1 requires it")
        pytest.skip(msg)


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    skip_without_movielens()
    return ML100K


@pytest.fixture(scope="session")
def ml100k(ml100k_dir):
    from twotower.data import read_movielens_100k
    return read_movielens_100k(ml100k_dir)


@pytest.fixture(scope="session")
def ml_split(ml100k):
    from twotower.data import random_split
    return random_split(ml100k, 0.2, seed=42)


@pytest.fixture(scope="session")
def tutorial_run(tmp_path_factory, ml_split):
    """A tutorial-preset model (5 epochs) trained on ML-100k and saved; (model, run dir)."""
    from twotower import ModelConfig, TwoTower
    model = TwoTower(ModelConfig.preset("tutorial", epochs=5)).fit(ml_split.train, verbose=0)
    run = tmp_path_factory.mktemp("runs") / "tutorial"
    model.save(run, test=ml_split.test, data={"source": "movielens-100k"})
    return model, run


@pytest.fixture
def replace_once_checked(monkeypatch):
    """``arm(directory, checksums, source)``: each file of ``directory`` whose checksum
    (``checksums``: relative name -> SHA-256, as a manifest lists them) has just been
    computed is replaced by ``source``'s file of that name, as another save would between
    a loader's check and its read. A loader that reads each file once (checks the bytes it
    loads) is not fooled; one that reads a file again after checking it loads ``source``'s."""
    import hashlib
    import shutil
    real = hashlib.sha256

    def arm(directory, checksums, source):
        by_digest = {digest: name for name, digest in checksums.items()}

        class Hook:
            def __init__(self, data=b""):
                self._h = real(data)

            def update(self, data):
                self._h.update(data)

            def hexdigest(self):
                digest = self._h.hexdigest()
                name = by_digest.pop(digest, None)
                if name is not None and (Path(source) / name).is_file():
                    shutil.copyfile(Path(source) / name, Path(directory) / name)
                return digest
        monkeypatch.setattr(hashlib, "sha256", Hook)
    return arm
