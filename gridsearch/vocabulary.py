"""The words every part of gridsearch shares: trial statuses, metrics, datasets and how params are printed.

Defined once here and used by the spec, the engine, the store, the CLI, the reports and the web app, so that
"finished", "better", "fashion_mnist" and "lr_step=4" mean the same thing everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import numpy as np


class TrialStatus(StrEnum):
    """Where a trial stands. Stored as its value, so databases of every schema version read unchanged."""

    PENDING = "pending"
    """Never started."""
    RUNNING = "running"
    """Claimed by a live coordinator (or by a dead one, until its lease runs out)."""
    DONE = "done"
    """Trained to its last epoch, or stopped early by ``patience``."""
    STOPPED = "stopped"
    """Trained part of its epochs by a successive-halving sweep that did not promote it (yet); a sweep
    that needs more of it resumes it from its checkpoint."""
    FAILED = "failed"
    """Raised, diverged or crashed; ``error`` says why."""
    TIMEOUT = "timeout"
    """Killed after the sweep's ``timeout``."""
    INTERRUPTED = "interrupted"
    """Stopped before the end (Ctrl-C, a killed worker); resumes from its checkpoint."""

    @property
    def finished(self) -> bool:
        """Whether the trial counts as finished in progress and counts (see ``FINISHED``)."""
        return self in FINISHED


STATUS_ORDER: tuple[TrialStatus, ...] = (
    TrialStatus.DONE,
    TrialStatus.STOPPED,
    TrialStatus.RUNNING,
    TrialStatus.FAILED,
    TrialStatus.TIMEOUT,
    TrialStatus.INTERRUPTED,
    TrialStatus.PENDING,
)
"""The order statuses are shown in (tables, progress lines, the dashboard)."""


class Execution(StrEnum):
    """How a trial was trained (``run --fuse K``); its ``started`` event and resume checkpoint say which."""

    PER_TRIAL = "per-trial"
    """As its own model: alone in its worker, or one after another with its cohort-mates."""
    FUSED = "fused"
    """As one slice of a stacked model: its cohort-mates trained at the same time, in one loop."""


class Stage(StrEnum):
    """What a worker was doing when it failed or stalled; every failure's ``error`` names it."""

    TRAINING = "training"
    TEST_EVALUATION = "test evaluation"
    CHECKPOINT = "checkpoint"
    """Writing (or reading) a checkpoint file."""


FINISHED = frozenset({TrialStatus.DONE, TrialStatus.STOPPED, TrialStatus.FAILED, TrialStatus.TIMEOUT})
"""Nothing more happens to these in the sweep as it stands: a completed successive-halving sweep has only
finished trials, its stopped ones included (a later rung or another sweep may still resume those)."""
SCORED = frozenset({TrialStatus.DONE, TrialStatus.STOPPED})
"""Trials with a best epoch and its scores."""
FAILURES = frozenset({TrialStatus.FAILED, TrialStatus.TIMEOUT})
"""What ``--retry-failed`` runs again; never promoted nor selected."""
CLAIMABLE = frozenset({TrialStatus.PENDING, TrialStatus.RUNNING, TrialStatus.INTERRUPTED, TrialStatus.STOPPED})
"""What a run may start or continue (a running trial only once its coordinator is gone)."""


@dataclass(frozen=True)
class Metric:
    """A score a sweep selects by, and which way is better."""

    name: str
    direction: Literal["max", "min"]

    @property
    def ascending(self) -> bool:
        """Whether sorting by this metric ascending puts the best first."""
        return self.direction == "min"

    def better(self, value: float, than: float | None) -> bool:
        """Whether ``value`` beats ``than`` (anything beats None)."""
        if than is None:
            return True
        return value < than if self.direction == "min" else value > than

    def rank(self, value: float) -> float:
        """A sort key that puts the best value first."""
        return value if self.direction == "min" else -value


METRICS: dict[str, Metric] = {"val_accuracy": Metric("val_accuracy", "max"), "val_loss": Metric("val_loss", "min")}
"""The metrics a sweep may select its best trial by (``select:``)."""


OBJECTIVES: dict[str, Metric] = {
    **METRICS,
    "parameters": Metric("parameters", "min"),
    "epoch_seconds": Metric("epoch_seconds", "min"),
    "inference_ms": Metric("inference_ms", "min"),
}
"""What a sweep's ``objectives`` may name: the validation metrics at a trial's best epoch (the mean over a
configuration's seeds), its network's parameter count, its mean training seconds per epoch, and its inference
milliseconds per image (``gridsearch.training.inference``)."""
OBJECTIVE_LABELS = {
    "val_accuracy": "val accuracy",
    "val_loss": "val loss",
    "parameters": "parameters",
    "epoch_seconds": "seconds per epoch",
    "inference_ms": "inference ms per image",
}
"""How axes and tables name each objective."""


def metric(name: str) -> Metric:
    """The metric called ``name`` (``KeyError`` if it is not one of ``METRICS``)."""
    return METRICS[name]


def as_written(value: Any) -> Any:
    """A param value as a sweep file writes it: a whole float as an int (``lr_step`` 4.0 -> 4, as a float
    param stores it), lists item by item, anything else as it is. Every reader of params shows this: the
    CLI's tables, CSV and JSON, the Python API, the web app, TensorBoard and MLflow."""
    if isinstance(value, float) and math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return int(value)
    if isinstance(value, list):
        return [as_written(item) for item in value]
    return value


def format_value(value: Any) -> str:
    """A param value as people write it: whole floats without '.0' (``lr_step=4``), others in the
    shortest form that reads back the same (``0.0005``), lists as ``[0.95, 1.05]``."""
    value = as_written(value)
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(item) for item in value) + "]"
    return str(value)


def format_params(params: Iterable[tuple[str, Any]]) -> str:
    """``name=value`` pairs, e.g. ``lr=0.05 lr_step=3``; a param without a value (None: one its trial's architecture
    does not take, as in a committee's pool of models) is left out, as every empty field is."""
    return " ".join(f"{name}={format_value(value)}" for name, value in params if value is not None)


TERMINAL_COLUMNS = 100
"""The width the CLI's tables fit unless asked for ``--wide``."""
SHORT_KEY = 8
"""How many characters of a trial key a narrow table shows (as the progress lines do)."""
PERCENT_DECIMALS = 2
"""Every accuracy a person reads has two decimals (98.40%): the CLI, the report, the web app and the progress lines."""


def format_percent(fraction: float | None, decimals: int = PERCENT_DECIMALS) -> str:
    """An accuracy (a fraction) as a percentage with fixed decimals: ``98.70%``; '' for None."""
    return (
        ""
        if fraction is None or (isinstance(fraction, float) and math.isnan(fraction))
        else f"{fraction * 100:.{decimals}f}%"
    )


def format_count(count: int | None) -> str:
    """A count with thousands separators: ``10,000``; '' for None."""
    return "" if count is None else f"{count:,}"


def format_epoch(epoch: int | None) -> str:
    """An epoch as a person counts it, from 1 (the database counts from 0): stored epoch 0 -> ``1``; '' for None."""
    return "" if epoch is None else str(epoch + 1)


def tidy_float(value: float) -> float:
    """A number as it was measured: a value that is exactly a float32 (accuracies and losses computed in single
    precision) becomes the shortest decimal that reads back as that float32 (0.9869999885559082 -> 0.987);
    other values are kept, so a CSV reads back the exact double."""
    single = np.float32(value)
    return float(str(single)) if math.isfinite(value) and float(single) == value else value
