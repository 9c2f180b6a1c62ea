"""Data inspection: what the digits look like and how they are distributed, over a split of MNIST (train = the
first images of the official training set, val = its last, test = the first official test images): by default the
study's, 50,000 / 10,000 / 10,000; in a report, the split its sweeps used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gridsearch.analysis import plots
from gridsearch.analysis.webpage import Block, Figure, Folder, Note, Section, table
from gridsearch.training import data
from gridsearch.vocabulary import format_percent

SAMPLE_SEED = 0
SAMPLES_PER_CLASS = 10


@dataclass(frozen=True)
class SplitSizes:
    """Images in each part of a split: the first ``train`` and the last ``val`` official training images, the
    first ``test`` official test images."""

    train: int
    val: int
    test: int


STUDY = SplitSizes(50000, 10000, 10000)


def splits(data_dir: Path, sizes: SplitSizes) -> dict[str, data.Images]:
    """train, val and test of ``sizes``."""
    train, val = data.training_images(data_dir, sizes.train, sizes.val)
    return {"train": train, "val": val, "test": data.test_images(data_dir, sizes.test)}


def label_distribution(splits: dict[str, data.Images]) -> pd.DataFrame:
    """Images per digit in each split, with each split's share of that digit as a fraction."""
    counts = pd.DataFrame({name: np.bincount(split.labels, minlength=10) for name, split in splits.items()})
    counts.insert(0, "digit", range(10))
    for name in splits:
        counts[f"{name}_fraction"] = counts[name] / counts[name].sum()
    return counts


def pixel_counts(splits: dict[str, data.Images]) -> pd.DataFrame:
    """How many pixels of each value 0-255 each split has (index: value, one column per split)."""
    return pd.DataFrame(
        {name: np.bincount(split.images.ravel(), minlength=256) for name, split in splits.items()}
    ).rename_axis("value")


def pixel_statistics(splits: dict[str, data.Images], counts: pd.DataFrame) -> pd.DataFrame:
    """Per split: image count, mean and std of pixel values (0-255), share of black (0) and full (255)
    pixels, and the mean number of ink pixels (> 0) per image; from the value ``counts``."""
    values = counts.index.to_numpy(dtype=np.float64)
    records = []
    for name, split in splits.items():
        share = counts[name].to_numpy() / counts[name].sum()
        mean = float(share @ values)
        records.append(
            {
                "split": name,
                "images": len(split),
                "mean": mean,
                "std": float(np.sqrt(share @ (values - mean) ** 2)),
                "black_fraction": float(share[0]),
                "full_fraction": float(share[255]),
                "ink_pixels_per_image": float((1 - share[0]) * split.images[0].size),
            }
        )
    return pd.DataFrame.from_records(records)


def mean_images(split: data.Images) -> np.ndarray:
    """(10, 28, 28): the mean image of each digit."""
    images, labels = split.images[:, 0], split.labels
    return np.stack([images[labels == digit].mean(axis=0, dtype=np.float64) for digit in range(10)])


def class_samples(split: data.Images, per_class: int = SAMPLES_PER_CLASS, seed: int = SAMPLE_SEED) -> np.ndarray:
    """Indices of ``per_class`` random images of each digit (seeded), digit by digit."""
    generator = np.random.default_rng(seed)
    labels = split.labels
    return np.concatenate(
        [generator.choice(np.flatnonzero(labels == digit), per_class, replace=False) for digit in range(10)]
    )


def inspection_section(
    folder: Folder, data_dir: Path, dataset: str = "mnist", sizes: SplitSizes = STUDY, whose: str = "the study"
) -> list[Block]:
    """Write the inspection figures and tables of ``dataset`` split as ``sizes`` (``whose`` split, for the
    text) into ``folder``; returns their blocks."""
    parts = splits(data_dir, sizes)
    train = parts["train"]
    per_digit = np.bincount(train.labels, minlength=10)
    labels = label_distribution(parts)
    labels_csv = folder.csv(labels, "inspect_label_distribution")
    shares = labels.set_index("digit")[[f"{name}_fraction" for name in parts]]
    shares.columns = list(parts)
    distribution = folder.png(
        plots.bars(shares, "Label distribution per split", "share of the split"), "inspect_label_distribution"
    )
    counts = pixel_counts(parts)
    statistics = pixel_statistics(parts, counts)
    statistics_csv = folder.csv(statistics, "inspect_pixel_statistics")
    histogram = folder.png(
        plots.histogram(counts, "Pixel intensities", "pixel value (0-255)"), "inspect_pixel_histogram"
    )
    ratios = {
        "mean": "{:.2f}".format,
        "std": "{:.2f}".format,
        "black_fraction": format_percent,
        "full_fraction": format_percent,
        "ink_pixels_per_image": "{:.1f}".format,
    }
    return [
        Note(
            f"{dataset.upper()} as {whose} split it: train = the first {sizes.train:,} official training "
            f"images, val = the last {sizes.val:,}, test = the first {sizes.test:,} official test images."
        ),
        samples_figure(folder, train, per_digit),
        table(labels, labels_csv, {f"{name}_fraction": format_percent for name in parts}),
        Figure(distribution, "Share of each digit in train, val and test."),
        means_figure(folder, train, per_digit),
        table(statistics, statistics_csv, ratios),
        Figure(histogram, "Pixel intensity distribution per split (log scale: most pixels are black)."),
    ]


def samples_figure(folder: Folder, train: data.Images, per_digit: np.ndarray) -> Block:
    """``SAMPLES_PER_CLASS`` random training images of each digit, or one line saying why there are none."""
    short = [str(digit) for digit in range(10) if per_digit[digit] < SAMPLES_PER_CLASS]
    if short:
        return Note(
            f"No sample images: the training split has fewer than {SAMPLES_PER_CLASS} images of digit "
            f"{', '.join(short)} ({len(train):,} images in all)."
        )
    picks = class_samples(train)
    figure = plots.image_grid(
        train.images[picks, 0],
        [f"#{i}" for i in picks],
        [False] * len(picks),
        f"{SAMPLES_PER_CLASS} random training images of each digit (rows 0-9, seed {SAMPLE_SEED}; caption: index)",
        columns=SAMPLES_PER_CLASS,
    )
    return Figure(folder.png(figure, "inspect_samples"), "Random training images, one row per digit.")


def means_figure(folder: Folder, train: data.Images, per_digit: np.ndarray) -> Block:
    """The mean training image of each digit, or one line saying which digit has no image to average."""
    missing = [str(digit) for digit in range(10) if per_digit[digit] == 0]
    if missing:
        return Note(f"No mean images: the training split has no image of digit {', '.join(missing)}.")
    figure = plots.digit_row(mean_images(train), "Mean training image of each digit")
    return Figure(folder.png(figure, "inspect_mean_images"), "Mean image of each digit over the training split.")


def write_inspection(out: Path, data_dir: Path, dataset: str = "mnist") -> Path:
    """The inspection of ``dataset`` as a page of its own in ``out``; returns the path of its index.html."""
    folder = Folder(out)
    section = Section("data", "The data", inspection_section(folder, data_dir, dataset))
    return folder.page(f"{dataset.upper()} inspection", [section])
