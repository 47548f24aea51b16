"""Id vocabularies: external ids (strings or ints) <-> contiguous indices 0..n-1.

Ids are mapped once, at the boundary; everything inside twotower works on indices.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from twotower.errors import ArtifactError, DataError, UnknownIdError

#: An integer id as an int prints it: ``7``, ``-3``, ``0``; not ``007``, ``+7`` or other
#: scripts' digits (ids read from text are ints only when every one matches, so ``007`` and
#: ``7`` stay two ids; a request's id text is an int id only in this form). Up to 19
#: digits, as int64 ids have; the readers keep a column as text when one overflows int64.
INT_ID = re.compile(r"0|-?[1-9][0-9]{0,18}")


def plain_id(v: Any) -> Any:
    """An external id as a plain Python value (``np.int64(7)`` -> ``7``), for JSON."""
    return v.item() if isinstance(v, np.generic) else v


def other_form_hint(vocab: Vocabulary, key: Any) -> str:
    """The end of an unknown-id message, where ``key`` is text the vocabulary holds in
    another Unicode form (``Zoe\u0308``, typed on macOS, against the log's ``Zo\u00eb``):
    ``"; the model holds 'Zoë' written in another Unicode form (NFC)"``, else ``""``. Ids
    stay exact (never normalised in silence): this only says why one is not found. Spaces
    around ``key`` are left out, as ``Vocabulary`` lookups leave them out: only a
    difference of form is claimed (``"Zo\u00eb "`` against ``Zo\u00eb``: none, where
    until 2026-12-07 it claimed one)."""
    if not isinstance(key, str) or vocab.is_int:
        return ""
    import unicodedata
    key = key.strip()
    for form in ("NFC", "NFD"):
        other = unicodedata.normalize(form, key)
        if other != key and other in vocab._index:
            return f"; the model holds {other!r} written in another Unicode form ({form})"
    return ""


class Vocabulary:
    """An ordered set of external ids; index ``i`` is the i-th id.

    Args:
        ids: unique external ids, all ``int`` or all ``str`` (no empty string).
        name: what the ids are ("user", "item"), used in error messages.

    Raises:
        DataError: ids not 1-D, none, of mixed or other types, repeated, or an empty
            string among them (naming its position).

    Example:
        >>> v = Vocabulary(["u7", "u3"], name="user")
        >>> v.lookup(["u3"]).tolist()
        [1]
        >>> v.ids_of([0]).tolist()
        ['u7']
    """

    def __init__(self, ids: Sequence[Any] | np.ndarray, name: str = "id") -> None:
        arr = np.asarray(ids)
        if arr.ndim != 1:
            raise DataError(f"{name} vocabulary: ids must be 1-D, got shape {arr.shape}")
        if arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        elif arr.dtype.kind in "UO":
            arr = arr.astype(object)
            if not all(isinstance(x, str) for x in arr):
                raise DataError(f"{name} vocabulary: ids must be all int or all str")
        elif arr.size == 0:  # (np.asarray([]) is float64: "got dtype float64")
            raise DataError(f"{name} vocabulary: no ids (a vocabulary holds at least one)")
        else:
            raise DataError(
                f"{name} vocabulary: ids must be integers or strings, got dtype {arr.dtype}"
            )
        self.name = name
        arr.flags.writeable = False  # (a copy: astype copies) lookups read ``_index``,
        # ids_of reads this array: a caller writing into ``ids`` would split the two
        self._ids = arr
        self._index = {k: i for i, k in enumerate(arr.tolist())}
        if len(self._index) != len(arr):
            raise DataError(f"{name} vocabulary: ids are not unique")
        if "" in self._index:  # (an int vocabulary: no such key) the one check that
            # covers Vocabulary(...), a given user_vocab/item_vocab (from_ids, a stream)
            # and Vocabulary.load: an empty id is no id (the readers refuse an empty cell,
            # HTTP cannot ask for one), so it would be an item nobody can ask for
            raise DataError(f"{name} vocabulary: `ids`[{self._index['']}] is an empty id "
                            "(''); an id is an integer or a string of at least one "
                            "character")

    @classmethod
    def from_values(cls, values: Iterable[Any] | np.ndarray, name: str = "id") -> Vocabulary:
        """Vocabulary of the distinct values, in sorted order (deterministic)."""
        return cls(np.unique(np.asarray(values)), name=name)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: Any) -> bool:
        return self._coerce(key) in self._index

    def __eq__(self, other: object) -> bool:
        if self is other:  # the usual case (one split's parts): no pass over the ids
            return True
        return (isinstance(other, Vocabulary) and self.is_int == other.is_int
                and len(self) == len(other) and bool(np.all(self._ids == other._ids)))

    @property
    def ids(self) -> np.ndarray:
        """External ids, ``[n]`` int64 or object (str); read-only (copy it to change it)."""
        return self._ids

    @property
    def is_int(self) -> bool:
        return self._ids.dtype == np.int64

    def _coerce(self, key: Any) -> Any:
        if self.is_int:
            if isinstance(key, str):
                s = key.strip()
                return int(s) if INT_ID.fullmatch(s) else key
            if isinstance(key, bool):  # True == 1 as a dict key: not an id
                return ("not an id", key)
            if isinstance(key, (np.integer,)):
                return int(key)
            return key
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            return str(int(key))
        if isinstance(key, str) and key and (key[0].isspace() or key[-1].isspace()) \
                and key not in self._index:
            return key.strip()  # the readers strip ids: " 009 " is the file's "009"
        return key

    def index_of(self, key: Any) -> int:
        """Index of one external id; UnknownIdError if absent."""
        try:
            return self._index[self._coerce(key)]
        except (KeyError, TypeError):
            what = "id" if self.name == "id" else f"{self.name} id"
            raise UnknownIdError(
                f"unknown {what} {plain_id(key)!r}: not among the {len(self)} {what}s "
                f"the model knows (e.g. {', '.join(map(repr, self._ids[:3].tolist()))})"
                f"{other_form_hint(self, key)}") from None

    def lookup(self, keys: Iterable[Any]) -> np.ndarray:
        """Indices ``[len(keys)]`` int64 of external ids; UnknownIdError names the first unknown."""
        return np.fromiter((self.index_of(k) for k in keys), dtype=np.int64)

    def lookup_or(self, keys: Iterable[Any], default: int = -1) -> np.ndarray:
        """Like ``lookup`` but unknown ids map to ``default``."""
        get = self._index.get
        return np.fromiter((get(self._coerce(k), default) for k in keys), dtype=np.int64)

    def ids_of(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """External ids of indices (same shape)."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            bad = idx.min() if idx.min() < 0 else idx.max()
            raise DataError(f"{self.name} index {bad} out of range [0, {len(self)})")
        return self._ids[idx]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "int" if self.is_int else "str",
                "ids": self._ids.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocabulary:
        try:
            kind, ids, name = data["kind"], data["ids"], data.get("name", "id")
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"vocabulary: missing field {exc}") from None
        if kind in ("int", "str") and not isinstance(ids, list):
            raise ArtifactError(f"vocabulary: ids must be a list, got {type(ids).__name__}")
        if kind == "int":
            # each an int within int64 (numpy cast 1.5 to 1 silently, and raised a bare
            # ValueError/OverflowError on "a" and 1e30)
            # (the types in one C-level pass: a Python check per id took 0.16 s per
            # million ids, on every run's load)
            bad = (next(x for x in ids if type(x) is not int)
                   if set(map(type, ids)) - {int} else None)
            if bad is None:
                try:
                    return cls(np.asarray(ids, dtype=np.int64), name=name)
                except OverflowError:
                    bad = next(x for x in ids if not -2**63 <= x < 2**63)
            raise ArtifactError(f"vocabulary: kind 'int' holds int64 ids, got {bad!r}")
        if kind == "str":
            return cls(np.asarray(ids, dtype=object), name=name)
        raise ArtifactError(f"vocabulary: kind must be 'int' or 'str', got {kind!r}")

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # (JSONDecodeError, UnicodeDecodeError)
            raise ArtifactError(f"cannot read vocabulary {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ArtifactError(f"{path} is corrupt: not a vocabulary (a JSON object)")
        try:
            return cls.from_dict(data)
        except (ArtifactError, DataError) as exc:  # the file is named: which of a run's
            # vocabularies, or of a user's (duplicate ids, ids of mixed types)
            raise ArtifactError(f"{path} is corrupt: {exc}") from None

    def __repr__(self) -> str:
        return f"Vocabulary(name={self.name!r}, size={len(self)})"
