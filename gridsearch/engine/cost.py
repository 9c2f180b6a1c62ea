"""What a sweep costs: its epochs and training samples, those still to train, and a wall-time estimate
from the like epochs a database has already recorded (``plan``): same architecture, device, amp,
channels_last, threads, batch size and training split; ``run``'s ETA counts the same epochs."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from gridsearch.engine.progress import format_duration
from gridsearch.spec import halving
from gridsearch.spec.config import TrialConfig
from gridsearch.spec.params import SPEED_PARAMS, TRAINER_PARAMS
from gridsearch.spec.sweep import Sweep, Trial
from gridsearch.store.models import EpochRow, TrialRow
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import CLAIMABLE, TrialStatus

WAITING = frozenset({TrialStatus.PENDING, TrialStatus.RUNNING, TrialStatus.INTERRUPTED})
"""Trials a run has yet to start or finish (a stopped one may be done for good, in a finished halving sweep)."""


@dataclass(frozen=True)
class Setting:
    """What an epoch's wall time depends on, besides the device and the training split: only epochs recorded
    with the same setting predict another's."""

    architecture: str
    amp: str
    channels_last: bool
    threads: int
    batch_size: int

    @classmethod
    def of(cls, architecture: str, params: Mapping[str, Any], threads: int) -> Setting:
        """The setting of a trial of ``architecture`` with ``params`` (defaults filled in) on ``threads``."""

        amp = params.get("amp", SPEED_PARAMS["amp"].default)
        channels_last = params.get("channels_last", SPEED_PARAMS["channels_last"].default)
        batch_size = params.get("batch_size", TRAINER_PARAMS["batch_size"].default)
        return cls(architecture, str(amp), bool(channels_last), threads, int(batch_size))

    @classmethod
    def of_config(cls, config: TrialConfig) -> Setting:
        return cls.of(config["architecture"], config["params"], config["threads"])

    def __str__(self) -> str:
        """E.g. ``lenet53 with bf16 and channels_last at batch 86 on 1 thread``."""
        speed = " and ".join(
            ([self.amp] if self.amp != "off" else []) + (["channels_last"] if self.channels_last else [])
        )
        threads = f"{self.threads} thread{'' if self.threads == 1 else 's'}"
        return f"{self.architecture}{f' with {speed}' if speed else ''} at batch {self.batch_size:,} on {threads}"


@dataclass(frozen=True)
class Cost:
    """A sweep's epochs in all (successive halving: at most) and still to train, by setting."""

    epochs: int
    train_size: int
    to_do: dict[Setting, int]

    @property
    def samples(self) -> int:
        """Training samples in all: epochs x the training split's images."""
        return self.epochs * self.train_size

    @property
    def epochs_to_do(self) -> int:
        return sum(self.to_do.values())


def sweep_cost(sweep: Sweep, trials: Sequence[Trial], rows: Mapping[str, TrialRow], complete: bool = False) -> Cost:
    """The cost of ``sweep`` (its ``trials``) given the stored ``rows`` of those already known. A failed trial
    counts as done (``--retry-failed`` makes it pending again). ``complete``: the sweep has selected its best
    trial, so a successive-halving sweep whose trials have all run has nothing left to train."""
    unique = list({trial.key: trial for trial in trials}.values())

    def left(trial: Trial) -> int:
        row = rows.get(trial.key)
        if row is None:
            return int(trial.params["epochs"])
        return max(0, int(trial.params["epochs"]) - row.epochs_run) if row.status in CLAIMABLE else 0

    search = sweep.search
    if search.asks:  # its points are proposed as it goes: every one it may propose, to its end
        epochs = int(sweep.params.get("epochs", TRAINER_PARAMS["epochs"].default))
        trained = sum(min(row.epochs_run, epochs) for row in rows.values())
        planned = len(sweep) * epochs
        shares = Counter(Setting.of(name, sweep.params, sweep.threads) for name in sweep.architectures)
        remaining = 0 if complete else max(0, planned - trained)
        return Cost(planned, sweep.dataset.train_size, _shared(remaining, shares))
    if not search.describes_rungs:
        to_do: Counter[Setting] = Counter()
        for trial in unique:
            to_do[Setting.of(trial.architecture, trial.params, trial.threads)] += left(trial)
        return Cost(sum(int(t.params["epochs"]) for t in unique), sweep.dataset.train_size, dict(to_do))
    planned = sum(planned_rung_epochs(sweep, len(unique)))
    budgets = search.rung_epochs or []
    waiting = any(t.key not in rows or rows[t.key].status in WAITING for t in unique)
    trained = sum(min(rows[t.key].epochs_run, budgets[-1]) for t in unique if t.key in rows)
    remaining = 0 if complete and not waiting else max(0, planned - trained)
    shares = Counter(Setting.of(t.architecture, t.params, t.threads) for t in unique)
    return Cost(planned, sweep.dataset.train_size, _shared(remaining, shares))


def planned_rung_epochs(sweep: Sweep, trials: int) -> list[int]:
    """Epochs each rung of a search with rungs trains at most, over ``trials`` trials: successive halving's
    rungs, or every Hyperband bracket's rungs in turn (a trial shared by brackets counted in each)."""
    search = sweep.search
    if search.strategy != "hyperband":
        return halving.planned_epochs(trials, search.factor, search.rung_epochs or [])
    planned = []
    for bracket in search.brackets:
        sizes = bracket.sizes(search.factor, trials)
        planned += [
            size * (budget - previous) for size, budget, previous in zip(sizes, bracket.budgets, [0, *bracket.budgets])
        ]
    return planned


def _shared(epochs: int, trials: Counter[Setting]) -> dict[Setting, int]:
    """``epochs`` shared out among settings by their trial counts."""
    total = sum(trials.values()) or 1
    return {name: round(epochs * count / total) for name, count in trials.items()}


def seconds_per_epoch(storage: Storage, setting: Setting, train_size: int, device: str) -> tuple[float, int] | None:
    """The median seconds of the epochs recorded for trials of ``setting`` on ``train_size`` training images on
    ``device``, and how many there are; None if there are none."""
    where = (TrialRow.architecture == setting.architecture, TrialRow.device == device)
    with storage.session() as session:
        keys = {
            key
            for key, config in session.execute(select(TrialRow.key, TrialRow.config).where(*where))
            if config["dataset"]["train_size"] == train_size and Setting.of_config(config) == setting
        }
        seconds = [
            value
            for key, value in session.execute(
                select(EpochRow.trial_key, EpochRow.seconds)
                .join(TrialRow, TrialRow.key == EpochRow.trial_key)
                .where(*where)
            )
            if key in keys and value is not None
        ]
    return (statistics.median(seconds), len(seconds)) if seconds else None


def estimate(storage: Storage, cost: Cost, device: str, workers: int | None) -> str:
    """One line: the wall time of the epochs still to train, from the median recorded epoch of each setting on
    this split and device, or what it has nothing to go on for."""
    if not cost.epochs_to_do:
        return "estimate: nothing left to train"
    seconds, basis, missing = 0.0, [], []
    for setting, epochs in cost.to_do.items():
        if not epochs:
            continue
        known = seconds_per_epoch(storage, setting, cost.train_size, device)
        if known is None:
            missing.append(str(setting))
            continue
        median, count = known
        seconds += median * epochs
        basis.append(f"{median:.2f} s per epoch of {setting} (median of {count:,} recorded)")
    split = f"on {cost.train_size:,} training images on {device}"
    if missing:
        return (
            f"estimate: nothing to go on: no epochs of {'; '.join(missing)} {split} are recorded in this database"
            " (run a few trials, then plan again)"
        )
    lanes = f", {workers} workers" if workers and workers > 1 else ""
    return (
        f"estimate: {format_duration(seconds / (workers or 1))} for {cost.epochs_to_do:,} epochs{lanes}, at "
        f"{'; '.join(basis)} {split}"
    )
