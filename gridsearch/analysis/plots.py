"""The report's figures: each function takes plain data and returns a matplotlib Figure (Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection

from gridsearch.analysis.axes import (
    DistinctPercent,
    legend_beside,
    log_ticks,
    place_labels,
)
from gridsearch.spec.datasets import DATASETS, Dataset
from gridsearch.vocabulary import format_percent, format_value

MAX_TICK_LABELS = 20
"""Most value labels along one axis: with more values, every k-th is labelled."""
MAX_FIGURE_INCHES = (12.0, 9.0)
"""Width and height a heatmap grows to, however many values its params take."""
LABELLED_CELL_INCHES = (0.5, 0.22)
"""A heatmap cell gets its value written in it only when it is at least this wide and high."""
TOP_TRIALS = 50
"""Parallel coordinates colour the best this many trials; the others are drawn in grey beneath."""


def sparse_ticks(count: int, most: int = MAX_TICK_LABELS) -> list[int]:
    """Positions of the labelled ticks among ``count`` values: all, or every k-th with the last."""
    step = max(1, -(-count // most))
    return sorted({*range(0, count, step), count - 1}) if count else []


def heatmap(grid: pd.DataFrame, title: str, label: str) -> plt.Figure:
    """A 2-D table of accuracies (rows: one param's values, columns: another's) as a heatmap, its size capped:
    cells are annotated only when they are large enough to read, axes label at most ``MAX_TICK_LABELS``
    values, and the title says so when either is left out."""
    rows, columns = grid.shape
    width = min(1.1 * columns + 2.5, MAX_FIGURE_INCHES[0])
    height = min(0.6 * rows + 1.8, MAX_FIGURE_INCHES[1])
    figure, axes = plt.subplots(figsize=(width, height))
    values = grid.to_numpy(dtype=float)
    image = axes.imshow(values, cmap="viridis", aspect="auto", interpolation="nearest")
    xs, ys = sparse_ticks(columns), sparse_ticks(rows)
    x_values, y_values = grid.columns.tolist(), grid.index.tolist()  # Python scalars, as format_value takes them
    names = [format_value(x_values[i]) for i in xs]
    crowded = max(map(len, names)) * 0.08 > (width - 2.5) / max(len(xs), 1)  # inches of text against of cell
    axes.set_xticks(xs, names, rotation=45 if crowded else 0, ha="right" if crowded else "center")
    axes.set_yticks(ys, [format_value(y_values[i]) for i in ys])
    axes.set_xlabel(str(grid.columns.name))
    axes.set_ylabel(str(grid.index.name))
    readable = (width - 2.5) / columns >= LABELLED_CELL_INCHES[0] and (height - 1.8) / rows >= LABELLED_CELL_INCHES[1]
    if readable:
        middle = np.nanmean(values)
        for (row, column), value in np.ndenumerate(values):
            if np.isfinite(value):
                axes.text(
                    column,
                    row,
                    format_percent(value),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if value > middle else "white",
                )
    figure.colorbar(image, ax=axes, label=label, format=DistinctPercent(1))
    shown = [f"{rows} x {columns} cells"]
    if not readable:
        shown.append("too many to write each value: see the table")
    if len(xs) < columns or len(ys) < rows:
        shown.append("some values unlabelled on the axes")
    axes.set_title(title if len(shown) == 1 else f"{title}\n{'; '.join(shown)}")
    return figure


def marginals(table: pd.DataFrame, factors: Sequence[Sequence[str]], metric: str, title: str) -> plt.Figure:
    """For each factor (params that vary together, named by the first), the mean and the max of ``metric`` over
    all other factors, against its values (at most ``MAX_TICK_LABELS`` of them labelled; no markers beyond that
    many; long labels slanted)."""
    figure, axes = plt.subplots(1, len(factors), figsize=(3.6 * len(factors), 3.2), squeeze=False)
    for axis, (param, *others) in zip(axes[0], factors):
        grouped = table.groupby(param)[metric].agg(["mean", "max"]).sort_index()
        positions = range(len(grouped))
        many = len(grouped) > MAX_TICK_LABELS
        axis.plot(positions, grouped["max"], "-" if many else "o-", label="max")
        axis.plot(positions, grouped["mean"], "--" if many else "s--", label="mean")
        ticks = sparse_ticks(len(grouped), 6 if many else MAX_TICK_LABELS)
        levels = grouped.index.tolist()
        labels = [format_value(levels[i]) for i in ticks]
        slanted = sum(len(label) for label in labels) > 24
        axis.set_xticks(ticks, labels, rotation=30 if slanted else 0, ha="right" if slanted else "center")
        name = f"{param} ({len(grouped)} values)" if many else param
        axis.set_xlabel(f"{name}\n(with {', '.join(others)})" if others else name)
        if grouped.to_numpy().min() == grouped.to_numpy().max():  # one score: a narrow range, not matplotlib's 4%
            axis.set_ylim(grouped["max"].iloc[0] - 0.001, grouped["max"].iloc[0] + 0.001)
        axis.yaxis.set_major_formatter(DistinctPercent(1))
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric)
    legend_beside(axes[0][-1])
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def confusion_matrix(matrix: np.ndarray, title: str, dataset: Dataset = DATASETS["mnist"]) -> plt.Figure:
    """An N x N confusion matrix of ``dataset``'s N classes (rows: true, columns: predicted), off-diagonal cells
    highlighted."""
    matrix = np.asarray(matrix)
    off = np.where(np.eye(len(matrix), dtype=bool), 0, matrix)
    figure, axes = plt.subplots(figsize=(5.2, 4.6))
    image = axes.imshow(off, cmap="Reds")
    for (row, column), value in np.ndenumerate(matrix):
        axes.text(
            column,
            row,
            str(value),
            ha="center",
            va="center",
            fontsize=7,
            color="#1a5e1a" if row == column else ("white" if value > off.max() / 2 else "black"),
        )
    axes.set_xticks(range(len(matrix)), dataset.classes, rotation=0 if dataset.digits else 90)
    axes.set_yticks(range(len(matrix)), dataset.classes)
    axes.set_xlabel(f"predicted {dataset.noun}")
    axes.set_ylabel(f"true {dataset.noun}")
    axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, label="errors (off-diagonal)")
    return figure


def image_grid(
    images: np.ndarray, captions: Sequence[str], wrong: Sequence[bool], title: str, columns: int = 10
) -> plt.Figure:
    """uint8 images (N, C, H, W) tiled in one mosaic with a caption above each; ``wrong`` captions in red. One
    channel is drawn grey (ink dark), three in colour, on white."""
    colour = images.shape[1] == 3
    pictures = np.moveaxis(images, 1, -1) if colour else images[:, 0]
    height, width = images.shape[2:]
    gap = 11
    rows = max(1, -(-len(images) // columns))
    cell_h, cell_w = height + gap, width + 4
    shape = (rows * cell_h, columns * cell_w, 3) if colour else (rows * cell_h, columns * cell_w)
    mosaic = np.full(shape, 255 if colour else 0, dtype=np.uint8)  # white either way (grey ink is drawn dark)
    scale = max(1.0, max(height, width) / 28)  # a mosaic of MNIST digits at the size it always had
    figure, axes = plt.subplots(figsize=(0.95 * columns * scale, 1.2 * rows * scale + 0.5))
    for index, image in enumerate(pictures):
        top, left = (index // columns) * cell_h + gap, (index % columns) * cell_w + 2
        mosaic[top : top + height, left : left + width] = image
        axes.text(
            left + width / 2,
            top - 1.5,
            captions[index],
            ha="center",
            va="bottom",
            fontsize=7,
            color="#c00000" if wrong[index] else "black",
        )
    if colour:
        axes.imshow(mosaic, interpolation="nearest")
    else:
        axes.imshow(mosaic, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest")
    axes.axis("off")
    axes.set_title(title, fontsize=10)
    return figure


def scatter_cost(table: pd.DataFrame) -> plt.Figure:
    """Test accuracy against parameter count and against training seconds, each point labelled with its sweep
    (labels moved apart where they would overprint); with a ``dataset`` column, one row of panels per dataset."""
    groups = list(table.groupby("dataset", sort=False)) if "dataset" in table else [("", table)]
    figure, grid = plt.subplots(len(groups), 2, figsize=(12, 4.2 * len(groups)), squeeze=False)
    for (dataset, rows), axes in zip(groups, grid):
        for axis, column, label in (
            (axes[0], "parameter_count", "parameters"),
            (axes[1], "train_seconds", "training time of the best trial (s)"),
        ):
            values = rows[column].astype(float)
            axis.scatter(values, rows["test_accuracy"], s=30, color="C0", zorder=3)
            logarithmic = values.min() > 0 and values.max() / values.min() > 20
            if logarithmic:
                axis.set_xscale("log")
                log_ticks(axis.xaxis)
            else:
                axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=4))
            if column == "parameter_count":
                axis.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter(sep=""))
            axis.margins(x=0.1, y=0.15)
            low, high = axis.get_xlim()
            axis.set_xlim(low, high * 4 if logarithmic else high + (high - low) * 0.6)  # room for the labels
            axis.set_ylim(top=min(axis.get_ylim()[1], 1.0))  # no accuracy above 100%
            axis.set_xlabel(label + (" (log scale)" if logarithmic else ""))
            axis.set_ylabel(f"test accuracy{f' ({dataset})' if dataset else ''}")
            axis.yaxis.set_major_formatter(DistinctPercent())
            axis.grid(alpha=0.3, which="both")
        figure.tight_layout()
        for axis, column in zip(axes, ("parameter_count", "train_seconds")):
            place_labels(axis, rows[column].astype(float).tolist(), rows["test_accuracy"].tolist(), list(rows["sweep"]))
    return figure


def bars(table: pd.DataFrame, title: str, ylabel: str) -> plt.Figure:
    """Vertical grouped bars: index on the x axis, one bar per column."""
    figure, axes = plt.subplots(figsize=(8, 3.2))
    table.plot.bar(ax=axes, rot=0)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    return figure


def class_row(images: np.ndarray, names: Sequence[str], title: str) -> plt.Figure:
    """Float images (one per class, captioned with its name) side by side, e.g. the mean image of each class."""
    figure, axes = plt.subplots(1, len(images), figsize=(1.2 * len(images), 1.6))
    for name, axis, image in zip(names, axes, images):
        axis.imshow(image, cmap="gray_r")
        axis.set_title(name, fontsize=9)
        axis.axis("off")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def histogram(counts: pd.DataFrame, title: str, xlabel: str) -> plt.Figure:
    """Step histograms from counts per value (index: value, one column per set), as shares, log scale."""
    figure, axes = plt.subplots(figsize=(8, 3.2))
    for column in counts.columns:
        axes.step(counts.index, counts[column] / counts[column].sum(), where="mid", label=str(column))
    axes.set_yscale("log")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("share of pixels (log)")
    axes.set_title(title)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def importance_bars(shares: pd.DataFrame, title: str) -> plt.Figure:
    """Horizontal bars of each term's share of the variance (largest on top)."""
    figure, axes = plt.subplots(figsize=(7, 0.35 * len(shares) + 1.4))
    kinds = {"main": "C0", "interaction": "C1", "rest": "C7"}
    axes.barh(range(len(shares)), shares["share"].fillna(0), color=[kinds[k] for k in shares["kind"]])
    axes.set_yticks(range(len(shares)), shares["term"])
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    axes.set_xlabel("share of the variance (blue: main effect, orange: interaction)")
    axes.grid(alpha=0.3, axis="x")
    axes.set_title(title)
    figure.tight_layout()
    return figure


def line_density(lines: np.ndarray, steps: int = 40, height: int = 160) -> np.ndarray:
    """How many of ``lines`` (one row each, y in [0, 1] at x = 0, 1, 2, ...) pass through each cell of a
    (``steps`` per unit of x) x ``height`` raster: parallel coordinates of thousands of trials as one image."""
    gaps = lines.shape[1] - 1
    t = np.linspace(0, 1, steps, endpoint=False)
    y = lines[:, :-1, None] * (1 - t) + lines[:, 1:, None] * t
    x = np.broadcast_to(np.arange(gaps)[:, None] + t, y.shape)
    density, _, _ = np.histogram2d(x.ravel(), y.ravel(), bins=(gaps * steps, height), range=((0, gaps), (0, 1)))
    return density


def parallel_coordinates(
    scores: pd.DataFrame, params: Sequence[str], metric: str, title: str, top: int = TOP_TRIALS
) -> plt.Figure:
    """One line per trial through an axis per param (its values evenly spaced, in order; at most
    ``MAX_TICK_LABELS`` labelled) and a last axis for ``metric``: the best ``top`` coloured by ``metric``, the
    best on top; with more trials, the rest beneath as a grey density (darker where more pass), and the title
    says how many of how many are coloured."""
    values = scores[metric].to_numpy(dtype=float)
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    scaled = (values - low) / (high - low) if high > low else np.full(len(values), 0.5)
    columns, ticks = [], []
    for name in params:
        numeric = pd.api.types.is_numeric_dtype(scores[name])
        levels = sorted(scores[name].drop_duplicates().tolist(), key=None if numeric else str)
        where = {level: i / max(len(levels) - 1, 1) for i, level in enumerate(levels)}
        columns.append(scores[name].map(where).to_numpy(dtype=float))
        ticks.append([(where[levels[i]], format_value(levels[i])) for i in sparse_ticks(len(levels))])
    columns.append(scaled)
    write = format_percent if metric == "val_accuracy" else "{:.4f}".format
    ticks.append([(0.0, write(low)), (1.0, write(high))])
    lines = np.column_stack(columns)
    x = np.arange(len(columns), dtype=float)
    figure, axes = plt.subplots(figsize=(1.8 * len(columns) + 2, 4))
    ranked = np.argsort(-scaled if metric != "val_loss" else scaled, kind="stable")  # best first
    best, rest = ranked[:top], ranked[top:]
    if len(rest):
        density = line_density(lines[rest])
        axes.imshow(
            np.ma.masked_equal(density.T, 0),
            extent=(0, len(columns) - 1, 0, 1),
            origin="lower",
            aspect="auto",
            cmap="Greys",
            norm=matplotlib.colors.PowerNorm(0.5, vmin=0, vmax=density.max() * 1.5),
            interpolation="bilinear",
        )
    colour = matplotlib.colormaps["viridis"]
    best_last = best[::-1]
    axes.add_collection(
        LineCollection(
            [np.column_stack([x, lines[i]]) for i in best_last],
            colors=[colour(scaled[i]) for i in best_last],
            alpha=0.8,
            linewidths=1.5,
        )
    )
    for position, marks in enumerate(ticks):
        axes.axvline(position, color="grey", linewidth=0.8)
        for height, text in marks:
            axes.text(position + 0.03, height, text, fontsize=8, va="center")
    axes.set_xticks(range(len(columns)), [*params, metric])
    axes.set_yticks([])
    axes.set_xlim(-0.2, len(columns) - 0.6)
    axes.set_ylim(-0.05, 1.05)
    mappable = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(low, high), "viridis")
    percent = DistinctPercent(1) if metric == "val_accuracy" else None
    figure.colorbar(mappable, ax=axes, label=metric, format=percent)
    shown = (
        f"every trial, coloured by {metric}"
        if not len(rest)
        else f"the best {len(best)} of {len(values):,} trials, coloured by {metric}; "
        f"the other {len(rest):,} as grey density"
    )
    axes.set_title(f"{title}: {shown}")
    figure.tight_layout()
    return figure


def _mosaic(images: np.ndarray, columns: int) -> np.ndarray:
    """(N, H, W) images tiled ``columns`` wide with one-pixel gaps; gaps and empty cells are NaN (drawn white)."""
    count, height, width = images.shape
    columns = min(columns, count)
    rows = -(-count // columns)
    mosaic = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1), np.nan)
    for index, image in enumerate(images):
        top, left = (index // columns) * (height + 1), (index % columns) * (width + 1)
        mosaic[top : top + height, left : left + width] = image
    return mosaic


def tiles(images: np.ndarray, title: str, signed: bool = False, columns: int = 16) -> plt.Figure:
    """Small (N, H, W) arrays (filters, feature maps) in one grid, each on its own scale: ``signed`` ones by
    their largest magnitude (red positive, blue negative, white zero), others from their min to their max
    (dark is high)."""
    images = images.astype(float)
    flat = images.reshape(len(images), -1)
    if signed:
        scale = np.abs(flat).max(1)
        low = np.zeros(len(images))
    else:
        low = flat.min(1)
        scale = flat.max(1) - low
    scale = np.where(scale > 0, scale, 1.0)[:, None, None]
    mosaic = _mosaic((images - low[:, None, None]) / scale, columns)
    cmap = plt.get_cmap("RdBu_r" if signed else "gray_r").with_extremes(bad="white")
    rows, cells = mosaic.shape[0] / (images.shape[1] + 1), mosaic.shape[1] / (images.shape[2] + 1)
    figure, axes = plt.subplots(figsize=(max(3.0, 0.55 * cells), 0.55 * rows + 0.5))
    axes.imshow(mosaic, cmap=cmap, vmin=-1 if signed else 0, vmax=1, interpolation="nearest")
    axes.axis("off")
    axes.set_title(title, fontsize=10)
    return figure


def before_after(before: np.ndarray, after: np.ndarray, title: str, columns: int = 4) -> plt.Figure:
    """Images in [0, 1] (N, H, W: their first channel) before (left) and after (right) a transformation, in order."""
    figure, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    for axis, images, label in zip(axes, (before, after), ("input", "after the transformer")):
        axis.imshow(_mosaic(images, columns), cmap=plt.get_cmap("gray_r").with_extremes(bad="white"), vmin=0, vmax=1)
        axis.set_title(label, fontsize=9)
        axis.axis("off")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure
