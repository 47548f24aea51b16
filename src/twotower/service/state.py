"""The model the service answers with, and how it is swapped without downtime.

A ``ServedModel`` is an immutable snapshot: a loaded ``TwoTower`` plus what the HTTP layer
precomputes once per model (JSON fragments of item ids and titles, the popularity order).
``ModelHolder.current`` is the one reference the request handlers read, once per request;
a reload loads and checks the new run next to the old one, then rebinds that reference
(a single attribute store, atomic under the GIL). Requests that already hold the old
snapshot finish on it; a run that fails to load or to answer a probe query is refused and
the old snapshot keeps serving.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from json.encoder import encode_basestring, encode_basestring_ascii
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from twotower.errors import ArtifactError
from twotower.service.deny import DenyFileError, DenyList

log = logging.getLogger("twotower.service")


class ReloadInProgress(RuntimeError):
    """Another reload is running; reloads are serialised."""


class ReloadRefused(RuntimeError):
    """The new run could not be loaded or failed its probe; the old model keeps serving."""


def _plain(v: Any) -> Any:
    """A JSON-ready Python value from a numpy/pandas cell."""
    if v is None:
        return None
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    try:
        import pandas as pd
        if v is pd.NA or v is pd.NaT:
            return None
    except ImportError:  # pragma: no cover
        pass
    if isinstance(v, (int, float, str, bool)):
        return v
    return str(v)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def utf8_ok(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8 (False: it holds a lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_text(text: str) -> str:
    """A JSON string, UTF-8 as it is (json.dumps(ensure_ascii=False)'s text), escaped where
    it holds a lone surrogate, which a response body could not encode."""
    out = encode_basestring(text)
    return out if utf8_ok(out) else encode_basestring_ascii(text)


@dataclass(frozen=True)
class ServedModel:
    """One loaded run, ready to answer requests (never mutated after construction)."""

    model: Any
    run_dir: Path
    name: str
    version: str
    trained_at: str | None
    loaded_at: str
    metrics: dict[str, Any] | None
    item_ids: list[Any] = field(repr=False)
    titles: list[str] = field(repr=False)
    item_head: list[str] = field(repr=False)  # '{"item_id":..,"title":..,"score":'
    popular: np.ndarray = field(repr=False)   # item indices, most popular first
    titles_by_pop: Any = field(repr=False)  # pyarrow binary: titles lower-cased, `popular` order
    #: the server-wide deny list (``TwoTower.prepare_deny``, prepared for both indexes at
    #: load), or None
    deny: Any = field(default=None, repr=False)
    #: ``popular`` less the denied items: the popular fallback's order
    popular_served: Any = field(default=None, repr=False)
    #: the reading of the deny list ``deny`` was prepared from (``DenyList``), or None
    deny_list: Any = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """``name@version``: which model answered, in every response."""
        return f"{self.name}@{self.version}"

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def supports_history(self) -> bool:
        return getattr(self.model, "history_embeddings", None) is not None

    @classmethod
    def load(cls, run_dir: str | Path, deny: DenyList | None = None,
             reuse: ServedModel | None = None) -> ServedModel:
        """Load a run and precompute its response fragments; probe it with one query.
        ``deny``: the server-wide deny list (external item ids no answer lists), mapped
        to this run's items and prepared for its indexes now, once. ``reuse``: a loaded
        snapshot whose model and fragments are taken as they are when ``run_dir`` is its
        run, unchanged (the same directory, its ``format.json`` the same: the same save,
        the same checksums; e.g. a reload that only reads the deny list again), instead of
        being read and built anew.

        Raises:
            ArtifactError: the run is missing, corrupt, or fails the probe.
            DataError: a line of the deny list's file is no item id of the run and holds a
                column separator.
        """
        from twotower.artifacts import load_metrics, read_manifest, read_whole
        from twotower.models import TwoTower

        # read through the path resolved once (a symlink swapped meanwhile cannot mix two
        # runs' files); kept as given, so a reload reads what the link names then
        given = Path(run_dir).absolute()
        run = given.resolve()
        manifest = read_manifest(run)  # a plain message for a missing or foreign directory
        if reuse is not None and run == reuse.run_dir.resolve() and \
                manifest == getattr(reuse.model, "manifest", None):
            # the save the model in memory was read from: its arrays are those files'
            # (a copy elsewhere is read: its files may not match their checksums)
            return reuse._with(given, run, deny, load_metrics(run))

        def read() -> tuple[Any, Any]:
            return TwoTower.load(run), load_metrics(run)
        model, metrics = read_whole(run, read)  # the model and eval.json of one save
        manifest = model.manifest
        digest = hashlib.sha256(json.dumps(manifest.get("files", {}), sort_keys=True)
                                .encode()).hexdigest()[:12]
        n = model.n_items
        ids = model.item_vocab.ids.tolist()
        titles = [str(t) for t in model.titles(np.arange(n)).tolist()]
        # json's own string encoders, called directly: a reload builds this while the old
        # model serves (two json.dumps calls per item took 0.3 s longer at 319k items)
        # text ids as every other answer writes them: UTF-8 as they are (ranked lists had
        # "\u00e9" where /v1/item had "é")
        head = [f'{{"item_id":{_json_text(i) if type(i) is str else json.dumps(i)}'
                f',"title":{_json_text(t)},"score":' for i, t in zip(ids, titles)]
        popular = model.popularity_order()
        served = cls(model=model, run_dir=given, name=run.name, version=digest,
                     trained_at=model.trained_at,
                     loaded_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                     metrics=metrics, item_ids=ids, titles=titles, item_head=head,
                     popular=popular, titles_by_pop=cls.title_index(titles, popular))
        return served._denying(deny)

    def _with(self, given: Path, run: Path, deny: DenyList | None,
              metrics: dict[str, Any] | None) -> ServedModel:
        """This snapshot's model and fragments, as the run ``given`` (``run`` resolved)
        serves them, with the deny list ``deny``."""
        new = self._replace(run_dir=given, name=run.name, metrics=metrics, deny=None,
                            popular_served=None, deny_list=None,
                            loaded_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
        return new._denying(deny)

    def _replace(self, **changes: Any) -> ServedModel:
        """A copy with ``changes``, and what this one built on first use (per model)."""
        import dataclasses
        new = dataclasses.replace(self, **changes)
        for key in ("_users_by_text", "_whole_number_columns"):
            if key in self.__dict__:
                new.__dict__[key] = self.__dict__[key]
        return new

    def _denying(self, deny: DenyList | None) -> ServedModel:
        """This snapshot with ``deny`` prepared for its indexes (not per request), probed."""
        served = self
        if deny is not None:
            model = self.model
            denied = model.prepare_deny(deny.ids)
            deny.check_lines(model, denied)
            for index in (model._index, model._similar):  # prepared now, not per request
                denied._for(model, index)
            mask = np.zeros(self.n_items, dtype=bool)
            mask[denied.rows] = True
            served = self._replace(deny=denied, deny_list=deny,
                                   popular_served=self.popular[~mask[self.popular]])
            log.info("%s: the deny list names %d of its items (%d ids it does not know, "
                     "ignored)", served.label, denied.n_denied, denied.n_unknown)
        served._probe()
        return served

    def _probe(self) -> None:
        # `TwoTower.load` has asked the run one question of each kind; this asks in the
        # batch endpoint's form, which also prepares the seen-items table now, not on the
        # first batch request
        m = self.model
        try:
            k = min(10, self.n_items)
            scores, idx = m.recommend(np.array([0, 0]), k, m.seen_exclusions(np.array([0, 0])),
                                      deny=self.deny)
            if idx.shape != (2, k):
                raise ValueError(f"search returned shape {idx.shape}, expected (2, {k})")
        except Exception as exc:  # noqa: BLE001 - any failure means: do not serve this run
            raise ArtifactError(f"{self.run_dir}: the model loads but a probe query failed "
                                f"({type(exc).__name__}: {exc})") from None

    # -------------------------------------------------------------- JSON fragments
    def items_json(self, idx: np.ndarray, scores: np.ndarray) -> str:
        """``[{"item_id", "title", "score"}, ...]`` of one result row, padding dropped.

        Scores keep float32 precision (7 significant digits), whatever their scale."""
        head = self.item_head
        return "[" + ",".join(
            f"{head[i]}{s:.7g}}}" for i, s in zip(idx.tolist(), scores.tolist())
            if i >= 0) + "]"

    def popular_json(self, k: int, allow: np.ndarray | None = None,
                     deny: np.ndarray | None = None) -> str:
        """The k most popular items as an ``items_json`` list (score = interaction count,
        written whole: 7 significant digits wrote 12,345,678 as 1.234568e+07), less the
        server's denied items and ``deny`` (item indices), within ``allow``'s."""
        head, pop = self.item_head, self.model.item_popularity
        order = self.popular if self.popular_served is None else self.popular_served
        from twotower.models.retriever import filtered_order
        order = filtered_order(order, self.n_items, allow, deny)
        return "[" + ",".join(f"{head[i]}{int(pop[i])}}}"  # int64 counts, written whole
                              for i in order[:k].tolist()) + "]"

    def item_ref(self, i: int) -> dict[str, Any]:
        return {"item_id": self.item_ids[i], "title": self.titles[i]}

    def item_metadata(self, i: int) -> dict[str, Any]:
        """Every metadata column of item index ``i`` plus its popularity. A column of
        ``multi_valued_features`` read from text (a CSV's ``red|sale``) is served as the
        list of values the model read, as a Parquet list column is."""
        out: dict[str, Any] = {"item_id": self.item_ids[i], "title": self.titles[i]}
        info = self.model.item_info
        if info is not None:
            row = info.iloc[i]
            whole = self._whole_number_columns
            config = self.model.config
            for col in info.columns:
                if col in ("id",):
                    continue
                v = _plain(row[col])
                if col in config.multi_valued_features and isinstance(v, str):
                    v = list(dict.fromkeys(t.strip() for t in v.split(config.multi_value_sep)
                                           if t.strip()))
                out[str(col)] = int(v) if col in whole and isinstance(v, float) else v
        out["title"] = self.titles[i]
        out["popularity"] = _plain(self.model.item_popularity[i])
        return out

    @staticmethod
    def title_index(titles: list[str], popular: np.ndarray) -> Any:
        """What ``items_matching`` scans: the titles lower-cased, in ``popular`` order, as
        UTF-8 bytes."""
        return pa.array([_utf8(titles[i].lower()) for i in popular.tolist()],
                        type=pa.large_binary())

    def items_matching(self, text: str) -> np.ndarray:
        """Item indices whose lower-cased title holds ``text`` (lower-cased by the caller),
        most popular first: one vectorized scan (pyarrow), not a Python loop over titles."""
        import pyarrow.compute as pc

        # UTF-8 bytes: a byte substring is a character substring (a lone surrogate, which
        # an id may hold, passes as its bytes)
        hit = pc.match_substring(self.titles_by_pop, _utf8(text)).to_numpy(zero_copy_only=False)
        return self.popular[hit]

    def users_starting(self, prefix: str, offset: int, limit: int) -> tuple[int, list[Any]]:
        """User ids whose text starts with ``prefix``, in text order: how many there are,
        and ``limit`` of them from ``offset`` (for picking a user among many)."""
        text, rows = self._users_by_text
        lo, hi = (int(v) for v in np.searchsorted(text, [prefix, prefix + "\U0010ffff"]))
        start = lo + min(offset, hi - lo)  # Python ints: any offset (past the end: none)
        ids = self.model.user_vocab.ids[rows[start:min(hi, start + limit)]]
        return hi - lo, ids.tolist()

    @functools.cached_property
    def _users_by_text(self) -> tuple[np.ndarray, np.ndarray]:
        """The user ids as text, sorted (object array: ids of any length), and each one's
        vocabulary row; built on the first search."""
        text = np.array([str(u) for u in self.model.user_vocab.ids.tolist()], dtype=object)
        order = np.argsort(text, kind="stable")
        return text[order], order

    @functools.cached_property
    def _whole_number_columns(self) -> frozenset[Any]:
        """Float metadata columns holding only whole numbers: a year column with gaps is
        float in pandas, and is served as ``1977``, not ``1977.0``."""
        info = self.model.item_info
        out = set()
        for col in () if info is None else info.columns:
            if info[col].dtype.kind == "f":
                v = info[col].to_numpy(dtype=np.float64)
                v = v[np.isfinite(v)]
                if len(v) and (v == np.round(v)).all() and np.abs(v).max() < 2.0 ** 53:
                    out.add(col)
        return frozenset(out)

    def describe(self) -> dict[str, Any]:
        m = self.model
        return {
            "name": self.name, "version": self.version, "label": self.label,
            "trained_at": self.trained_at, "loaded_at": self.loaded_at,
            "twotower_version": (getattr(m, "manifest", None) or {}).get("twotower_version"),
            "n_items": self.n_items, "n_users": len(m.user_vocab),
            "supports_history": self.supports_history,
            "config": m.config.to_dict(), "index": m.index_config.to_dict(),
            "data": getattr(m, "data_source", None) or {},
            "metrics": self.metrics,
            "deny": None if self.deny_list is None else self.deny_list.describe(self.deny),
        }


#: Seconds after a reload's swap at which the heap's free pages are given back
RELEASE_AFTER_S = 2.0


def release_freed_memory() -> bool:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``); False
    where there is no such call. A reload frees a whole model, and glibc kept much of it:
    a 319k-item run's RSS grew from 707 MB to 806-847 MB over 6 reloads, and stayed at
    700-706 MB with this (``benchmarks/probes/reload_rss.py``)."""
    import gc
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim`` from the process's own symbols (no ``find_library``, which
    runs ``ldconfig`` in a subprocess), or None (another C library, another system)."""
    import ctypes
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


class ModelHolder:
    """Holds the current ``ServedModel``; ``reload`` swaps it atomically.

    Args:
        run_dir: the run to serve first (loaded now).
        deny: the server-wide deny list (external item ids no answer lists): a
            ``DenyList`` read from a file is read again by every reload, with the run,
            and the two are swapped in together or not at all; ids (or a list read from
            standard input) are kept for the holder's life.

    Raises:
        ArtifactError: the run cannot be loaded.
        DataError: the deny list has a bad line.
    """

    def __init__(self, run_dir: str | Path, deny: DenyList | Iterable[Any] | None = None
                 ) -> None:
        if deny is not None and not isinstance(deny, DenyList):
            deny = DenyList.of_ids(deny)
        self.current: ServedModel = ServedModel.load(run_dir, deny)
        self._deny = deny  # the reading the next reload reads again
        self._lock = threading.Lock()
        self.reloads = {"ok": 0, "error": 0}

    @property
    def deny_list(self) -> DenyList | None:
        """The reading of the deny list served now (None: no list)."""
        return self._deny

    def reload(self, run_dir: str | Path | None = None, *, reuse: bool = True
               ) -> tuple[ServedModel, ServedModel]:
        """Load ``run_dir`` (default: the current run's directory again) and the deny
        list's file again, and switch to both.

        Args:
            run_dir: the run to serve; default: the current one's directory, read again.
            reuse: when the run's files are those served (the same checksums), keep the
                model in memory and only prepare the deny list anew (False: read them
                anyway, e.g. to measure a load).

        Returns:
            (previous, current) snapshots.

        Raises:
            ReloadInProgress: another reload holds the lock.
            ReloadRefused: the new run failed to load or probe, or the deny list's file
                cannot be read or has a bad line (the old model and list keep serving).
        """
        if not self._lock.acquire(blocking=False):
            raise ReloadInProgress("a reload is already in progress; try again when it ends")
        try:
            old = self.current
            target = Path(run_dir) if run_dir is not None else old.run_dir
            t0 = time.perf_counter()
            reread = "read the deny list again"
            what = f"load {target}"
            try:
                deny = None
                if self._deny is not None:
                    what = reread
                    deny = self._deny.again()
                    what = f"load {target}"
                new = ServedModel.load(target, deny, reuse=old if reuse else None)
            except Exception as exc:  # noqa: BLE001 - refuse any broken run, keep serving
                self.reloads["error"] += 1
                msg = str(exc) if str(exc) else type(exc).__name__
                if isinstance(exc, DenyFileError):  # a line of the file, not the run, is bad
                    what = reread if self._deny.rereadable else (  # type: ignore[union-attr]
                        f"serve {target} with the deny list")
                still = old.label if self._deny is None else (
                    f"{old.label} with the deny list read at {self._deny.read_at}")
                # (the message names the file as the user gave it: `--deny` from the CLI)
                fix = "; correct the file, then reload again" if what == reread else ""
                log.error("reload refused: cannot %s: %s; still serving %s%s", what, msg,
                          still, fix)
                raise ReloadRefused(f"cannot {what}: {msg}; still serving {still}{fix}"
                                    ) from None
            self.current = new  # the swap: one reference store
            self._deny = deny
            self.reloads["ok"] += 1
            if new.model is not old.model:
                # once the caller and the requests in flight have let the old model go
                timer = threading.Timer(RELEASE_AFTER_S, release_freed_memory)
                timer.daemon = True  # never holds up the process's exit
                timer.start()
            log.info("reloaded: %s -> %s in %.2f s%s", old.label, new.label,
                     time.perf_counter() - t0, "" if new.model is not old.model else
                     " (the run's files unchanged: its model kept, the deny list read again)"
                     if deny is not None and deny.rereadable else
                     " (the run's files unchanged: its model kept)")
            return old, new
        finally:
            self._lock.release()
