"""Side features: item/user metadata columns as normalised multi-hot matrices.

A feature column of ``Interactions.item_info`` / ``user_info`` becomes one or more named
binary features:

- list values (MovieLens ``genres``, a Parquet list column): one feature per distinct
  value, ``genres=Drama``; so is text in a column named in ``multi_valued`` (the model's
  ``multi_valued_features``), split on ``sep`` (``multi_value_sep``, default ``|``): a
  ``tags`` cell ``x|y`` is ``tags=x`` and ``tags=y``. A ``genres`` column of text is split
  on ``|`` unless named there with another separator; any other column's ``x|y`` is one
  value (a warning says so when many of its values hold the separator);
- numbers (``year``, ``age``; every present value a number): ``n_bins`` quantile bins over
  the column, ``year:q3``;
- anything else (``gender``, ``occupation``, true/false flags, a column mixing numbers and
  text): one feature per value, ``gender=F``.

Each row is divided by ``sqrt`` of its number of active features, so a row's features sum
like a pooled history. Missing values give no feature; a row with none is all zeros. The
matrix is sparse (``scipy.sparse.csr_matrix``): it holds each row's active features only,
so an id-like column (a ``brand`` with 50,000 values over 100,000 items) costs a few bytes
an item, not a dense ``[items, values]`` block of 20 GB. It is built once at ``fit`` over
the whole vocabulary (also items with no training interactions: their candidate embedding
then comes from their features) and saved with the model, so serving never rebuilds it.

A requested column the data lacks is skipped with a warning (the ``default`` preset names
MovieLens columns; a CSV log may have none), and ``year`` falls back to the ``(1995)`` at the
end of MovieLens titles when there is no ``year`` column.
"""

from __future__ import annotations

import decimal
import numbers
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from twotower.errors import ConfigError

N_BINS = 10


def feature_matrix(info: pd.DataFrame | None, columns: Sequence[str], n_rows: int, *,
                   what: str = "item", n_bins: int = N_BINS, multi_valued: Sequence[str] = (),
                   sep: str = "|") -> tuple[sp.csr_matrix, list[str]]:
    """``[n_rows, n_features]`` float32 CSR matrix and the feature names, from ``columns``
    of ``info``: row ``r`` holds ``1 / sqrt(k)`` at each of its ``k`` active features.
    ``multi_valued``: columns whose text cells list several values separated by ``sep``.

    Warns:
        UserWarning: a requested column is missing (skipped; the message lists those
            available); a column not in ``multi_valued`` whose text values often hold
            ``sep`` or ``|`` (each is read as one value).

    Raises:
        ConfigError: ``info`` does not have ``n_rows`` rows.
    """
    if not columns:
        return empty_features(n_rows), []
    info = _with_year(info, columns)
    available = _available(info)
    missing = [c for c in columns if c not in available]
    if missing:
        # the default preset names MovieLens columns; other data may lack them
        warnings.warn(f"model.{what}_features names {missing}, but the data has no such "
                      f"{what} column(s) (available: {available}); training without them "
                      f"(name your own columns with {what}_features in --config [model], "
                      "or [] for none)",
                      stacklevel=3)
        columns = [c for c in columns if c in available]
        if not columns:
            return empty_features(n_rows), []
    if len(info) != n_rows:
        raise ConfigError(f"{what} metadata has {len(info)} rows, expected {n_rows}")
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    names: list[str] = []
    for column in columns:
        if column in multi_valued:
            tokens = _split_tokens(info[column], column, sep)
        else:
            _warn_stray_text(info[column], column, what, n_bins)
            _warn_joined(info[column], column, what, sep)
            tokens = _tokens(info[column], column, n_bins)
        vocab = sorted({t for ts in tokens for t in ts})
        index = {t: len(names) + j for j, t in enumerate(vocab)}
        names += vocab
        counts = np.fromiter((len(ts) for ts in tokens), dtype=np.int64, count=len(tokens))
        rows.append(np.repeat(np.arange(len(tokens), dtype=np.int64), counts))
        cols.append(np.fromiter((index[t] for ts in tokens for t in ts), dtype=np.int64,
                                count=int(counts.sum())))
    r, c = np.concatenate(rows), np.concatenate(cols)
    # a value listed twice in one row (["a", "a"]) is one active feature, as it was dense
    code = np.unique(r * max(len(names), 1) + c)
    r, c = code // max(len(names), 1), code % max(len(names), 1)
    count = np.bincount(r, minlength=n_rows).astype(np.float32)
    data = (1.0 / np.sqrt(np.maximum(count, 1.0)))[r].astype(np.float32)
    return sp.csr_matrix((data, (r, c)), shape=(n_rows, len(names)), dtype=np.float32), names


def describe_features(matrix: sp.csr_matrix | None, names: Sequence[str],
                      columns: Sequence[str]) -> str:
    """One line naming each of ``columns`` that gave features, with its number of features
    (from ``feature_matrix``'s ``names``, grouped by column in order), marked
    ``quantile bins`` for a number column and ``multi-valued`` when a row holds several of
    its values: ``genres (19 values, multi-valued), year (10 values, quantile bins)``.
    Empty when no column gave one."""
    parts, start = [], 0
    for column in columns:
        end = start
        while end < len(names) and names[end].startswith((f"{column}=", f"{column}:q")):
            end += 1
        if end == start:  # missing from the data, or no value in it
            continue
        notes = [f"{end - start:,} values"]
        if names[start].startswith(f"{column}:q"):
            notes.append("quantile bins")
        if matrix is not None and matrix.shape[1] == len(names) \
                and np.diff(matrix[:, start:end].tocsr().indptr).max(initial=0) > 1:
            notes.append("multi-valued")
        parts.append(f"{column} ({', '.join(notes)})")
        start = end
    return ", ".join(parts)


def empty_features(n_rows: int) -> sp.csr_matrix:
    """``[n_rows, 0]`` float32: no side features."""
    return sp.csr_matrix((n_rows, 0), dtype=np.float32)


def as_features(matrix: object) -> sp.csr_matrix | None:
    """``matrix`` (CSR, any scipy sparse, or a dense ``[rows, features]`` array, as runs
    saved before the sparse form hold it) as a float32 CSR matrix with sorted indices;
    None stays None."""
    if matrix is None:
        return None
    out = sp.csr_matrix(matrix, dtype=np.float32)
    out.eliminate_zeros()
    out.sort_indices()
    return out


def rows_with_features(matrix: sp.csr_matrix) -> np.ndarray:
    """``[n_rows]`` bool: rows with at least one active feature."""
    return np.diff(matrix.indptr) > 0


def features_of_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    """``[n_features]`` bool: features active in some row where ``rows`` (bool) is True."""
    return np.bincount(matrix[np.flatnonzero(rows)].indices,
                       minlength=matrix.shape[1]) > 0


def rows_with_any(matrix: sp.csr_matrix, features: np.ndarray) -> np.ndarray:
    """``[n_rows]`` bool: rows with at least one active feature where ``features`` (bool,
    ``[n_features]``) is True."""
    hit = features[matrix.indices]
    row_of = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    return np.bincount(row_of[hit], minlength=matrix.shape[0]) > 0


def _with_year(info: pd.DataFrame | None, columns: Sequence[str]) -> pd.DataFrame | None:
    """``info`` with a ``year`` column from MovieLens-style titles when ``year`` is asked
    for, missing, and some title gives one (titles without a year give no column)."""
    if info is not None and "year" in columns and "year" not in info and "title" in info:
        years = title_year(info["title"])
        if years.notna().any():
            info = info.assign(year=years)
    return info


def _available(info: pd.DataFrame | None) -> list[str]:
    """The metadata columns of ``info`` a feature can be built from."""
    return [] if info is None else [str(c) for c in info.columns if c != "id"]


def present_columns(info: pd.DataFrame | None, columns: Sequence[str]) -> tuple[str, ...]:
    """Those of ``columns`` that ``info`` can give (in order): what ``feature_matrix`` would
    build without a warning. E.g. the ``default`` preset's ``("genres", "year")`` on a log
    without item metadata gives ``()``."""
    available = set(_available(_with_year(info, columns)))
    return tuple(c for c in columns if c in available)


def title_year(titles: pd.Series) -> pd.Series:
    """Release year from MovieLens-style titles ending in ``(1995)``; missing otherwise."""
    found = titles.astype(str).str.extract(r"\((\d{4})\)\s*$", expand=False)
    return pd.to_numeric(found, errors="coerce").astype("Int64")


def _tokens(values: pd.Series, column: str, n_bins: int) -> list[list[str]]:
    first = next((v for v in values if _present(v)), None)
    if isinstance(first, (list, tuple, np.ndarray)):
        return [[f"{column}={t}" for t in _listed(v)] for v in values]
    if column == "genres" and isinstance(first, str):
        # "Action|Comedy", as read_item_info splits a file's genres column
        return [[f"{column}={t.strip()}" for t in str(v).split("|") if t.strip()]
                if _present(v) else [] for v in values]
    if _all_numbers(values):
        numeric = pd.to_numeric(values, errors="coerce")
        edges = np.unique(np.nanquantile(numeric.to_numpy(dtype=float),
                                         np.linspace(0, 1, n_bins + 1)[1:-1]))
        bins = np.searchsorted(edges, numeric.to_numpy(dtype=float), side="right")
        return [[f"{column}:q{b}"] if ok else [] for b, ok in zip(bins, numeric.notna())]
    return [[f"{column}={v}"] if _present(v) else [] for v in values]


def _split_tokens(values: pd.Series, column: str, sep: str) -> list[list[str]]:
    """A multi-valued column's features: a list's values, or text split on ``sep`` (blank
    parts dropped); a number (a CSV column whose every cell held one value) is one value,
    written as an int when whole (``3``, not ``3.0``)."""
    out = []
    for v in values:
        if isinstance(v, (list, tuple, np.ndarray)):
            parts = _listed(v)
        elif not _present(v):
            parts = []
        elif isinstance(v, str):
            parts = v.split(sep)
        elif isinstance(v, (float, np.floating)) and float(v).is_integer():
            parts = [str(int(v))]
        else:
            parts = [str(v)]
        out.append([f"{column}={t.strip()}" for t in dict.fromkeys(parts) if t.strip()])
    return out


def _listed(v: object) -> list[str]:
    """A list cell's values as text: a null inside the list (Parquet ``[a, null]``) is no
    value, not ``None``; a scalar among lists is one value (not its characters)."""
    if isinstance(v, (list, tuple, np.ndarray)):
        return [str(t) for t in v if not isinstance(t, (list, tuple, np.ndarray))
                and not pd.isna(t)]
    return [str(v)] if _present(v) else []


def _warn_joined(values: pd.Series, column: str, what: str, sep: str) -> None:
    """Warn when a text column (not declared multi-valued) reads like lists joined by a
    separator (``sep`` or ``|``): ``x|y`` is then one value of its own, and items tagged
    ``x|y`` and ``x`` share no feature; silently, a tags column became one feature per
    combination. ``genres`` text is split on ``|`` anyway."""
    if column == "genres" or pd.api.types.is_numeric_dtype(values):
        return
    text = [v for v in values if isinstance(v, str) and v.strip()]
    if not text:
        return
    for s in dict.fromkeys((sep, "|")):
        joined = [v for v in text if s in v.strip(s).strip()]
        if len(joined) >= 2 and len(joined) >= 0.1 * len(text):
            warnings.warn(f"{what} feature column {column!r}: {len(joined):,} of {len(text):,} "
                          f"values hold {s!r} (e.g. {joined[0]!r}), and each is read as one "
                          f"value; if they list several, name the column in "
                          f"multi_valued_features (--multi-valued-features {column}"
                          + ("" if s == "|" else f" --multi-value-sep '{s}'") + ")",
                          stacklevel=4)
            return


def _warn_stray_text(values: pd.Series, column: str, what: str, n_bins: int) -> None:
    """Warn when a column of numbers holds a few text values (``unknown`` in a price
    column): it is read as categories, one feature per distinct value, and the numbers
    lose their order; silently, a price column became 200 features of one item each."""
    if _all_numbers(values):
        return
    present = [v for v in values if _present(v)]
    if not present or any(isinstance(v, (list, tuple, np.ndarray)) for v in present[:1]):
        return
    numeric = pd.to_numeric(pd.Series([str(v).strip() for v in present], dtype=object),
                            errors="coerce")
    ok = numeric.notna().to_numpy()
    if ok.mean() >= 0.9 and not ok.all() and numeric[ok].nunique() > n_bins:
        bad = [v for v, good in zip(present, ok) if not good]
        warnings.warn(f"{what} feature column {column!r}: {int(ok.sum()):,} of {len(present):,} "
                      f"values are numbers, {len(bad):,} are not (e.g. {bad[0]!r}): the "
                      "column is read as categories, one feature per distinct value (make "
                      "those values empty, missing, to bin the numbers by quantile)",
                      stacklevel=4)


def _all_numbers(values: pd.Series) -> bool:
    """Whether every present value is a number (not a bool): a column binned by quantile.
    Judged by the first value alone, a column of numbers and text (``[1, "a", 2]``) was
    binned and its text values silently gave no feature."""
    if pd.api.types.is_bool_dtype(values):
        return False
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        return bool(values.notna().any())
    present = [v for v in values if _present(v)]  # Parquet decimals come as Decimal
    return bool(present) and all(isinstance(v, (numbers.Real, decimal.Decimal))
                                 and not isinstance(v, (bool, np.bool_)) for v in present)


def _present(v: object) -> bool:
    if isinstance(v, (list, tuple, np.ndarray)):
        return True
    return not pd.isna(v)
