"""The service's deny list (``twotower serve --deny FILE``): its ids, where they came from,
and reading them again.

A ``DenyList`` is one reading of the list, immutable. A list read from a file is read
again by every reload (``ModelHolder.reload``: ``POST /admin/reload``, SIGHUP), so a shop
changes its out-of-stock file and reloads, without a restart; a list read from standard
input (``--deny -``) or given as ids (``create_app(deny=[...])``) cannot be read again and
is kept for the service's life.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twotower.errors import DataError

#: what messages call the file by default: ``create_app``'s argument (``twotower serve``
#: reads it as ``--deny``, and its messages say so: ``DenyList.read``'s ``name``)
_NAME = "`deny_file`"
#: the separators of a file of several columns: a line holding one that is no item of
#: the run is refused (the list would deny nothing it means to)
_SEPARATORS = (",", "\t", ";")
STDIN = "<stdin>"


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _digest(ids: Iterable[Any]) -> str:
    """12 hex digits naming the set of ids (order and repeats aside): two readings, or two
    workers, with the same digest deny the same ids."""
    text = "\n".join(sorted({str(i) for i in ids}))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


class DenyFileError(DataError):
    """A line of the deny list's file that the run cannot use (``DenyList.check_lines``):
    the file is at fault, not the run."""


@dataclass(frozen=True)
class DenyList:
    """One reading of the server-wide deny list.

    Attributes:
        ids: the item ids, as read (one a line; repeats kept).
        lines: the line each id was read from (None: ids given in code).
        file: the file's absolute path; ``<stdin>`` for standard input; None for ids
            given in code.
        read_at: when it was read (UTC, ISO 8601).
        digest: 12 hex digits of the set of ids (``_digest``).
        name: what messages call the file: ``create_app``'s ```deny_file```, or the flag
            the user gave it as (``--deny``), in every reading of it, a reload's too.
    """

    ids: tuple[Any, ...]
    lines: tuple[int, ...] | None
    file: str | None
    read_at: str
    digest: str
    name: str = _NAME

    @property
    def rereadable(self) -> bool:
        """Whether a reload reads the list again (a file; not standard input or ids)."""
        return self.file is not None and self.file != STDIN

    @classmethod
    def read(cls, path: str | Path, name: str = _NAME) -> DenyList:
        """Read a file of one item id a line (``-``: standard input, read now, once).
        ``name``: what messages call the file, now and when it is read again (``twotower
        serve`` passes ``--deny``: a reload's refusal names the flag the user typed).

        Raises:
            DataError: the file is missing or unreadable, or a line is not UTF-8 (the
                message names the file and the line).
        """
        from twotower.data.readers import read_id_file
        ids, lines, p = read_id_file(path, name, "item", empty_ok=True)
        file = STDIN if str(path) == "-" else str(Path(path).absolute())
        return cls(tuple(ids), tuple(lines), file, _now(), _digest(ids), name)

    @classmethod
    def of_ids(cls, ids: Iterable[Any]) -> DenyList:
        """A list given as ids (kept as they are for the service's life)."""
        from twotower.models.retriever import _item_id_list
        ids = _item_id_list(ids, "deny")
        return cls(tuple(ids), None, None, _now(), _digest(ids))

    def again(self) -> DenyList:
        """The list as its file holds it now (a new reading); itself when it has no file
        to read again (standard input, ids given in code).

        Raises:
            DataError: as ``read``.
        """
        return (type(self).read(self.file, self.name)  # type: ignore[arg-type]
                if self.rereadable else self)

    def check_lines(self, model: Any, denied: Any) -> None:
        """``DenyFileError`` naming the file and line of an id that is no item of
        ``model`` and holds a column separator (a file of several columns, whose lines
        deny nothing), as ``twotower recommend --deny`` refuses one. ``denied``: the list
        prepared for ``model`` (``TwoTower.prepare_deny``)."""
        if self.lines is None or not denied.n_unknown:
            return
        suspects = [j for j, v in enumerate(self.ids) if any(s in v for s in _SEPARATORS)]
        if not suspects:
            return
        known = model.item_vocab.lookup_or([self.ids[j] for j in suspects], -1)
        for j, row in zip(suspects, known.tolist()):
            if row < 0:
                sep = next(s for s in _SEPARATORS if s in self.ids[j])
                raise DenyFileError(
                    f"{self.name}: {self.file}, line {self.lines[j]}: {self.ids[j]!r} is no "
                    f"item id of the run and holds {sep!r}: expected one item id a line, "
                    "with no other columns")

    def describe(self, denied: Any) -> dict[str, Any]:
        """``GET /v1/model``'s ``deny``: this reading, and what it denies in the served run
        (``denied``: the list prepared for it)."""
        return {"file": self.file, "reread_on_reload": self.rereadable,
                "ids": len(self.ids), "items": denied.n_denied,
                "unknown_ids": denied.n_unknown, "read_at": self.read_at,
                "digest": self.digest}

    # -------------------------------------------------------------- for the workers
    def to_json(self) -> str:
        """This reading as JSON (what the workers of ``serve(workers=N)`` start from)."""
        return json.dumps({"ids": list(self.ids), "lines": None if self.lines is None
                           else list(self.lines), "file": self.file,
                           "read_at": self.read_at, "digest": self.digest,
                           "name": self.name})

    @classmethod
    def from_json(cls, text: str) -> DenyList:
        d = json.loads(text)
        return cls(tuple(d["ids"]), None if d["lines"] is None else tuple(d["lines"]),
                   d["file"], d["read_at"], d["digest"], d.get("name", _NAME))
