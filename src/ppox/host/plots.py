"""Matplotlib figures written straight to PNG files (no pyplot, no global state).

The helpers are generic: they take plain numpy arrays and labels, know nothing about
sweeps or runs, and return the path they wrote. They build ``matplotlib.figure.Figure``
objects with the Agg canvas, so they work headless and never change the pyplot backend of
a notebook that imports ppox.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import StrMethodFormatter

Band = Literal["minmax", "std", "none"]


def forward_fill(y: np.ndarray) -> np.ndarray:
    """Carries the last finite value forward along the last axis; leading NaNs stay NaN.

    ``y``: ``[..., U]``; returns ``[..., U]`` float64. E.g. ``[nan, 1, nan, 3] ->
    [nan, 1, 1, 3]`` (updates in which no episode ended keep the previous mean return).
    """
    y = np.asarray(y, np.float64)
    flat = y.reshape(-1, y.shape[-1]) if y.ndim else y.reshape(1, 1)
    out = flat.copy()
    for row in out:
        last = np.nan
        for i, v in enumerate(row):
            if np.isfinite(v):
                last = v
            else:
                row[i] = last
    return out.reshape(y.shape)


def _save(fig: Figure, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi)
    return path


def plot_learning_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    band: Band = "minmax",
    title: str = "",
    xlabel: str = "env steps",
    ylabel: str = "episode return",
    dpi: int = 120,
) -> Path:
    """One line per curve (the mean over its runs) with a shaded band across runs.

    Args:
        curves: ``label -> (x [U], y [S, U])``: x values and ``S`` runs (e.g. seeds) of one
            configuration. NaNs in ``y`` are gaps (forward-fill them first if you prefer).
            Curves may have different lengths ``U``.
        path: the PNG file to write.
        band: ``"minmax"`` shades min..max across runs, ``"std"`` mean ± one std,
            ``"none"`` draws only the mean. Nothing is shaded for a single run.
    """
    fig = Figure(figsize=(7.0, 4.5))
    ax = fig.add_subplot()
    for label, (x, y) in curves.items():
        x = np.asarray(x, np.float64)
        y = np.atleast_2d(np.asarray(y, np.float64))
        with warnings.catch_warnings():  # all-NaN columns (no episode ended yet) are gaps
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(y, axis=0)
            if band == "std":
                sd = np.nanstd(y, axis=0)
                lo, hi = mean - sd, mean + sd
            else:
                lo, hi = np.nanmin(y, axis=0), np.nanmax(y, axis=0)
        (line,) = ax.plot(x, mean, label=label, linewidth=1.5)
        if band != "none" and y.shape[0] > 1:
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    band_text = {"minmax": "band: min..max across runs", "std": "band: mean ± std",
                 "none": ""}[band]
    ax.set_title(title + (f"\n({band_text})" if band_text and title else band_text),
                 fontsize=10)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_heatmap(
    values: np.ndarray,
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    path: str | Path,
    *,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    colorbar_label: str = "",
    fmt: str = "{:.1f}",
    dpi: int = 120,
) -> Path:
    """A heatmap of ``values [len(y_labels), len(x_labels)]``, each cell annotated.

    NaN cells are drawn gray and annotated ``nan``. Row ``i`` is ``y_labels[i]`` (top row
    first), column ``j`` is ``x_labels[j]``.
    """
    values = np.asarray(values, np.float64)
    if values.shape != (len(y_labels), len(x_labels)):
        raise ValueError(f"values {values.shape} do not match labels "
                         f"({len(y_labels)}, {len(x_labels)})")
    fig = Figure(figsize=(1.2 * len(x_labels) + 3.0, 0.8 * len(y_labels) + 2.0))
    ax = fig.add_subplot()
    masked = np.ma.masked_invalid(values)
    cmap = _cmap_with_gray_nan()
    im = ax.imshow(masked, cmap=cmap, aspect="auto")
    fig.colorbar(im, ax=ax, label=colorbar_label)
    ax.set_xticks(range(len(x_labels)), labels=list(x_labels))
    ax.set_yticks(range(len(y_labels)), labels=list(y_labels))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    finite = values[np.isfinite(values)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            text = "nan" if not np.isfinite(v) else fmt.format(v)
            color = "black" if not np.isfinite(v) or v >= mid else "white"
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color=color)
    fig.tight_layout()
    return _save(fig, path, dpi)


def plot_bars(
    values: Mapping[str, float],
    path: str | Path,
    *,
    title: str = "",
    ylabel: str = "",
    fmt: str = "{:,.0f}",
    target: float | None = None,
    target_label: str = "target",
    dpi: int = 120,
) -> Path:
    """A bar per ``label -> value``, each annotated with ``fmt``; an optional dashed
    horizontal line at ``target``. NaN values are drawn as empty bars labelled ``n/a``."""
    labels = list(values)
    heights = np.asarray([values[k] for k in labels], np.float64)
    fig = Figure(figsize=(max(5.0, 1.3 * len(labels) + 2.0), 4.5))
    ax = fig.add_subplot()
    bars = ax.bar(range(len(labels)), np.nan_to_num(heights), color="tab:blue")
    for bar, h in zip(bars, heights, strict=True):
        text = "n/a" if not np.isfinite(h) else fmt.format(h)
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, np.nan_to_num(h)),
                    ha="center", va="bottom", fontsize=8, xytext=(0, 2),
                    textcoords="offset points")
    if target is not None:
        ax.axhline(target, color="tab:red", linestyle="--", linewidth=1, label=target_label)
        ax.legend(fontsize=8)
    ax.set_xticks(range(len(labels)), labels=labels, fontsize=8)
    ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path, dpi)


def _cmap_with_gray_nan():
    import matplotlib

    return matplotlib.colormaps["viridis"].with_extremes(bad="lightgray")


__all__ = ["forward_fill", "plot_bars", "plot_heatmap", "plot_learning_curves"]
