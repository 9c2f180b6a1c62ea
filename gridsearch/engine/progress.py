"""Progress of a running sweep: a live rich display on a terminal, plain log lines otherwise; both with an
ETA from the epochs still to train and the seconds this run's like epochs took (same setting: see
``gridsearch.engine.cost.Setting``), so it moves during long trials."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Hashable, Mapping
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from gridsearch.store.records import EpochMetrics
from gridsearch.vocabulary import FINISHED, SCORED, STATUS_ORDER, TrialStatus, format_percent

ETA_WINDOW = 20
"""The ETA's seconds per epoch: the mean of this run's last this-many epochs."""


class SweepProgress:
    """Counts of trials by state plus the current epoch of each running trial (and the successive-halving
    rung being run).

    ``live=None`` picks the rich display when stderr is a terminal. ``epochs_to_do``: what the run has to
    train, by setting (``Cost.to_do``, see ``gridsearch.engine.cost``), counted down as epochs come in.
    """

    def __init__(
        self,
        sweep: str,
        statuses: dict[str, str],
        workers: int,
        live: bool | None = None,
        epochs_to_do: int | Mapping[Any, int] = 0,
    ):
        self.sweep = sweep
        self.statuses = dict(statuses)
        self.workers = workers
        self.to_do: dict[Hashable, int] = (
            dict(epochs_to_do) if isinstance(epochs_to_do, Mapping) else {None: epochs_to_do}
        )
        """Epochs still to train, by setting (``None``: one setting for all)."""
        self.epoch_seconds: dict[Hashable, list[float]] = {}
        """This run's seconds per epoch, by setting."""
        self.settings: dict[str, Hashable] = {}
        """Running trial -> its setting."""
        self.targets: dict[str, int] = {}
        """Running trial -> the epoch count it trains to."""
        self.reached: dict[str, int] = {}
        """Running trial -> the epochs it has trained so far."""
        self.console = Console(stderr=True)
        self.live = self.console.is_terminal if live is None else live
        self.trial_tasks: dict[str, TaskID] = {}
        self.labels: dict[str, str] = {}
        self.rung = ""
        if self.live:
            self.bars = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=self.console,
            )
            self.overall = self.bars.add_task(self._summary(), total=len(statuses), completed=self._finished())
            self.bars.start()
        else:
            self._log(self._summary())

    def _finished(self) -> int:
        return sum(status in FINISHED for status in self.statuses.values())

    def _summary(self) -> str:
        counts = Counter(self.statuses.values())
        waiting = (TrialStatus.PENDING, TrialStatus.INTERRUPTED)
        parts = [f"{counts[s]} {s}" for s in STATUS_ORDER if counts[s] and s not in waiting]
        parts.append(f"{sum(counts[s] for s in waiting)} pending")
        return f"{self.sweep}{self.rung}: " + " · ".join(parts)

    def _eta(self) -> str:
        """' · ETA 1m20s': the epochs still to train of each setting x this run's recent seconds per epoch of
        that setting, spread over the workers (no more than the trials left to run); '' after the last epoch
        and while a setting with epochs to train has none trained yet (nothing to go on)."""
        left = {setting: epochs for setting, epochs in self.to_do.items() if epochs}
        if not left or any(setting not in self.epoch_seconds for setting in left):
            return ""
        seconds = sum(
            sum(recent) / len(recent) * epochs
            for setting, epochs in left.items()
            for recent in [self.epoch_seconds[setting][-ETA_WINDOW:]]
        )
        unfinished = len(self.statuses) - self._finished()
        lanes = max(1, min(self.workers, unfinished))
        return f" · ETA {format_duration(seconds / lanes)}"

    def _trained(self, key: str, epochs: int) -> None:
        setting = self.settings.get(key)
        if setting in self.to_do:
            self.to_do[setting] = max(0, self.to_do[setting] - epochs)

    def _log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def rung_started(self, rung: int, rungs: int, epochs: int, trials: int) -> None:
        """A successive-halving rung begins: ``trials`` trials train (on) to ``epochs`` epochs."""
        self.rung = f" rung {rung}/{rungs - 1} ({epochs} epochs)"
        self.message(f"{self.sweep}: rung {rung} of 0-{rungs - 1}: {trials} trials to {epochs} epochs")
        if self.live:
            self.bars.update(self.overall, description=self._summary())

    def add_trials(self, statuses: dict[str, str]) -> None:
        """Trials a strategy that asks has just proposed join the count."""
        self.statuses.update(statuses)
        if self.live:
            self.bars.update(self.overall, total=len(self.statuses), description=self._summary())

    def trial_started(
        self, key: str, label: str, epochs: int, trained: int = 0, setting: Hashable | None = None
    ) -> None:
        """Trial ``key`` (of ``setting``) starts (or resumes after ``trained`` epochs) to train to ``epochs``."""
        self.statuses[key] = TrialStatus.RUNNING
        self.settings[key] = setting
        self.labels[key] = label
        self.targets[key], self.reached[key] = epochs, trained
        if self.live:
            self.trial_tasks[key] = self.bars.add_task(f"  {key[:8]} {label}", total=epochs)
            self.bars.update(self.overall, description=self._summary())
        else:
            self._log(f"trial {key} {label} started")

    def epoch(self, key: str, metrics: EpochMetrics, epochs: int) -> None:
        """A newly trained epoch (not one replayed after a resume), shown as a count of epochs trained: what a
        person reads counts epochs from 1 ("1/100 epochs", "at epoch 1", "resumed after epoch 1"; the database
        counts from 0, see ``format_epoch``)."""
        self._trained(key, 1)
        self.epoch_seconds.setdefault(self.settings.get(key), []).append(metrics["seconds"])
        self.reached[key] = metrics["epoch"] + 1
        text = (
            f"{metrics['epoch'] + 1}/{epochs} epochs · val accuracy {format_percent(metrics['val_accuracy'])}"
            f" · train loss {metrics['train_loss']:.4f}"
        )
        if self.live and key in self.trial_tasks:
            self.bars.update(
                self.trial_tasks[key],
                completed=metrics["epoch"] + 1,
                description=f"  {key[:8]} {self.labels[key]} · {text}",
            )
            self.bars.update(self.overall, description=self._summary() + self._eta())
        elif not self.live:
            self._log(f"trial {key} {text}{self._eta()}")

    def trial_finished(self, key: str, status: str, detail: str) -> None:
        self.statuses[key] = status
        if status in FINISHED:  # it trains no further (early stop, failure): its untrained epochs are off
            self._trained(key, self.targets.get(key, 0) - self.reached.get(key, 0))
        self.targets.pop(key, None)
        self.reached.pop(key, None)
        if self.live:
            if key in self.trial_tasks:
                self.bars.remove_task(self.trial_tasks.pop(key))
            self.bars.update(self.overall, description=self._summary() + self._eta(), completed=self._finished())
            if status not in SCORED:
                self.console.print(f"[yellow]trial {key} {self.labels.get(key, '')} {status}: {detail}")
        else:
            self._log(f"trial {key} {status}: {detail}")
            self._log(self._summary() + self._eta())

    def message(self, text: str) -> None:
        if self.live:
            self.console.print(text)
        else:
            self._log(text)

    def close(self) -> None:
        if self.live:
            self.bars.stop()


def format_duration(seconds: float) -> str:
    """A wall time: '4m05s', '2h07m'."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
