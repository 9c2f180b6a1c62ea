"""What keeps the report's figures readable: tick labels that differ, point labels that do not overprint, one
colour per series (small multiples past ``MAX_COLOURS`` series) and legends beside the data, not on it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import numpy as np
from matplotlib.axes import Axes
from matplotlib.axis import Axis
from matplotlib.ticker import Formatter, FuncFormatter, LogLocator, NullFormatter

MAX_COLOURS = 10
"""Series one figure tells apart by colour (matplotlib's ten ``C0``-``C9``); past that, small multiples."""
MAX_DECIMALS = 4


class DistinctPercent(Formatter):
    """Fractions as percentages with as few decimals as make every tick label on the axis different
    (``99.55%``, ``99.60%``; not ``99.6%`` twice)."""

    def __init__(self, least: int = 0):
        self.least = least
        self.decimals = least

    def set_locs(self, locs: list[float]) -> None:
        super().set_locs(locs)
        values = [100 * v for v in locs]
        tried = range(self.least, MAX_DECIMALS + 1)
        exact = (d for d in tried if all(abs(round(v, d) - v) < 1e-9 for v in values))
        distinct = (d for d in tried if len({f"{v:.{d}f}" for v in values}) == len(values))
        found = next(exact, None)
        self.decimals = found if found is not None else next(distinct, MAX_DECIMALS)

    def __call__(self, value: float, position: int | None = None) -> str:
        return f"{100 * value:.{self.decimals}f}%"


def log_ticks(axis: Axis) -> None:
    """Label a log axis at 1, 2 and 5 times each power of ten (``20``, ``50``, ``100``), not at the powers alone."""
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def colours(count: int) -> list[str]:
    """One colour each for ``count`` series (at most ``MAX_COLOURS``: more are drawn as small multiples)."""
    assert count <= MAX_COLOURS, f"{count} series: draw small multiples of at most {MAX_COLOURS}"
    return [f"C{index}" for index in range(count)]


def panels(count: int, columns: int = 4) -> tuple[int, int]:
    """(rows, columns) of small multiples for ``count`` panels."""
    columns = min(columns, max(count, 1))
    return math.ceil(max(count, 1) / columns), columns


def legend_beside(axes: Axes, **options: object) -> None:
    """The axes' legend to the right of its plot, off the data."""
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8, **options)


def place_labels(axes: Axes, xs: Sequence[float], ys: Sequence[float], labels: Sequence[str], size: float = 8) -> None:
    """Write each label to the right of its point; labels that would overprint are stacked, in the order of
    their points' heights, about the middle of those points (inside the axes) and right of the rightmost, with a
    thin line from each moved label to its point. Call once the axes' limits and scales are final."""
    figure = axes.figure
    figure.canvas.draw()  # the transforms are final once drawn
    points = axes.transData.transform(np.column_stack([xs, ys]))
    line = size * figure.dpi / 72 * 1.25
    widths = [len(label) * size * figure.dpi / 72 * 0.62 for label in labels]
    bottom, top = axes.bbox.y0 + line / 2, axes.bbox.y1 - line / 2
    stacks = [[index] for index in np.argsort(points[:, 1], kind="stable")]
    heights = {index: float(points[index, 1]) for index in range(len(labels))}
    merged = True
    while merged:
        merged = False
        for a in range(len(stacks)):
            for b in range(a + 1, len(stacks)):
                if _overlap(stacks[a], stacks[b], heights, points, widths, line):
                    stacks[a] = sorted(stacks[a] + stacks.pop(b), key=lambda i: points[i, 1])
                    _restack(stacks[a], heights, points, line, bottom, top)
                    merged = True
                    break
            if merged:
                break
    column = {index: max(points[i, 0] for i in stack) + 8 for stack in stacks for index in stack}
    inverse = axes.transData.inverted()
    for index, label in enumerate(labels):
        x, y = points[index]
        moved = abs(heights[index] - y) > 1 or column[index] > x + 8
        axes.annotate(
            label,
            (xs[index], ys[index]),
            xytext=tuple(inverse.transform((column[index], heights[index]))),
            textcoords="data",
            fontsize=size,
            va="center",
            arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.5, "shrinkA": 0} if moved else None,
        )


def _overlap(
    a: list[int], b: list[int], heights: dict[int, float], points: np.ndarray, widths: list[float], line: float
) -> bool:
    """Whether a label of stack ``a`` would overprint one of stack ``b``."""
    return any(
        abs(heights[i] - heights[j]) < line
        and points[i, 0] < points[j, 0] + widths[j] + 8
        and points[j, 0] < points[i, 0] + widths[i] + 8
        for i in a
        for j in b
    )


def _restack(
    stack: list[int], heights: dict[int, float], points: np.ndarray, line: float, low: float, high: float
) -> None:
    """Lay the labels of ``stack`` one line apart about the middle of their points, within ``low`` to ``high``."""
    middle = float(np.mean([points[i, 1] for i in stack]))
    first = middle - line * (len(stack) - 1) / 2
    first = min(max(first, low), max(high - line * (len(stack) - 1), low))
    for offset, index in enumerate(stack):
        heights[index] = first + offset * line
