"""What a training or evaluation job reports while it runs: JSON events, one ``TypedDict`` each.

A worker sends them to the coordinator in order for each trial of its cohort (the members of a stack
interleaved, epoch by epoch): ``hello``, then for training ``started``, one ``epoch`` per epoch (past epochs
again, ``replayed``, after a resume), any ``warning``, and ``done``; for an evaluation ``evaluation``; for a
measurement ``measured``; ``error`` instead of the last one if the trial failed. The worker tags each with the
trial's ``key``. Its heartbeat sends ``progress`` every few seconds, untagged (it is about the whole worker).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NotRequired, TypedDict

from gridsearch.store.records import EpochMetrics, Evaluation, TrialSummary
from gridsearch.vocabulary import Execution, Stage


class Tagged(TypedDict):
    key: NotRequired[str]
    """The trial (cohort member) it is about; the worker adds it."""


class Hello(Tagged):
    event: Literal["hello"]
    pid: int
    device: str
    torch_version: str


class Started(Tagged):
    event: Literal["started"]
    parameter_count: int
    resumed_from_epoch: int
    """How many epochs were already trained (0 for a fresh start)."""
    execution: NotRequired[Execution]
    """How it is trained now: its own model, or one slice of its cohort's stacked model."""
    cohort: NotRequired[str]
    """The id of the cohort it came in (its first member's key)."""
    cohort_size: NotRequired[int]
    """How many members train with it at once: the stack's size, 1 per-trial."""


class Epoch(EpochMetrics, Tagged):
    event: Literal["epoch"]
    replayed: NotRequired[bool]
    """True for an epoch trained before a resume, reported again."""


class WarningEvent(Tagged):
    event: Literal["warning"]
    message: str


class Done(TrialSummary, Tagged):
    event: Literal["done"]
    finished: bool
    """Whether the trial is over (all epochs, or stopped early); False when it stopped at a budget."""


class Evaluated(Evaluation, Tagged):
    event: Literal["evaluation"]
    best_epoch: int


class Measured(Tagged):
    event: Literal["measured"]
    inference_ms: float
    """Milliseconds to classify one image (``gridsearch.training.inference``)."""


class Error(Tagged):
    event: Literal["error"]
    error: str
    infrastructure: bool
    """The failure came from outside the trial (its run folder could not be written): not the trial's fault,
    so the coordinator trains it again rather than calling it failed."""
    stage: NotRequired[Stage]
    """What the worker was doing when it raised."""
    disk_full: NotRequired[bool]
    """The failure was a full disk: the coordinator waits for space before it trains anything again."""
    unimportable: NotRequired[bool]
    """The worker could not import the user's own code: the coordinator stops the run with this one error."""


class Progress(Tagged):
    """The worker's heartbeat (``engine/heartbeat.py``), sent every few seconds whatever it does."""

    event: Literal["progress"]
    calls: int
    """Module forward calls made so far: it grows while the worker trains or evaluates."""
    stage: Stage


Event = Hello | Started | Epoch | WarningEvent | Done | Evaluated | Measured | Error | Progress
Emit = Callable[[Event], None]
