"""Is the difference real? Paired tests between two models' predictions on the same test images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

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
