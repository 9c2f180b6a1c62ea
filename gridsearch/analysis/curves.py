"""The report's figures of metrics per epoch: learning curves (one colour per trial, small multiples past
``MAX_COLOURS`` trials) and a successive-halving sweep's curves by rung."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from gridsearch.analysis.axes import MAX_COLOURS, DistinctPercent, colours, panels

LABEL_WIDTH = 60
"""Characters of a legend label's line: longer labels wrap."""
LEGEND_LINE = 0.15
"""Inches a line of 8-point legend text takes: the figure grows by the legend's height, the plots keep theirs."""
PANEL_LABEL_WIDTH = 45
"""Characters of a line of a small multiple's title."""
LEGEND_CHARACTERS = 170
"""About how many characters of 8-point legend text fit across a learning-curves figure (12.5 inches)."""
MAX_ROWS = 7
"""Rows of small multiples at most: 7 rows of 2.4 inches stay under 2,000 pixels at the report's 110 dpi."""


def learning_curves(curves: Mapping[str, pd.DataFrame]) -> plt.Figure:
    """Train (dashed) and val (solid) loss and accuracy per epoch, one colour per labelled trial and the legend
    under the plots, its labels wrapped (the plots keep their width however long the labels are); past
    ``MAX_COLOURS`` trials, small multiples of accuracy (``curve_panels``)."""
    if len(curves) > MAX_COLOURS:
        return curve_panels(curves)
    labels = [wrapped(label) for label in curves]
    longest = max((len(line) for label in labels for line in label.splitlines()), default=1)
    columns = max(1, min(len(curves), LEGEND_CHARACTERS // (longest + 6)))
    rows = -(-len(labels) // columns)
    lines = rows * max((label.count("\n") + 1 for label in labels), default=1)
    figure, (loss, accuracy) = plt.subplots(1, 2, figsize=(12.5, 3.8 + LEGEND_LINE * lines), layout="constrained")
    for colour, (label, epochs) in zip(colours(len(curves)), curves.items()):
        loss.plot(epochs["epoch"] + 1, epochs["train_loss"], "--", color=colour)
        loss.plot(epochs["epoch"] + 1, epochs["val_loss"], "-o", color=colour, markersize=3, label=wrapped(label))
        accuracy.plot(epochs["epoch"] + 1, epochs["train_accuracy"], "--", color=colour)
        accuracy.plot(epochs["epoch"] + 1, epochs["val_accuracy"], "-o", color=colour, markersize=3)
    loss.set_ylabel("loss (dashed: train, solid: val)")
    accuracy.set_ylabel("accuracy (dashed: train, solid: val)")
    accuracy.yaxis.set_major_formatter(DistinctPercent())
    for axis in (loss, accuracy):
        _epoch_axis(axis, curves)
    figure.legend(loc="outside lower center", ncols=columns, fontsize=8, frameon=False)
    return figure


def wrapped(label: str) -> str:
    """A legend label on lines of at most ``LABEL_WIDTH`` characters, broken between its ``name=value`` pairs."""
    return textwrap.fill(label, LABEL_WIDTH, break_long_words=False, break_on_hyphens=False)


def curve_panels(curves: Mapping[str, pd.DataFrame], columns: int = 4) -> plt.Figure:
    """One small panel per labelled trial: train (dashed) and val (solid) accuracy per epoch, on axes that
    start at the lowest val accuracy after the first epoch (the first would flatten the rest)."""
    columns = max(columns, -(-len(curves) // MAX_ROWS))  # no taller than MAX_ROWS rows of panels
    rows, columns = panels(len(curves), columns)
    titles = [textwrap.fill(label, PANEL_LABEL_WIDTH, break_long_words=False) for label in curves]
    title_lines = max((title.count("\n") for title in titles), default=0)  # past the first: the panels grow by them
    figure, grid = plt.subplots(
        rows,
        columns,
        figsize=(3.2 * columns, (2.4 + LEGEND_LINE * title_lines) * rows + 0.4),
        squeeze=False,
        layout="constrained",
    )
    for axis, title, (label, epochs) in zip(grid.flat, titles, curves.items()):
        axis.plot(epochs["epoch"] + 1, epochs["train_accuracy"], "--", color="C0", linewidth=1)
        axis.plot(epochs["epoch"] + 1, epochs["val_accuracy"], "-o", color="C0", markersize=2.5, linewidth=1)
        later = epochs["val_accuracy"].iloc[1:] if len(epochs) > 1 else epochs["val_accuracy"]
        if len(later):
            axis.set_ylim(bottom=min(later.min(), epochs["train_accuracy"].iloc[-1]) - 0.002, top=1.0)
        axis.yaxis.set_major_formatter(DistinctPercent())
        axis.set_title(title, fontsize=8)
        _epoch_axis(axis, {label: epochs})
    for axis in list(grid.flat)[len(curves) :]:
        axis.axis("off")
    figure.suptitle("accuracy per epoch (dashed: train, solid: val)", fontsize=10)
    return figure


def _epoch_axis(axis: plt.Axes, curves: Mapping[str, pd.DataFrame]) -> None:
    """An x axis of epochs counted from 1, as people count them (stored from 0)."""
    axis.set_xlabel("epoch", fontsize=8)
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if all(len(epochs) < 2 for epochs in curves.values()):  # a single point has no range: one tick, at epoch 1
        axis.set_xlim(0.5, 1.5)
        axis.set_xticks([1])
    axis.grid(alpha=0.3)


def rung_curves(
    curves: Sequence[tuple[int, pd.DataFrame]], budgets: Sequence[int], metric: str, title: str
) -> plt.Figure:
    """``metric`` per epoch of each (rung reached, epochs) curve, one colour per rung, with a dotted line
    at each rung's epoch budget."""
    figure, axes = plt.subplots(figsize=(8, 3.8))
    for rung, epochs in sorted(curves, key=lambda curve: curve[0]):
        axes.plot(
            epochs["epoch"] + 1,
            epochs[metric],
            "-o",
            color=f"C{rung}",
            alpha=0.8,
            linewidth=1,
            markersize=3,
            label=f"reached rung {rung}",
        )
    for budget in budgets[:-1]:
        axes.axvline(budget + 0.5, color="grey", linestyle=":")  # after its budget's last epoch, counted from 1
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axes.legend(unique.values(), unique.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    values = pd.concat([epochs[metric] for _, epochs in curves]) if curves else pd.Series(dtype=float)
    if metric == "val_accuracy" and len(values):
        axes.set_ylim(bottom=values.quantile(0.05))  # the first epochs' low values would flatten the rest
        axes.yaxis.set_major_formatter(DistinctPercent(1))
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.grid(alpha=0.3)
    axes.set_title(title)
    figure.tight_layout()
    return figure
