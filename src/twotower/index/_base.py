"""The search contract every index implements, and the checks at its boundary."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from twotower.errors import ArtifactError, ConfigError, DataError, NotFittedError
from twotower.index.config import IndexConfig
from twotower.index.filters import (Denied, Exclusions, Filters, compile_filters,
                                    prepare_deny, prepare_exclusions)

PAD_ID = -1
"""Id that pads a result row when fewer than ``k`` items qualify (its score is ``-inf``)."""

#: Bytes per result entry (a float32 score and an int64 id), and the most a result padded
#: beyond the catalogue (``k`` > n) may take: a larger one is refused, not allocated
_RESULT_BYTES = 12
_MAX_PADDED_BYTES = 1 << 30

FORMAT_VERSION = 2
"""Index format this twotower writes at most: 2 when a kind's state needs a newer reader
(an HNSW graph over distinct vectors, ``groups.npy``), else 1, which older releases read."""
_META = "index.json"


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ConfigError(f"`k` must be a positive integer, got {k!r}")
    if k < 1:
        raise ConfigError(f"`k` must be at least 1, got {k}")
    if k >= 2**62:  # no array holds such a row (an empty batch failed in numpy)
        raise ConfigError(f"`k` must be below 2**62, got {k}")
    return int(k)


def check_embeddings(embeddings: Any) -> np.ndarray:
    """A float32 C-contiguous private copy of ``[n, d]`` finite embeddings."""
    try:  # (a ragged list fails here, in numpy's conversion, not further on)
        raw = np.asarray(embeddings)
    except (TypeError, ValueError) as exc:
        raise DataError(f"`embeddings` must be a numeric [n, d] array ({exc})") from None
    if np.iscomplexobj(raw):  # float32 of it would drop the imaginary part
        raise DataError("`embeddings` must be real numbers, got a complex array")
    try:
        with np.errstate(over="ignore"):  # past float32's range: named below
            x = np.array(raw, dtype=np.float32, order="C", copy=True)
    except (TypeError, ValueError) as exc:
        raise DataError(f"`embeddings` must be a numeric [n, d] array ({exc})") from None
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise DataError(f"`embeddings` must be a non-empty 2-D [n, d] array, got shape {x.shape}")
    row = nonfinite_row(x)
    if row is not None:
        _check_overflowed(raw, x, row, "embeddings")
        raise DataError(f"`embeddings` must be finite; row {row} holds NaN or inf")
    _check_norms(x, "embeddings")
    return x


def _check_overflowed(raw: np.ndarray, x: np.ndarray, row: int, what: str) -> None:
    """Row ``row`` of ``x`` (``raw`` cast to float32) is not finite: where ``raw``'s is, its
    entries were past float32's range (reported as "NaN or inf" before), refused as too
    large, as the norm check refuses large vectors."""
    if raw is x or raw.dtype.kind not in "iuf" or not np.isfinite(raw[row]).all():
        return
    value = raw[row][~np.isfinite(x[row])][0]
    raise DataError(f"`{what}` row {row} holds {value:.3g}; norms must be below "
                    f"{MAX_NORM:.0e} (larger ones overflow float32 scores): scale the "
                    "vectors down")


#: Vector norms from here on can overflow float32 scores and distances (faiss aborts the
#: process on them): refused at the boundary
MAX_NORM = 1e18


def _check_norms(x: np.ndarray, what: str) -> None:
    norms = row_norms(x)
    if len(norms) and norms.max() >= MAX_NORM:
        row = int(np.argmax(norms))
        raise DataError(f"`{what}` row {row} has norm {norms[row]:.3g}; norms must "
                        f"be below {MAX_NORM:.0e} (larger ones overflow float32 scores): "
                        "scale the vectors down")


def nonfinite_row(x: np.ndarray) -> int | None:
    """The first row of ``x`` holding NaN or inf, or None (one pass when all are finite)."""
    if np.isfinite(x).all():
        return None
    return int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])


def row_norms(x: np.ndarray) -> np.ndarray:
    """The L2 norm of each row of ``x``, in float64: squares of float32 entries below about
    1e-19 underflow in float32, and a norm bound or a cosine built on them is wrong."""
    return np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), in place on a float32 array."""
    norms = row_norms(x)
    norms[norms == 0] = 1.0
    x /= norms[:, None]
    return x


class Index:
    """Base of every search index: ``build`` once, then ``search`` (the retrieval contract).

    Row ``i`` of the embeddings given to ``build`` has internal id ``i``. Results are
    ``(scores [b, k] float32, ids [b, k] int64)``, best first, padded with ``PAD_ID`` (-1)
    and ``-inf`` when fewer than ``k`` items qualify.

    Ties: the exact index lists items of equal scores lower id first, and at the ``k``-th
    place the lower id wins, whatever the path: one query or a batch, any block, chunk or
    worker split, a catalogue stored in norm order, with filters, after save and load.
    Equal means equal float32 scores: one query (a matrix-vector product) and a batch (a
    matrix product) may round the same pair's score a few float32 steps apart (a step is
    about 1.2e-7 of the score) and then order two nearly equal items apart: not a tie.
    HNSW and IVF keep no tie order: equal scores come in no particular order, and a batch
    and its queries one at a time may pick different ones at the ``k``-th place.
    """

    kind: ClassVar[str] = ""

    def __init__(self, config: IndexConfig | None = None) -> None:
        config = config if config is not None else IndexConfig(kind=self.kind)
        if not isinstance(config, IndexConfig):
            raise ConfigError(f"`config` must be an IndexConfig, got {type(config).__name__}")
        if config.kind != self.kind:
            raise ConfigError(f"{type(self).__name__} needs IndexConfig(kind={self.kind!r}), "
                              f"got kind={config.kind!r}")
        self.config = config
        self._n = 0
        self._d = 0
        self._layout = object()  # new at each build: ties prepared exclusions to it

    # ------------------------------------------------------------------ state
    @property
    def is_built(self) -> bool:
        return self._n > 0

    @property
    def ntotal(self) -> int:
        """Number of indexed items."""
        self._require_built()
        return self._n

    @property
    def dim(self) -> int:
        """Embedding dimension ``d``."""
        self._require_built()
        return self._d

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        state = f"n={self._n}, d={self._d}" if self.is_built else "not built"
        return f"{type(self).__name__}({state}, config={self.config.to_dict()})"

    def _require_built(self) -> None:
        if not self.is_built:
            raise NotFittedError(f"this {type(self).__name__} has no items yet: "
                                 "call build first (or load_index(path))")

    # ------------------------------------------------------------------ contract
    def build(self, embeddings: Any) -> Index:
        """Index ``embeddings`` (``[n, d]``, row i gets internal id i); returns self.

        Raises:
            DataError: not a finite, non-empty 2-D array.
        """
        x = check_embeddings(embeddings)
        if self.config.metric == "cosine":
            normalise(x)
        self._build(x)
        self._n, self._d = x.shape
        self._layout = object()
        return self

    def prepare_deny(self, ids: Any) -> Denied:
        """Ids never returned to any query, checked and compiled once for this index
        (``Denied``): pass the result as ``search``'s ``deny`` when the same ids are denied
        on many calls (e.g. items out of stock, or the items a model never trained).

        Raises:
            NotFittedError: before ``build``.
            DataError: not a 1-D sequence of ids in ``[0, n)``.
        """
        self._require_built()
        return prepare_deny(ids, self._n, self._layout)

    def prepare_exclusions(self, table: Any) -> Exclusions:
        """Per-query exclusions checked once and laid out for this index (``Exclusions``):
        pass ``prepared.rows(r)`` as ``search``'s ``exclude``, one table row per query.

        Args:
            table: one sequence of ids per row (e.g. each user's seen items), or a scipy
                sparse matrix ``[rows, n]`` whose non-zeros are the ids (read as CSR). A
                CSR table the index need not re-map is held, not copied: do not change
                it afterwards.

        Raises:
            NotFittedError: before ``build``.
            DataError: a malformed table, or ids outside ``[0, n)`` (naming the row).
        """
        self._require_built()
        return prepare_exclusions(table, self._n, self._rows_of(), self._layout)

    def _rows_of(self) -> np.ndarray | None:
        """Each id's row in the kind's own storage, when that is not the id order."""
        return None

    def search(self, queries: Any, k: int, exclude: Any = None, allow: Any = None,
               deny: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best items for each query.

        Args:
            queries: ``[b, d]`` float query embeddings (``b`` may be 0).
            k: results per query, >= 1; more than the catalogue is padded.
            exclude: per-query ids never returned to that query (one sequence per query,
                e.g. items already seen), a scipy sparse matrix ``[b, n]`` whose non-zeros
                are the ids (read as CSR; explicit zeros exclude nothing), or the rows of
                a table this index prepared (``prepare_exclusions``). For many queries
                the prepared form is the cheapest, then CSR: separate sequences are first
                concatenated (README, "Search").
            allow: 1-D ids; only these may be returned (to every query).
            deny: 1-D ids never returned (to any query), or the same prepared once by
                this index (``prepare_deny``: no ``[n]`` mask built per call).

        Returns:
            scores ``[b, k]`` float32 and ids ``[b, k]`` int64, best first; rows padded
            with ``PAD_ID`` / ``-inf`` when fewer than ``k`` items qualify.

        Raises:
            NotFittedError: before ``build``.
            ConfigError: ``k`` is not a positive integer, or so far beyond the
                catalogue that its padding would exceed 1 GiB.
            DataError: queries of the wrong shape or not finite; malformed filters.
        """
        self._require_built()
        k = check_k(k)
        q = self._check_queries(queries)
        b = q.shape[0]
        glob = self._prepared_global(allow, deny, b)
        if isinstance(exclude, Exclusions):
            exclude._check(self._layout, b)
            f = glob or compile_filters(None, allow, deny, self._n, b)
            filters = Filters.prepared_rows(exclude, f.allowed, f.n_allowed)
            filters.cache = f.cache
        elif glob is not None:
            filters = compile_filters(exclude, None, None, self._n, b).with_global(glob)
        else:
            filters = compile_filters(exclude, allow, deny, self._n, b)
        if k > self._n and b * (k - self._n) * _RESULT_BYTES > _MAX_PADDED_BYTES:
            raise ConfigError(
                f"`k` = {k} is larger than the catalogue ({self._n} items): the result "
                f"[{b}, {k}] would hold {b * (k - self._n) * _RESULT_BYTES / 2**30:.1f} GiB "
                f"of padding; ask for k <= {self._n}")
        if b == 0:  # the filters are checked all the same: a wrong call fails at once
            return (np.empty((0, k), dtype=np.float32), np.empty((0, k), dtype=np.int64))
        if self.config.metric == "cosine":
            q = normalise(np.array(q, dtype=np.float32, copy=True))
        return self._search(q, k, filters)

    def _prepared_global(self, allow: Any, deny: Any, b: int) -> Filters | None:
        """The global filter of a prepared ``deny`` (``prepare_deny``), with ``allow``
        applied on top when given (then compiled for this call); None for a plain one."""
        if not isinstance(deny, Denied):
            return None
        g = deny._check(self._layout)
        if allow is None:
            return g
        f = compile_filters(None, allow, None, self._n, b)
        f.allowed &= g.allowed
        f.n_allowed = int(np.count_nonzero(f.allowed))
        return f

    def _check_queries(self, queries: Any) -> np.ndarray:
        if type(queries) is np.ndarray and queries.dtype == np.float32:
            q = raw = queries
        else:
            try:  # (a ragged list fails here, in numpy's conversion)
                raw = np.asarray(queries)
            except (TypeError, ValueError) as exc:
                raise DataError(f"`queries` must be a numeric [batch, {self._d}] array "
                                f"({exc})") from None
            if np.iscomplexobj(raw):  # float32 would drop the imaginary part
                raise DataError(f"`queries` must be a real [batch, {self._d}] array, got "
                                "complex values")
            try:
                with np.errstate(over="ignore"):  # past float32's range: named below
                    q = np.asarray(raw, dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise DataError(f"`queries` must be a numeric [batch, {self._d}] array "
                                f"({exc})") from None
        if q.ndim != 2 or q.shape[1] != self._d:
            hint = " (use queries[None, :] for one query)" if q.ndim == 1 else ""
            raise DataError(f"`queries` must have shape [batch, {self._d}] (the index "
                            f"dimension), got shape {q.shape}{hint}")
        # one cheap pass for the usual case: entries below MAX_NORM / sqrt(d) (NaN fails
        # the comparison) keep every norm below MAX_NORM; otherwise the exact checks
        if q.size and not np.abs(q).max() < MAX_NORM / np.sqrt(self._d):
            if not np.isfinite(q).all():
                row = int(np.flatnonzero(~np.isfinite(q).all(axis=1))[0])
                if raw.dtype.kind == "O" and raw.shape == q.shape and any(
                        v is None for v in raw[row]):  # float32 made None a NaN
                    raise DataError(f"`queries` must be a numeric [batch, {self._d}] array; "
                                    f"row {row} holds None")
                _check_overflowed(raw, q, row, "queries")
                raise DataError(f"`queries` must be finite; row {row} holds NaN or inf: "
                                f"{q[row][~np.isfinite(q[row])][:3].tolist()}")
            _check_norms(q, "queries")
        return q

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the index to ``directory``: new, empty, or an index saved before, which
        is replaced atomically (``artifacts.atomic_directory``).

        Layout: ``index.json`` (format version, kind, config, n, d, the SHA-256 of each
        other file) plus the kind's arrays. Written to a temporary sibling directory, then
        renamed into place: a save that fails or is killed leaves the previous index as
        it was.

        Raises:
            ArtifactError: ``directory`` is a file or a directory that holds something
                else (a save would replace it), or cannot be written.
        """
        from twotower.artifacts import atomic_directory  # artifacts imports this package
        self._require_built()

        def write(tmp: Path) -> None:
            state = self._save(tmp)
            # each file's checksum, verified by load_index (older readers ignore the key)
            files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            meta = {"format_version": 2 if "groups" in state else 1, "kind": self.kind,
                    "config": self.config.to_dict(), "n": self._n, "d": self._d,
                    "state": state, "files": files}
            (tmp / _META).write_text(json.dumps(meta, indent=2, sort_keys=True),
                                     encoding="utf-8")

        try:
            return atomic_directory(directory, write, "Index.save", marker=_META,
                                    noun="index")
        except OSError as exc:
            from twotower.artifacts import _is_temp_sibling
            if _is_temp_sibling(Path(os.path.abspath(directory)).parent):
                raise  # inside a run's save, which names the run
            raise ArtifactError(f"cannot save the index to {directory}: {exc}") from None

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Index:
        """Load an index saved by ``save``; the class is chosen from the saved kind."""
        return load_index(directory)

    # ------------------------------------------------------------------ per kind
    def _build(self, x: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _search(self, q: np.ndarray, k: int, f: Filters) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _save(self, directory: Path) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _load(self, files: _Files, n: int, d: int, state: dict[str, Any]) -> None:
        """Restore the index from the saved ``files`` (read each with ``files.npy``,
        ``files.faiss``: from the bytes the checksum check read, when it read them)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _files(self, state: dict[str, Any]) -> list[str]:  # pragma: no cover - abstract
        """The files of the directory that ``_load`` reads, given the saved ``state``."""
        raise NotImplementedError


_REGISTRY: dict[str, type[Index]] = {}


def register(cls: type[Index]) -> type[Index]:
    _REGISTRY[cls.kind] = cls
    return cls


def make_index(config: IndexConfig | None = None, **overrides: Any) -> Index:
    """A new, empty index of ``config.kind`` (exact when no config is given).

    Example:
        >>> import numpy as np
        >>> index = make_index(IndexConfig(kind="exact")).build(np.eye(3, dtype="float32"))
        >>> index.search(np.ones((1, 3), "float32"), k=2)[1].shape
        (1, 2)
    """
    config = config if config is not None else IndexConfig()
    if not isinstance(config, IndexConfig):
        raise ConfigError(f"`config` must be an IndexConfig, got {type(config).__name__}")
    if overrides:
        config = config.replace(**overrides)
    return _REGISTRY[config.kind](config)


def _sha256(path: Path) -> str:
    from twotower.artifacts import _sha256 as sha256  # artifacts imports this package
    return sha256(path)


def read_hashed(path: Path, writable: bool = True) -> tuple[Any, str]:
    """The bytes of the file ``path``, read once, and their SHA-256 hex digest: a loader
    that checks a file reads it from these bytes, not from the disk a second time.
    ``writable``: a uint8 array (not zero-filled first; arrays viewing it are writable,
    as ``np.load``'s are), else bytes (which ``io.BytesIO`` wraps without a copy). Each
    MiB is hashed as it is read, while it is still in the CPU's cache."""
    import hashlib
    h = hashlib.sha256()
    with path.open("rb", buffering=0) as fh:
        if not writable:
            buf = fh.read()
            h.update(buf)
            return buf, h.hexdigest()
        size = os.fstat(fh.fileno()).st_size
        arr = np.empty(size, dtype=np.uint8)
        view, at = memoryview(arr), 0
        while at < size:
            got = fh.readinto(view[at:at + (1 << 20)])
            if not got:  # cut since its size was read
                break
            h.update(view[at:at + got])
            at += got
        rest = fh.read()  # grown since
    if rest:
        h.update(rest)
        return np.concatenate([arr[:at], np.frombuffer(rest, np.uint8)]), h.hexdigest()
    return arr[:at], h.hexdigest()


def npy_from_bytes(buf: Any, name: str) -> np.ndarray:
    """The array of a ``.npy`` file's bytes ``buf`` (``np.load(..., allow_pickle=False)``
    of them), a view of ``buf`` (no copy: writable when ``buf`` is).

    Raises:
        ValueError: not a .npy file, an object array, or fewer bytes than its header says.
    """
    import io

    from numpy.lib import format as npy
    view = memoryview(buf)
    head = io.BytesIO(view[:1 << 20])  # the header (np.save writes a few hundred bytes)
    version = npy.read_magic(head)
    if version == (1, 0):
        shape, fortran, dtype = npy.read_array_header_1_0(head)
    elif version == (2, 0):
        shape, fortran, dtype = npy.read_array_header_2_0(head)
    else:
        raise ValueError(f"{name}: .npy format version {version} is not read here")
    if dtype.hasobject:
        raise ValueError(f"{name} holds an object array, which is not loaded "
                         "(allow_pickle=False)")
    count = int(np.prod(shape, dtype=np.int64))
    need = head.tell() + count * dtype.itemsize
    if len(buf) < need:
        raise ValueError(f"{name} is truncated: {len(buf):,} bytes, its header says "
                         f"{need:,}")
    flat = np.frombuffer(buf, dtype=dtype, count=count, offset=head.tell())
    return flat.reshape(shape, order="F" if fortran else "C")


class _Files:
    """An index directory's files as its kind's ``_load`` reads them: from the bytes the
    checksum check read (``blobs``, by file name), each file read once, else from disk."""

    def __init__(self, directory: Path, blobs: dict[str, Any] | None = None):
        self.directory = directory
        self._blobs = dict(blobs or {})

    def __truediv__(self, name: str) -> Path:
        return self.directory / name

    def __str__(self) -> str:
        return str(self.directory)

    def exists(self, name: str) -> bool:
        return name in self._blobs or (self.directory / name).is_file()

    def npy(self, name: str) -> np.ndarray:
        """``np.load`` of the file ``name``, allow_pickle=False."""
        blob = self._blobs.pop(name, None)
        if blob is None:
            return np.load(self.directory / name, allow_pickle=False)
        return npy_from_bytes(blob, name)

    def faiss(self, name: str) -> Any:
        """``faiss.read_index`` of the file ``name``."""
        import faiss
        blob = self._blobs.pop(name, None)
        if blob is None:
            return faiss.read_index(str(self.directory / name))
        return faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))


#: how often ``load_index`` reads an index again that a save replaced while it read
_LOAD_TRIES = 5


def load_index(path: str | os.PathLike[str]) -> Index:
    """Load an index directory written by ``Index.save``, its files checked against the
    checksums ``index.json`` records. An index saved before those were recorded loads
    with a warning (its damage goes unnoticed: save it again to add them).

    Raises:
        ArtifactError: missing directory, a file missing or damaged (naming it), or a
            newer format.
    """
    return _load_index(path)


def _load_index(path: str | os.PathLike[str], *, verify: bool = True,
                blobs: dict[str, Any] | None = None) -> Index:
    """``load_index``; ``verify=False`` for an index inside a run, whose ``format.json``
    checksums its files already (``blobs``: the bytes of those it checked, by file name,
    read from them rather than from disk again). An index that a save replaced while it
    was read (its ``index.json`` changed meanwhile: files of two saves) is read again
    (the check is done again too: checksums that fail on a directory that stayed as it
    was are refused at once, not read again)."""
    import time
    meta_path = Path(path) / _META
    for attempt in range(_LOAD_TRIES):
        try:
            before = meta_path.read_bytes()
        except OSError:
            before = None
        try:
            return _load_once(Path(path), verify, blobs if attempt == 0 else None)
        except ArtifactError:
            try:
                after = meta_path.read_bytes()
            except OSError:
                after = None
            if after == before or attempt == _LOAD_TRIES - 1:
                raise
        time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _verify_files(d: Path, meta: dict[str, Any], needed: list[str]) -> dict[str, Any]:
    """The files ``index.json`` lists match their checksums, and every file the kind
    reads (``needed``) is listed; ArtifactError naming the file otherwise. Returns the
    bytes of the ``needed`` files, as read for their checksums (each file read once)."""
    meta_path = d / _META
    files = meta["files"]
    if not isinstance(files, dict) or not all(
            isinstance(name, str) and Path(name).name == name and name not in ("", ".", "..")
            and isinstance(digest, str) for name, digest in files.items()):
        raise ArtifactError(f"{meta_path} is corrupt: \"files\" must be an object of file "
                            f"name -> SHA-256 checksum, got {json.dumps(files)[:200]}")
    for name in needed:
        if name not in files:
            raise ArtifactError(f"{meta_path} is corrupt: \"files\" has no checksum of "
                                f"{name}, which the index reads")
    blobs = {}
    for name, digest in files.items():
        p = d / name
        if not p.is_file():
            raise ArtifactError(f"{p} is missing (index.json lists it): the index is "
                                "incomplete; save or build it again")
        blob, got = read_hashed(p)
        if got != digest:
            raise ArtifactError(f"{p} is corrupt (checksum mismatch: it changed since the "
                                "index was saved); save or build the index again")
        if name in needed:
            blobs[name] = blob
    return blobs


def _load_once(d: Path, verify: bool, blobs: dict[str, Any] | None = None) -> Index:
    meta_path = d / _META
    if not meta_path.is_file():
        raise ArtifactError(f"{d} is not a saved search index (no {_META})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        version = meta["format_version"]
        if not isinstance(meta["config"], dict):  # from_dict would read null as defaults
            raise ArtifactError(f"{meta_path} is corrupt: \"config\" must be an object "
                                f"(the index settings), got {json.dumps(meta['config'])}")
        config = IndexConfig.from_dict(meta["config"])
        n, dim = int(meta["n"]), int(meta["d"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{meta_path} is corrupt ({type(exc).__name__}: {exc})") from None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ArtifactError(f"{meta_path} is corrupt: format_version must be an integer "
                            f">= 1, got {version!r}")
    if version > FORMAT_VERSION:
        raise ArtifactError(f"{d} has index format {version!r}; this twotower reads up to "
                            f"{FORMAT_VERSION}: upgrade twotower")
    index = _REGISTRY[config.kind](config)
    state = meta.get("state") or {}
    vectors = state.get("vectors", "vectors.npy") if isinstance(state, dict) else None
    # a file name only: a path would load another directory's vectors
    if not isinstance(vectors, str) or Path(vectors).name != vectors or vectors in ("", "."):
        raise ArtifactError(f"{meta_path} is corrupt: \"state\" must be an object whose "
                            f"\"vectors\" is a file name in {d}, got "
                            f"{json.dumps(state)[:200]}")
    if verify and isinstance(meta, dict) and "files" in meta:
        blobs = _verify_files(d, meta, index._files(state))
    elif verify:
        warnings.warn(f"{d} was saved without checksums (by an older twotower): damage to "
                      "its files cannot be detected; save the index again to add them",
                      UserWarning, stacklevel=4)
    try:
        index._load(_Files(d, blobs), n, dim, state)
    except ArtifactError:
        raise
    except (OSError, EOFError, ValueError, RuntimeError) as exc:  # EOFError: empty .npy
        raise ArtifactError(f"{d}: cannot load index ({type(exc).__name__}: {exc})") from None
    # build() refuses non-finite vectors; a damaged file must not bring them back (NaN
    # scores would rank among the results)
    row = nonfinite_row(index._vectors)
    if row is not None:
        storage = index._rows_of()  # id -> row in the kind's storage, when reordered
        row = row if storage is None else int(np.flatnonzero(storage == row)[0])
        name = state.get("vectors", "index.faiss")
        raise ArtifactError(f"{d / name} is corrupt: the vector of item {row} holds NaN or "
                            "inf (vectors must be finite; rebuild the index)")
    index._n, index._d = n, dim
    index._layout = object()
    return index
