"""Data inspection: what the images of each class look like and how they are distributed, over a split of a
dataset (train = the first images of the official training set, val = its last, test = the first official test
images): by default the study's, 50,000 / 10,000 / 10,000; in a report, the split its sweeps used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gridsearch.analysis import plots
from gridsearch.analysis.webpage import Block, Figure, Folder, Note, Section, table
from gridsearch.spec.datasets import DATASETS, Dataset, described
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


def splits(data_dir: Path, sizes: SplitSizes, dataset: data.DatasetRef = "mnist") -> dict[str, data.Images]:
    """train, val and test of ``dataset`` split as ``sizes``."""
    train, val = data.training_images(data_dir, sizes.train, sizes.val, dataset)
    return {"train": train, "val": val, "test": data.test_images(data_dir, sizes.test, dataset)}


def label_distribution(splits: dict[str, data.Images], dataset: Dataset = DATASETS["mnist"]) -> pd.DataFrame:
    """Images per class in each split (the first column, named ``dataset.noun``: each class's name), with each
    split's share of that class as a fraction."""
    classes = len(dataset.classes)
    counts = pd.DataFrame({name: np.bincount(split.labels, minlength=classes) for name, split in splits.items()})
    counts.insert(0, dataset.noun, dataset.classes)
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


def mean_images(split: data.Images, classes: int) -> np.ndarray:
    """(classes, H, W): the mean image (its first channel) of each class."""
    images, labels = split.images[:, 0], split.labels
    return np.stack([images[labels == label].mean(axis=0, dtype=np.float64) for label in range(classes)])


def class_samples(
    split: data.Images, classes: int, per_class: int = SAMPLES_PER_CLASS, seed: int = SAMPLE_SEED
) -> np.ndarray:
    """Indices of ``per_class`` random images of each class (seeded), class by class."""
    generator = np.random.default_rng(seed)
    labels = split.labels
    return np.concatenate(
        [generator.choice(np.flatnonzero(labels == label), per_class, replace=False) for label in range(classes)]
    )


def file_stem(dataset: str) -> str:
    """The start of the inspection's file names: ``inspect``, ``inspect_fashion_mnist`` for a dataset other than
    MNIST (so a report on several datasets keeps each one's files apart)."""
    return "inspect" if dataset == "mnist" else "inspect_" + re.sub(r"[^A-Za-z0-9_-]+", "_", dataset)


def inspection_section(
    folder: Folder,
    data_dir: Path,
    dataset: Dataset | str = "mnist",
    sizes: SplitSizes = STUDY,
    whose: str = "the study",
) -> list[Block]:
    """Write the inspection figures and tables of ``dataset`` (its description, or a built-in's name) split as
    ``sizes`` (``whose`` split, for the text) into ``folder``; returns their blocks."""
    known = described(dataset)
    stem = file_stem(known.name)
    parts = splits(data_dir, sizes, known)
    train = parts["train"]
    per_class = np.bincount(train.labels, minlength=len(known.classes))
    labels = label_distribution(parts, known)
    labels_csv = folder.csv(labels, f"{stem}_label_distribution")
    shares = labels.set_index(known.noun)[[f"{name}_fraction" for name in parts]]
    shares.columns = list(parts)
    distribution = folder.png(
        plots.bars(shares, f"{known.title}: label distribution per split", "share of the split"),
        f"{stem}_label_distribution",
    )
    counts = pixel_counts(parts)
    statistics = pixel_statistics(parts, counts)
    statistics_csv = folder.csv(statistics, f"{stem}_pixel_statistics")
    histogram = folder.png(
        plots.histogram(counts, f"{known.title}: pixel intensities", "pixel value (0-255)"), f"{stem}_pixel_histogram"
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
            f"{known.title} as {whose} split it: train = the first {sizes.train:,} official training "
            f"images, val = the last {sizes.val:,}, test = the first {sizes.test:,} official test images."
        ),
        samples_figure(folder, train, per_class, known),
        table(labels, labels_csv, {f"{name}_fraction": format_percent for name in parts}),
        Figure(distribution, f"Share of each {known.noun} in train, val and test."),
        means_figure(folder, train, per_class, known),
        table(statistics, statistics_csv, ratios),
        Figure(histogram, "Pixel intensity distribution per split (log scale: most pixels are black)."),
    ]


def samples_figure(folder: Folder, train: data.Images, per_class: np.ndarray, dataset: Dataset) -> Block:
    """``SAMPLES_PER_CLASS`` random training images of each class, or one line saying why there are none."""
    short = [name for name, count in zip(dataset.classes, per_class) if count < SAMPLES_PER_CLASS]
    if short:
        return Note(
            f"No sample images: the training split has fewer than {SAMPLES_PER_CLASS} images of {dataset.noun} "
            f"{', '.join(short)} ({len(train):,} images in all)."
        )
    picks = class_samples(train, classes=len(dataset.classes))
    rows = "rows 0-9" if dataset.digits else f"rows {', '.join(dataset.classes)}"
    figure = plots.image_grid(
        train.images[picks],
        [f"#{i}" for i in picks],
        [False] * len(picks),
        f"{SAMPLES_PER_CLASS} random training images of each {dataset.noun} ({rows}, seed {SAMPLE_SEED}; "
        "caption: index)",
        columns=SAMPLES_PER_CLASS,
    )
    return Figure(
        folder.png(figure, f"{file_stem(dataset.name)}_samples"), f"Random training images, one row per {dataset.noun}."
    )


def means_figure(folder: Folder, train: data.Images, per_class: np.ndarray, dataset: Dataset) -> Block:
    """The mean training image of each class, or one line saying which class has no image to average."""
    missing = [name for name, count in zip(dataset.classes, per_class) if count == 0]
    if missing:
        return Note(f"No mean images: the training split has no image of {dataset.noun} {', '.join(missing)}.")
    figure = plots.class_row(
        mean_images(train, len(dataset.classes)), dataset.classes, f"Mean training image of each {dataset.noun}"
    )
    return Figure(
        folder.png(figure, f"{file_stem(dataset.name)}_mean_images"),
        f"Mean image of each {dataset.noun} over the training split.",
    )


def write_inspection(out: Path, data_dir: Path, dataset: str = "mnist") -> Path:
    """The inspection of ``dataset`` as a page of its own in ``out``; returns the path of its index.html."""
    folder = Folder(out)
    section = Section("data", "The data", inspection_section(folder, data_dir, dataset))
    return folder.page(f"{DATASETS[dataset].title} inspection", [section])
