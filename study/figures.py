"""The figures of ``docs/study/README.md``: the epoch budget, MNIST against Fashion-MNIST, and the test images every
model gets wrong. Log axes are labelled at their values; every accuracy carries its interval."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from gridsearch.analysis.axes import DistinctPercent, legend_beside, log_ticks
from gridsearch.analysis.uncertainty import wilson_intervals

DPI = 110


def _save(figure: plt.Figure, path: Path) -> None:
    figure.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(figure)


def budget_figure(
    curve: list[tuple[int, float]],
    val_size: int,
    seeds: tuple[int, float, float, float] | None,
    seed_point: tuple[int, float],
    path: Path,
) -> None:
    """Validation accuracy (%) against the epoch budget with Wilson 95% intervals over the ``val_size`` images; at
    ``seeds`` (epochs, mean, low, high) the seeds' t-interval; the seed study's ``seed_point`` beside them."""
    epochs = np.array([e for e, _ in curve])
    accuracy = np.array([a for _, a in curve]) / 100
    low, high = wilson_intervals(np.round(accuracy * val_size).astype(int), np.full(len(curve), val_size))
    figure, axes = plt.subplots(figsize=(7, 3.8))
    axes.errorbar(
        epochs,
        accuracy,
        yerr=[accuracy - low, high - accuracy],
        fmt="o-",
        capsize=3,
        color="C0",
        label="LeNet-5-3 at lr 0.08, k 4 (one seed; Wilson 95% interval over the validation images)",
    )
    if seeds is not None:
        at, mean, lo, hi = seeds
        axes.errorbar(
            [at * 1.06],
            [mean / 100],
            yerr=[[(mean - lo) / 100], [(hi - mean) / 100]],
            fmt="s",
            capsize=3,
            color="C1",
            label="the selected configuration over its seeds (mean, t 95% interval)",
        )
    axes.plot([seed_point[0]], [seed_point[1] / 100], "D", color="C2", label="the seed study (100 epochs, GPU, fp32)")
    axes.set_xscale("log")
    ticks = sorted({*epochs.tolist(), seed_point[0]})
    axes.xaxis.set_major_locator(FixedLocator(ticks))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set(xlabel="epochs of training (log scale)", ylabel="best validation accuracy")
    axes.yaxis.set_major_formatter(DistinctPercent())
    axes.grid(alpha=0.3)
    legend_beside(axes)
    _save(figure, path)


def datasets_figure(pairs: list[tuple[str, int, int, int, int]], path: Path) -> None:
    """Test error (%) with Wilson 95% intervals of each (title, MNIST errors, MNIST images, Fashion-MNIST errors,
    Fashion-MNIST images), side by side on a labelled log axis."""
    figure, axes = plt.subplots(figsize=(7, 3.8))
    x = np.arange(len(pairs))
    for offset, column, name, colour in ((-0.2, 1, "MNIST", "C0"), (0.2, 3, "Fashion-MNIST", "C1")):
        errors = np.array([p[column] for p in pairs])
        sizes = np.array([p[column + 1] for p in pairs])
        low, high = wilson_intervals(sizes - errors, sizes)
        rate = errors / sizes
        axes.bar(x + offset, rate, 0.4, color=colour, label=name)
        axes.errorbar(
            x + offset, rate, yerr=[rate - (1 - high), (1 - low) - rate], fmt="none", ecolor="black", capsize=3
        )
    axes.set_yscale("log")
    log_ticks(axes.yaxis)
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{100 * value:g}%"))
    axes.set(xticks=x, ylabel="test error (log scale; Wilson 95% interval)")
    axes.set_xticklabels([p[0] for p in pairs])
    axes.grid(alpha=0.3, axis="y")
    legend_beside(axes)
    _save(figure, path)


def hard_figure(images: np.ndarray, labels: list[int], answers: dict[str, list[int]], title: str, path: Path) -> None:
    """Each test image every model gets wrong, its label above it and each model's answer in a column beneath."""
    count, columns = len(images), min(len(images), 8)
    rows = -(-count // columns)
    figure, grid = plt.subplots(
        rows, columns, figsize=(1.5 * columns, (1.5 + 0.16 * len(answers)) * rows), squeeze=False
    )
    for index, axis in enumerate(grid.flat):
        axis.axis("off")
        if index >= count:
            continue
        axis.imshow(images[index], cmap="gray_r", vmin=0, vmax=255)
        axis.set_title(f"true {labels[index]}", fontsize=8)
        said = "\n".join(f"{name}: {given[index]}" for name, given in answers.items())
        axis.text(0.5, -0.04, said, transform=axis.transAxes, ha="center", va="top", fontsize=6.5, family="monospace")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    _save(figure, path)
