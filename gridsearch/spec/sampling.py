"""Random and quasi-random search: distributions of a param's values and the points drawn from them.

A ``search: {strategy: random | sobol, trials: N, seed: S}`` sweep (or halving with ``sample: random |
sobol``) draws ``N`` points of its grid mapping, whose values are lists (a uniform choice) or
distributions (``{uniform: [a, b]}``, ``{loguniform: [a, b]}``, ``{int: [a, b]}``). Each point is a
row of ``N`` unit-cube coordinates, one per gridded name in file order, drawn deterministically from
``S``: numpy's ``default_rng(S).random((N, d))`` for random, scipy's scrambled ``qmc.Sobol(d, seed=S)``
for sobol. A drawn float is rounded to ``SIGNIFICANT_DIGITS`` significant digits, so the value a trial
shows and the one its key hashes are the same short number.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SAMPLERS = ("random", "sobol")
DISTRIBUTIONS = ("uniform", "loguniform", "int")
SIGNIFICANT_DIGITS = 4
MAX_SAMPLED_TRIALS = 100_000
"""``trials`` may not exceed this (``--max-trials`` refuses large sweeps after drawing)."""


@dataclass(frozen=True)
class Distribution:
    """A param's values between ``low`` and ``high`` (both included): uniform, uniform in log, or integers."""

    kind: str
    low: float
    high: float

    def value(self, u: float) -> float | int:
        """The value at unit coordinate ``u`` in [0, 1)."""
        if self.kind == "int":
            span = int(self.high) - int(self.low)
            return int(self.low) + min(int(u * (span + 1)), span)
        if self.kind == "loguniform":
            drawn = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            drawn = self.low + u * (self.high - self.low)
        return self.rounded(drawn)

    def rounded(self, number: float) -> float | int:
        """A value proposed for this distribution as a drawn one is stored: an integer, or the number
        rounded to ``SIGNIFICANT_DIGITS`` significant digits, within ``[low, high]``."""
        if self.kind == "int":
            return int(min(max(round(number), self.low), self.high))
        return min(max(round_significant(number), self.low), self.high)


Dimension = Distribution | list[Any]
"""One gridded name's values: a distribution, or a list to choose from uniformly."""


def round_significant(number: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """``number`` rounded to ``digits`` significant digits: ``round_significant(0.0123456) == 0.01235``."""
    return float(f"{number:.{digits}g}")


def choose(values: Sequence[Any], u: float) -> Any:
    """The value of ``values`` at unit coordinate ``u`` (each with probability 1 / len(values))."""
    return values[min(int(u * len(values)), len(values) - 1)]


def unit_points(sampler: str, trials: int, dimensions: int, seed: int) -> np.ndarray:
    """``trials`` points of the unit cube ``[0, 1) ** dimensions`` drawn by ``sampler`` from ``seed``."""
    if sampler == "random":
        return np.random.default_rng(seed).random((trials, dimensions))
    if sampler == "sobol":
        with warnings.catch_warnings():  # balance is best at powers of 2; any count is still valid
            warnings.filterwarnings("ignore", message=".*balance properties of Sobol", category=UserWarning)
            from scipy.stats import qmc  # here: scipy.stats takes half a second to import

            return qmc.Sobol(d=dimensions, scramble=True, seed=seed).random(trials)
    raise ValueError(f"unknown sampler {sampler!r} (known: {', '.join(SAMPLERS)})")


def draw_points(space: Mapping[str, Dimension], sampler: str, trials: int, seed: int) -> list[dict[str, Any]]:
    """``trials`` points of ``space`` (name -> distribution or list of choices), in drawing order."""
    names = list(space)
    coordinates = unit_points(sampler, trials, len(names), seed)
    points = []
    for row in coordinates:
        point = {}
        for name, u in zip(names, row.tolist()):
            dimension = space[name]
            point[name] = dimension.value(u) if isinstance(dimension, Distribution) else choose(dimension, u)
        points.append(point)
    return points
