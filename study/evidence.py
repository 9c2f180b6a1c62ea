"""What ``docs/study/README.md`` reads beyond each model's results, computed from the study's database (and its
weights and test images where a model has to be run): the selection check, the fp32 check, how far the
transformers move the digits, the seed study's ranking against our intervals, the test images every model gets
wrong and what the robustness suite shows for each family of models."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from gridsearch.analysis.learned import displacement
from gridsearch.analysis.trained_models import BestModel, WeightsUnavailable, bf16, load_model, score
from gridsearch.analysis.uncertainty import wilson_intervals
from gridsearch.engine.selection import select_best
from gridsearch.errors import UserError
from gridsearch.store.models import TrialRow
from gridsearch.store.storage import Storage
from gridsearch.training import data

CONFIDENCE = 0.95


class SelectionBeaten(SystemExit):
    """The study's selected LeNet-5-3 is not the best trial of its sweeps at the final budget."""


@dataclass(frozen=True)
class Spread:
    """Mean and sample sd of a few seeds' accuracies (%), with the Student-t 95% interval of the mean."""

    n: int
    mean: float
    sd: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
        low, high = stats.t.interval(CONFIDENCE, len(values) - 1, loc=mean, scale=sd / np.sqrt(len(values)))
        return cls(len(values), mean, sd, float(low), float(high))

    def overlaps(self, other: Spread) -> bool:
        return self.low <= other.high and other.low <= self.high


def final_budget_trials(storage: Storage, sweeps: Sequence[str], epochs: int) -> list[TrialRow]:
    """The done trials of ``sweeps`` (those present) configured for ``epochs`` epochs, each once."""
    known = set(storage.sweep_names())
    found = {t.key: t for name in sweeps if name in known for t in storage.trials(name)}
    return [t for t in found.values() if t.status == "done" and t.config["params"]["epochs"] == epochs]


def check_selection(storage: Storage, sweep: str, others: Sequence[str]) -> TrialRow:
    """The selected trial of ``sweep``, checked to be the best (by validation accuracy, ties to the lower val loss,
    as selection ranks them) of every done trial of ``sweep`` and ``others`` trained to ``sweep``'s final budget;
    :class:`SelectionBeaten` (an ``error:`` line) if one beats it."""
    key = storage.selected_trial(sweep)
    selected = storage.trial(key) if key else None
    if selected is None:
        raise SelectionBeaten(f"error: sweep {sweep} has no selected trial: the study is not finished")
    epochs = selected.config["params"]["epochs"]
    candidates = final_budget_trials(storage, [sweep, *others], epochs)
    best = select_best(candidates, "val_accuracy")
    if best is None or best.key != selected.key:
        raise SelectionBeaten(
            f"error: {sweep} selected trial {selected.key} (val {100 * (selected.val_accuracy or 0):.2f}%), but trial "
            f"{best.key if best else '?'} of {', '.join([sweep, *others])} trained to the same {epochs} epochs has "
            f"val {100 * (best.val_accuracy or 0) if best else 0:.2f}%: the selection is beaten within its sweeps"
        )
    return selected


def seed_accuracies(storage: Storage, sweep: str) -> list[float]:
    """Test accuracy (%) of each trial of ``sweep`` that has a test evaluation (a replicate sweep's seeds)."""
    if sweep not in storage.sweep_names():
        return []
    found = [storage.evaluation(t.key, "test") for t in storage.trials(sweep)]
    return [100 * e.accuracy for e in found if e is not None]


def seed_val_accuracies(storage: Storage, sweep: str) -> list[float]:
    """Validation accuracy (%) of each done trial of ``sweep``."""
    if sweep not in storage.sweep_names():
        return []
    return [100 * t.val_accuracy for t in storage.trials(sweep) if t.status == "done" and t.val_accuracy is not None]


@dataclass(frozen=True)
class PrecisionCheck:
    """The same configuration under the same seeds trained with bfloat16 autocast and in float32: test accuracy
    spreads (%) and Welch's t-test of the difference of the means."""

    bf16: Spread
    fp32: Spread
    difference: float
    p: float

    @property
    def same(self) -> bool:
        return self.bf16.overlaps(self.fp32)


def precision_check(storage: Storage, seeds_sweep: str, fp32_sweep: str) -> PrecisionCheck | None:
    """bf16 against fp32 over the seeds of ``seeds_sweep`` and ``fp32_sweep``; None unless both have 2+ seeds."""
    low, full = seed_accuracies(storage, seeds_sweep), seed_accuracies(storage, fp32_sweep)
    if len(low) < 2 or len(full) < 2:
        return None
    test = stats.ttest_ind(full, low, equal_var=False)
    return PrecisionCheck(Spread.of(low), Spread.of(full), float(np.mean(full) - np.mean(low)), float(test.pvalue))


@dataclass(frozen=True)
class Ranked:
    """One of the seed study's models: its test accuracy there and our spread over seeds (%)."""

    role: str
    title: str
    seed: float
    ours: Spread


@dataclass(frozen=True)
class Step:
    """Two neighbours of the seed study's ranking (``better`` above ``worse`` there) and what ours says."""

    better: Ranked
    worse: Ranked

    @property
    def same_order(self) -> bool:
        return self.better.ours.mean > self.worse.ours.mean

    @property
    def separated(self) -> bool:
        """Whether our intervals do not overlap, so that our seeds tell the two apart."""
        return not self.better.ours.overlaps(self.worse.ours)


def ranking_steps(ranked: list[Ranked]) -> list[Step]:
    """The seed study's ranking (best first) as neighbouring pairs."""
    order = sorted(ranked, key=lambda r: -r.seed)
    return [Step(a, b) for a, b in itertools.pairwise(order)]


@dataclass(frozen=True)
class Hard:
    """Test images every model of a set gets wrong: their indices, labels and each model's answers, and how many
    a committee of all of them (probabilities averaged) still gets wrong."""

    dataset: str
    models: list[str]
    indices: list[int]
    labels: list[int]
    answers: dict[str, list[int]]
    committee_errors: int | None
    samples: int


def hard_images(models: list[BestModel], labels: np.ndarray) -> tuple[list[int], dict[str, list[int]]]:
    """The test images every one of ``models`` gets wrong (stored predictions) and each model's answer on them."""
    n = min(m.test.samples for m in models)
    wrong = np.all([m.predictions[:n] != labels[:n] for m in models], axis=0)
    indices = np.flatnonzero(wrong).tolist()
    return indices, {m.name: [int(m.predictions[i]) for i in indices] for m in models}


def committee_errors(models: list[BestModel], runs: Path, data_dir: Path) -> int | None:
    """Errors of the committee of every one of ``models`` (their softmax probabilities averaged, each computed as
    its test evaluation was) on their common test images; None without weights or images."""
    n = min(m.test.samples for m in models)
    try:
        test = data.test_split(data_dir, n, models[0].dataset.name)
        networks = [(load_model(m.trial, runs), bf16(m.trial)) for m in models]
    except (WeightsUnavailable, UserError):  # the README says the committee was not run
        return None
    averaged = sum(score(net, test.images, test.labels, b).probabilities for net, b in networks)
    return int((averaged.argmax(1) != test.labels).sum())  # type: ignore[union-attr]


def transformer_displacement(model: BestModel, runs: Path, data_dir: Path) -> float | None:
    """Mean pixel displacement of ``model``'s spatial transformer on its test images (None without one)."""
    test = data.test_split(data_dir, model.test.samples, model.dataset.name)
    return displacement(load_model(model.trial, runs), test.images, bf16(model.trial))


def robustness_intervals(frame: pd.DataFrame, columns: dict[str, str], samples: dict[str, int]) -> pd.DataFrame:
    """``frame`` (accuracy % by condition and model label) with each cell written with its Wilson 95% interval:
    ``97.05 [96.71, 97.36]``; ``samples[label]`` images per condition (other sets: their own sizes)."""
    sizes = {"usps": 2007, "sklearn_digits": 1797}
    shown = pd.DataFrame(index=frame.index)
    for label in frame.columns:
        cells = []
        for condition, value in frame[label].items():
            if value != value:  # not run
                cells.append("-")
                continue
            n = sizes.get(str(condition), samples[label])
            low, high = wilson_intervals(np.array([round(value * n / 100)]), np.array([n]))
            cells.append(f"{value:.2f} [{100 * low[0]:.2f}, {100 * high[0]:.2f}]")
        shown[columns.get(label, label)] = cells
    return shown


@dataclass(frozen=True)
class Family:
    """What the robustness suite shows for a family of models against the plain reference: the condition each
    gains most on, and the one each loses most on (accuracy %, reference then family)."""

    name: str
    gain: tuple[str, float, float]
    loss: tuple[str, float, float]

    @property
    def trades(self) -> bool:
        """Whether the family gains on one condition and loses on another (a trade, not a plain improvement)."""
        return self.gain[2] > self.gain[1] and self.loss[2] < self.loss[1]


def family(name: str, frame: pd.DataFrame, reference: str, members: list[str]) -> Family:
    """The largest gain and loss of ``members``' mean accuracy against ``reference`` over ``frame``'s conditions
    (the clean row left out)."""
    rows = frame.drop(index=[c for c in frame.index if c == "clean"])
    mean = rows[members].mean(axis=1)
    change = mean - rows[reference]
    gain, loss = change.idxmax(), change.idxmin()
    return Family(
        name,
        (str(gain), float(rows.loc[gain, reference]), float(mean[gain])),
        (str(loss), float(rows.loc[loss, reference]), float(mean[loss])),
    )


def weakest(frame: pd.DataFrame, model: str, count: int = 3) -> list[tuple[str, float]]:
    """The ``count`` conditions of ``frame`` (the clean row left out) where ``model`` scores lowest: (name, %)."""
    column = frame[model].drop(index=[c for c in frame.index if c == "clean"]).dropna()
    return [(str(name), float(value)) for name, value in column.nsmallest(count).items()]
