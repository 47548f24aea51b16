"""Side features: item/user metadata columns as normalised multi-hot matrices.

A feature column of ``Interactions.item_info`` / ``user_info`` becomes one or more named
binary features:

- list values (MovieLens ``genres``): one feature per distinct value, ``genres=Drama``;
- numbers (``year``, ``age``): ``n_bins`` quantile bins over the column, ``year:q3``;
- anything else (``gender``, ``occupation``): one feature per value, ``gender=F``.

Each row is divided by ``sqrt`` of its number of active features, so a row's features sum
like a pooled history. Missing values give no feature; a row with none is all zeros. The
matrix is built once at ``fit`` over the whole vocabulary (also items with no training
interactions: their candidate embedding then comes from their features) and saved with the
model, so serving never rebuilds it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from twotower.errors import ConfigError

N_BINS = 10


def feature_matrix(info: pd.DataFrame | None, columns: Sequence[str], n_rows: int, *,
                   what: str = "item", n_bins: int = N_BINS
                   ) -> tuple[np.ndarray, list[str]]:
    """``[n_rows, n_features]`` float32 and the feature names, from ``columns`` of ``info``.

    Raises:
        ConfigError: a requested column is missing (the message lists those available).
    """
    if not columns:
        return np.zeros((n_rows, 0), dtype=np.float32), []
    available = [] if info is None else [str(c) for c in info.columns if c != "id"]
    missing = [c for c in columns if c not in available]
    if missing:
        raise ConfigError(f"model.{what}_features names {missing}, but the data has no such "
                          f"{what} column(s); available: {available}")
    if len(info) != n_rows:
        raise ConfigError(f"{what} metadata has {len(info)} rows, expected {n_rows}")
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    names: list[str] = []
    for column in columns:
        tokens = _tokens(info[column], column, n_bins)
        vocab = sorted({t for ts in tokens for t in ts})
        index = {t: len(names) + j for j, t in enumerate(vocab)}
        names += vocab
        for r, ts in enumerate(tokens):
            for t in ts:
                rows.append(np.array([r]))
                cols.append(np.array([index[t]]))
    out = np.zeros((n_rows, len(names)), dtype=np.float32)
    if rows:
        out[np.concatenate(rows), np.concatenate(cols)] = 1.0
    count = out.sum(axis=1, keepdims=True)
    return out / np.sqrt(np.maximum(count, 1.0)), names


def _tokens(values: pd.Series, column: str, n_bins: int) -> list[list[str]]:
    first = next((v for v in values if _present(v)), None)
    if isinstance(first, (list, tuple, np.ndarray)):
        return [[f"{column}={t}" for t in v] if _present(v) else [] for v in values]
    numeric = pd.to_numeric(values, errors="coerce")
    if first is not None and not isinstance(first, str) and numeric.notna().any():
        edges = np.unique(np.nanquantile(numeric.to_numpy(dtype=float),
                                         np.linspace(0, 1, n_bins + 1)[1:-1]))
        bins = np.searchsorted(edges, numeric.to_numpy(dtype=float), side="right")
        return [[f"{column}:q{b}"] if ok else [] for b, ok in zip(bins, numeric.notna())]
    return [[f"{column}={v}"] if _present(v) else [] for v in values]


def _present(v: object) -> bool:
    if isinstance(v, (list, tuple, np.ndarray)):
        return True
    return not pd.isna(v)
