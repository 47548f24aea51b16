"""``twotower`` command line: a thin shell over the library.

User errors (unknown ids, bad files, bad arguments) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np

from twotower.errors import ConfigError, DataError, TwoTowerError

MOVIELENS = "movielens-100k"


class _StoreOnce(argparse._StoreAction):
    """A flag that takes a value is given once: a second (``--user 1 --user 2``,
    ``--epochs 1 --epochs 5``) was taken over the first in silence."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        seen = getattr(parser, "_given", None)
        if option_string is not None and seen is not None:
            if self.dest in seen:
                first, flag = seen[self.dest]
                several = ("; several users: --users FILE (- for standard input)"
                           if self.dest == "user" else "")
                parser.error(f"{flag} given twice ({_flag_value(first)}, then "
                             f"{_flag_value(values)}): give it once{several}")
            seen[self.dest] = (values, option_string)
        super().__call__(parser, namespace, values, option_string)


def _flag_value(values: Any) -> str:
    return " ".join(map(repr, values)) if isinstance(values, list) else repr(values)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # a flag is given whole: a prefix (`--epoch`, `tutorial --data`, read as --epochs and
        # --data-dir) is refused by name rather than taken for another flag
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.register("action", None, _StoreOnce)
        self.register("action", "store", _StoreOnce)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._given: dict[str, tuple[Any, str]] = {}  # per parse: dest -> (value, flag)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> Any:  # exit 2 with one line, like our own errors
        self.print_usage(sys.stderr)
        prog = self.prog.removeprefix("twotower").strip()  # `twotower train`, once
        raise SystemExit(_fail(f"{prog}: {message}" if prog else message))

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        # unknown flags are reported by the subcommand they were given to (its usage, its
        # name), not by the top-level parser
        parsed, extra = self.parse_known_args(args, namespace)
        if extra:
            sub = getattr(self, "_commands", {}).get(getattr(parsed, "command", None), self)
            sub.error(f"unrecognized arguments: {' '.join(extra)} (see `{sub.prog} -h`)")
        return parsed


def _fail(message: str) -> int:
    print(f"twotower: error: {message}", file=sys.stderr)
    return 2


def _say(*args: Any) -> None:
    """Print to stdout; text its encoding cannot write (an id or title on an ASCII or
    latin-1 terminal, a lone surrogate of an argument that was not UTF-8) is escaped
    (``\\u65e5``), as ``_json`` escapes it, rather than raising UnicodeEncodeError."""
    text = " ".join(map(str, args))
    if not text.isascii():
        encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
        try:
            text.encode(encoding)
        except LookupError:
            text = text.encode("ascii", "backslashreplace").decode("ascii")
        except UnicodeEncodeError:
            text = text.encode(encoding, "backslashreplace").decode(encoding)
    print(text, flush=True)


def _json(value: Any, encoding: str | None = "utf-8", **kw: Any) -> str:
    """``json.dumps`` that writes a NaN or infinite number as null (``json_safe``), and
    text as it is (``"cliënt"``, as the HTTP service answers), escaped (``\\u00eb``) only
    where ``encoding`` (the stream's it goes to) cannot write it, or it holds a lone
    surrogate."""
    from twotower.artifacts import json_safe
    safe = json_safe(value)
    text = json.dumps(safe, allow_nan=False, ensure_ascii=False, **kw)
    if not text.isascii():
        try:
            text.encode(encoding or "utf-8")
        except (UnicodeEncodeError, LookupError):
            text = json.dumps(safe, allow_nan=False, **kw)
    return text


# ---------------------------------------------------------------- data
def _load_data(args: argparse.Namespace, objective: str | None = None,
               item_columns: Sequence[str] = (), catalogue: str = "interactions",
               weights: bool = False, event_weights: dict[str, float] | None = None
               ) -> tuple[Any, dict[str, Any]]:
    """The interactions of --data, and how they were read (``_data_columns``). With
    ``objective`` ``mse``, a file without a rating column is refused before it is read.
    ``item_columns``: columns of --items to keep beside title and genres (the model's
    ``item_features``); ``catalogue``: ``read_interactions``' (``items``: the items of
    --items without interactions too). With ``weights`` (``interaction_weights
    "rating"``), a file without a rating column is refused before it is read, and a
    negative rating after, naming its line. With ``event_weights`` (``interaction_weights
    "event"``), ``--event-col``'s names are read as each row's weight (in ``ratings``),
    and no rating column is read."""
    from twotower.data import load_movielens_100k, read_interactions

    file_flags = [f"--{name.replace('_', '-')}" for name in (
        "user_col", "item_col", "rating_col", "time_col", "time_unit", "items", "sep",
        "items_id_col", "title_col", "genres_col") if getattr(args, name, None) is not None]
    if args.data == MOVIELENS:
        if file_flags:  # they would be ignored: MovieLens has its own files and columns
            raise ConfigError(f"{', '.join(file_flags)}: for a --data file; MovieLens 100k "
                              f"(--data {MOVIELENS}, the default) is read as GroupLens ships "
                              "it (--data-dir for a local copy)")
        # its columns as a file's are recorded (u.data's four fields, by the names the
        # readers default to: a held-out file of those names is read by them)
        return load_movielens_100k(getattr(args, "data_dir", None)), {
            "columns": dict(MOVIELENS_COLUMNS)}
    if getattr(args, "data_dir", None) is not None:
        raise ConfigError(f"--data-dir: the MovieLens 100k directory, for --data {MOVIELENS}; "
                          f"--data {args.data} is a file of its own")
    cols = _weight_columns(args, objective, weights, bool(event_weights))
    meta_cols = _items_columns(args, cols)
    from twotower.models._ticker import Ticker
    # a line every 10 s while a large file is read (10 s per 3M rows here: silent before)
    size = Path(args.data).stat().st_size / 2**20 if Path(args.data).is_file() else 0.0
    with Ticker("reading --data", every_s=10.0, stage=f"{args.data} ({size:,.0f} MB)"):
        x = read_interactions(args.data, user_col=cols["user"], item_col=cols["item"],
                              rating_col=cols["rating"], time_col=cols["time"],
                              items=args.items, item_id_col=meta_cols["id_col"],
                              title_col=meta_cols["title_col"],
                              genres_col=meta_cols["genres_col"], item_columns=item_columns,
                              sep=args.sep, catalogue=catalogue,
                              time_unit=getattr(args, "time_unit", None) or "auto",
                              event_col=args.event_col if event_weights else None,
                              event_weights=event_weights or None)
    if weights and x.ratings is not None:
        from twotower.data.readers import where_in_file
        from twotower.models.retriever import check_weights
        def at(row: int) -> str:
            return (f"{args.data} {where_in_file(Path(args.data), row, args.sep)} "
                    f"(column {cols['rating']!r})")
        check_weights(x.ratings, at)
    if x.item_info is not None:
        meta = x.item_info.drop(columns="id")  # rows of catalogue items the file lacks: NaN
        if len(meta.columns):
            filled = _filled(meta)
            _check_items_file(args.items, meta_cols["id_col"], filled,
                              x.item_vocab.ids, [str(c) for c in meta.columns],
                              matched=bool(meta.notna().any(axis=1).any()),
                              untitled=_untitled(meta, filled))
    return x, _data_columns(args, cols, meta_cols)


def _weight_columns(args: argparse.Namespace, objective: str | None, weights: bool,
                    events: bool) -> dict[str, str | None]:
    """``_columns``, checked for what the run reads of them, in memory or streamed: a
    rating column for ``mse`` and for ``weights`` (``interaction_weights "rating"``); with
    ``events`` (event weights), none: each row's weight is its --event-col name's."""
    if events:  # the weights are the event column's: a rating column is not read
        if args.rating_col is not None and args.rating_col.strip().lower() != "none":
            raise ConfigError(f"--rating-col {args.rating_col}: with event weights each row's "
                              f"weight is its --event-col ({args.event_col}) name's weight; "
                              "one source of weights at a time: leave --rating-col out, or "
                              "leave the event weights out and use --interaction-weights "
                              "rating")
        args.rating_col = "none"
    cols = _columns(args)
    if objective == "mse" and cols["rating"] is None:
        why = ("--rating-col none was given" if getattr(args, "rating_col", None)
               else f"{args.data} has no rating column found by name; give --rating-col")
        raise ConfigError(f"objective 'mse' trains on ratings, and {why}; or choose another "
                          "objective (e.g. --preset default, or --preset clicks: "
                          "sampled_softmax on the id tower)")
    if weights and cols["rating"] is None:
        why = ("--rating-col none was given" if getattr(args, "rating_col", None)
               else f"{args.data} has no rating column found by name")
        raise ConfigError(f"--interaction-weights rating weighs each pair by its --rating-col "
                          f"value, and {why}; name the weight column with --rating-col COL")
    return cols


def _items_columns(args: argparse.Namespace, cols: dict[str, Any]) -> dict[str, Any]:
    """``--items``' columns: the id (``--items-id-col``, else the ``--item-col`` name),
    ``--title-col`` and ``--genres-col``; with ``--items``, ``read`` too: those the file
    has (role -> column, None for a title or genres column it lacks), as the run records
    them. A named column the file lacks is an error; a file with neither a title nor a
    genres column gets a warning listing its columns (every item would show as its id)."""
    for flag in ("items_id_col", "title_col", "genres_col"):
        value = getattr(args, flag, None)
        if value is not None and not getattr(args, "items", None):
            raise ConfigError(f"--{flag.replace('_', '-')} names a column of --items, which "
                              "was not given")
        if value is not None and not value.strip():
            raise ConfigError(f"--{flag.replace('_', '-')}: expected a column name of "
                              f"--items, got {value!r}")
    id_col = getattr(args, "items_id_col", None) or cols["item"]
    title = getattr(args, "title_col", None)
    genres = getattr(args, "genres_col", None)
    out = {"id_col": id_col, "title_col": title or "title", "genres_col": genres or "genres"}
    if not getattr(args, "items", None):
        return out
    from twotower.data.readers import read_header
    header = read_header(args.items, "--items", getattr(args, "sep", None))
    if id_col not in header and args.items_id_col is None and args.item_col is None:
        data_header = read_header(args.data, "--data", getattr(args, "sep", None))
        if id_col not in data_header:  # neither file has the default name: --item-col first
            raise DataError(f"--data: {args.data} has no column {id_col!r} (the item "
                            f"column's name without --item-col); its columns are "
                            f"{data_header}; name it with --item-col, which names --items' "
                            f"id column too (--items {args.items}: {header}) unless "
                            f"--items-id-col names another")
    for flag, name in (("--items-id-col" if args.items_id_col else "--item-col", id_col),
                       ("--title-col", title), ("--genres-col", genres)):
        if name is not None and name not in header:
            raise DataError(f"--items: {args.items} has no column {name!r} ({flag}); its "
                            f"columns are {header}" + (
                                "; name its id column with --items-id-col"
                                if flag == "--item-col" else ""))
    if out["title_col"] not in header and out["genres_col"] not in header:
        import warnings
        warnings.warn(f"--items: {args.items} has no 'title' or 'genres' column (columns: "
                      f"{header}); name them with --title-col / --genres-col, or items show "
                      "as their ids", stacklevel=2)
    out["read"] = {"id": id_col, **{role: out[f"{role}_col"] if out[f"{role}_col"] in header
                                    else None for role in ("title", "genres")}}
    return out


#: Column names taken when the matching --*-col is not given (first present wins), e.g. the
#: MovieLens CSV layout ``userId,movieId,rating,timestamp``.
COLUMN_ALIASES = {"user": ("user_id", "userId", "user", "UserID", "userid"),
                  "item": ("item_id", "movieId", "item", "itemId", "MovieID", "movie_id"),
                  "rating": ("rating", "Rating"),
                  "time": ("timestamp", "Timestamp")}
#: what a MovieLens run records as its ``data.columns`` (``_data_columns``): u.data's
#: fields (GroupLens: user id | item id | rating | timestamp), every one read, by the names
#: a file's columns are found by first
MOVIELENS_COLUMNS = {role: names[0] for role, names in COLUMN_ALIASES.items()}


def _columns(args: argparse.Namespace, path: Any = None, what: str = "--data",
             run_cols: dict[str, Any] | None = None) -> dict[str, str | None]:
    """The interaction file's columns: as given by --user-col & co, else the run's own
    (``run_cols``, the names its training data used, where this file has them), else found
    by name (announced; ``--rating-col none`` / ``--time-col none`` to ignore such a
    column)."""
    from twotower.data.readers import read_header

    header = read_header(args.data if path is None else path, what, getattr(args, "sep", None))
    given = {"user": args.user_col, "item": args.item_col,
             "rating": getattr(args, "rating_col", "none"),
             "time": getattr(args, "time_col", "none")}
    out: dict[str, str | None] = {}
    for role, col in given.items():
        if col is not None and not col.strip():
            none = " ('none' to ignore the column)" if role in ("rating", "time") else ""
            raise ConfigError(f"--{role}-col: expected a column name of {what}{none}, got "
                              f"{col!r}")
        if col is not None:
            out[role] = None if col.lower() == "none" and role in ("rating", "time") else col
            continue
        theirs = (run_cols or {}).get(role)
        if theirs is not None and theirs in header:
            if theirs != COLUMN_ALIASES[role][0]:
                _say(f"using column {theirs!r} as the {role}, as the run's training data "
                     f"did (--{role}-col)")
            out[role] = theirs
            continue
        default = COLUMN_ALIASES[role][0]
        found = next((c for c in COLUMN_ALIASES[role] if c in header), None)
        if found is None and role in ("user", "item"):
            found = default  # read_interactions names the missing column in its error
        elif found is not None and (found != default or role in ("rating", "time")):
            _say(f"using column {found!r} as the {role} (--{role}-col)")
        out[role] = found
    return out


def _data_columns(args: argparse.Namespace, cols: dict[str, Any],
                  meta_cols: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a run keeps of how its file was read (``config.json``'s ``data``, ``GET
    /v1/model``'s): the columns read, given by flag or found by name (``columns``: user,
    item, rating and time, None where none was read; event where one was), the separator,
    and ``--items`` (``items``, the path as given; ``items_columns``: ``_items_columns``'
    ``read``). So ``evaluate --test-data`` reads a file like it the same way, and one who
    trains again or audits the run sees what was read. A run saved before these keys
    lacks them: not recorded, not "none read"."""
    out = {"columns": {"user": cols["user"], "item": cols["item"],
                       "rating": cols.get("rating"), "time": cols.get("time")},
           "sep": args.sep}
    if getattr(args, "event_col", None) is not None:  # (the names' weights: the config's)
        out["columns"]["event"] = args.event_col
    if cols.get("time") is not None and getattr(args, "time_unit", None) is not None:
        out["time_unit"] = args.time_unit  # how the times were read (as given)
    if getattr(args, "items", None) and meta_cols is not None and "read" in meta_cols:
        out["items"] = str(args.items)
        out["items_columns"] = dict(meta_cols["read"])
    return out


def _filled(meta: Any) -> np.ndarray:
    """``[len(meta)]`` bool: whether each row of item metadata holds a cell that is not
    empty (a blank title is ``""``, no genres ``[]``, a missing number NaN)."""
    def filled(v: Any) -> bool:
        if isinstance(v, str):
            return bool(v.strip())
        if isinstance(v, (list, tuple, np.ndarray)):
            return len(v) > 0
        return v is not None and v == v  # (NaN != NaN)
    out = np.zeros(len(meta), dtype=bool)
    for c in meta.columns:  # a numeric column at once; text and lists a cell at a time
        col = meta[c]
        out |= (col.notna().to_numpy() if col.dtype.kind in "biufcmM" else
                np.fromiter(map(filled, col.to_numpy(dtype=object)), bool, len(col)))
    return out


def _untitled(meta: Any, filled: np.ndarray) -> np.ndarray:
    """``[len(meta)]`` bool: rows with a cell that is not empty (``filled``, ``_filled(meta)``:
    found) but an empty title, so that the item shows as its id; none without a title
    column."""
    if "title" not in meta.columns:
        return np.zeros(len(meta), dtype=bool)
    return filled & ~_filled(meta[["title"]])


def _check_items_file(path: str, col: str, found: np.ndarray, catalogue: np.ndarray,
                      columns: Sequence[str] = ("title", "genres"),
                      matched: bool | None = None,
                      untitled: np.ndarray | None = None) -> None:
    """``--items`` against the catalogue: ``found[i]`` says whether item ``catalogue[i]``
    got a row of metadata with a cell that is not empty (``_filled``). None found is an
    error when no row matched (almost surely the wrong file or id column: every title
    would silently be the id; ``matched``: whether any did, None: as ``found`` says); some
    missing, a warning naming what they lack (``columns``: those read from the file; a
    feature column among them is missing too, not only the title and genres).
    ``untitled[i]``: item ``catalogue[i]`` is found but its title is empty (``_untitled``),
    so it shows as its id as a missing one does: the warning's count says how many (until
    2026-12-07 they were counted found without a word)."""
    n, hit = len(catalogue), int(np.count_nonzero(found))
    untitled = np.zeros(n, dtype=bool) if untitled is None else np.asarray(untitled, bool)
    bare = ""
    if untitled.any():
        k = int(np.count_nonzero(untitled))
        eg = ", ".join(map(repr, catalogue[untitled][:2].tolist()))
        bare = f" ({k:,} of them with an empty title, e.g. {eg}: they show as their ids)"
    if hit == n:
        if bare:
            import warnings
            warnings.warn(f"--items: {hit:,} of {n:,} items found in {path}{bare}",
                          stacklevel=2)
        return
    if hit == 0 and not matched:
        from twotower.data import read_item_info
        theirs = read_item_info(path, id_col=col).index[:2].tolist()
        raise DataError(f"--items: none of the {n:,} items of --data has a row in {path} "
                        f"(ids there like {', '.join(map(repr, theirs))}; in --data like "
                        f"{', '.join(map(repr, catalogue[:2].tolist()))}); both files must "
                        f"hold the same ids (the items file's id column is {col!r}: "
                        "--items-id-col)")
    import warnings
    missing = catalogue[~found][:2].tolist()
    shown = [c for c in columns if c in ("title", "genres")]
    features = [c for c in columns if c not in ("title", "genres")]
    lack = shown + ([f"item features ({', '.join(features)})"] if features else [])
    what = " or ".join(lack) if len(lack) < 3 else f"{', '.join(lack[:-1])} or {lack[-1]}"
    why = ("; they show as their ids" if "title" in shown else "") + (
        "; the model places them by their interactions alone" if features else "")
    warnings.warn(f"--items: {hit:,} of {n:,} items found in {path}{bare}; the other "
                  f"{n - hit:,} (e.g. {', '.join(map(repr, missing))}) have no row there "
                  f"or only empty cells: no {what}{why}", stacklevel=2)


def _column_list(text: str) -> tuple[str, ...]:
    """``price,brand`` as ``("price", "brand")``; ``none`` (or nothing) as ``()``."""
    if text.strip().lower() in ("", "none"):
        return ()
    cols = tuple(c.strip() for c in text.split(","))
    if not all(cols):
        raise argparse.ArgumentTypeError(f"expected column names separated by commas (e.g. "
                                         f"price,brand; 'none' for none), got {text!r}")
    return cols


def _event_weights(text: str) -> dict[str, float]:
    """``view=1,addtocart=3,transaction=10`` (``*=0``: every other name) as a mapping."""
    form = ("expected NAME=WEIGHT pairs separated by commas, e.g. "
            "view=1,addtocart=3,transaction=10 (*=W: every other event's weight)")
    out: dict[str, float] = {}
    for part in text.split(","):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or not name:
            raise argparse.ArgumentTypeError(f"{form}, got {text!r} ({part.strip()!r} is no "
                                             "NAME=WEIGHT)")
        if name in out:
            raise argparse.ArgumentTypeError(f"{form}, got {text!r} (event {name!r} twice)")
        try:
            out[name] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{form}, got {text!r} ({value.strip()!r}, the "
                                             f"weight of {name!r}, is no number)") from None
    return out


def _value_sep(text: str) -> str:
    """A multi-valued cell's separator: any non-empty text ('\\t' typed: a tab)."""
    if text in ("\\t", "tab"):
        return "\t"
    if not text:
        raise argparse.ArgumentTypeError("expected the text between two values of a cell "
                                         "(e.g. '|' or ';'), got ''")
    return text


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=MOVIELENS, type=_path,
                   help=f"'{MOVIELENS}' or a .csv/.tsv/.parquet interaction file")
    p.add_argument("--data-dir", type=_path, help="local MovieLens 100k directory (u.data, u.item, ...)")
    p.add_argument("--user-col", default=None,
                   help="user id column (default: user_id, userId, user, ... if present)")
    p.add_argument("--item-col", default=None,
                   help="item id column (default: item_id, movieId, item, ... if present)")
    p.add_argument("--rating-col", default=None,
                   help="rating column (default: 'rating' if present; 'none' to ignore it)")
    p.add_argument("--time-col", default=None,
                   help="timestamp column (default: 'timestamp' if present; 'none' to "
                        "ignore it)")
    p.add_argument("--time-unit", default=None, type=_time_unit,
                   choices=("auto", "s", "ms", "us", "ns", "yyyymmdd"),
                   help="what a number in the time column counts: seconds, milli-, micro-, "
                        "nanoseconds since 1970, or dates written 20240301 (default auto: "
                        "read off the values, said on stderr when not seconds; ISO 8601 "
                        "text and Parquet timestamps carry their own: refused for them)")
    p.add_argument("--items", type=_path, help="item metadata file (columns: the item id, title, genres)")
    p.add_argument("--sep", default=None, type=_sep,
                   help="CSV field separator of --data and --items, one character ('\\t' "
                        "for a tab; default ',', tab for .tsv)")
    p.add_argument("--items-id-col", default=None,
                   help="--items: its item id column (default: the --item-col name)")
    p.add_argument("--title-col", default=None, help="--items: title column (default: title)")
    p.add_argument("--genres-col", default=None,
                   help="--items: genres column, '|'-separated (default: genres)")


# ---------------------------------------------------------------- commands
def cmd_tutorial(args: argparse.Namespace) -> int:
    from twotower.data import load_movielens_100k, random_split
    from twotower.models import ModelConfig, TwoTower

    cfg = ModelConfig.preset("tutorial", seed=args.seed, epochs=args.epochs)  # checked first
    if args.out:  # before the training: a save would replace what is there
        from twotower.artifacts import check_replaceable
        check_replaceable(args.out, "--out")
    _say("== twotower tutorial: Keras-RS 'Recommending movies: retrieval' on MovieLens 100k ==")
    x = load_movielens_100k(args.data_dir)
    split = random_split(x, 0.2, seed=args.seed)
    _say(f"data: {len(x):,} ratings, {x.n_users:,} users, {x.n_items:,} movies; "
         f"train {len(split.train):,} / validation {len(split.test):,} (seed {args.seed})")
    model = TwoTower(cfg)
    model.fit(split.train, split.test, verbose=2 if sys.stdout.isatty() is False else 1)
    h = model.history
    val = (f"{h['val_loss'][-1]:.4f}" if h.get("val_loss")
           else f"none (validated every {cfg.validation_freq} epochs)")
    last = len(h.get("val_loss") or ()) * cfg.validation_freq  # the epoch it was measured at
    if last and last != len(h["loss"]):  # not the final epoch's: say which
        val += f" (epoch {last} of {len(h['loss'])})"
    _say(f"\nfinal train loss {h['loss'][-1]:.4f} (tutorial: 0.4669), "
         f"val loss {val} (tutorial: 0.4743), fit {model.fit_seconds:.1f} s")
    if args.out:
        model.save(args.out, test=split.test, data={"source": MOVIELENS, "split": "random",
                                                    "seed": args.seed,
                                                    "columns": dict(MOVIELENS_COLUMNS)})
        _say(f"saved to {args.out}")
    user = model.user_vocab.lookup([42])
    # every movie they rated, in the validation part too (the model's own seen items are
    # the training part's): x, split and model share the vocabularies
    rated = np.unique(x.items[x.users == user[0]])
    scores, top = model.recommend(user, 10, [rated])
    _say("\nTop-10 for user 42 (movies they already rated excluded):")
    for rank, (i, s) in enumerate(zip(top[0], scores[0]), 1):
        _say(f"  {rank:2d}. {model.titles([i])[0]}  ({s:.3f})")
    raw = model.raw_tutorial_top_ids(user)[0]
    seen = set(rated.tolist())
    _say("\nThe tutorial's raw list (BruteForceRetrieval via model.predict, * = already rated):")
    for rank, i in enumerate(raw, 1):
        _say(f"  {rank:2d}. {model.titles([i])[0]}{'  *' if int(i) in seen else ''}")
    star = model.find_item("Star Wars (1977)")
    sscores, sim = model.similar_items([star], 10)
    _say("\n10 movies similar to Star Wars (1977) (cosine on candidate embeddings):")
    for rank, (i, s) in enumerate(zip(sim[0], sscores[0]), 1):
        _say(f"  {rank:2d}. {model.titles([i])[0]}  ({s:.3f})")
    return 0


def _config_file(args: argparse.Namespace) -> dict[str, Any]:
    if not getattr(args, "config", None):
        return {}
    from twotower.config import DuplicateKey, unique_keys
    from twotower.data.readers import not_a_file
    p = Path(args.config)
    if not p.is_file():
        raise ConfigError(f"--config: {not_a_file(p)}")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (Notepad) is fine
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"--config: {p}: line {line}: not UTF-8 text (byte "
                          f"0x{raw[exc.start]:02x}); save the file as UTF-8") from None
    if p.suffix.lower() in (".yaml", ".yml"):  # read as TOML, it failed on its first colon
        raise ConfigError(f"--config: {p}: YAML is not read; write the settings as TOML (a "
                          ".toml file: [model], then lines like epochs = 5) or JSON (.json)")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text, object_pairs_hook=unique_keys)
        except DuplicateKey as exc:
            raise ConfigError(f"--config: {p}: key {exc.args[0]!r} is given twice in one "
                              "object (which one is meant cannot be told)") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--config: {p}: line {exc.lineno}: {exc.msg}") from None
    else:
        data = _toml(p, text)
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {p}: expected a table of settings, got "
                          f"{type(data).__name__}")
    if not data:  # (an empty TOML file, or comments only; empty JSON is not JSON)
        raise ConfigError(f"--config: {p}: holds no settings; expected [model] and/or "
                          "[distribution] tables, or ModelConfig fields (docs/config.md)")
    if "model" in data and "rating_range" in data and set(data) <= _RUN_CONFIG_KEYS:
        data = _run_settings(p, data)
    other_tables = sorted(k for k, v in data.items()
                          if isinstance(v, dict) and k not in ("model", "distribution"))
    if other_tables and "model" not in data and "distribution" not in data:
        # a table of another name alone (e.g. [data]) was read as a model setting
        raise ConfigError(f"--config: {p}: unknown table(s) {other_tables}; the file holds "
                          "[model] (ModelConfig fields) and [distribution] tables, or "
                          "ModelConfig fields alone (data columns are flags: --user-col, ...)")
    tables = [k for k in ("model", "distribution") if k in data]
    if tables:  # tables: nothing else may sit beside them (it would be ignored)
        other = sorted(set(data) - set(tables))
        if other:
            from twotower.models import ModelConfig
            names = {f.name for f in dataclasses.fields(ModelConfig)}
            fields = [k for k in other if k in names]  # a flat key above [distribution]
            move = (f"; {fields}: ModelConfig field(s), which a file with tables holds "
                    "under [model]" if fields else "")
            raise ConfigError(f"--config: {p}: unknown table(s) or key(s) {other} beside "
                              f"{tables}; the file holds [model] (ModelConfig fields) and "
                              "[distribution] tables, or ModelConfig fields alone" + move)
        for k in tables:
            if not isinstance(data[k], dict):
                raise ConfigError(f"--config: {p}: [{k}] must be a table of settings, got "
                                  f"{type(data[k]).__name__} {data[k]!r}")
    return data


_RUN_CONFIG_KEYS = frozenset(("model", "index", "data", "rating_range"))


def _run_settings(p: Path, data: dict[str, Any]) -> dict[str, Any]:
    """A run's saved ``config.json`` (``model``, ``index``, ``data``, ``rating_range``) as
    ``--config``: its ``model`` settings (which it holds every one of), said in one line
    with the flags that gave that run its split and index (they are not settings here)."""
    src = data.get("data") if isinstance(data.get("data"), dict) else {}
    index = data.get("index") if isinstance(data.get("index"), dict) else {}
    flags = []
    if src.get("streamed"):
        flags.append("--stream")
    elif isinstance(src.get("split"), str):
        flags.append(f"--split {src['split']}")
        if src["split"] != "none" and src.get("test_fraction") is not None:
            flags.append(f"--test-fraction {src['test_fraction']}")
    if isinstance(index.get("kind"), str):
        flags.append(f"--index-kind {index['kind']}")
    read = _read_as_flags(src)
    _say(f"--config {p}: a run's saved config: its [model] settings are read; its data, "
         "split and index are not (flags: that run had "
         f"{' '.join(flags) or 'no record of them'}"
         + (f"; it read {' '.join(read)}" if read else "") + ")")
    return {"model": data["model"]}


def _read_as_flags(src: dict[str, Any]) -> list[str]:
    """A run's ``data`` (``_data_columns``) as the flags that read its file that way: the
    columns it records, ``none`` for a rating or time column recorded as not read (a tab
    separator as ``'\\t'``, which ``--sep`` reads). No flags for a run that records no
    columns (saved before they were kept); a key an older run lacks gives no flag. A
    MovieLens run's columns (``MOVIELENS_COLUMNS``) are read by ``--data`` alone: the
    file flags do not apply to it."""
    import shlex
    cols = src.get("columns")
    if not isinstance(cols, dict) or not cols:
        return []
    if src.get("source") == MOVIELENS:
        return [f"--data {MOVIELENS}"]
    out = []
    if isinstance(src.get("source"), str):
        out.append(f"--data {shlex.quote(src['source'])}")
    for role in ("user", "item", "rating", "time", "event"):
        if role in cols and (isinstance(cols[role], str) or cols[role] is None
                             and role in ("rating", "time")):
            out.append(f"--{role}-col {shlex.quote(cols[role] or 'none')}")
    for key, flag in (("time_unit", "--time-unit"), ("sep", "--sep"), ("items", "--items")):
        if isinstance(src.get(key), str):
            value = "\\t" if key == "sep" and src[key] == "\t" else src[key]
            out.append(f"{flag} {shlex.quote(value)}")
    meta = src.get("items_columns") if isinstance(src.get("items_columns"), dict) else {}
    for role, flag, default in (("id", "--items-id-col", cols.get("item")),
                                ("title", "--title-col", "title"),
                                ("genres", "--genres-col", "genres")):
        if isinstance(meta.get(role), str) and meta[role] != default:
            out.append(f"{flag} {shlex.quote(meta[role])}")
    return out


#: train's flags that set a ModelConfig field of their name (``--embedding-dim``: embedding_dim),
#: over the --config file's [model] value
_MODEL_FLAGS = ("epochs", "embedding_dim", "learning_rate", "batch_size", "seed",
                "item_features", "multi_valued_features", "multi_value_sep", "catalogue",
                "interaction_weights", "event_weights")


def _model_config(args: argparse.Namespace, data: dict[str, Any]) -> Any:
    from twotower.models import ModelConfig
    from twotower.models.config import check_preset_objective

    overrides: dict[str, Any] = {}
    if "model" in data or "distribution" in data:
        overrides.update(data.get("model", {}))
    else:
        overrides.update(data)
    # a flag given on the command line wins over the file; the file's value must still be
    # one (a flag would otherwise hide `epochs = "1"` until the day it is dropped)
    hidden = {n: overrides[n] for n in _MODEL_FLAGS
              if getattr(args, n, None) is not None and n in overrides}
    if hidden:
        import warnings

        from twotower.config import check_choice
        from twotower.models.config import INTERACTION_WEIGHTS, event_weight_table
        # these two each alone: the file's pair, valid together, is checked apart from the
        # other half (which a flag may replace): `--event-weights` over a file's event pair
        pair = {n: hidden[n] for n in ("interaction_weights", "event_weights") if n in hidden}
        try:
            with warnings.catch_warnings():  # a check of the file's values only: the
                warnings.simplefilter("ignore")  # preset below warns of what it reads
                ModelConfig.preset(args.preset, **{n: v for n, v in hidden.items()
                                                   if n not in pair})
            if "interaction_weights" in pair:
                check_choice("model", "interaction_weights", pair["interaction_weights"],
                             INTERACTION_WEIGHTS)
            if "event_weights" in pair:
                event_weight_table("model.event_weights", pair["event_weights"])
        except ConfigError as exc:
            raise _named(exc, "model", {}, args, set(hidden)) from None
    for name in _MODEL_FLAGS:
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    inferred = set()
    if overrides.get("event_weights") and getattr(args, "interaction_weights", None) is None \
            and (overrides.get("interaction_weights") is None or (
                getattr(args, "event_weights", None) is not None
                and overrides["interaction_weights"] == "none")):
        # the mapping given is the mapping used (over a --config file's 'none', which a
        # run's saved config holds, as any flag wins over the file)
        overrides["interaction_weights"] = "event"
        inferred.add("interaction_weights")
    try:
        cfg = ModelConfig.preset(args.preset, **overrides)
        check_preset_objective(args.preset, overrides)
        cfg.check_used()  # before the data is read (fit checks it again, for the library)
    except ConfigError as exc:
        flags = {n: "--" + n.replace("_", "-") for n in _MODEL_FLAGS
                 if getattr(args, n, None) is not None}
        if inferred:  # set to 'event' by the mapping given
            flags["interaction_weights"] = (
                "set by --event-weights" if getattr(args, "event_weights", None) is not None
                else f"set by --config {args.config} [model] event_weights")
        if inferred and getattr(args, "event_weights", None) is not None:
            # the library's advice names settings; the command line gave flags
            exc = ConfigError(str(exc).replace(
                "set interaction_weights to 'none' and event_weights to {}",
                "leave out --event-col and --event-weights"))
        raise _named(exc, "model", flags, args, set(overrides) - set(flags) - inferred
                     ) from None
    # (a setting the model never reads: ModelConfig.preset warned above)
    if args.preset == "default" and cfg.objective != "multinomial" \
            and "batch_size" not in overrides:
        import warnings
        warnings.warn(f"objective {cfg.objective!r} on the default preset keeps its batch_size "
                      f"{cfg.batch_size}, chosen for 'multinomial', where a batch is "
                      f"{cfg.batch_size} users; here it is {cfg.batch_size} (user, item) pairs, "
                      "many slow steps an epoch: set batch_size (e.g. --batch-size 1024)",
                      stacklevel=2)
    args.seed = cfg.seed  # the split's seed too: one seed for the run
    args.model_settings_given = set(overrides)  # (_preset_features)
    split = getattr(args, "split", "none")
    if cfg.ease_weight > 0 and cfg.ease_split == "auto" and split != "none":
        # tune the EASE part on a validation split carved the way this run's test split is
        # (a global cutoff: each user's latest, the nearest carve it has)
        cfg = cfg.replace(ease_split="temporal" if split == "global-temporal" else split)
    return cfg


def _preset_features(args: argparse.Namespace, cfg: Any, item_info: Any, user_info: Any,
                     streamed: bool = False, notes: dict[str, str] | None = None) -> Any:
    """``cfg`` with the preset's own side-feature columns (the default's MovieLens
    ``genres`` and ``year``) cut to those the data has, said in one line: a log without
    item metadata trains without them, as it would anyway, with no warning. ``streamed``:
    cut to none (side features are not streamed). A column the user named that the data
    lacks is an error naming the columns there are (``--stream`` refuses them all).
    ``notes``: where a tower keeps some of the preset's columns, why the others were cut
    goes there (by tower) instead, for ``_say_features``' line after training: one line
    per tower, not a line before training and another after it."""
    from twotower.models.features import present_columns

    given = getattr(args, "model_settings_given", set())
    for what, info in (("item", item_info), ("user", user_info)):
        name = f"{what}_features"
        wanted = getattr(cfg, name)
        if name in given and wanted and not streamed:  # a name of the user's own: a typo
            missing = [c for c in wanted if c not in present_columns(info, wanted)]
            if missing:  # trained for minutes without it, after a warning listing the
                # columns read (not the file's)
                where = (f"--{name.replace('_', '-')}" if getattr(args, name, None)
                         is not None else f"{name} in --config [model]")
                raise ConfigError(f"{where} names {missing}, but "
                                  f"{_metadata_columns(args, what, info)}; name columns "
                                  f"there are, or {name} = [] for none")
        if name in given or not wanted:
            continue
        kept = () if streamed else present_columns(info, wanted)
        if kept != wanted:
            cfg = cfg.replace(**{name: kept})
            left = ", ".join(c for c in wanted if c not in kept)
            why = ("side features are not streamed" if streamed else
                   f"the preset's {left} not in the data; name your own {what} metadata "
                   f"columns with " + ("--item-features or " if what == "item" else "")
                   + f"{name} in --config [model]" + (
                       _unread_items_columns(args) if what == "item" else ""))
            if kept and notes is not None:
                notes[what] = why
            else:
                _say(f"{what} features: {', '.join(kept) if kept else 'none'} ({why})")
    return cfg


def _unread_items_columns(args: argparse.Namespace) -> str:
    """``--items``' columns that no role reads (not its id, title or genres), said so a log
    whose metadata has ``brand, price, tags`` is not trained without them in silence; ""
    without --items or such columns."""
    if not getattr(args, "items", None):
        return ""
    from twotower.data.readers import read_header
    header = read_header(args.items, "--items", getattr(args, "sep", None))
    read = {getattr(args, "items_id_col", None), getattr(args, "item_col", None),
            getattr(args, "title_col", None) or "title",
            getattr(args, "genres_col", None) or "genres", *COLUMN_ALIASES["item"]}
    unread = [str(c) for c in header if c not in read]
    return (f"; {args.items} has {', '.join(unread)}, not read as features"
            if unread else "")


def _say_features(model: Any, notes: dict[str, str] | None = None) -> None:
    """A line per tower with side features: the columns read and the features each gave,
    and ``notes``' word for the tower (the preset's columns the data lacks) after them."""
    from twotower.models.features import describe_features
    for what in ("item", "user"):
        line = describe_features(getattr(model, f"_{what}_features", None),
                                 getattr(model, f"{what}_feature_names", []),
                                 getattr(model.config, f"{what}_features"))
        note = (notes or {}).get(what)
        if line or note:
            _say(f"{what} features: {line or 'none'}" + (f"; {note}" if note else ""))


def _say_catalogue(model: Any) -> None:
    """How many catalogue items have no training interaction: cold ones, which the model
    places by their item features, and those in no list (``untrained_items``: no feature
    value that an item with training interactions has). Nothing when every item has
    training interactions."""
    untrained = model.untrained_items()
    no_rows = np.asarray(model.item_popularity) == 0
    cold, denied = int(np.count_nonzero(no_rows & ~untrained)), int(np.count_nonzero(untrained))
    if cold or denied:
        _say(f"catalogue: {model.n_items:,} items: {model.n_items - cold - denied:,} with "
             f"training interactions, {cold:,} cold (none: placed by their item features)"
             + (f", {denied:,} in no list (none, and no item feature value that a trained "
                "item has)" if denied else ""))


def _metadata_columns(args: argparse.Namespace, what: str, info: Any) -> str:
    """Where ``what`` metadata comes from, and its columns, for a message."""
    if what == "item" and getattr(args, "items", None):
        from twotower.data.readers import read_header
        header = read_header(args.items, "--items", getattr(args, "sep", None))
        return (f"--items {args.items} has no such column (its columns: {header}; one it "
                "reads as its title or genres column is named 'title' or 'genres' there, "
                "and its id column is no feature)")
    if info is None:
        return (f"no {what} metadata was read" + (
            " (give it with --items FILE)" if what == "item" else
            " (the command line reads user metadata with MovieLens 100k only)"))
    return (f"the {what} metadata has no such column (its columns: "
            f"{[str(c) for c in info.columns if c != 'id']})")


def _toml(p: Path, text: str) -> dict[str, Any]:
    import tomllib
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: {p}: {exc}") from None


def _distribution(args: argparse.Namespace, data: dict[str, Any]) -> Any:
    """``distribution`` from the config file, overridden by ``--devices`` & co."""
    from twotower.training import DistributionConfig

    d: dict[str, Any] = dict(data.get("distribution", {}))
    if args.model_parallel is not None:
        d["model_parallel"] = args.model_parallel
    if args.shard_tables is not None:
        d["shard_tables"] = args.shard_tables
    if args.devices is not None:
        mp = d.get("model_parallel", 1)
        where = ("--model-parallel" if args.model_parallel is not None
                 else f"--config {args.config} [distribution] model_parallel")
        if isinstance(mp, bool) or not isinstance(mp, int) or mp < 1:
            raise ConfigError(f"{where} must be a whole number >= 1, got {mp!r}")
        if args.devices % mp:
            raise ConfigError(f"--devices {args.devices} must be a multiple of {where} ({mp})")
        d["data_parallel"] = args.devices // mp
    for flag, key in (("coordinator", "coordinator_address"),
                      ("num_processes", "num_processes"), ("process_id", "process_id"),
                      ("join_timeout", "join_timeout_s")):
        if getattr(args, flag) is not None:
            d[key] = getattr(args, flag)
    flags = {"data_parallel": ("devices", "--devices"),
             "model_parallel": ("model_parallel", "--model-parallel"),
             "shard_tables": ("shard_tables", "--shard-tables"),
             "coordinator_address": ("coordinator", "--coordinator"),
             "num_processes": ("num_processes", "--num-processes"),
             "process_id": ("process_id", "--process-id"),
             "join_timeout_s": ("join_timeout", "--join-timeout")}
    sources = {key: flag for key, (attr, flag) in flags.items()
               if getattr(args, attr, None) is not None}
    in_file = dict(data.get("distribution", {}))
    try:  # a flag wins over the file; the file's value must still be one (as [model]'s)
        for key in sorted(set(sources) & set(in_file)):
            DistributionConfig.check_field(key, in_file[key])
    except ConfigError as exc:
        raise _named(exc, "distribution", {}, args, set(in_file)) from None
    try:
        dist = DistributionConfig.from_dict(d)
    except ConfigError as exc:
        raise _named(exc, "distribution", sources, args,
                     set(data.get("distribution", {}))) from None
    if dist.num_processes > 1 and "process_id" not in d:
        # every process would join as process 0 and wait out --join-timeout (300 s)
        where = sources.get("num_processes") or f"--config {args.config} [distribution] " \
            "num_processes"
        raise ConfigError(f"{where} ({dist.num_processes}): give each process its own "
                          f"--process-id (0 .. {dist.num_processes - 1}; 0 on the "
                          "coordinator's host)")
    for key in ("process_id", "join_timeout_s"):
        if key in d and dist.num_processes == 1:  # as for unread model settings
            where = sources.get(key) or f"--config {args.config} [distribution] {key}"
            print(f"twotower: warning: {where} ({d[key]!r}) is not read: one process "
                  "(a multi-host run needs --num-processes 2 or more)", file=sys.stderr)
    if "shard_tables" in d and dist.model_parallel == 1:  # as for unread model settings
        where = sources.get("shard_tables") or f"--config {args.config} [distribution] " \
            "shard_tables"
        print(f"twotower: warning: {where} ({dist.shard_tables!r}) is not read: tables are "
              "split only with --model-parallel 2 or more", file=sys.stderr)
    return dist


def _given(args: argparse.Namespace, data: dict[str, Any]) -> str:
    """Where the batch size, embedding size and device counts of a run came from: a flag,
    the ``--config`` file, or the preset (for the distribution's divisibility errors)."""
    model = data.get("model", {}) if "model" in data or "distribution" in data else data
    dist = data.get("distribution", {})
    parts = []
    for key, flag in (("batch_size", "--batch-size"), ("embedding_dim", "--embedding-dim")):
        parts.append(f"{key} from " + (flag if getattr(args, key, None) is not None else
                                       f"--config {args.config} [model]" if key in model
                                       else f"preset {args.preset}"))
    for key, flag in (("data_parallel", "--devices"), ("model_parallel", "--model-parallel")):
        attr = "devices" if key == "data_parallel" else key
        if getattr(args, attr, None) is not None:
            parts.append(f"{key} from {flag}")
        elif key in dist:
            parts.append(f"{key} from --config {args.config} [distribution]")
    return ", ".join(parts)


def _named(exc: ConfigError, table: str, sources: dict[str, str],
           args: argparse.Namespace, in_file: set[str] | frozenset[str] = frozenset()
           ) -> ConfigError:
    """``exc`` (about ``table.key``) with where the user set that key: the flag in
    ``sources``, else the ``--config`` file when it holds the key (``in_file``), else the
    preset (``model`` settings). A key of the file that the message names bare (the other
    side of a combination) is named too."""
    msg = str(exc)
    config = getattr(args, "config", None)
    named: set[str] = set()
    for key in sorted(set(re.findall(rf"\b{table}\.(\w+)", msg)), key=len, reverse=True):
        where = sources.get(key) or (f"--config {config} [{table}]" if key in in_file
                                     else f"preset {args.preset}" if table == "model"
                                     and getattr(args, "preset", None) else None)
        if where:
            msg = re.sub(rf"\b{table}\.{key}\b(?! \()", f"{table}.{key} ({where})", msg, 1)
            named.add(key)
    bare = set() if "unknown key" in msg else in_file - named - set(sources)
    for key in sorted(bare, key=len, reverse=True):
        # where the message says what the file holds ("got objective 'softmax'"), else the
        # first mention (not a mention of what the key should be, e.g. "trained by objective
        # 'multinomial' ..., got objective 'softmax'")
        got = rf"(?<=\bgot ){key}\b(?! \()"
        msg = re.sub(got if re.search(got, msg) else rf"(?<![.\w]){key}\b(?! \()",
                     f"{key} (--config {config} [{table}])", msg, 1)
    if "unknown key" in msg and config and "--config" not in msg:
        msg = f"--config {config}: {msg}"
    return ConfigError(msg)


def cmd_train(args: argparse.Namespace) -> int:
    from twotower.data import make_split
    from twotower.index import IndexConfig
    from twotower.models import TwoTower

    t0 = time.perf_counter()
    if args.stream:
        if args.split not in (None, "none") or args.test_fraction is not None:
            given = (f"--split must be none, got {args.split!r}"
                     if args.split not in (None, "none")
                     else f"--test-fraction ({args.test_fraction}) does not apply")
            raise ConfigError(f"--stream trains on the whole file, so {given}; hold out a "
                              "file of your own and use `twotower evaluate RUN --test-data "
                              "FILE`")
        if args.time_unit is not None:  # how to read times that the run never reads
            raise ConfigError(f"--time-unit {args.time_unit}: a streamed run (--stream) reads "
                              "no times: it trains on the whole file in a shuffled order, with "
                              "no temporal split and no recency; leave --time-unit out, or "
                              "train without --stream to use the times")
    elif args.shuffle_buffer is not None:
        raise ConfigError("--shuffle-buffer applies to --stream only (in memory, each epoch "
                          "is a full permutation)")
    args.split = args.split or ("none" if args.stream else "random")
    if args.split == "none" and args.test_fraction is not None and not args.stream:
        raise ConfigError(f"--test-fraction ({args.test_fraction}) applies to --split random, "
                          "temporal or global-temporal; --split none trains on every row and "
                          "holds none out")
    if args.sep is not None and not any(
            f is not None and Path(f).suffix.lower() in (".csv", ".tsv", ".txt")
            for f in (args.data, args.items)):
        # a flag that does nothing is refused, as evaluate refuses it without --test-data
        which = (f"neither --data {args.data} nor --items {args.items} is one" if args.items
                 else f"--data {args.data} is not one")
        raise ConfigError(f"--sep ({args.sep!r}) is the field separator of a CSV/TSV file, "
                          f"and {which} (Parquet has no separator): leave --sep out")
    if args.test_fraction is None:
        args.test_fraction = 0.2
    if args.split != "none" and not 0.0 < args.test_fraction < 1.0:  # before the data is read
        raise ConfigError(f"--test-fraction must be strictly between 0 and 1, got "
                          f"{args.test_fraction}")
    _check_output(args.plot_loss, "--plot-loss")
    settings = _config_file(args)
    try:
        cfg = _model_config(args, settings)
    except ConfigError as exc:
        if args.stream and "needs a history tower" in str(exc):  # which --stream refuses
            raise ConfigError(f"{exc}; but --stream trains the id query tower only (a "
                              "history tower needs each user's whole history in memory): "
                              "with --stream use objective mse, sampled_softmax, softmax or "
                              "bpr, and ease_weight 0") from None
        raise
    _check_event_col(args, cfg)
    dist = _distribution(args, settings)
    if dist.shard_tables == "blocks" and dist.model_parallel > 1:
        from twotower.training.loop import blocks_model_reason, blocks_refusal
        why = blocks_model_reason(cfg)  # refused before the data is read or scanned
        if why:
            raise blocks_refusal(why)
    args.checkpoint = _checkpoint(args, dist.num_processes)
    if dist.num_processes > 1 and dist.model_parallel > 1:
        raise ConfigError("--model-parallel with several processes: the trained tables "
                          "would be split over the processes, and the run is saved through "
                          "Keras, which reads each table whole in one process; train data "
                          "parallel (--devices only), or split tables with the library's "
                          "TrainLoop (docs/scaling.md)")
    if dist.devices > 1 or dist.num_processes > 1:
        from twotower.training import (apply_distribution, check_batch_size,
                                       check_embedding_dim)
        from twotower.training.distribution import check_devices
        if dist.num_processes == 1:  # the devices first: the batch must suit those there are
            check_devices(dist)
        try:
            check_batch_size(cfg.batch_size, dist)
            check_embedding_dim(cfg.embedding_dim, dist)
        except ConfigError as exc:  # which flag, file or preset gave the two numbers
            raise ConfigError(f"{exc} ({_given(args, settings)})") from None
        apply_distribution(dist)  # before the network is built: Keras places variables then
        tables = ("" if dist.model_parallel == 1 else ", tables split in blocks (each "
                  "device trains the examples whose rows it holds)"
                  if dist.shard_tables == "blocks" else
                  f", tables split by {dist.shard_tables}")
        _say(f"distribution: {dist.data_parallel} data parallel x {dist.model_parallel} "
             f"model parallel{tables} ({dist.devices} devices, {dist.num_processes} "
             "process(es))")
    if _saves():  # before the training (after joining a job: _saves asks JAX)
        from twotower.artifacts import check_replaceable
        check_replaceable(args.out, "--out")  # a save would replace what is there
    if args.stream:
        return _train_stream(args, cfg, t0)
    try:
        # a listed item without interactions is placed by its item features: none, none
        x, read_as = _load_data(args, cfg.objective, cfg.item_features,
                                cfg.catalogue if cfg.item_features else "interactions",
                                weights=cfg.interaction_weights == "rating",
                                event_weights=cfg.event_weights)
        split = make_split(x, args.split, args.test_fraction, args.seed)
    except TwoTowerError as exc:
        if dist.num_processes > 1:  # the others stop too, rather than wait for this one:
            # this joins the data check that their `fit` makes (the same collective)
            from twotower.models.retriever import _same_data_on_every_process
            _same_data_on_every_process("the training interactions", failure=exc)
        raise
    _say(f"data: {len(x):,} interactions, {x.n_users:,} users, {x.n_items:,} items; "
         f"split {args.split}: train {len(split.train):,}, test {len(split.test):,}")
    if args.split != "none" and not len(split.test):
        _say(f"note: the {args.split} split left no test rows (too few interactions): "
             "`twotower evaluate` will have nothing to score (--test-data FILE gives it "
             "pairs)")
    if x.ratings is not None and cfg.objective != "mse" and args.data != MOVIELENS \
            and cfg.interaction_weights == "none":
        _say(f"note: objective {cfg.objective!r} does not read ratings: every row is an "
             "interaction, a 1-star one too (keep only the ratings you count as positive in "
             "--data, --interaction-weights rating to weigh each pair by them, or "
             "--rating-col none to silence this)")
    feature_notes: dict[str, str] = {}
    cfg = _preset_features(args, cfg, x.item_info, x.user_info, notes=feature_notes)
    model = TwoTower(cfg, IndexConfig(kind=args.index_kind))
    if args.verbose:
        model.fit(split.train, verbose=2, checkpoint=args.checkpoint)
    else:  # quiet for a quick run, a progress line every 10 s for a long one
        from twotower.models.progress import TrainProgress
        model.fit(split.train, verbose=0, callbacks=[TrainProgress(every_s=10.0)],
                  checkpoint=args.checkpoint)
    _say_features(model, feature_notes)
    _say_catalogue(model)
    _tune_index(args, model)
    metrics = None
    test_users = np.unique(split.test.users)
    n_cold = int(model.untrained_users()[test_users].sum())
    if n_cold:
        _say(_cold_note(n_cold, len(test_users)))
    repeat, fresh = (_pair_notes(model, split.test.users, split.test.items)
                     if len(split.test) else (None, None))
    if fresh:
        _say(fresh)
    weights_note = _weights_note(cfg)
    if len(test_users) > n_cold and weights_note:
        _say(weights_note)
    if len(test_users) > n_cold:
        from twotower.evaluation.run import held_out_rows
        ks = _default_ks(model.n_items)  # as `evaluate`: a recall@100 of 80 items is 1
        # the model's own ranking; an HNSW/IVF run also as its index serves it; MostPop on
        # the same split, and a warning when the model is behind it
        metrics, popular, behind = held_out_rows(model, split.train, split.test, ks)
        for row, m in [*metrics.items(), ("MostPop", popular)]:
            if row == "MostPop" and not m.get("users"):
                continue  # (nothing scored: the note below)
            label = "" if row == "model" else ", " + (row[7:-1] if row != "MostPop" else row)
            _say(f"test{label}: recall@{ks[0]} "
                 f"{m[f'recall@{ks[0]}']:.4f}  ndcg@{ks[0]} {m[f'ndcg@{ks[0]}']:.4f}"
                 + "".join(f"  recall@{k} {m[f'recall@{k}']:.4f}" for k in ks[1:]))
        if behind:
            _say(f"warning: {behind}")
        m = metrics["model"]
        if repeat and m.get("users"):  # (none left to score: the note below)
            _say(repeat)
        if not m.get("users"):  # every test pair was seen in training: nothing to score
            _say(f"note: no test user has an item left to find: each of the "
                 f"{len(split.test):,} test pairs is also in the training part (a log that "
                 "repeats interactions), and seen items are excluded from the lists and the "
                 "ground truth; the metrics are undefined (saved as null). Drop repeated "
                 "(user, item) pairs from --data"
                 + (", or use --split temporal" if args.split not in ("temporal",
                                                                      "global-temporal")
                    and split.train.timestamps is not None else ""))
    _save(model, args.out, test=split.test if len(split.test) else None, metrics=metrics,
          data={"source": str(args.data), "split": args.split,
                "test_fraction": args.test_fraction, "seed": args.seed, **read_as})
    _trained(args, cfg, model, t0)
    if args.checkpoint is not None:  # the run is saved: nothing left to resume
        args.checkpoint.remove()
    return 0


def _check_event_col(args: argparse.Namespace, cfg: Any) -> None:
    """``--event-col`` and the event weights (``--event-weights``, ``--config``'s
    ``event_weights``) go together: each is refused alone, saying why."""
    event_col = getattr(args, "event_col", None)
    if cfg.interaction_weights == "event" and event_col is None:
        where = ("--event-weights" if getattr(args, "event_weights", None) is not None
                 else f"--config {args.config} [model] event_weights")
        raise ConfigError(f"{where} maps the event names of a column of --data to weights; "
                          "name that column with --event-col COL (e.g. --event-col event)")
    if event_col is not None and cfg.interaction_weights != "event":
        raise ConfigError(f"--event-col {event_col} is read only to weigh each row by its "
                          "event name; give the weights with --event-weights (e.g. "
                          "view=1,addtocart=3,transaction=10) or event_weights in --config "
                          "[model]")
    if event_col is not None and not event_col.strip():
        raise ConfigError(f"--event-col: expected a column name of --data, got "
                          f"{event_col!r}")


def _weights_note(cfg: Any, baselines: bool = False) -> str | None:
    """What a weighted run's test metrics count (they stay binary), or None unweighted;
    ``baselines``: that the baselines beside it read no weights."""
    if cfg.interaction_weights == "none":
        return None
    how = (", ".join(f"{k}={v:g}" for k, v in cfg.event_weights.items())
           if cfg.interaction_weights == "event" else "the rating column's values")
    return (f"note: the model weighed its training pairs by {how}; the evaluation is "
            "binary: every test pair counts once, whatever its weight"
            + ("; the baselines are fitted on the training pairs unweighted" if baselines
               else ""))


def _checkpoint(args: argparse.Namespace, processes: int) -> Any:
    """``--checkpoint DIR`` / ``--checkpoint-every S`` as a ``Checkpoint`` kept until the run
    is saved, or None."""
    if args.checkpoint is None:
        if args.checkpoint_every is not None:
            raise ConfigError("--checkpoint-every applies with --checkpoint DIR only")
        return None
    if processes > 1:
        raise ConfigError("--checkpoint with several processes (--num-processes) is not "
                          "supported: train without it, or in one process")
    ck, out = Path(args.checkpoint).resolve(), Path(args.out).resolve()
    if ck == out or out in ck.parents or ck in out.parents:
        raise ConfigError(f"--checkpoint {args.checkpoint} and --out {args.out} overlap: the "
                          "run is saved in a directory of its own, which must not hold the "
                          "checkpoint or be inside it; give the checkpoint a directory beside "
                          "the run (e.g. --checkpoint RUN.ckpt)")
    from twotower.training.checkpoint import Checkpoint
    try:
        ck = Checkpoint(args.checkpoint, every_s=(600.0 if args.checkpoint_every is None
                                                  else args.checkpoint_every), keep=True)
    except ConfigError:
        raise ConfigError(f"--checkpoint-every must be a number of seconds > 0, got "
                          f"{args.checkpoint_every}") from None
    refused = ck.refusal()  # before the data is read (minutes, for a large file)
    if refused:
        raise ConfigError(f"--checkpoint {args.checkpoint}: {refused}")
    return ck


def _default_ks(n_items: int) -> tuple[int, ...]:
    """The default cut-offs of `train`'s and `evaluate`'s metrics: @10 and @100, those the
    catalogue holds (else the catalogue size)."""
    return tuple(k for k in (10, 100) if k <= n_items) or (n_items,)


def _saves() -> bool:
    """Whether this process writes the run: the only one, or process 0 of a multi-process
    job (every process holds the same trained model)."""
    import jax
    return jax.process_index() == 0


def _save(model: Any, out: str, **extra: Any) -> None:
    """``model.save(out)`` in process 0. The other processes of a multi-process job save
    to a scratch directory they delete: reading the weights of a model trained over
    several processes is a collective that every process must join."""
    if _saves():
        model.save(out, **extra)
        return
    import tempfile
    with tempfile.TemporaryDirectory() as scratch:
        model.save(Path(scratch) / "run", **extra)


def _exact_search_note(kind: str, listed: int | None, untrained: int | None) -> str | None:
    """Why an HNSW/IVF run's measured recall is exact search's: the items it lists (its
    untrained ones denied) are few enough that every request is answered exactly."""
    from twotower.index.faiss_ann import EXACT_BELOW
    if kind == "exact" or not untrained or listed is None or listed > EXACT_BELOW:
        return None
    return (f"the {listed:,} items this run lists (the {untrained:,} it never trained are "
            f"in no list) are at most {EXACT_BELOW:,}: the {kind} index answers them by "
            "exact search")


def _tune_index(args: argparse.Namespace, model: Any) -> None:
    """``--index-kind hnsw|ivf``: the search knob tuned to ``--target-recall``."""
    if args.index_kind == "exact" or not args.target_recall:
        return
    t = model.tune_index(args.target_recall)
    if t.get("skipped"):
        _say(f"index {args.index_kind}: not tuned: {t['skipped']}")
    else:
        untrained = int(np.count_nonzero(model.untrained_items()))
        note = _exact_search_note(args.index_kind, model.n_items - untrained, untrained)
        _say(f"index {args.index_kind}: {t['knob']} {t['value']} gives recall@10 "
             f"{t['recall_tried'][t['value']]:.3f} against exact search on "
             f"{t['calibration_queries']} users (target {t['target_recall']}"
             f"{'' if t['reached'] else ', not reached'}; {t['seconds']:.1f} s)"
             + (f" ({note})" if note else ""))
    s = model._tune_similar(args.target_recall)
    if s is not None and s.get("skipped"):
        _say(f"similar items {args.index_kind}: not tuned: {s['skipped']}")
    elif s is not None:
        _say(f"similar items {args.index_kind}: {s['knob']} {s['value']} gives recall@10 "
             f"{s['recall_tried'][s['value']]:.3f} against an exact cosine scan on "
             f"{s['calibration_queries']} items (target {s['target_recall']}"
             f"{'' if s['reached'] else ', not reached'}; {s['seconds']:.1f} s)")


def _weight_note(model: Any) -> str | None:
    """A line on the EASE part's blend weight when it was chosen on validation (training
    took longer for it), else None."""
    from twotower.models.linear import WEIGHT_CHECK_KEEP
    ease = getattr(model, "ease_tuning", None) or {}
    if "weight" not in ease:
        return None
    check = ease.get("weight_check")
    config = getattr(model, "config", None)
    given = ("" if config is None or ease["weight"] == config.ease_weight
             else f"not ease_weight {config.ease_weight:g}; ")
    # floored: a share just under the threshold must not read as the threshold
    why = ("" if check is None else
           f" ({given}the EASE part was tuned on each user's latest items, a temporal "
           "split: the weight was chosen with a second fit of the trained part)"
           if check.get("split") == "temporal" else "" if check.get("keep") is None else
           f" ({given}cut to rank {check['rank']}, the EASE part kept "
           f"{int(check['keep'] * 100 + 1e-9)}% of its full-rank validation score, under "
           f"{WEIGHT_CHECK_KEEP:.0%}: the weight was chosen with a second fit of the "
           f"trained part)")
    recency = ease.get("query_recency")  # ModelConfig.query_recency_choice
    also = ("" if not recency else f"; with it, the trained part's query recency: half-life "
            f"{recency[0]:g}, floor {recency[1]:g}")
    return f"EASE part: blend weight {ease['weight']:g} chosen on validation{why}{also}"


def _form_note(model: Any) -> str | None:
    """A line when the closed-form part is not EASE (a catalogue above
    ``model.ease_max_items``: ``ModelConfig.ease_large``), else None."""
    ease = getattr(model, "ease_tuning", None) or {}
    if ease.get("form") != "svd":
        return None
    config = getattr(model, "config", None)
    limit = "" if config is None else f" = {config.ease_max_items:,}"
    return (f"closed-form part: the low-rank ridge of a rank-{ease.get('rank', '?')} SVD of "
            f"the user-item matrix (lambda {ease['lambda']:g}), not EASE: the catalogue is "
            f"above model.ease_max_items{limit}")


def _trained(args: argparse.Namespace, cfg: Any, model: Any, t0: float) -> None:
    how = "" if model.trained_with == "model.fit" else f" with {model.trained_with}"
    for note in (_form_note(model), _weight_note(model)):
        if note:
            _say(note)
    where = (f"saved to {args.out}" if _saves()
             else "process 0 saves the run")
    _say(f"trained {cfg.query_tower}/{cfg.objective}{how} in {model.fit_seconds:.1f} s; "
         f"{where} ({time.perf_counter() - t0:.1f} s total)")
    if args.plot_loss and _saves():
        from twotower.evaluation import plot_loss_curves
        with _writing("--plot-loss", args.plot_loss):
            plot_loss_curves(model.history, args.plot_loss,
                             validation_freq=cfg.validation_freq)
        _say(f"wrote {args.plot_loss}")


def _train_stream(args: argparse.Namespace, cfg: Any, t0: float) -> int:
    """``train --stream``: the file read in record batches, never whole (no test split)."""
    from twotower.data import read_item_info
    from twotower.index import IndexConfig
    from twotower.models import TwoTower
    from twotower.training import InteractionStream, StreamConfig

    if args.data == MOVIELENS:
        raise ConfigError("--stream reads a .csv/.tsv/.parquet file: give it with --data")
    if args.time_col is None or args.time_col.strip():  # (a blank one: _columns says so)
        if args.time_col is not None and args.time_col.lower() != "none":
            # refused as --time-unit is (until 2026-12-07 a note, and the run went on)
            raise ConfigError(f"--time-col {args.time_col}: a streamed run (--stream) reads "
                              "no times: it trains on the whole file in a shuffled order, "
                              "with no temporal split and no recency; leave --time-col out, "
                              "or train without --stream to use the times")
        args.time_col = "none"  # nor announced as used, nor checked: it is never read
    events = cfg.interaction_weights == "event"
    # as in memory: the rating column mse and rating weights read; none beside events
    cols = _weight_columns(args, cfg.objective, cfg.interaction_weights == "rating", events)
    buffer = 262_144 if args.shuffle_buffer is None else args.shuffle_buffer
    try:
        stream = InteractionStream(args.data, StreamConfig(
            user_col=cols["user"], item_col=cols["item"], rating_col=cols["rating"],
            shuffle_buffer=buffer, seed=args.seed, sep=args.sep,
            event_col=args.event_col if events else None,
            event_weights=cfg.event_weights if events else {}))
    except ConfigError as exc:
        raise _named(exc, "stream", {"shuffle_buffer": "--shuffle-buffer", "sep": "--sep",
                                     "seed": "--seed"}, args) from None
    from twotower.models.retriever import check_streamable
    cfg = _preset_features(args, cfg, None, None, streamed=True)
    check_streamable(cfg, cols["rating"],  # before any pass over the file
                     event_col=stream.config.event_col,
                     event_weights=stream.config.event_weights)
    meta_cols = _items_columns(args, cols)
    info = read_item_info(args.items, id_col=meta_cols["id_col"],
                          title_col=meta_cols["title_col"], genres_col=meta_cols["genres_col"],
                          sep=args.sep) if args.items else None
    if info is not None:  # the item ids come from the scan (fit_stream reuses it)
        import pandas as pd

        from twotower.data.readers import catalogue_info
        print(f"scanning {args.data} (vocabularies, counts)", file=sys.stderr, flush=True)
        ids = stream.scan().item_vocab.ids
        rows = catalogue_info(info, ids, args.items, args.data, streamed=True)
        if len(rows.columns):  # (neither a title nor a genres column: said already)
            filled = _filled(rows)
            found = pd.Index(ids).isin(rows.index[filled])  # (a row of empty cells: none)
            # the columns read, as in memory (they were the default names, whatever read)
            _check_items_file(args.items, meta_cols["id_col"], found, ids,
                              [str(c) for c in rows.columns], matched=bool(len(rows)),
                              untitled=pd.Index(ids).isin(rows.index[_untitled(rows,
                                                                               filled)]))
    model = TwoTower(cfg, IndexConfig(kind=args.index_kind))
    model.fit_stream(stream, item_info=info, progress_every_s=10.0,
                     checkpoint=args.checkpoint)
    _tune_index(args, model)
    _say(f"data (streamed): {stream.stats.rows:,} interactions, {len(model.user_vocab):,} "
         f"users, {len(model.item_vocab):,} items; no test split")
    _save(model, args.out, data={"source": str(args.data), "split": "none",
                                 "streamed": True, "shuffle_buffer": buffer,
                                 "seed": args.seed, **_data_columns(args, cols, meta_cols)})
    _trained(args, cfg, model, t0)
    if args.checkpoint is not None:
        args.checkpoint.remove()
    return 0


def _load(run: str) -> Any:
    from twotower.models import TwoTower
    return TwoTower.load(run)


def _read_user_file(path: str) -> tuple[list[str], list[int]]:
    """``--users``: its ids, and the line each was read from; ``-`` reads them from
    standard input, and a pipe (``/dev/stdin``, ``<(...)``) is read as a file is."""
    users, lines, _ = _read_id_file(path, "--users", "user")
    return users, lines


def _read_id_file(path: str, flag: str, what: str, empty_ok: bool = False
                  ) -> tuple[list[str], list[int], Path]:
    """A file of one id a line (``--users``, ``--allow``, ``--deny``): its ids, the line
    each was read from, and the file as messages name it; ``-`` reads standard input."""
    from twotower.data.readers import read_id_file
    return read_id_file(path, flag, what, empty_ok=empty_ok)


def _stdin_once(args: argparse.Namespace) -> None:
    """ConfigError when several flags would read standard input (``-``)."""
    dash = [f for f, v in (("--users", getattr(args, "users", None)),
                           ("--history-file", getattr(args, "history_file", None)),
                           ("--allow", args.allow), ("--deny", args.deny)) if v == "-"]
    if len(dash) > 1:
        raise ConfigError(f"{' and '.join(dash)} both read standard input (-): one flag at "
                          "most can; give the others as files")


def _item_file(model: Any, path: str, flag: str) -> np.ndarray:
    """``--allow``/``--deny``: the item indices of the file's ids (sorted, each once).
    Ids the run does not hold are ignored, said on stderr (a line holding a separator
    is refused: a file of several columns); ``--allow`` must name some known item."""
    ids, lines, p = _read_id_file(path, flag, "item", empty_ok=flag == "--deny")
    idx = model.item_vocab.lookup_or(ids, -1)
    unknown = np.flatnonzero(idx < 0)
    for j in unknown.tolist():
        sep = next((c for c in (",", "\t", ";") if c in ids[j]), None)
        if sep is not None:
            raise DataError(f"{flag}: {p}, line {lines[j]}: {ids[j]!r} is no item id of the "
                            f"run and holds {sep!r}: expected one item id a line, with no "
                            "other columns")
    if len(unknown):
        first = int(unknown[0])
        some = ", ".join(map(repr, model.item_vocab.ids[:3].tolist()))
        if flag == "--allow" and len(unknown) == len(ids):
            raise DataError(f"{flag}: none of the {len(ids):,} ids in {p} is an item of the "
                            f"run (line {lines[first]}: {ids[first]!r}; ids are like "
                            f"{some}): an allow-list of no known item leaves every list "
                            "empty")
        print(f"twotower: note: {flag}: {len(unknown):,} of the {len(ids):,} ids in {p} are "
              f"not items of the run and are ignored (the first: line {lines[first]}, "
              f"{ids[first]!r})", file=sys.stderr, flush=True)
    return np.unique(idx[idx >= 0])


def _item_filters(args: argparse.Namespace, model: Any
                  ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``--allow`` and ``--deny`` as item indices (None: not given)."""
    _stdin_once(args)
    allow = _item_file(model, args.allow, "--allow") if args.allow else None
    deny = _item_file(model, args.deny, "--deny") if args.deny else None
    return allow, deny


def cmd_recommend(args: argparse.Namespace) -> int:
    history = ("--history" if args.history is not None else
               "--history-file" if args.history_file is not None else None)
    for flag, given in (("--out", args.out), ("--fallback popular", args.fallback != "none")):
        if history and given:  # before --out's own checks
            raise ConfigError(f"{flag} is read with --user/--users/--all-users; {history} "
                              "gives one new user's list (--json prints it as JSON)")
    if args.out and args.json:
        raise ConfigError("--json prints JSON lines on stdout and --out writes a file: give "
                          "one of them (--out FILE.jsonl for JSON lines in a file)")
    if args.out:
        _out_format(args.out)  # before the work
        _check_output(args.out, "--out")
    _stdin_once(args)
    model = _load(args.run)
    if args.k is None:  # the default fits the catalogue; a given k is checked as given
        args.k = min(10, model.n_items)
    allow, deny = _item_filters(args, model)
    if history:
        return _recommend_history(args, model, allow, deny, history)
    if args.user is not None:  # stripped, as --users' lines and the data's ids are
        if not args.user.strip():
            raise ConfigError(f"--user: expected a user id, got {args.user!r}")
        users = [args.user.strip()]
    elif args.users:
        users, lines = _read_user_file(args.users)
    else:
        users = model.user_vocab.ids.tolist()
    from twotower.data.vocabulary import INT_ID, other_form_hint, plain_id
    from twotower.errors import UnknownIdError
    # unknown users, and users the run never trained on (their query is untrained), are
    # served as new users: the popular items with --fallback popular, else an error
    idx = model.servable_users(users)
    if args.fallback != "popular" and (idx < 0).any():
        hint = "; --fallback popular gives such users the most popular items"
        if args.users:  # the file and line of the first id that cannot be served
            pos = int(np.argmax(idx < 0))
            where = f"--users: {args.users}, line {lines[pos]}: "
            if users[pos] not in model.user_vocab:
                header = (" (the file holds one id a line, with no header line)"
                          if pos == 0 and len(users) > 1 and (idx[1:] >= 0).all() else "")
                raise UnknownIdError(f"{where}unknown user id {users[pos]!r}{header}"
                                     f"{other_form_hint(model.user_vocab, users[pos])}{hint}")
            raise UnknownIdError(f"{where}user id {users[pos]!r} has no training "
                                 f"interactions (the run never trained its query){hint}")
        try:
            model.user_vocab.lookup(users)
        except UnknownIdError as exc:
            raise UnknownIdError(f"{exc}{hint}") from None
        untrained = np.flatnonzero(idx < 0)
        if args.user is not None or args.users:
            raise UnknownIdError(f"user id {users[untrained[0]]!r} has no training "
                                 f"interactions (the run never trained its query){hint}")
        one = len(untrained) == 1
        print(f"twotower: note: {len(untrained):,} {'user' if one else 'users'} with no "
              f"training interactions {'is' if one else 'are'} left out{hint}",
              file=sys.stderr, flush=True)
        users = [users[i] for i in np.flatnonzero(idx >= 0)]
        idx = idx[idx >= 0]
    known = idx >= 0
    exclude = None if args.include_seen else model.seen_exclusions(idx[known])
    t0 = time.perf_counter()
    scores, top = model.recommend(idx[known], args.k, exclude, allow=allow, deny=deny)
    elapsed = time.perf_counter() - t0
    if not known.all():
        from twotower.models.retriever import filtered_order
        popular = filtered_order(model.popularity_order(), model.n_items, allow, deny)[:args.k]
        full_s = np.full((len(idx), top.shape[1]), -np.inf, dtype=np.float32)
        full_t = np.full((len(idx), top.shape[1]), -1, dtype=np.int64)
        full_s[known], full_t[known] = scores, top
        full_s[~known, :len(popular)] = np.asarray(model.item_popularity)[popular]
        full_t[~known, :len(popular)] = popular
        scores, top = full_s, full_t
    titles = model.titles(np.maximum(top, 0))
    rows = []
    for n, (u, s_row, i_row, t_row) in enumerate(zip(idx, scores, top, titles)):
        items = [{"item_id": plain_id(model.item_vocab.ids[i]), "title": str(t),
                  "score": round(float(s), 6)} for s, i, t in zip(s_row, i_row, t_row) if i >= 0]
        if u < 0:  # fallback: the id as given (an int id in plain form as an int)
            given = users[n]
            if model.user_vocab.is_int and isinstance(given, str) and INT_ID.fullmatch(given):
                given = int(given)
            rows.append({"user_id": given, "items": items, "fallback": "popular"})
            continue
        # the id as the model knows it: an int id stays an int whichever way it was given;
        # every row has the key, as the service's answers do
        rows.append({"user_id": plain_id(model.user_vocab.ids[u]), "items": items,
                     "fallback": None})
    if args.out:
        with _writing("--out", args.out):
            _write_rows(rows, Path(args.out), fallback=args.fallback == "popular",
                        int_items=model.item_vocab.is_int)
        whose = "1 user's" if len(rows) == 1 else f"{len(rows):,} users'"
        _say(f"wrote {whose} top-{args.k} to {args.out} (search {elapsed:.2f} s)")
    elif args.json:
        for r in rows:
            print(_json(r, sys.stdout.encoding))
    else:
        shared = _shared_titles(model)
        for r in rows:
            if r["fallback"]:  # a user the run knows but never trained on, or an unknown one
                known = model.user_vocab.lookup_or([r["user_id"]], -1)[0] >= 0
                why = "never trained on" if known else "unknown"
            _say(f"user {r['user_id']}:" + (f" ({why}: the most popular items, with their "
                                            "training interactions)"
                                            if r["fallback"] else ""))
            for rank, it in enumerate(r["items"], 1):
                # popularity counts are whole numbers, not model scores: shown as such
                score = (f"{int(it['score']):,} interactions" if r["fallback"]
                         else f"{it['score']:.3f}")
                _say(f"  {rank:2d}. {_shown(it['title'], it['item_id'], shared)}  ({score})")
            if len(r["items"]) < args.k and not r["fallback"]:
                _say(_short_list_note(model, r["user_id"], len(r["items"]),
                                      args.include_seen, allow, deny))
    return 0


def _recommend_history(args: argparse.Namespace, model: Any, allow: np.ndarray | None,
                       deny: np.ndarray | None, flag: str) -> int:
    """``recommend --history 50,172,181`` (or ``--history-file FILE``, one id a line, for
    ids that hold a comma): a new user's list from the items they had (as
    ``TwoTower.recommend_from_history_ids`` gives it), printed as ``--user``'s or one JSON
    line. Once the ids are read, both flags take one path."""
    from twotower.data.vocabulary import other_form_hint, plain_id
    from twotower.errors import UnknownIdError
    try:  # a query tower that reads no history (only this error is the flag's)
        model.history_query_embeddings([])
    except ConfigError as exc:
        raise ConfigError(f"{flag}: {exc}") from None
    if args.history is not None:
        ids = [t.strip() for t in args.history.split(",")]
        if not all(ids):
            raise ConfigError(f"--history: expected item ids separated by commas, oldest "
                              f"first (e.g. 50,172,181), got {args.history!r} (--history-file "
                              "reads one id a line, for ids that hold a comma)")
    else:  # blank lines skipped, as --users' are; messages name the line
        ids, lines, p = _read_id_file(args.history_file, flag, "item")
    idx = model.item_vocab.lookup_or(ids, -1)
    if (idx < 0).any():
        pos = int(np.argmax(idx < 0))
        some = ", ".join(map(repr, model.item_vocab.ids[:3].tolist()))
        other = other_form_hint(model.item_vocab, ids[pos])
        if args.history is not None:
            raise UnknownIdError(f"--history: unknown item id {ids[pos]!r} (the run's item "
                                 f"ids are like {some}){other}")
        raise UnknownIdError(f"--history-file: {p}, line {lines[pos]}: unknown item id "
                             f"{ids[pos]!r} (the run's item ids are like {some}; expected "
                             f"one item id a line, oldest first){other}")
    if not (np.asarray(model.item_popularity)[idx] > 0).any():
        raise UnknownIdError(f"{flag}: none of its {len(ids):,} items has training "
                             "interactions, so the model has no query to build from it")
    # the ids are checked and mapped here, once: the index path of recommend_from_history_ids
    scores, top = model.recommend_from_history(
        [idx], args.k, None if args.include_seen else [idx], allow=allow, deny=deny)
    external = model.item_vocab.ids[idx].tolist()
    listed = top[0][top[0] >= 0]
    rows = [(plain_id(i), str(t), round(float(sc), 6)) for i, t, sc in
            zip(model.item_vocab.ids[listed], model.titles(listed), scores[0])]
    if args.json:
        print(_json({"history": [plain_id(i) for i in external],
                     "items": [{"item_id": i, "title": t, "score": sc} for i, t, sc in rows]},
                    sys.stdout.encoding))
        return 0
    shared = _shared_titles(model)
    n = len(set(external))  # an item given twice counts once, as the query reads it
    _say(f"new user (history of {n:,} item{'s' if n != 1 else ''}"
         f"{', left out of the list' if not args.include_seen else ''}):")
    for rank, (i, t, sc) in enumerate(rows, 1):
        _say(f"  {rank:2d}. {_shown(t, i, shared)}  ({sc:.3f})")
    if len(rows) < args.k:  # (with --include-seen the history's items are listed)
        own = "" if args.include_seen else "the history's own items, "
        _say(f"  (only {len(rows)} item{'s' if len(rows) != 1 else ''} left: {own}those "
             "never trained and those --allow/--deny leave out are in no list)")
    return 0


def _short_list_note(model: Any, user_id: Any, left: int, include_seen: bool,
                     allow: np.ndarray | None = None, deny: np.ndarray | None = None) -> str:
    """Why a user's list is shorter than asked: their seen items are left out (unless
    --include-seen), and so are the items the run never trained (in no list), the items
    --deny names and those --allow does not."""
    u = model.user_vocab.lookup([user_id])
    seen = model.seen_items(u)[0]
    untrained = model.untrained_items()
    n_untrained = int(np.count_nonzero(untrained))
    out = untrained.copy()  # each item counted under the first reason that leaves it out
    n_seen = 0
    if not include_seen:
        n_seen = int(np.count_nonzero(~out[seen]))
        out[seen] = True
    n_denied = 0
    if deny is not None:
        n_denied = int(np.count_nonzero(~out[deny]))
        out[deny] = True
    n_other = 0
    if allow is not None:
        outside = np.ones(model.n_items, dtype=bool)
        outside[allow] = False
        n_other = int(np.count_nonzero(outside & ~out))
    why = []
    if n_seen:
        why.append(f"{n_seen:,} are items this user interacted with in training "
                   "(--include-seen ranks them too)")
    if n_denied:
        why.append(f"{n_denied:,} are named by --deny")
    if n_other:
        why.append(f"{n_other:,} are not in --allow")
    if n_untrained:
        why.append(f"{n_untrained:,} {'was' if n_untrained == 1 else 'were'} never trained "
                   "(no training row, no trained item feature), which no list holds")
    return (f"  ({'no' if not left else f'only {left}'} items left: of the "
            f"{model.n_items:,}, {' and '.join(why)})")


#: ``recommend --out`` formats by suffix: one JSON line per user, or one row per
#: (user, rank) with columns user_id, rank, item_id, title, score (and, with
#: ``--fallback popular``, fallback).
OUT_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet",
               ".csv": "csv"}


def _out_format(out: str | Path) -> str:
    from twotower.artifacts import format_of
    return format_of(out, OUT_FORMATS, "--out", "a .jsonl (JSON lines), .parquet or .csv")


def _write_rows(rows: list[dict[str, Any]], out: Path, fallback: bool = False,
                int_items: bool = False) -> None:
    """Write ``recommend``'s rows; ids keep their type (int ids an int64 column; item ids
    are ints with ``int_items``, the run's). With ``fallback`` (``--fallback popular``) a
    Parquet or CSV file has a ``fallback`` column too (``popular`` or empty), as each JSON
    line has its ``fallback`` key. A Parquet file has the same column types whatever the
    rows: with no rows (every list empty) or no fallback user too."""
    fmt = _out_format(out)
    from twotower.artifacts import atomic_file
    with atomic_file(out) as tmp:  # Ctrl-C, SIGTERM, a full disk: no half-written file
        if fmt == "jsonl":
            with tmp.open("w", encoding="utf-8") as fh:
                for r in rows:
                    fh.write(_json(r) + "\n")
        else:
            import pandas as pd
            # the fallback flag is kept (popularity counts are no model scores), and a
            # run with integer ids whose fallback users include non-integer ids gets a
            # text user_id column (a Parquet column holds one type)
            columns = ["user_id", "rank", "item_id", "title", "score"]
            flat = pd.DataFrame([{"user_id": r["user_id"], "rank": n, **it,
                                  "fallback": r.get("fallback")}
                                 for r in rows for n, it in enumerate(r["items"], 1)],
                                columns=columns + ["fallback"])
            if not fallback:
                flat = flat[columns]
            if len({type(r["user_id"]) for r in rows}) > 1:
                flat["user_id"] = flat["user_id"].map(str)
            int_users = all(isinstance(r["user_id"], int) for r in rows)
            # (no rows: pandas would leave each column untyped, a Parquet null column)
            flat = flat.astype({"user_id": "int64" if int_users else "str", "rank": "int64",
                                "item_id": "int64" if int_items else "str", "title": "str",
                                "score": "float64",
                                **({"fallback": "str"} if fallback else {})})
            if fmt == "parquet":
                flat.to_parquet(tmp, index=False)
            else:
                flat.to_csv(tmp, index=False)


def _export_run(args: argparse.Namespace) -> None:
    """The run directory of ``export``: ``export --items RUN --out F`` (the order that
    worked before ``--items``/``--users`` took an optional FILE) reaches here with the run
    as the flag's FILE and no run: the flag alone was meant, as no other run is given."""
    if args.run is not None:
        return
    name = "items" if isinstance(args.items, str) else "users"
    given = getattr(args, name)
    if not isinstance(given, str) or not given.strip():
        raise ConfigError("the following arguments are required: run (a run directory, "
                          "`twotower train --out`)")
    args.run = given
    setattr(args, name, True)


def cmd_export(args: argparse.Namespace) -> int:
    from twotower.artifacts import embeddings_format
    _export_run(args)
    _check_output(args.out, "--out")  # before the work
    if args.keras:
        return _export_keras(args)
    for flag, given in (("-k", args.k is not None), ("--include-seen", args.include_seen),
                        ("--ids", args.ids is not None), ("--history", args.history)):
        if given:
            raise ConfigError(f"{flag} is read with --keras only (the top-k model); "
                              f"--items/--users write every vector")
    embeddings_format(args.out)
    what = "items" if args.items is not None else "users"  # (--items '' is still --items)
    flag, given = f"--{what}", args.items if args.items is not None else args.users
    if given is not True and not given.strip():
        raise ConfigError(f"{flag}: expected a file of {what[:-1]} ids (one a line, - for "
                          f"standard input), or {flag} alone for every {what[:-1]}, got "
                          f"{given!r}")
    model = _load(args.run)
    ids = None if given is True else _export_ids(model, given, flag, what[:-1])
    with _writing("--out", args.out):
        report = model.export_embeddings(args.out, what, vectors=args.vectors, ids=ids)
    if args.items:
        left = (f"; {report['unlisted']:,} in no list the run gives (never trained), "
                "listed false" if report["unlisted"] else "")
    else:
        left = (f"; {report['untrained_left_out']:,} never trained on, left out"
                if report["untrained_left_out"] else "")
    whose = f"1 {what[:-1]}'s" if report["rows"] == 1 else f"{report['rows']:,} {what}'"
    _say(f"wrote {whose} {args.vectors} vectors ({report['dim']} wide) to {args.out}{left}")
    return 0


def _export_ids(model: Any, path: str, flag: str, what: str) -> list[str]:
    """``export --users FILE`` / ``--items FILE``: the file's ids, the first one the run
    cannot export named with its file and line (an unknown id; a user never trained on)."""
    from twotower.data.vocabulary import other_form_hint
    from twotower.errors import UnknownIdError
    ids, lines, p = _read_id_file(path, flag, what)
    vocab = model.item_vocab if what == "item" else model.user_vocab
    idx = vocab.lookup_or(ids, -1)
    bad = idx < 0
    if what == "user":
        bad |= model.untrained_users()[np.maximum(idx, 0)] & (idx >= 0)
    if bad.any():
        pos = int(np.argmax(bad))
        why = (f"unknown {what} id {ids[pos]!r} (the file holds one id a line, with no "
               "header line)" if pos == 0 and idx[pos] < 0 and len(ids) > 1 else
               f"unknown {what} id {ids[pos]!r}{other_form_hint(vocab, ids[pos])}"
               if idx[pos] < 0 else
               f"user id {ids[pos]!r} has no training interactions (the run never trained "
               "its query, so it has no vector)")
        raise UnknownIdError(f"{flag}: {p}, line {lines[pos]}: {why}")
    return ids


def _export_keras(args: argparse.Namespace) -> int:
    """``export --keras``: the run's retrieval as one ``.keras`` model (``to_keras``)."""
    from twotower.artifacts import save_keras
    if Path(args.out).suffix != ".keras":
        raise ConfigError(f"--out: {args.out}: --keras writes a .keras file (Keras "
                          f"reads no other name)")
    if args.vectors != "served":
        raise ConfigError("--vectors is read with --items/--users only")
    model = _load(args.run)
    # first: no --ids makes a history model of a query that reads no history
    if args.history and (model.history_embeddings is None or model.config.query_tower == "id"):
        raise ConfigError(f"export --history: this run's query tower is "
                          f"'{model.config.query_tower}' (a user id embedding, as the tutorial "
                          "and clicks presets train): its query reads no history; export "
                          "without --history (known users by id), or train with a history "
                          "tower (--preset default)")
    if (args.ids or "external") == "external":
        from twotower.models.keras_layers import _fits_int32, _int32_misfit
        vocabs = (("item", model.item_vocab),) if args.history else (
            ("user", model.user_vocab), ("item", model.item_vocab))
        for what, vocab in vocabs:
            if not _fits_int32(vocab.ids):
                kind, example = _int32_misfit(vocab.ids)
                takes = ("item indices (histories) and gives item indices, and carries the "
                         "item vocabulary (item_ids" if args.history else
                         "user indices and gives item indices, and carries both vocabularies "
                         "(user_ids, item_ids")
                raise ConfigError(
                    f"export --keras: this run's {what} ids are {kind} (e.g. "
                    f"{example!r}), and the file takes and gives int32 ids by default "
                    f"(JAX has no text tensors); give --ids indices: the file then takes "
                    f"{takes} of its 'retrieval' layer) to map them")
        from twotower.models.keras_layers import PAD
        if args.history and model.item_vocab.is_int and (model.item_vocab.ids == PAD).any():
            raise ConfigError(
                f"export --keras --history: {PAD} pads a history and marks a list's "
                f"unfilled places, but it is one of this run's item ids; give --ids indices: "
                "the file then takes item indices (histories) and gives item indices, and "
                "carries the item vocabulary (item_ids of its 'retrieval' layer) to map them")
    k = min(10, model.n_items) if args.k is None else args.k
    net = model.to_keras(k=k, exclude_seen=not args.include_seen, ids=args.ids or "external",
                         history=args.history)
    with _writing("--out", args.out):
        save_keras(net, args.out)
    lists = "lists for new users' histories" if args.history else "lists"
    _say(f"wrote a Keras model of the run's top-{k} {lists} to "
         f"{args.out} (load: import twotower.models.keras_layers, then "
         f"keras.saving.load_model)")
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    from twotower.data.vocabulary import plain_id
    from twotower.models.retriever import untrained_item_error
    model = _load(args.run)
    item = model.find_item(args.item)
    if model.untrained_items()[item]:  # as `recommend` refuses a user never trained on
        raise DataError(f"--item {args.item!r}: "
                        f"{untrained_item_error(plain_id(model.item_vocab.ids[item]))}")
    if args.k is None:  # the default fits the catalogue (the item itself is not returned)
        args.k = max(1, min(10, model.n_items - 1))
    allow, deny = _item_filters(args, model)
    scores, top = model.similar_items([item], args.k, allow=allow, deny=deny)
    if args.json:
        print(_json({"item_id": plain_id(model.item_vocab.ids[item]),
                     "items": [{"item_id": plain_id(model.item_vocab.ids[i]),
                                "title": str(model.titles([i])[0]),
                                "score": round(float(s), 6)}  # as recommend's
                               for s, i in zip(scores[0], top[0]) if i >= 0]},
                    sys.stdout.encoding))
        return 0
    shared = _shared_titles(model)
    ids = model.item_vocab.ids
    _say(f"similar to {_shown(model.titles([item])[0], ids[item], shared)}:")
    listed = int(np.count_nonzero(top[0] >= 0))  # the rest is padding (PAD_ID, -inf)
    for rank, (s, i) in enumerate(zip(scores[0][:listed], top[0][:listed]), 1):
        _say(f"  {rank:2d}. {_shown(model.titles([i])[0], ids[i], shared)}  ({s:.3f})")
    if listed < args.k:  # as recommend's note: the untrained items are in no list
        n_untrained = int(np.count_nonzero(model.untrained_items()))
        filters = " and ".join(f for f, v in (("--deny", deny), ("--allow", allow))
                               if v is not None)
        _say(f"  ({'no' if not listed else f'only {listed}'} items left: of the "
             f"{model.n_items:,}, one is the item itself"
             + (f", others are left out by {filters}" if filters else "")
             + f" and {n_untrained:,} "
             f"{'was' if n_untrained == 1 else 'were'} never trained (no training row, no "
             "trained item feature), which no list holds)")
    return 0


def _shared_titles(model: Any) -> frozenset[str]:
    """Titles that several items of the catalogue share (shown with their ids)."""
    info = getattr(model, "item_info", None)
    if info is None or "title" not in info:
        return frozenset()
    counts = info["title"].dropna().astype(str).value_counts()
    return frozenset(counts.index[counts > 1])


def _shown(title: str, item_id: Any, shared: frozenset[str]) -> str:
    """An item as text output names it: its title, with its id where the title is shared."""
    return f"{title} [id {item_id}]" if title in shared else str(title)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from twotower.artifacts import load_test, read_whole
    from twotower.evaluation import evaluate_run

    stray = [f for f, v in (("--user-col", args.user_col), ("--item-col", args.item_col),
                            ("--sep", args.sep)) if v is not None]
    if stray and not args.test_data:
        raise ConfigError(f"{', '.join(stray)}: for a --test-data file, which was not given "
                          "(the run's own split needs no columns)")
    if args.sep is not None and Path(args.test_data).suffix.lower() not in (".csv", ".tsv",
                                                                             ".txt"):
        # a flag that does nothing is refused, as train refuses it with Parquet files only
        raise ConfigError(f"--sep ({args.sep!r}) is the field separator of a CSV/TSV file, "
                          f"and --test-data {args.test_data} is not one (Parquet has no "
                          "separator): leave --sep out")
    to_stdout = args.json is not None and str(args.json) == "-"  # the JSON, for a pipe
    for flag, path in (("--json", None if to_stdout else args.json), ("--plot", args.plot),
                       ("--plot-loss", args.plot_loss)):
        _check_output(path, flag)  # before the work
    if args.test_data:
        model = _load(args.run)
        test = _test_file(args, model)
    else:  # the model and its test split from one save
        model, test = read_whole(args.run, lambda: (_load(args.run), load_test(args.run)))
    if test is None:
        how = (getattr(model, "data_source", None) or {}).get("split")
        why = (f"its {how} split left no test rows" if how not in (None, "none")
               else "it was trained with --split none or --stream")
        raise DataError(f"{args.run} has no held-out split ({why}); give a held-out file "
                        "with --test-data")
    n = model.n_items
    # -k as `recommend` takes k: between 1 and the catalogue size (a recall@1000 of 289
    # items would read like a list of 1,000); by default @10 and @100, those there are
    bad = [k for k in args.k or () if not 1 <= k <= n]
    if bad:
        raise ConfigError(f"-k must be between 1 and {n} (the catalogue size), got {bad[0]}")
    ks = tuple(args.k or _default_ks(n))
    test_users = np.unique(np.asarray(test[0], np.int64))
    n_cold = int(model.untrained_users()[test_users].sum())
    if n_cold:
        print(f"twotower: {_cold_note(n_cold, len(test_users))}", file=sys.stderr, flush=True)
    for note in (*_pair_notes(model, *test), _weights_note(model.config, args.baselines)):
        if note:
            print(f"twotower: {note}", file=sys.stderr, flush=True)
    table, curves = evaluate_run(
        model, test, ks=ks, baselines=args.baselines,
        log=lambda line: print(f"twotower: {line}", file=sys.stderr, flush=True))
    from twotower.evaluation import format_table, plot_recall_curves, table_metrics
    shown = sys.stderr if to_stdout else sys.stdout  # (stdout holds the JSON alone)
    print(format_table(table, table_metrics(ks)), file=shown)
    held = getattr(args, "held_out", None)
    if held:
        print(f"\nheld out: {held['evaluated']:,} of the {held['pairs']:,} pairs of "
              f"{held['file']} evaluated; left out, as neither hits nor misses: "
              f"{held['unknown']:,} with a user or item unknown to the run, "
              f"{held['trained']:,} it trained on", file=shown)
    if to_stdout:
        print(_json({**table, "held_out": held} if held else table, sys.stdout.encoding,
                    indent=2), flush=True)
    elif args.json:
        from twotower.artifacts import atomic_file
        # as recommend --out: Ctrl-C or a full disk leave the previous file whole, not cut
        # (its folders made, as --plot's are)
        with _writing("--json", args.json), atomic_file(args.json) as tmp:
            tmp.write_text(_json({**table, "held_out": held} if held else table, indent=2),
                           encoding="utf-8")
        _say(f"wrote {args.json}")
    if args.plot:
        with _writing("--plot", args.plot):
            plot_recall_curves(curves, args.plot)
        print(f"wrote {args.plot}", file=shown, flush=True)
    if args.plot_loss:
        from twotower.evaluation import plot_loss_curves
        with _writing("--plot-loss", args.plot_loss):
            plot_loss_curves(model.history, args.plot_loss,
                             validation_freq=model.config.validation_freq)
        print(f"wrote {args.plot_loss}", file=shown, flush=True)
    return 0


def _pair_notes(model: Any, users: np.ndarray, items: np.ndarray
                ) -> tuple[str | None, str | None]:
    """Notes on what the metrics leave out of test pairs ``(users, items)`` (indices), each
    None when there is nothing to say:

    - repeats: test users (with training interactions) whose every test item they already
      had in training: seen items are excluded from the lists and the ground truth, so they
      have nothing to find and the metrics leave them out (repeat purchases, re-listens);
    - new items: of the pairs the metrics score (those users' unseen pairs, each once),
      those whose item no training row has (common after a global time cutoff): they stay
      in the catalogue, but nothing trained their id vectors, so the model finds them only
      by their item features (it lists no item that neither a training row nor a trained
      feature describes, ``untrained_items``) and a baseline only by chance.
    """
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    warm = ~model.untrained_users()[users]
    users, items = users[warm], items[warm]
    if not len(users):
        return None, None
    uniq, row = np.unique(users, return_inverse=True)
    seen = np.asarray(model.seen_rows(uniq)[row, items]).ravel() != 0
    to_find = np.bincount(row, weights=~seen, minlength=len(uniq)) > 0
    n = int((~to_find).sum())
    repeats = None if not n else (
        f"note: {n:,} of the {len(uniq):,} test users with training interactions have only "
        "test items they already had in training (repeated interactions); seen items are "
        "excluded from the lists and the ground truth, so these users have nothing to find "
        "and are left out of the metrics")
    popularity = np.asarray(model.item_popularity)
    pairs = np.unique(users[~seen] * len(popularity) + items[~seen])  # each pair once
    new = popularity[pairs % len(popularity)] == 0
    if not new.any():
        return repeats, None
    new_items = np.unique(pairs[new] % len(popularity))
    blind = int(np.count_nonzero(model.untrained_items()[new_items]))
    how = ("the model lists none of them (no trained item feature describes them either)"
           if blind == len(new_items) else
           "the model finds them only by their item features"
           + (f" ({blind:,} of them, which no trained feature describes, in no list)"
              if blind else ""))
    fresh = (f"note: {int(new.sum()):,} of the {len(pairs):,} test pairs the metrics score "
             f"are of {len(new_items):,} items that no training row has (new items): they "
             f"are in the catalogue, but no training row taught any method about them: {how}, "
             "and a baseline finds them only by chance (a hit when k lists most of the "
             "catalogue)")
    return repeats, fresh


def _cold_note(n_cold: int, n_test: int) -> str:
    every = " (all of them: no metrics)" if n_cold == n_test else ""
    return (f"note: {n_cold:,} of the {n_test:,} test users have no training interactions "
            f"and are left out of the metrics{every}: a run answers them only with "
            "--fallback popular, the same list whatever the method")


@contextlib.contextmanager
def _writing(flag: str, path: str | Path) -> Iterator[None]:
    """A file system error while writing ``path`` named by its flag and file (the bare
    errno text named neither)."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, TwoTowerError) or str(exc).startswith(f"{flag}:"):
            raise
        why = exc.strerror or str(exc)
        if why.startswith("cannot write "):  # (``atomic_file``'s: it names the file)
            raise OSError(f"{flag}: {why}") from None
        raise OSError(f"{flag}: cannot write {path}: {why}") from None


def _check_output(path: str | Path | None, flag: str) -> None:
    """An output file a command writes when its work is done, checked before the work: not
    a directory, a plot's suffix, and a place a file can be written (the nearest folder
    of it that exists: missing folders are made when it is written). An unwritable
    ``--plot-loss`` failed only after training, with the bare errno text."""
    if path is None:
        return
    if Path(path).is_dir():
        raise ConfigError(f"{flag}: {path} is a directory; give the name of a file to write")
    if flag.startswith("--plot"):
        from twotower.evaluation.report import plot_format
        plot_format(path, flag)
    import tempfile
    folder = Path(path).absolute().parent
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{flag}: cannot write {path}: {folder} is not a directory")
    try:  # (an unnamed file where the system has them: nothing is left behind)
        with tempfile.TemporaryFile(dir=folder, prefix=".twotower-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot write {path}: files cannot be made in {folder} "
                          f"({exc.strerror or exc})") from None


def _test_file(args: argparse.Namespace, model: Any) -> tuple[np.ndarray, np.ndarray]:
    """``--test-data``: the file's held-out pairs in the run's index space."""
    from twotower.data import read_interactions
    from twotower.evaluation import held_out_pairs
    read_as = getattr(model, "data_source", None) or {}
    if args.sep is None:  # a text file like the run's own: its separator
        args.sep = read_as.get("sep")
    cols = _columns(args, args.test_data, "--test-data", run_cols=read_as.get("columns"))
    x = read_interactions(args.test_data, user_col=cols["user"], item_col=cols["item"],
                          what="--test-data", sep=args.sep)
    users, items, left = held_out_pairs(model, x)
    print(f"twotower: --test-data: {len(x):,} pairs; {left['unknown']:,} with a user or item "
          f"unknown to the run and {left['trained']:,} it trained on are left out; "
          f"{len(users):,} evaluated", file=sys.stderr, flush=True)
    if not len(users):
        raise DataError(f"--test-data: {args.test_data} has no pair this run can be judged on "
                        "(known user and item, not trained on)")
    # kept with the table too: the left-out pairs count as neither hits nor misses
    args.held_out = {"file": str(args.test_data), "pairs": len(x), **left,
                     "evaluated": len(users)}
    return users, items


def cmd_index(args: argparse.Namespace) -> int:
    from twotower.artifacts import reindex_run
    from twotower.index import IndexConfig

    knobs = {name: getattr(args, name) for name in ("ef_search", "nprobe", "nlist", "hnsw_m")
             if getattr(args, name) is not None}
    applies = {"hnsw": {"ef_search", "hnsw_m"}, "ivf": {"nprobe", "nlist"}}.get(args.kind, set())
    stray = sorted(set(knobs) - applies)
    if stray:  # it would sit in the saved config and change nothing
        flags = ", ".join("--" + k.replace("_", "-") for k in stray)
        raise ConfigError(f"{flags}: not a setting of --kind {args.kind} (hnsw: --ef-search, "
                          "--hnsw-m; ivf: --nprobe, --nlist; exact: none)")
    from twotower.index.recall import _TUNED

    # a search knob given on the command line is kept as given: no tuning
    fixed = _TUNED.get(args.kind, ("",))[0] in knobs
    from twotower.models._ticker import Ticker
    # minutes at a million items (builds, tuning, the held-out split): a line every 10 s
    with Ticker(f"index {args.run}", every_s=10.0) as tick:
        report = reindex_run(args.run, IndexConfig(kind=args.kind, **knobs),
                             sample=args.sample,
                             target_recall=None if fixed else args.target_recall,
                             stage=lambda what: setattr(tick, "stage", what))
    if args.json:
        print(_json(report, sys.stdout.encoding))
    else:
        for k, v in report.items():
            _say(f"{k}: {v}")
    t = report.get("tuned")
    if t and t.get("skipped"):
        print(f"twotower: note: {args.kind} not tuned: {t['skipped']}", file=sys.stderr)
    elif t and not t.get("reached", True) and t.get("value") in t.get("recall_tried", {}):
        # saved all the same: say so where it is seen
        print(f"twotower: warning: {args.kind} did not reach --target-recall "
              f"{t['target_recall']}: {t['knob']} {t['value']} (its limit) gives recall@10 "
              f"{t['recall_tried'][t['value']]:.3f} on the calibration users; the run keeps "
              f"this index: {'raise --hnsw-m, or ' if args.kind == 'hnsw' else ''}use "
              "--kind exact", file=sys.stderr)
    note = _exact_search_note(args.kind, report.get("items_listed"),
                              report.get("untrained_items"))
    if note:
        print(f"twotower: note: {note}, so the recall and speed above are exact search's",
              file=sys.stderr)
    ts = (t or {}).get("similar")
    if ts and not ts.get("reached", True) and ts.get("value") in ts.get("recall_tried", {}):
        print(f"twotower: warning: the similar-items {args.kind} index did not reach "
              f"--target-recall {ts['target_recall']}: {ts['knob']} {ts['value']} (its limit) "
              f"gives recall@10 {ts['recall_tried'][ts['value']]:.3f} on the calibration "
              "items; the run keeps it", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from twotower.service import serve
    if not args.host.strip():  # `--host "$UNSET"` listened on every interface
        raise ConfigError("--host: expected an address to listen on (127.0.0.1: this "
                          "machine only; 0.0.0.0: every interface), got ''")
    hosts = None if args.allowed_hosts is None else [
        h.strip() for h in args.allowed_hosts.split(",") if h.strip()]
    if hosts is not None and not hosts:
        raise ConfigError("--allowed-hosts: give host names separated by commas, or '*' for "
                          "any")
    # read here as `--deny`, and again by every reload of the service: a reload refused
    # for a bad line names the flag, not create_app's `deny_file` (start-up errors are
    # named by _as_flags, a reload's long after this command has returned them)
    from twotower.service.deny import DenyList
    deny = DenyList.read(args.deny, "--deny") if args.deny else None
    serve(args.run, host=args.host, port=args.port, workers=args.workers, max_k=args.max_k,
          max_batch=args.max_batch, max_results=args.max_results, allowed_hosts=hosts,
          access_log=not args.no_access_log, max_filter=args.max_filter, deny=deny,
          max_body_bytes=args.max_body)
    return 0


def _add_item_filters(parser: argparse.ArgumentParser) -> None:
    """``--allow FILE`` and ``--deny FILE`` of ``recommend`` and ``similar``."""
    parser.add_argument("--allow", type=_path, metavar="FILE",
                        help="only items whose ids this file lists, one a line (ids the run "
                             "does not hold are ignored; at least one must be an item; - for "
                             "standard input)")
    parser.add_argument("--deny", type=_path, metavar="FILE",
                        help="never the items whose ids this file lists, one a line (e.g. out "
                             "of stock; ids the run does not hold are ignored, and counted on "
                             "stderr; - for standard input)")


# ---------------------------------------------------------------- parser
def _recall(text: str) -> float:
    """``--target-recall``: a number in [0, 1] (0: no tuning)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a recall in [0, 1], got {text!r}")
    return value


def _sep(text: str) -> str:
    """``--sep``: one character; ``\\t`` (as a shell passes ``'\t'``) is a tab."""
    from twotower.data.readers import check_sep
    try:
        return check_sep(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--sep: ")) from None


def _time_unit(text: str) -> str:
    """``--time-unit``, any case (``MS``); argparse's choices name the others."""
    return text.strip().lower()


def _path(text: str) -> str:
    """A file or directory name: not empty (an empty one was the flag not given, in
    silence: `--out "$UNSET"`)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a file or directory name, got {text!r}")
    return text


def _id_text(text: str) -> str:
    """An id (or ids, or a title) given as an argument: UTF-8 text. Typed in a terminal of
    another encoding (latin-1 ``ë``), Python's argv holds the byte as a lone surrogate,
    which no id holds and which crashed the Parquet writer and the title search; refused
    as an id file that is not UTF-8 is, and as the service refuses one."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(text)
        try:
            raw.decode("utf-8")
            byte = ""
        except UnicodeDecodeError as exc:
            byte = f" (byte 0x{raw[exc.start]:02x})"
        raise argparse.ArgumentTypeError(
            f"not UTF-8 text{byte}, got {text!r}: is the terminal's encoding another? "
            "give ids as UTF-8 (or in a file saved as UTF-8)") from None
    return text


def _positive_int(text: str) -> int:
    """A whole number >= 1 (``--sample``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from twotower import __version__
    p = _Parser(prog="twotower",
                description="The retrieval stage of a recommender: train two-tower models on "
                            "interaction logs, evaluate them against classical baselines, "
                            "search and serve their top-K lists. `twotower COMMAND -h` lists "
                            "a command's flags.")
    p.add_argument("--version", action="version", version=f"twotower {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p._commands = sub.choices  # type: ignore[attr-defined]

    t = sub.add_parser("tutorial", help="the Keras-RS retrieval tutorial, end to end")
    t.add_argument("--data-dir", type=_path, help="local MovieLens 100k directory")
    t.add_argument("--seed", type=int, default=42,
                   help="seeds the 80/20 split and the model (default 42)")
    t.add_argument("--epochs", type=int, default=50, help="training epochs (default 50)")
    t.add_argument("--out", type=_path, help="also save the trained model here")
    t.set_defaults(func=cmd_tutorial)

    tr = sub.add_parser("train", help="train a model and save it as a run directory")
    _add_data_args(tr)
    tr.add_argument("--out", required=True, type=_path, help="run directory to write")
    tr.add_argument("--preset", default="default", type=str.lower,
                    choices=("default", "tutorial", "clicks"),
                    help="the model to start from (default: default; tutorial: the Keras-RS "
                         "tutorial's; clicks: its id tower with sampled softmax, for click "
                         "logs and --stream); --config and the flags below change its "
                         "settings")
    tr.add_argument("--config", type=_path, help="JSON/TOML file with ModelConfig fields")
    tr.add_argument("--split", default=None, type=str.lower,
                    choices=("random", "temporal", "global-temporal", "none"),
                    help="the test split (default random; none with --stream): random rows; "
                         "temporal: each user's latest rows; global-temporal: every row after "
                         "one time cutoff (the latest --test-fraction of the log: no training "
                         "row is later than a test row)")
    tr.add_argument("--stream", action="store_true",
                    help="read --data in record batches (memory bounded by the shuffle "
                         "buffer and the model, not the file); id tower, no test split")
    tr.add_argument("--shuffle-buffer", type=int,
                    help="--stream: rows in the shuffle buffer (default 262144; 0: file order)")
    tr.add_argument("--test-fraction", type=float, default=None,
                    help="share of the data held out by --split (default 0.2)")
    tr.add_argument("--seed", type=int,
                    help="seeds the split and the model (default: the config's seed, 42)")
    tr.add_argument("--epochs", type=int, help="training epochs (default: the preset's)")
    tr.add_argument("--embedding-dim", type=int,
                    help="embedding dimensions (default: the preset's)")
    tr.add_argument("--learning-rate", type=float, help="default: the preset's")
    tr.add_argument("--batch-size", type=int, help="default: the preset's")
    tr.add_argument("--item-features", type=_column_list, metavar="COLS",
                    help="item metadata columns to train on as features, comma-separated "
                         "(e.g. price,brand,tags; 'none' for none; default: the preset's); "
                         "item_features in --config [model]")
    tr.add_argument("--multi-valued-features", type=_column_list, metavar="COLS",
                    help="feature columns whose text cells list several values, "
                         "comma-separated (a tags cell 'x|y': tags=x and tags=y)")
    tr.add_argument("--multi-value-sep", type=_value_sep, metavar="SEP",
                    help="the separator of --multi-valued-features' values (default '|')")
    tr.add_argument("--catalogue", choices=("items", "interactions"),
                    help="with --items and item features: 'items' (the default) puts every "
                         "item the file lists in the catalogue, also those with no "
                         "interaction (placed by their features); 'interactions' keeps the "
                         "log's items only; catalogue in --config [model]")
    tr.add_argument("--interaction-weights", choices=("none", "rating", "event"),
                    help="'rating': weigh each (user, item) pair by the sum of its rows' "
                         "--rating-col values (a weight column: buy 10, view 1; numbers "
                         ">= 0, 0: the pair teaches nothing) in the multinomial loss and the "
                         "EASE part, or each row's term of the softmax, sampled_softmax or bpr "
                         "loss (also with --stream); 'event': by its rows' --event-col names' "
                         "weights (--event-weights, which sets it); 'none' (the default): "
                         "every pair counts once. interaction_weights in --config [model]")
    tr.add_argument("--event-col", default=None, metavar="COL",
                    help="a column of event names (view, addtocart, transaction) whose "
                         "--event-weights weigh each row")
    tr.add_argument("--event-weights", type=_event_weights, metavar="NAME=W,...",
                    help="the weight of each --event-col name, e.g. "
                         "view=1,addtocart=3,transaction=10 (numbers >= 0; *=W: every other "
                         "name, else such a name is an error); event_weights in --config "
                         "[model]")
    tr.add_argument("--index-kind", default="exact", type=str.lower,
                    choices=("exact", "hnsw", "ivf"),
                    help="the search index saved with the run (default exact; `twotower "
                         "index` builds another later)")
    tr.add_argument("--target-recall", type=_recall, default=0.95,
                    help="hnsw/ivf: raise ef_search/nprobe until recall@10 against exact "
                         "search on up to 500 users reaches this (0: keep the defaults)")
    tr.add_argument("--devices", type=int,
                    help="devices to train on (data parallel x --model-parallel); on CPU "
                         "simulate them with XLA_FLAGS=--xla_force_host_platform_device_count=N")
    tr.add_argument("--model-parallel", type=int,
                    help="devices each embedding table is split over (by --shard-tables)")
    tr.add_argument("--shard-tables", choices=("rows", "columns", "blocks"),
                    help="split each table by rows (ids; the default), by columns "
                         "(embedding dimensions), or in blocks (mse: each device trains "
                         "the examples whose rows it holds, in strata; the fastest for "
                         "mse, see docs/scaling.md)")
    tr.add_argument("--coordinator", help="multi-host: host:port of process 0")
    tr.add_argument("--num-processes", type=int, help="multi-host: processes in the job")
    tr.add_argument("--process-id", type=int, help="multi-host: this process (0-based)")
    tr.add_argument("--join-timeout", type=float,
                    help="multi-host: seconds to wait for every process to join (default 300)")
    tr.add_argument("--checkpoint", metavar="DIR", type=_path,
                    help="keep a checkpoint of the training here, and resume from the one a "
                         "stopped run of the same command left (its files are removed once "
                         "the run is saved; DIR too, unless it existed before)")
    tr.add_argument("--checkpoint-every", type=float, metavar="SECONDS",
                    help="--checkpoint: write the training loop's state this often (default "
                         "600; also on Ctrl-C/SIGTERM; model.fit: each epoch)")
    tr.add_argument("-v", "--verbose", action="store_true", help="per-epoch losses")
    tr.add_argument("--plot-loss", type=_path,
                    help="write a plot of the per-epoch losses (.png, .svg, .pdf, ...)")
    tr.set_defaults(func=cmd_train)

    r = sub.add_parser("recommend", help="top-K items for users of a run")
    r.add_argument("run", type=_path, help="a run directory (`twotower train --out`)")
    who = r.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", type=_id_text, help="one user id")
    who.add_argument("--users", type=_path,
                     help="file with one user id a line (- for standard input)")
    who.add_argument("--all-users", action="store_true",
                     help="every user the run trained on (with --out for a file)")
    who.add_argument("--history", metavar="ITEMS", type=_id_text,
                     help="a new user, by the items they had: item ids separated by commas, "
                          "oldest first (e.g. 50,172,181); needs a run whose query tower "
                          "reads histories (the default preset's does); the history's items "
                          "are left out unless --include-seen")
    who.add_argument("--history-file", type=_path, metavar="FILE",
                     help="--history from a file of one item id a line, oldest first (- for "
                          "standard input): for ids that hold a comma")
    r.add_argument("-k", type=int, help="items per user, between 1 and the catalogue size "
                                        "(default 10, or the catalogue if smaller)")
    r.add_argument("--include-seen", action="store_true", help="do not exclude rated items")
    _add_item_filters(r)
    r.add_argument("--fallback", choices=("none", "popular"), default="none",
                   help="popular: users the run does not know (or never trained on) get the "
                        "most popular items, flagged, instead of an error")
    r.add_argument("--json", action="store_true", help="JSON lines on stdout")
    r.add_argument("--out", type=_path, help="write JSON lines (.jsonl), Parquet (.parquet) or CSV (.csv; "
                                 "Parquet and CSV: a row per user and rank)")
    r.set_defaults(func=cmd_recommend)

    s = sub.add_parser("similar", help="items similar to an item (id or exact title)")
    s.add_argument("run", type=_path, help="a run directory (`twotower train --out`)")
    s.add_argument("--item", required=True, type=_id_text,
                   help="an item id, or an item's exact title")
    s.add_argument("-k", type=int, help="similar items, between 1 and the other items' "
                                        "count (default 10, or every other item if fewer)")
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    _add_item_filters(s)
    s.set_defaults(func=cmd_similar)

    x = sub.add_parser(
        "export", help="write a run's item or user vectors with their ids",
        usage="%(prog)s [-h] run (--items [FILE] | --users [FILE] | --keras) [-k K]\n"
              + " " * 23 + "[--include-seen] [--history] [--ids {external,indices}]\n"
              + " " * 23 + "[--vectors {served,tower}] --out OUT",  # (argparse: [run])
        description="Write a run's item (candidate) or user (query) vectors with their "
                    "external ids, for a vector database or another system. With --vectors "
                    "served (the default) an exported user vector dotted with an exported "
                    "item vector is `recommend`'s score: the item rows are those the run's "
                    "index searches (the trained part scaled by the blend, its item-bias "
                    "column, and the EASE part's columns when the run has them) and the "
                    "user rows the queries recommend sends (a history tower's from the "
                    "user's stored history; a 1 against the bias column); a user's top-k "
                    "is then the k best items with listed true, the user's training items "
                    "left out. --vectors tower: the candidate and query towers' own "
                    "embedding_dim-wide outputs, without bias, EASE part or blend scale "
                    "(their dot product is the trained part's score alone). Items: one row "
                    "per item of the catalogue; those in no list the run gives (never "
                    "trained) have listed false. Users: the users the run trained on.")
    # (optional to argparse only: `export --items RUN` gives the run to --items as its FILE;
    # cmd_export takes it back, `_export_run`)
    x.add_argument("run", type=_path, nargs="?",
                   help="a run directory (`twotower train --out`); required")
    which = x.add_mutually_exclusive_group(required=True)
    which.add_argument("--items", nargs="?", const=True, metavar="FILE",
                       help="the item vectors: columns item_id, listed, vector; with FILE "
                            "(one id a line, - for standard input) only those items, in "
                            "its order")
    which.add_argument("--users", nargs="?", const=True, metavar="FILE",
                       help="the user (query) vectors: columns user_id, vector; with FILE "
                            "(one id a line, - for standard input) only those users, in its "
                            "order")
    which.add_argument("--keras", action="store_true",
                       help="the run's whole retrieval as one Keras model (--out a .keras "
                            "file): user ids in, top-k scores and item ids out, every table "
                            "stored inside (exact search); load it after `import "
                            "twotower.models.keras_layers`")
    x.add_argument("-k", type=int, help="--keras: list length (default 10, or the catalogue "
                                        "if smaller)")
    x.add_argument("--include-seen", action="store_true",
                   help="--keras: keep users' training items in their lists (with "
                        "--history: each history's items)")
    x.add_argument("--history", action="store_true",
                   help="--keras: the model for new users instead: [B, T] int32 item ids "
                        "(with --ids indices, item indices) in, each user's history oldest "
                        "first, padded with -1; the lists recommend_from_history gives, the "
                        "query pooled inside the model (a run with a history tower only)")
    x.add_argument("--ids", choices=("external", "indices"),
                   help="--keras: external (default: the run's integer ids in and out) or "
                        "indices (user and item indices, for text ids; the file carries both "
                        "vocabularies)")
    x.add_argument("--vectors", choices=("served", "tower"), default="served",
                   help="served (default): the vectors recommend scores, user . item = its "
                        "score; tower: the towers' own outputs")
    x.add_argument("--out", type=_path, required=True,
                   help="Parquet (.parquet: vector a list of float32), CSV (.csv: columns "
                        "v0, v1, ...), JSON lines (.jsonl) or numpy (.npz: arrays item_id "
                        "or user_id, vector [n, d], listed), or with --keras a .keras "
                        "file; written in chunks under a "
                        "temporary name, then renamed (an --out it cannot write is "
                        "refused before any work)")
    x.set_defaults(func=cmd_export)

    e = sub.add_parser("evaluate", help="metrics on the run's held-out split")
    e.add_argument("run", type=_path, help="a run directory (`twotower train --out`)")
    e.add_argument("-k", type=int, nargs="+",
                   help="cut-offs, each between 1 and the catalogue size (default: 10 100)")
    e.add_argument("--baselines", action="store_true", help="also ItemKNN and EASE, tuned on a validation part of "
                                      "the training data, and EASE+recency on a temporal run "
                                      "(MostPop is always shown); above 20,000 items ItemKNN "
                                      "alone, on a smaller grid (EASE's matrix is dense)")
    e.add_argument("--json", type=_path, help="write the table as JSON to FILE, or to stdout with - (the "
                                  "markdown table then goes to stderr) (method -> metric -> value; with "
                                  "--test-data also \"held_out\": the file's pairs evaluated "
                                  "and left out)")
    e.add_argument("--plot", type=_path,
                   help="write a plot of Recall@K curves (.png, .svg, .pdf, ...)")
    e.add_argument("--plot-loss", type=_path,
                   help="write a plot of the run's training losses (.png, .svg, .pdf, ...)")
    e.add_argument("--test-data", type=_path, help="a held-out interaction file (.csv/.tsv/.parquet) "
                                       "instead of the run's own split")
    e.add_argument("--user-col", help="--test-data: user id column (default: the run's "
                                      "training column where the file has it, else found "
                                      "by name)")
    e.add_argument("--item-col", help="--test-data: item id column (default: as --user-col)")
    e.add_argument("--sep", type=_sep, help="--test-data: the field separator of a text "
                                            "file, one character (default: the run's --sep, "
                                            "else ',', tab for .tsv)")
    e.set_defaults(func=cmd_evaluate)

    ix = sub.add_parser("index", help="build and save a search index for a run")
    ix.add_argument("run", type=_path, help="a run directory (`twotower train --out`); its index is "
                                "replaced")
    ix.add_argument("--kind", default="hnsw", type=str.lower, choices=("exact", "hnsw", "ivf"),
                    help="default hnsw")
    ix.add_argument("--ef-search", type=int,
                    help="hnsw: candidates walked per query, at least 1 (default: tuned to "
                         "--target-recall)")
    ix.add_argument("--nprobe", type=int,
                    help="ivf: lists scanned per query, at most --nlist (default: tuned to "
                         "--target-recall; 0: max(32, nlist / 32), not tuned)")
    ix.add_argument("--nlist", type=int, help="ivf: inverted lists, at most n for n items "
                    "(default, or 0: min(4 sqrt(n), n / 39))")
    ix.add_argument("--hnsw-m", type=int, help="hnsw: graph neighbours per node, 2 to 512 "
                    "(default 48)")
    ix.add_argument("--json", action="store_true", help="the report as one JSON object")
    ix.add_argument("--sample", type=_positive_int, default=1000,
                    help="users whose queries check recall (default 1000; at most every user)")
    ix.add_argument("--target-recall", type=_recall, default=0.95,
                    help="hnsw/ivf without --ef-search/--nprobe: raise that knob until "
                         "recall@10 on half of the sampled users reaches this (0: keep the "
                         "default); the report's recall is measured on the other half")
    ix.set_defaults(func=cmd_index)

    sv = sub.add_parser("serve", help="HTTP service and web page for a run")
    sv.add_argument("run", type=_path, help="a run directory (`twotower train --out`)")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1; 0.0.0.0: every interface)")
    sv.add_argument("--port", type=int, default=8000, help="default 8000")
    sv.add_argument("--workers", type=int, default=1,
                    help="worker processes, each with the model in memory (default 1)")
    sv.add_argument("--max-k", type=int, default=1000, help="largest k a request may ask for (default 1000)")
    sv.add_argument("--max-batch", type=int, default=1000,
                    help="most user ids in one batch request, and most history items in "
                         "one by-history request (default 1000)")
    sv.add_argument("--max-results", type=int, default=100_000,
                    help="most (user, item) entries one batch request may ask for: users x "
                         "k (default 100000)")
    sv.add_argument("--max-filter", type=int, default=10_000,
                    help="most item ids in one request's allow or deny list (default 10000)")
    sv.add_argument("--max-body", type=int, metavar="BYTES",
                    help="largest request body, in bytes (larger: 413); default: enough "
                         "for a request at every maximum, --max-batch ids and --max-filter "
                         "ids in both allow and deny, 32 bytes an id, plus 4096 "
                         "(676096 with the default limits)")
    sv.add_argument("--deny", type=_path, metavar="FILE",
                    help="item ids no answer lists, one a line (e.g. out of stock): read at "
                         "start-up and again by every reload (SIGHUP, POST /admin/reload; "
                         "a file that cannot be read or has a bad line refuses the reload, "
                         "and the old list keeps serving); '-': standard input, read once "
                         "and kept across reloads (it cannot be read again); ids the run "
                         "does not hold are ignored (GET /v1/model counts them)")
    sv.add_argument("--allowed-hosts", metavar="NAMES",
                    help="Host header names served, separated by commas ('*': any); "
                         "default: the loopback names when --host is a loopback address "
                         "(a guard against DNS rebinding), else any")
    sv.add_argument("--no-access-log", action="store_true",
                    help="no per-request JSON log lines on stderr")
    sv.set_defaults(func=cmd_serve)
    return p


def _one_line_warning(message: Warning | str, category: type[Warning], *_: Any,
                      **__: Any) -> str:
    return f"twotower: warning: {message}\n"


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C is: the same clean-up runs (a save in
    progress finishes its renames or is undone, temporary directories go)."""


_PENDING: dict[str, int | None] = {"signum": None}


def _raise_signal(signum: int, frame: Any) -> None:
    """Ctrl-C (SIGINT) and SIGTERM: KeyboardInterrupt, or ``_Terminated`` for SIGTERM.
    Python may run this handler inside a garbage-collection callback (JAX registers one),
    where an exception is printed and dropped (training then went on, and replaced the
    run): until `main` has seen the exception, the signal is sent again every second."""
    import signal
    if _PENDING["signum"] is None:
        _PENDING["signum"] = signum
        import threading
        threading.Thread(target=_resend_signal, daemon=True).start()
    raise _Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _quiet_dropped_stop(hook: Any) -> Any:
    """A ``sys.unraisablehook`` that leaves out the stop ``_raise_signal`` raised where
    Python drops it (JAX's garbage-collection callback): it is sent again, and the command
    says "interrupted" once; that drop printed a 7-line "Exception ignored" traceback
    first. Anything else goes to ``hook``."""
    def quiet(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and \
                _PENDING["signum"] is not None:
            return
        hook(unraisable)
    return quiet


def _stop_requested() -> None:
    """``artifacts.BEFORE_COMMIT``: a save about to replace a run raises the stop that a
    signal asked for, when Python dropped it (see ``_raise_signal``): the previous run
    stays."""
    import signal
    signum = _PENDING["signum"]
    if signum is not None:
        raise _Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _resend_signal() -> None:
    while True:
        time.sleep(1.0)
        signum = _PENDING["signum"]
        if signum is None:
            return
        os.kill(os.getpid(), signum)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``twotower`` command; returns its exit status.

    A process of a multi-process job that ends while a join still waits inside JAX, or
    after a collective failed (a peer process stopped), ends with ``os._exit``: JAX's
    shutdown would otherwise wait minutes for the other processes, then abort."""
    try:
        code = _main(argv)
    except Exception as exc:  # noqa: BLE001 - only in a joined multi-process job
        # (imported by the commands that train: a stop while it loads is the command's)
        distribution = sys.modules.get("twotower.training.distribution")
        if distribution is None or not distribution._initialized:
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"twotower: error: a step across processes failed (did another process "
              f"stop?): {type(exc).__name__}: {first[:300]}", file=sys.stderr)
        code = 1
    distribution = sys.modules.get("twotower.training.distribution")
    if distribution is not None and (distribution.JOIN_PENDING.is_set()
                                     or (distribution._initialized and code)):
        sys.stdout.flush()
        sys.stderr.flush()
        if code and not distribution.JOIN_PENDING.is_set():
            distribution.agreed_exit()  # an error every process raised: process 0 last
        os._exit(code)
    return code


def _main(argv: Sequence[str] | None = None) -> int:
    import signal
    import threading
    import warnings

    parser = build_parser()
    shown = warnings.formatwarning
    warnings.formatwarning = _one_line_warning  # a user reads the message, not our source
    term = intr = unraisable = None
    artifacts: Any = None
    saved_before = 0
    args = None
    try:
        # the library loads here, inside the command's Ctrl-C handling (a Ctrl-C while it
        # loaded, the first second or two, was a 27-line traceback)
        from twotower import artifacts
        saved_before = artifacts.SAVED.count
        artifacts.BEFORE_COMMIT = _stop_requested
        args = parser.parse_args(argv)
        # SIGTERM (`kill`, a job scheduler's stop) would end the process on the spot,
        # silently. `serve` keeps it: uvicorn shuts down gracefully, then re-raises it, so
        # a service manager sees the process end by SIGTERM, as before.
        if args.func is not cmd_serve and \
                threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                term = signal.signal(signal.SIGTERM, _raise_signal)
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                intr = signal.signal(signal.SIGINT, _raise_signal)
            unraisable = sys.unraisablehook
            sys.unraisablehook = _quiet_dropped_stop(unraisable)
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        if _PENDING["signum"] is not None:
            # a stop that Python dropped (raised inside a garbage-collection callback) and
            # the command finished before it was sent again: still a stop (a save it
            # reached was not made: `_stop_requested`)
            raise _Terminated() if _PENDING["signum"] == signal.SIGTERM \
                else KeyboardInterrupt()
        return code
    except BrokenPipeError:
        # The reader went away (`twotower recommend ... | head`): stop quietly, as `cat` or
        # `seq` do, with the status a shell gives a command SIGPIPE ended (128 + 13), so
        # `set -o pipefail` scripts see what they see for those. stdout goes to devnull so
        # the interpreter's last flush cannot fail again and print a traceback.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # not a real file (tests capture stdout)
            pass
        return 141
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) else 2
    except TwoTowerError as exc:
        return _fail(_as_flags(str(exc), args))
    except OSError as exc:  # the file system: a full disk, a file another command removed
        return _fail(str(exc))
    except KeyboardInterrupt as exc:
        _PENDING["signum"] = None
        # a save this command completed (before the signal, or while it was held back as
        # the save swapped directories) is said to be complete
        saved = None if artifacts is None else artifacts.SAVED
        done = (f" (after {saved.last} was saved, complete)"
                if saved is not None and saved.count > saved_before else "")
        if isinstance(exc, _Terminated):
            print(f"twotower: terminated{done}", file=sys.stderr)
            return 143  # 128 + SIGTERM, what a shell reports for a process it ended
        print(f"twotower: interrupted{done}", file=sys.stderr)
        return 130
    finally:
        _PENDING["signum"] = None
        if artifacts is not None:
            artifacts.BEFORE_COMMIT = None
        warnings.formatwarning = shown
        if term is not None:
            signal.signal(signal.SIGTERM, term)
        if intr is not None:
            signal.signal(signal.SIGINT, intr)
        if unraisable is not None:
            sys.unraisablehook = unraisable


#: per command, the library's name of a setting -> the flag that gave it (the message
#: names what the user typed; ``train`` names its sources through ``_named``)
_FLAGS = {
    "cmd_index": {"TwoTower.save": "RUN",
                  "IndexConfig.ef_search": "--ef-search", "IndexConfig.nprobe": "--nprobe",
                  "IndexConfig.nlist": "--nlist", "IndexConfig.hnsw_m": "--hnsw-m"},
    "cmd_tutorial": {"model.epochs": "--epochs", "model.seed": "--seed",
                     "TwoTower.save": "--out"},
    "cmd_train": {"TwoTower.save": "--out"},
    "cmd_recommend": {"`k`": "-k"},
    "cmd_similar": {"`k`": "-k"},
    "cmd_export": {"`out`": "--out", "`k`": "-k"},
    "cmd_serve": {"`port`": "--port", "`workers`": "--workers", "`max_k`": "--max-k",
                  "`max_batch`": "--max-batch", "`max_results`": "--max-results",
                  "`max_filter`": "--max-filter", "`max_body_bytes`": "--max-body",
                  "`deny_file`": "--deny",
                  "`host`": "--host"},
}


def _as_flags(msg: str, args: argparse.Namespace | None) -> str:
    """``msg`` with the library's names of the command's settings replaced by its flags
    (``IndexConfig.ef_search must be ...`` -> ``--ef-search must be ...``)."""
    func = getattr(getattr(args, "func", None), "__name__", "")
    for name, flag in _FLAGS.get(func, {}).items():
        msg = re.sub(rf"(?<![\w.`-]){re.escape(name)}(?![\w`]| \()", flag, msg)
    return msg


def run() -> None:
    """The console script: ``main``, and the process ends with its status. A command
    stopped by Ctrl-C or SIGTERM after JAX was imported leaves with ``os._exit``: a stop
    that lands inside an XLA compilation leaves JAX in a state its shutdown crashed on
    (a segmentation fault, exit 139, in about a third of the stops late in training);
    everything of ours is cleaned up by then (temporary files and directories)."""
    import signal
    import threading
    code = main()
    if code in (130, 143) and "jax" in sys.modules:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a reader gone (`| head`): nothing to keep
                pass
        os._exit(code)
    if threading.current_thread() is threading.main_thread():
        # the command is done (its run saved, its output written): a Ctrl-C now would land
        # in JAX's exit handler, a traceback under a status 0, or end the process by SIGINT
        # (silently, without JAX too: `index` after its save); a SIGTERM ended it by
        # SIGTERM, silently, where a Ctrl-C exited 0: both ignored
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    run()
