"""What training produces and the store records: one epoch, a trial's summary, an evaluation.

These are the typed boundaries between a worker (which sends them as JSON events) and the database
(which stores them in ``epochs``, ``trials`` and ``evaluations``).
"""

from __future__ import annotations

from typing import TypedDict


class EpochMetrics(TypedDict):
    """One training epoch of one trial (epochs count from 0); a row of ``epochs``."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float


class TrialSummary(TypedDict):
    """A trained trial at its best epoch: the columns of ``trials`` a finished worker fills in."""

    best_epoch: int
    val_accuracy: float
    val_loss: float
    epochs_run: int
    train_seconds: float


class Evaluation(TypedDict):
    """A trial's best weights evaluated on a data set; a row of ``evaluations``."""

    samples: int
    accuracy: float
    loss: float
    errors: int
    confusion: list[list[int]]
    """confusion[true][predicted]."""
    predictions: list[int]
    """Predicted labels, in data-set order."""
    seconds: float


class TrialUpdate(TypedDict, total=False):
    """What a running trial's worker reports about itself: where and with what it runs; and why a finished
    trial's test evaluation failed (None once one succeeds)."""

    worker_pid: int
    device: str
    torch_version: str
    code_version: str
    parameter_count: int
    error: str | None
