"""Reports: markdown tables of metrics and Recall@K curves."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from twotower.errors import ConfigError
from twotower.evaluation.metrics import Truth, per_user_metrics

#: Columns of ``format_table`` by default.
DEFAULT_TABLE_METRICS = ("recall@10", "ndcg@10", "recall@100", "hit_rate@10", "mrr@10",
                         "coverage@10")

Cell = float | Sequence[float]


def table_metrics(ks: Sequence[int]) -> tuple[str, ...]:
    """``format_table`` columns for the cut-offs ``ks``: recall and NDCG at the smallest,
    recall at each other, then hit rate, MRR and coverage at the smallest (for
    ``(10, 100)``, ``DEFAULT_TABLE_METRICS``).

    Example:
        >>> table_metrics([20, 5])
        ('recall@5', 'ndcg@5', 'recall@20', 'hit_rate@5', 'mrr@5', 'coverage@5')
    """
    first, *rest = sorted({int(k) for k in ks})
    return (f"recall@{first}", f"ndcg@{first}", *(f"recall@{k}" for k in rest),
            f"hit_rate@{first}", f"mrr@{first}", f"coverage@{first}")


def _cell(value: Cell | None, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, (tuple, list, np.ndarray)):
        mean, std = float(value[0]), float(value[1])
        if math.isnan(mean):
            return "–"
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    v = float(value)
    return "–" if math.isnan(v) else f"{v:.{digits}f}"


def format_table(rows: Mapping[str, Mapping[str, Cell]],
                 metrics: Sequence[str] = DEFAULT_TABLE_METRICS, *, digits: int = 3,
                 label: str = "method") -> str:
    """A markdown table, one row per method, one column per metric.

    Args:
        rows: ``{"EASE": {"recall@10": 0.23, ...}}``; a value may be a float or a
            ``(mean, std)`` pair (shown as ``mean ± std``); missing or NaN shows ``–``.
        metrics: the columns, in order.
        digits: decimals shown.
        label: header of the first column.

    Returns:
        The table, ending with a newline.

    Example:
        >>> print(format_table({"EASE": {"recall@10": (0.2345, 0.001)}}, ["recall@10"]))
        | method | recall@10 |
        |---|---:|
        | EASE | 0.234 ± 0.001 |
        <BLANKLINE>
    """
    lines = ["| " + " | ".join([label, *metrics]) + " |",
             "|---|" + "---:|" * len(metrics)]
    for name, values in rows.items():
        cells = [_cell(values.get(m), digits) for m in metrics]
        lines.append("| " + " | ".join([str(name), *cells]) + " |")
    return "\n".join(lines) + "\n"


def recall_curve(top_ids: np.ndarray, truth: Truth, ks: Sequence[int],
                 n_items: int | None = None) -> dict[int, float]:
    """Mean Recall@K for each K in ``ks`` (users with no relevant item left out).

    Args:
        top_ids: ``[n, W]`` int64 item indices, best first, ``-1`` = padding; ``max(ks) <= W``.
        truth: ``[n, n_items]`` sparse matrix or one array of relevant items per row.
        ks: cut-offs.
        n_items: catalogue size (default: a sparse ``truth``'s column count; required when
            ``truth`` is a list of arrays).
    """
    per = per_user_metrics(top_ids, truth, ks, n_items)
    has = per["n_relevant"] > 0
    return {int(k): (float(per[f"recall@{int(k)}"][has].mean()) if has.any() else float("nan"))
            for k in sorted({int(k) for k in ks})}


def plot_recall_curves(curves: Mapping[str, Mapping[int, float]], path: str | Path, *,
                       title: str = "Recall@K", log_x: bool = False) -> Path:
    """Write a PNG of Recall@K against K, one line per method.

    Args:
        curves: ``{"EASE": {10: 0.23, 50: 0.5, ...}, ...}`` (e.g. from ``recall_curve``).
        path: output file (parent folders are created).
        title: figure title.
        log_x: logarithmic K axis.

    Returns:
        The path written.
    """
    def draw(ax: Any) -> None:
        for name, curve in curves.items():
            ks = sorted(curve)
            ax.plot(ks, [curve[k] for k in ks], marker="o", markersize=3, label=str(name))
        if log_x:
            ax.set_xscale("log")
        else:
            _whole_numbers(ax)

    return _write_plot(path, draw, title=title, xlabel="K", ylabel="Recall@K",
                       legend=bool(curves))


def plot_loss_curves(history: Mapping[str, Sequence[float]], path: str | Path, *,
                     validation_freq: int = 1, title: str = "Training loss") -> Path:
    """Write a PNG of the per-epoch losses of a training history.

    Args:
        history: ``TwoTower.history``: ``{"loss": [...per epoch], "val_loss": [...]}``;
            every series whose name ends in ``loss`` is drawn.
        path: output file (parent folders are created).
        validation_freq: epochs between two ``val_*`` values (they are placed at epochs
            ``validation_freq, 2 * validation_freq, ...``).
        title: figure title.

    Returns:
        The path written.

    Raises:
        DataError: the history holds no loss values.
    """
    from twotower.errors import DataError

    # a NaN loss is saved as null (``artifacts.json_safe``): plotted as a gap
    series = {k: [float("nan") if v is None else float(v) for v in vs]
              for k, vs in history.items() if k.endswith("loss") and len(vs)}
    if not series:
        raise DataError(f"no loss values to plot (history keys: {sorted(history)})")

    def draw(ax: Any) -> None:
        for name, vs in series.items():
            step = validation_freq if name.startswith("val_") else 1
            epochs = [step * (i + 1) for i in range(len(vs))]
            ax.plot(epochs, vs, marker="o" if len(vs) < 30 else None, markersize=3,
                    label=name)
        _whole_numbers(ax)

    return _write_plot(path, draw, title=title, xlabel="epoch", ylabel="loss", legend=True)


#: image formats a plot is written in, by the file's suffix (no suffix: PNG)
PLOT_FORMATS = ("png", "svg", "svgz", "pdf", "jpg", "jpeg", "webp", "tif", "tiff", "eps",
                "ps")


def plot_format(path: str | Path, flag: str = "plot") -> str:
    """The image format of a plot written to ``path``, by its suffix (PNG data was
    written under any name, ``.svg`` too).

    Raises:
        ConfigError: a suffix that is no image format (named with ``flag``).
    """
    suffix = Path(path).suffix.lower().lstrip(".")
    if not suffix:
        return "png"
    if suffix not in PLOT_FORMATS:
        raise ConfigError(f"{flag}: {path}: {Path(path).suffix!r} is not an image format; "
                          f"name the file .{', .'.join(PLOT_FORMATS)}")
    return suffix


def _whole_numbers(ax: Any) -> None:
    """Ticks at whole numbers only along x (epochs, K): a one-epoch run's axis read
    0.96, 0.98, 1.00, 1.02 epochs, a three-epoch one 1.25, 1.50, ... (one tick is enough)."""
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1, steps=[1, 2, 5, 10]))


def _write_plot(path: str | Path, draw: Callable[[Any], None], *, title: str, xlabel: str,
                ylabel: str, legend: bool) -> Path:
    """One 6x4 in image, in the format its suffix names (``plot_format``): ``draw(ax)``
    adds the lines; folders are created; the figure is closed even when drawing fails."""
    fmt = plot_format(path)
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from twotower.artifacts import atomic_file
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    try:
        draw(ax)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        if legend:
            ax.legend()
        fig.tight_layout()
        # a Ctrl-C or a full disk midway leaves the previous plot whole, not cut short
        with atomic_file(out) as tmp:
            fig.savefig(tmp, format=fmt)
    finally:
        plt.close(fig)
    return out


__all__ = ["DEFAULT_TABLE_METRICS", "format_table", "plot_loss_curves", "plot_recall_curves",
           "recall_curve", "table_metrics"]
