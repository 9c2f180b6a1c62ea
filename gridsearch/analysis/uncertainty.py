"""How sure is the winner inside one sweep: each trial's val accuracy with a binomial interval, the winner's
margin over the runner-up and tests of it, and with several seeds each grid point's mean, sd and t interval.

Val accuracies are counts out of the sweep's ``val_size`` images, so each gets a Wilson score interval. Only
test predictions are stored per image, so the paired test (McNemar's, exact) runs on the test set where both
trials have a test evaluation; the val margin gets the unpaired comparison, Fisher's exact test on the 2x2
table of right and wrong val images (it treats the two as independent samples: on the same images it is
conservative).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binomtest, fisher_exact, norm
from scipy.stats import t as student_t

from gridsearch.analysis.effects import hashable
from gridsearch.analysis.significance import mcnemar_exact
from gridsearch.analysis.webpage import Block, Folder, Format, Group, Note, Paragraph, table
from gridsearch.store import views
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import SCORED, TrialStatus, format_percent, metric

CONFIDENCE = 0.95


def wilson_interval(correct: int, total: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion of ``correct`` out of ``total``."""
    interval = binomtest(correct, total).proportion_ci(confidence, method="wilson")
    return float(interval.low), float(interval.high)


def wilson_intervals(
    correct: np.ndarray, total: np.ndarray, confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`wilson_interval` of many proportions at once (its closed form, on arrays)."""
    z = norm.ppf((1 + confidence) / 2)
    n = np.asarray(total, dtype=float)
    p = np.asarray(correct, dtype=float) / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def t_interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` (NaNs with fewer than two)."""
    if len(values) < 2:
        return float("nan"), float("nan")
    half = student_t.ppf((1 + confidence) / 2, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values))
    mean = float(np.mean(values))
    return mean - half, mean + half


@dataclass(frozen=True)
class PairedTest:
    """McNemar's exact test of two trials on the same ``samples`` test images."""

    samples: int
    only_winner_right: int
    only_runner_up_right: int
    p_value: float


@dataclass(frozen=True)
class Margin:
    """The winner's lead over the runner-up on ``val_size`` validation images."""

    winner: str
    runner_up: str
    val_size: int
    winner_correct: int
    runner_up_correct: int
    unpaired_p: float
    """Fisher's exact two-sided p on [[winner right, wrong], [runner-up right, wrong]]."""
    paired: PairedTest | None
    """On the test set, when both have a test evaluation."""

    @property
    def images(self) -> int:
        return self.winner_correct - self.runner_up_correct

    @property
    def points(self) -> float:
        """The lead in percentage points."""
        return 100 * self.images / self.val_size


def val_margin(
    winner: str, runner_up: str, val_size: int, winner_correct: int, runner_up_correct: int, paired: PairedTest | None
) -> Margin:
    """The margin and Fisher's exact test of two val counts out of ``val_size``."""
    counts = [[winner_correct, val_size - winner_correct], [runner_up_correct, val_size - runner_up_correct]]
    p_value = float(fisher_exact(counts).pvalue)
    return Margin(winner, runner_up, val_size, winner_correct, runner_up_correct, p_value, paired)


def paired_test(a_predicted: np.ndarray, b_predicted: np.ndarray, labels: np.ndarray) -> PairedTest:
    """McNemar's exact test on the images both predicted (the first ``min`` of them)."""
    n = min(len(a_predicted), len(b_predicted), len(labels))
    only_a, only_b, p_value = mcnemar_exact(a_predicted[:n] == labels[:n], b_predicted[:n] == labels[:n])
    return PairedTest(n, only_a, only_b, p_value)


def trial_intervals(trials: pd.DataFrame, val_sizes: dict[str, int]) -> pd.DataFrame:
    """The scored ``trials`` (a trials table) with their val images right, out of ``val_size``, and its Wilson
    interval."""
    scored = trials[trials["status"].isin(SCORED) & trials["val_accuracy"].notna()].reset_index(drop=True)
    size = scored["key"].map(val_sizes).astype(int)
    correct = (scored["val_accuracy"] * size).round().astype(int)
    low, high = wilson_intervals(correct.to_numpy(), size.to_numpy())
    columns = [c for c in scored.columns if c not in ("error", "val_loss", "train_seconds", "epochs_run")]
    return scored[columns].assign(val_correct=correct, val_size=size, ci95_low=low, ci95_high=high)


def seed_summary(trials: pd.DataFrame, params: list[str], sweep: str) -> pd.DataFrame:
    """Per grid point of the done ``trials``: seeds, mean and sd of val accuracy over seeds, a t interval."""
    done = trials[trials["status"] == TrialStatus.DONE]
    done = done.assign(**{name: done[name].map(hashable) for name in params})
    records = []
    for point, group in done.groupby(params, dropna=False, sort=False) if params else [((), done)]:
        values = group["val_accuracy"].to_numpy(dtype=float)
        low, high = t_interval(values)
        point = point if isinstance(point, tuple) else (point,)
        records.append(
            {
                "sweep": sweep,
                **dict(zip(params, point)),
                "seeds": len(values),
                "mean": float(values.mean()),
                "sd": float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"),
                "ci95_low": low,
                "ci95_high": high,
            }
        )
    return pd.DataFrame.from_records(records)


@dataclass(frozen=True)
class SweepUncertainty:
    """A sweep's trials with intervals, its winner's margin (None with fewer than two done trials) and, with
    several seeds, its grid points over seeds (else None)."""

    intervals: pd.DataFrame
    margin: Margin | None
    seeds: pd.DataFrame | None


def sweep_uncertainty(storage: Storage, sweep: str, labels: np.ndarray | None = None) -> SweepUncertainty:
    """The uncertainty of ``sweep``'s results (the runner-up: the best done trial after the selected one, ranked as
    selection ranks them); ``labels`` (the official test labels, at least as many as the
    sweep tested) let the margin have its paired test when both trials are tested."""
    row = storage.sweep(sweep)
    rows = {t.key: t for t in storage.trials(sweep)}
    trials = views.trials_table(storage, sweep)
    if trials.empty:
        return SweepUncertainty(trials, None, None)
    intervals = trial_intervals(trials, {key: t.config["dataset"]["val_size"] for key, t in rows.items()})
    select = metric(row.select_metric)
    done = sorted(
        (t for t in rows.values() if t.status == TrialStatus.DONE and getattr(t, select.name) is not None),
        key=lambda t: (select.rank(getattr(t, select.name)), t.val_loss),
    )
    winner, others = row.selected_trial, [t.key for t in done if t.key != row.selected_trial]
    margin = None
    if winner is not None and others and len(others) < len(done):
        keys = (winner, others[0])
        counts = intervals.set_index("key").loc[list(keys)]
        tests = [storage.evaluation(key, "test") for key in keys]
        paired = None
        if labels is not None and tests[0] is not None and tests[1] is not None:
            paired = paired_test(np.array(tests[0].predictions), np.array(tests[1].predictions), labels)
        correct = counts["val_correct"].tolist()
        margin = val_margin(*keys, int(counts["val_size"].iloc[0]), correct[0], correct[1], paired)
    several = len({t.seed for t in rows.values()}) > 1
    return SweepUncertainty(intervals, margin, seed_summary(trials, row.gridded_params, sweep) if several else None)


def margin_text(margin: Margin) -> str:
    """The margin and its tests, in words."""
    lead = (
        f"The winner {margin.winner} gets {margin.winner_correct:,} of {margin.val_size:,} validation images right, "
        f"the runner-up {margin.runner_up} {margin.runner_up_correct:,}: a margin of {margin.images:,} images, "
        f"{margin.points:.2f} percentage points. Unpaired two-proportion comparison (Fisher's exact test, which "
        f"treats the two as independent samples): p = {margin.unpaired_p:.3g}."
    )
    if margin.paired is None:
        return lead + (
            " A paired test needs both on the same images: only test predictions are stored per image, and "
            "only the winner was tested."
        )
    paired = margin.paired
    return lead + (
        f" Paired on the first {paired.samples:,} test images (McNemar's exact test): only the winner right on "
        f"{paired.only_winner_right}, only the runner-up on {paired.only_runner_up_right}, p = {paired.p_value:.3g}."
    )


def uncertainty_section(folder: Folder, storage: Storage, sweep: str, labels: np.ndarray | None) -> Group:
    """One sweep's trials with intervals, the winner's margin, and its seeds' spread."""
    found = sweep_uncertainty(storage, sweep, labels)
    if found.intervals.empty:
        return Group(sweep, [Note("No scored trials yet: nothing to show.")])
    percent: dict[str, Format] = dict.fromkeys(("val_accuracy", "ci95_low", "ci95_high"), format_percent)
    blocks: list[Block] = [
        table(found.intervals, folder.csv(found.intervals, f"intervals_{sweep}"), percent),
        Note(
            "val correct: validation images right, out of val size; ci95: the Wilson score 95% interval of the val "
            "accuracy (binomial, the images as the sample)."
        ),
    ]
    if found.margin is None:
        blocks.append(Note("Fewer than two done trials: no runner-up to compare the winner with."))
    else:
        blocks.append(Paragraph(margin_text(found.margin)))
    if found.seeds is not None:
        seeds = found.seeds.drop(columns="sweep")
        formats: dict[str, Format] = dict.fromkeys(("mean", "sd", "ci95_low", "ci95_high"), format_percent)
        blocks += [
            table(seeds, folder.csv(found.seeds, f"seed_spread_{sweep}"), formats),
            Note(
                "Val accuracy of each grid point over its seeds: mean, sd, and the Student-t 95% interval of the mean."
            ),
        ]
    else:
        blocks.append(Note("One seed: the spread across seeds is unknown; list several under seeds: to measure it."))
    return Group(sweep, blocks)
