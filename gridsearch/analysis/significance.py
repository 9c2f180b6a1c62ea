"""Is the difference real? Paired tests between two models' predictions on the same test images."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from gridsearch.analysis.trained_models import BestModel
from gridsearch.analysis.webpage import Block, Folder, Format, Note, Paragraph, table
from gridsearch.vocabulary import format_percent

BOOTSTRAP_ROUNDS = 2000
BOOTSTRAP_SEED = 0
CHUNK = 250


@dataclass(frozen=True)
class Comparison:
    """Model A against model B on the same ``samples`` test images."""

    samples: int
    only_a_right: int
    """Images A classifies correctly and B does not (McNemar's b)."""
    only_b_right: int
    """Images B classifies correctly and A does not (McNemar's c)."""
    difference: float
    """Accuracy of A minus accuracy of B."""
    p_value: float
    """McNemar's exact two-sided p: binomial test of b out of b + c discordant images at 1/2."""
    low: float
    high: float
    """Bootstrap 95% interval of the accuracy difference (percentile, images resampled in pairs)."""


def mcnemar_exact(a_right: np.ndarray, b_right: np.ndarray) -> tuple[int, int, float]:
    """(b, c, two-sided exact p) for boolean per-image correctness of two models."""
    only_a = int(np.sum(a_right & ~b_right))
    only_b = int(np.sum(~a_right & b_right))
    if only_a + only_b == 0:
        return only_a, only_b, 1.0
    return only_a, only_b, float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def bootstrap_interval(
    a_right: np.ndarray, b_right: np.ndarray, rounds: int = BOOTSTRAP_ROUNDS, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile 95% interval of accuracy(A) - accuracy(B), resampling images with replacement (seeded)."""
    difference = a_right.astype(np.int8) - b_right.astype(np.int8)
    generator = np.random.default_rng(seed)
    means = []
    for done in range(0, rounds, CHUNK):
        index = generator.integers(0, len(difference), size=(min(CHUNK, rounds - done), len(difference)))
        means.append(difference[index].mean(axis=1))
    low, high = np.percentile(np.concatenate(means), [2.5, 97.5])
    return float(low), float(high)


def compare(a_predicted: np.ndarray, b_predicted: np.ndarray, labels: np.ndarray) -> Comparison:
    """McNemar's exact test and the bootstrap interval for two models' predicted labels."""
    a_right, b_right = a_predicted == labels, b_predicted == labels
    only_a, only_b, p_value = mcnemar_exact(a_right, b_right)
    low, high = bootstrap_interval(a_right, b_right)
    return Comparison(len(labels), only_a, only_b, float(a_right.mean() - b_right.mean()), p_value, low, high)


def comparable_pairs(models: list[BestModel]) -> list[tuple[BestModel, BestModel]]:
    """Each pair of ``models`` tested on the same dataset's images (models of different datasets are not compared)."""
    return [(a, b) for a, b in combinations(models, 2) if a.dataset == b.dataset]


def significance_table(models: list[BestModel], labels: dict[str, np.ndarray]) -> pd.DataFrame:
    """McNemar's exact test and a bootstrap interval for each pair of best models of one dataset, on their common
    images (``labels``: the official test labels of each dataset, by name)."""
    records = []
    for a, b in comparable_pairs(models):
        n = min(a.test.samples, b.test.samples)
        truth = labels[a.dataset.name][:n]
        result = compare(a.predictions[:n], b.predictions[:n], truth)
        records.append(
            {
                "model_a": a.name,
                "model_b": b.name,
                "samples": n,
                "accuracy_a": float(np.mean(a.predictions[:n] == truth)),
                "accuracy_b": float(np.mean(b.predictions[:n] == truth)),
                "difference": result.difference,
                "only_a_right": result.only_a_right,
                "only_b_right": result.only_b_right,
                "mcnemar_p": result.p_value,
                "ci95_low": result.low,
                "ci95_high": result.high,
            }
        )
    return pd.DataFrame.from_records(records)


def signed_percent(value: float) -> str:
    return f"{value:+.2%}"


def significance_section(folder: Folder, models: list[BestModel], labels: dict[str, np.ndarray]) -> list[Block]:
    """Pairwise tests between the best models of each dataset on its test ``labels``."""
    blocks: list[Block] = [
        Paragraph(
            "McNemar's exact test asks whether two models' errors differ more than chance would "
            "make them: of the test images exactly one model gets right (only_a_right + "
            "only_b_right), a fair coin would give each model half; p is the two-sided binomial "
            f"probability. The 95% interval of the accuracy difference comes from {BOOTSTRAP_ROUNDS:,} "
            f"bootstrap resamples of the test images (seed {BOOTSTRAP_SEED})."
        )
    ]
    if len({m.test.samples for m in models}) > 1:
        blocks.append(
            Note(
                "The sweeps were tested on different numbers of images; each pair is compared on "
                "the first `samples` test images, which both models saw, so these accuracies can "
                "differ from the results table."
            )
        )
    if len({m.dataset for m in models}) > 1:
        blocks.append(
            Note(
                "The sweeps trained on different datasets ("
                + ", ".join(sorted({m.dataset.title for m in models}))
                + "): only models of the same dataset are compared, on that dataset's test images."
            )
        )
    if comparable_pairs(models):
        pairs = significance_table(models, labels)
        formats: dict[str, Format] = {"accuracy_a": format_percent, "accuracy_b": format_percent}
        formats |= {column: signed_percent for column in ("difference", "ci95_low", "ci95_high")}
        formats["mcnemar_p"] = "{:.3g}".format
        blocks.append(table(pairs, folder.csv(pairs, "significance"), formats))
    elif len(models) > 1:
        blocks.append(Note("No two sweeps of this report trained on the same dataset: no pair of models to compare."))
    else:
        blocks.append(Note("Only one sweep in this report: no pair of models to compare."))
    return blocks
