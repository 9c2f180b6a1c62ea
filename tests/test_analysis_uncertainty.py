"""Uncertainty inside a sweep, on known inputs: the Wilson interval against its closed form, Fisher's exact test
against enumerating every table with the same margins, the t interval against scipy's one-sample t test."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm, ttest_1samp

from gridsearch.analysis.uncertainty import (
    paired_test,
    seed_summary,
    t_interval,
    trial_intervals,
    val_margin,
    wilson_interval,
    wilson_intervals,
)


def wilson_closed_form(k: int, n: int) -> tuple[float, float]:
    z = norm.ppf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def fisher_by_enumeration(a: int, b: int, n: int) -> float:
    """Two-sided Fisher p of [[a, n-a], [b, n-b]]: the hypergeometric probability of every table with the same
    margins that is no more likely than the observed one."""
    right = a + b

    def probability(x: int) -> float:
        return math.comb(n, x) * math.comb(n, right - x) / math.comb(2 * n, right)

    observed = probability(a)
    support = range(max(0, right - n), min(n, right) + 1)
    return sum(probability(x) for x in support if probability(x) <= observed * (1 + 1e-7))


@pytest.mark.parametrize(("k", "n"), [(1974, 2000), (296, 300), (0, 50), (50, 50), (7, 13)])
def test_the_wilson_interval_is_the_closed_form(k, n):
    assert wilson_interval(k, n) == pytest.approx(wilson_closed_form(k, n), abs=1e-12)


def test_the_wilson_intervals_of_many_trials_at_once_are_each_ones_interval():
    cases = [(1974, 2000), (296, 300), (0, 50), (50, 50), (7, 13)]
    low, high = wilson_intervals(np.array([k for k, _ in cases]), np.array([n for _, n in cases]))
    expected = np.array([wilson_interval(k, n) for k, n in cases])
    assert np.column_stack([low, high]).ravel() == pytest.approx(expected.ravel(), abs=1e-12)


def test_the_winners_margin_in_images_points_and_fishers_exact_p():
    margin = val_margin("a", "b", 2000, 1974, 1962, None)
    assert (margin.images, margin.points) == (12, pytest.approx(0.6))
    assert margin.unpaired_p == pytest.approx(fisher_by_enumeration(1974, 1962, 2000), rel=1e-9)
    small = val_margin("a", "b", 20, 19, 12, None)
    assert small.unpaired_p == pytest.approx(fisher_by_enumeration(19, 12, 20), rel=1e-12)
    assert small.unpaired_p < 0.05 < margin.unpaired_p


def test_the_paired_test_counts_discordant_images_on_the_common_prefix():
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    a = np.array([0, 1, 2, 3, 4, 9, 9, 9, 9])  # right on 0-4
    b = np.array([0, 9, 9, 3, 4, 5, 9])  # right on 0, 3, 4, 5; seven images
    test = paired_test(a, b, labels)
    assert (test.samples, test.only_winner_right, test.only_runner_up_right) == (7, 2, 1)
    assert test.p_value == pytest.approx(1.0)  # 2 of 3 discordant: exact two-sided p = 1


def test_trial_intervals_count_images_from_float32_accuracies():
    trials = pd.DataFrame(
        {
            "key": ["a", "b", "c"],
            "lr": [0.1, 0.2, 0.3],
            "seed": [0, 0, 0],
            "status": ["done", "stopped", "failed"],
            "val_accuracy": [float(np.float32(0.987)), 0.5, None],
            "val_loss": [0.1, 0.2, None],
            "error": [None, None, "boom"],
        }
    )
    table = trial_intervals(trials, {"a": 2000, "b": 10, "c": 10})
    assert list(table["key"]) == ["a", "b"] and list(table["val_correct"]) == [1974, 5]
    assert (table.loc[0, "ci95_low"], table.loc[0, "ci95_high"]) == pytest.approx(wilson_closed_form(1974, 2000))


def test_seed_summary_mean_sd_and_t_interval_per_grid_point():
    values = {0.1: [0.90, 0.92, 0.95], 0.2: [0.80, 0.86]}
    trials = pd.DataFrame(
        [
            {"key": f"{lr}-{s}", "lr": lr, "seed": s, "status": "done", "val_accuracy": v}
            for lr, vs in values.items()
            for s, v in enumerate(vs)
        ]
        + [{"key": "x", "lr": 0.2, "seed": 9, "status": "failed", "val_accuracy": None}]
    )
    summary = seed_summary(trials, ["lr"], "s").set_index("lr")
    for lr, vs in values.items():
        row = summary.loc[lr]
        expected = ttest_1samp(vs, 0).confidence_interval(0.95)
        assert row["seeds"] == len(vs) and row["mean"] == pytest.approx(np.mean(vs))
        assert row["sd"] == pytest.approx(np.std(vs, ddof=1))
        assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((expected.low, expected.high), abs=1e-12)
    assert all(math.isnan(v) for v in t_interval(np.array([0.9])))
