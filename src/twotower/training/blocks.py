"""The host side of ``shard_tables="blocks"``: examples sorted into strata of row blocks.

With ``p`` devices, id ``r`` of a table belongs to block ``r % p`` and is row ``r // p`` of
that block. Device ``j`` always holds block ``j`` of the larger table (the *fixed* role) and,
in stratum ``s``, block ``(j + s) % p`` of the smaller one (the *moving* role), whose blocks
move one device on between strata. An example whose fixed id is in block ``f`` and moving
id in block ``m`` is trained by device ``f`` in stratum ``(m - f) % p``. The ``p`` devices of
one stratum touch disjoint rows of both tables, so they need no collective, and a step that
gives each device ``batch_size / p`` examples updates the tables exactly as one device
would on all of them (row-wise Adagrad/SGD updates of disjoint rows commute).

``stratify`` turns the loop's stream of batches (any order) into calls of ``steps`` such
steps, all of one stratum, buffering up to ``buffer_rows`` examples: it keeps emitting the
current stratum while each of its devices has a call's worth of examples, and reads on
otherwise; a stratum changes when the current one runs short (the tables then move, a copy
of the smaller table on each device). At the end of the input the rest is emitted stratum
by stratum, one step per call, with padding rows (out-of-range ids and zero targets: they
read zeros and write nothing) where a device's part runs short.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from twotower.errors import DataError

Batch = dict[str, np.ndarray]
STRATUM = "__stratum"  # the host int a call's stratum travels under
ROWS = "__rows"  # the real (unpadded) examples of each step of a call, [K]
#: How the loop feeds a stream to ``stratify`` (its batches joined by ``coalesced``, since
#: 2026-12-07, into chunks of 1/16 of the buffer or 65,536 rows, the fewer, or a batch
#: more), for a streamed checkpoint's fingerprint: the calls, hence the steps a resumed
#: epoch skips, depend on it (and on the devices and the buffer); a checkpoint of the
#: batch-by-batch feed is refused
STREAM_FEED = "coalesced-16th"


@dataclass
class _Bucket:
    """Examples of one (stratum, device) pair: packed rows, read from ``at`` on."""
    parts: list[np.ndarray] = field(default_factory=list)
    at: int = 0
    size: int = 0

    def add(self, rows: np.ndarray) -> None:
        if len(rows):
            self.parts.append(rows)
            self.size += len(rows)

    def take(self, n: int) -> np.ndarray:
        """Up to ``n`` rows (fewer only when the bucket holds fewer)."""
        out, need = [], min(n, self.size)
        self.size -= need
        while need:
            part = self.parts[0]
            got = part[self.at:self.at + need]
            out.append(got)
            need -= len(got)
            self.at += len(got)
            if self.at == len(part):
                self.parts.pop(0)
                self.at = 0
        if len(out) == 1:
            return out[0]
        return np.concatenate(out) if out else np.zeros(0, np.uint32)


def coalesced(batches: Iterable[Batch], rows: int) -> Iterator[Batch]:
    """``batches`` joined into chunks of at least ``rows`` rows (the last may hold fewer),
    in order: ``stratify`` splits each chunk with a few numpy passes whose fixed cost per
    call a 1,000-row batch does not amortise (52.7 against 30.6 ns per row for 16,000-row
    chunks, ad hoc). Batches of ``rows`` or more pass as they are."""
    def joined(held: list[Batch]) -> Batch:
        return held[0] if len(held) == 1 else {
            k: np.concatenate([h[k] for h in held]) for k in held[0]}

    held: list[Batch] = []
    n = 0
    for b in batches:
        held.append(b)
        n += len(b["user"])
        if n >= rows:
            yield joined(held)
            held, n = [], 0
    if held:
        yield joined(held)


def stratify(batches: Iterable[Batch], *, devices: int, batch_size: int, steps: int,
             moving: str, n_rows: dict[str, int], buffer_rows: int) -> Iterator[Batch]:
    """Calls of stratified steps from ``batches`` (dicts of ``[n]`` arrays with ``user``,
    ``item`` and 4-byte per-example columns such as ``rating``).

    Yields dicts of ``[devices, K, batch_size / devices]`` host arrays: ``user`` and
    ``item`` as rows of their block (``n_rows[role] // devices`` rounded up marks a padding
    row), the other columns as given (0 in padding rows), plus ``STRATUM`` (int) and
    ``ROWS`` (``[K]`` real examples per step).
    """
    p, per = devices, batch_size // devices
    pad_id = {r: -(-n_rows[r] // p) for r in ("user", "item")}  # rows per block
    cols: list[str] | None = None
    kinds: list[np.dtype] = []
    buckets = [[_Bucket() for _ in range(p)] for _ in range(p)]  # [stratum][device]
    held = 0
    cur = 0
    call_rows = steps * per
    width, record, pad = 0, np.dtype(np.void), None  # set by the first batch (split)

    def split(b: Batch) -> None:
        nonlocal cols, kinds, held, width, record, pad
        if cols is None:
            cols = ["user", "item", *[k for k in b if k not in ("user", "item")]]
            kinds = [np.asarray(b[k]).dtype for k in cols]
            width = max(4, len(cols))
            record = np.dtype((np.void, 4 * width))
            words = np.zeros(width, dtype=np.uint32)
            # padding rows: ids past every block (read as zeros, written nowhere)
            words[0], words[1] = pad_id["user"], pad_id["item"]
            pad = words.view(record)[0]
            for k, kind in zip(cols, kinds):
                if kind.itemsize not in (4, 8) or kind.kind not in "iuf":
                    raise DataError(f"fit: column {k!r} has dtype {kind}; tables in blocks "
                                    "take numeric columns of 4 or 8 bytes")
        n = len(b["user"])
        if n == 0:
            return
        # one record per example: a gather of whole records (4 ns per row for 12 bytes,
        # 1.1 for 16, against 14 for the rows of a [n, 3] array; ad hoc)
        rec = _words(b, cols, p, width).view(record).reshape(n)
        key = _pair_of(b, p, moving)
        order = np.argsort(key.astype(np.uint8 if p * p <= 256 else np.int64), kind="stable")
        counts = np.bincount(key, minlength=p * p)
        rec = np.take(rec, order)
        start = 0
        for c, cnt in enumerate(counts):
            buckets[c // p][c % p].add(rec[start:start + cnt])
            start += cnt
        held += n

    def ready(s: int) -> bool:
        return all(bk.size >= call_rows for bk in buckets[s])

    def emit(s: int, k: int) -> Batch:
        nonlocal held
        assert cols is not None
        out = np.empty((p, k * per), dtype=record)  # device-major
        lens = []
        for j in range(p):
            rows = buckets[s][j].take(k * per)
            held -= len(rows)
            if len(rows):
                out[j, :len(rows)] = rows
            out[j, len(rows):] = pad
            lens.append(len(rows))
        return _call(out.view(np.uint32).reshape(p, k, per, width), lens, s, cols, kinds)

    it = iter(batches)
    done = False

    def read_until(enough) -> None:  # noqa: ANN001 - a predicate
        nonlocal done
        while not done and not enough():
            b = next(it, None)
            if b is None:
                done = True
            else:
                split(b)

    whole = p * call_rows  # examples per call
    while True:
        read_until(lambda: held >= buffer_rows or any(ready(s) for s in range(p)))
        if cols is None:
            return
        if not ready(cur):
            others = [s for s in range(p) if ready(s)]
            if others:  # the stratum with the most to give: the tables move
                cur = max(others, key=lambda s: min(bk.size for bk in buckets[s]))
            elif not done:  # full, nothing ready (ids unevenly split): the fullest, padded,
                cur = max(range(p), key=lambda s: sum(bk.size for bk in buckets[s]))
            else:  # the end: the rest, stratum by stratum, one step per call
                for s in [cur, *[t for t in range(p) if t != cur]]:
                    while any(bk.size for bk in buckets[s]):
                        yield emit(s, 1)
                return
        before = held
        # a padded call (nothing ready) is one step: none of its steps may be empty
        yield emit(cur, steps if ready(cur) else 1)
        # read a call more than was taken until the buffer is full: strata grow long
        # (few moves of the tables) without a long wait before the first call
        goal = min(buffer_rows, before + whole)
        read_until(lambda: held >= goal)


def _words(x: Batch, cols: list[str], p: int, width: int) -> np.ndarray:
    """``[n, width]`` uint32: the ids of ``x`` as rows of their block, then its other
    ``cols`` as the bits of float32 / int32 values (zeros past ``cols``)."""
    n = len(x["user"])
    rec = np.zeros((n, width), dtype=np.uint32)
    for j, k in enumerate(cols):
        v = np.asarray(x[k])
        if k in ("user", "item"):
            rec[:, j] = v // p
        else:
            rec[:, j] = v.astype(np.float32 if v.dtype.kind == "f" else np.int32,
                                 copy=False).view(np.uint32)
    return rec


def _pair_of(x: Batch, p: int, moving: str) -> np.ndarray:
    """Each example's (stratum, device) pair, ``stratum * p + device``: the device holds
    its fixed-role id's block; the stratum is how far the moving id's block lies past it."""
    fixed = "item" if moving == "user" else "user"
    f, m = np.asarray(x[fixed]), np.asarray(x[moving])
    if p & (p - 1) == 0 and all(a.dtype.kind == "i" or (a.dtype.kind == "u"
                                                       and a.dtype.itemsize < 8)
                                for a in (f, m)):
        # a power of two: masks in the ids' own dtype (ids are >= 0; a negative or
        # wrapped difference masked is its residue), no int64 copies (0.9 against 8.8 ns
        # per row, ad hoc); uint64 stays on the path below (bincount takes no uint64)
        f_blk = f & (p - 1)
        return ((m - f_blk) & (p - 1)) * p + f_blk
    f_blk = f.astype(np.int64) % p
    return (m.astype(np.int64) % p - f_blk) % p * p + f_blk


@dataclass
class Packed:
    """In-memory examples packed for the blocks schedule (``pack``): one 16-byte record
    per example (ids as rows of their block, then up to two 4-byte columns), and the
    positions of the examples of each (stratum, device) pair, ``stratum * p + device``."""
    records: np.ndarray  # [n] complex128: 4 x uint32 each
    positions: list[np.ndarray]  # p * p arrays of row positions, in row order
    cols: list[str]
    kinds: list[np.dtype]
    pad: np.ndarray  # the record of a padding row


def pack(x: Batch, *, devices: int, moving: str, n_rows: dict[str, int]) -> Packed | None:
    """``x`` (``user``, ``item`` and at most two more 1-D columns of 4 or 8 bytes) packed
    for ``array_calls``; None when it has more columns (``stratify`` then serves)."""
    p = devices
    cols = ["user", "item", *[k for k in x if k not in ("user", "item")]]
    arrays = [np.asarray(x[k]) for k in cols]
    if len(cols) > 4 or any(a.ndim != 1 or a.dtype.kind not in "iuf"
                            or a.dtype.itemsize not in (4, 8) for a in arrays):
        return None
    n = len(arrays[0])
    rec = _words(x, cols, p, 4)
    key = _pair_of(x, p, moving)
    order = np.argsort(key.astype(np.uint8 if p * p <= 256 else np.int64), kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(key, minlength=p * p))])
    order = order.astype(np.int32 if n < 1 << 31 else np.int64)
    pad = np.zeros(4, dtype=np.uint32)
    pad[0], pad[1] = -(-n_rows["user"] // p), -(-n_rows["item"] // p)
    return Packed(rec.view(np.complex128).reshape(n),
                  [order[bounds[c]:bounds[c + 1]] for c in range(p * p)], cols,
                  [a.dtype for a in arrays], pad.view(np.complex128)[0])


def array_calls(packed: Packed, *, devices: int, batch_size: int, steps: int,
                shuffle: bool, seed: int, epoch: int) -> Iterator[Batch]:
    """The calls of one epoch over in-memory examples: each (stratum, device) pair's
    examples shuffled by a generator drawn from ``seed`` (pair by pair: a shuffle of each
    pair's positions, not of the whole epoch, takes half the time), each stratum in turn
    (epoch ``e`` starts where epoch ``e - 1`` ended, so the tables move ``p - 1`` times
    per epoch). A stratum's steps take ``batch_size / p`` of each device's examples; its
    last steps, fewer than ``steps``, come one per call, and a device whose part ran out
    gets padding rows."""
    p, per = devices, batch_size // devices
    rng = np.random.default_rng(seed)
    first = epoch * (p - 1) % p
    for t in range(p):
        s = (first + t) % p
        parts = [packed.positions[s * p + j].copy() for j in range(p)]
        if shuffle:
            for part in parts:
                rng.shuffle(part)
        n_steps = max(-(-len(part) // per) for part in parts)
        at = 0
        while at < n_steps:
            k = steps if n_steps - at >= steps else 1
            yield _gather(packed, [part[at * per:(at + k) * per] for part in parts],
                          k, per, s)
            at += k


def _gather(packed: Packed, parts: list[np.ndarray], k: int, per: int, s: int) -> Batch:
    p = len(parts)
    out = np.empty((p, k * per), dtype=np.complex128)
    for j, idx in enumerate(parts):
        np.take(packed.records, idx, out=out[j, :len(idx)])
        out[j, len(idx):] = packed.pad
    return _call(out.view(np.uint32).reshape(p, k, per, 4), [len(i) for i in parts], s,
                 packed.cols, packed.kinds)


def _call(words: np.ndarray, lens: list[int], s: int, cols: list[str],
          kinds: list[np.dtype]) -> Batch:
    """A call of stratum ``s`` from its ``[p, K, B / p, W]`` uint32 words (each device's
    first ``lens[j]`` rows real, the rest padding): one ``[p, K, B / p]`` array per column
    of ``cols`` (ids and integers as int32, floats as float32), ``STRATUM`` and ``ROWS``."""
    _, k, per, _ = words.shape
    call: Batch = {}
    for j, (name, kind) in enumerate(zip(cols, kinds)):
        v = np.ascontiguousarray(words[..., j])
        call[name] = v.view(np.int32 if name in ("user", "item") or kind.kind != "f"
                            else np.float32)
    call[STRATUM] = s  # type: ignore[assignment]
    call[ROWS] = sum(np.clip(n - np.arange(k) * per, 0, per) for n in lens)
    return call
