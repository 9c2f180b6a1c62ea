"""How each trial of a worker that has exited ended, and what happens to it next: the coordinator's finish path.

A trial that reported its summary is done (or stopped at its budget). One that overran the sweep's timeout timed
out. Failures from outside the trial are not its fault and are trained again, from its checkpoint, in the same
run (``MAX_RESTARTS`` times at most, then left for the next run, which needs no ``--retry-failed``): its run folder
failing (removed, read-only, a full disk), its worker killed from outside, or its worker stalled (no progress for
its bound, ``pool.WorkerPool.enforce_stalls``). Anything else is a failure, retried if the sweep allows
``retries``. Every failure's ``error`` says why: the exception, or the worker's signal or exit code, and the stage
it was in (``vocabulary.Stage``) with the last lines of its log.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gridsearch.engine.failures import exit_reason, headline, with_log, with_stage
from gridsearch.engine.heartbeat import task_stage
from gridsearch.engine.pool import MemberState, Worker
from gridsearch.store.records import TrialSummary
from gridsearch.vocabulary import TrialStatus, format_epoch, format_percent

MAX_RESTARTS = 2
"""How often one run trains a trial again after a failure from outside it, before leaving it for the next run."""
STOP_SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""Signals that mean a worker was killed from outside (by a person, the OOM killer), not that it crashed."""


@dataclass(frozen=True)
class Ending:
    """How one trial ended and what happens next."""

    status: TrialStatus
    error: str | None = None
    next: str = ""
    """What happens to it now, in words (empty: nothing to say)."""
    again: bool = False
    """It goes back to this run's queue."""
    folder_failed: bool = False
    """Its run folder could not be written."""

    def said(self, summary: TrialSummary | None) -> str:
        """How it ended (with ``summary``, its scores if it has them), in a few words, for the progress line."""
        if summary is None:
            return f"{headline(self.error)}{f'; {self.next}' if self.next else ''}"
        detail = f"val {format_percent(summary['val_accuracy'])} at epoch {format_epoch(summary['best_epoch'])}"
        if self.status == TrialStatus.STOPPED:
            detail += f", stopped after epoch {summary['epochs_run']}"
        return detail


@dataclass
class Endings:
    """Decides how the trials of exited workers ended; counts the restarts and retries of one run."""

    timeout: float | None
    retries: int
    log: Callable[[str], Path]
    """A trial's ``worker.log``."""
    restarts: dict[str, int] = field(default_factory=dict)
    retried: dict[str, int] = field(default_factory=dict)

    def of(self, worker: Worker, member: MemberState, code: int | None) -> Ending:
        """How ``member`` of ``worker`` (which exited with ``code``) ended, with its retries applied."""
        ending = self._ended(worker, member, code)
        key = member.key
        if ending.status == TrialStatus.FAILED and self.retried.get(key, 0) < self.retries:
            self.retried[key] = self.retried.get(key, 0) + 1
            retry = f"retry {self.retried[key]} of {self.retries}, from its checkpoint"
            return Ending(TrialStatus.INTERRUPTED, ending.error, retry, again=True)
        return ending

    def _ended(self, worker: Worker, member: MemberState, code: int | None) -> Ending:
        key = member.key
        killed = code is not None and code < 0 and -code in STOP_SIGNALS and worker.stopped_by_us is None
        stage = worker.stage or task_stage(worker.job["task"])
        if member.summary is not None:
            return Ending(TrialStatus.DONE if member.finished else TrialStatus.STOPPED)
        if worker.timed_out == key:
            error = f"exceeded the sweep's timeout of {self.timeout:g} s during epoch {member.last_epoch + 1}"
            return Ending(TrialStatus.TIMEOUT, with_stage(error, stage))
        if worker.stopped_by_us == "stall" and member.in_progress:
            return self._outside(key, self._stalled(worker, member), "stalled")
        if member.error is not None and member.infrastructure:
            return self._outside(key, member.error, "its run folder failed", folder_failed=True)
        if member.error is None and (killed or worker.stopped_by_us or not member.started):
            if not (killed and member.started):
                return Ending(TrialStatus.INTERRUPTED, again=True)  # back in the queue: its cohort's worker ended
            if self.restarts.get(key, 0) >= MAX_RESTARTS:
                return Ending(TrialStatus.FAILED, exit_reason(code, self.log(key), member.log_offset, True, stage))
            self.restarts[key] = self.restarts.get(key, 0) + 1
            signal_name = signal.Signals(-(code or 0)).name
            error = with_stage(f"worker killed by {signal_name} after epoch {member.last_epoch}", stage)
            return Ending(TrialStatus.INTERRUPTED, error, "restarting from its checkpoint", again=True)
        error = member.error or exit_reason(code, self.log(key), member.log_offset, worker.reported, stage)
        return Ending(TrialStatus.FAILED, error)

    def _outside(self, key: str, error: str, why: str, folder_failed: bool = False) -> Ending:
        """A failure from outside the trial: trained again (its restarts counted), or left for the next run."""
        if self.restarts.get(key, 0) < MAX_RESTARTS:
            self.restarts[key] = self.restarts.get(key, 0) + 1
            what = f"{why}, not the trial: training it again from its checkpoint"
            return Ending(TrialStatus.INTERRUPTED, error, what, again=True, folder_failed=folder_failed)
        what = f"{why} again: left for the next run (selection waits for it)"
        return Ending(TrialStatus.INTERRUPTED, error, what, folder_failed=folder_failed)

    def evaluation_failure(self, worker: Worker, member: MemberState, code: int | None) -> str:
        """Why the test evaluation ``member`` of ``worker`` (which exited with ``code``) reported no result."""
        if member.error is not None:
            return member.error
        if worker.stopped_by_us == "stall":
            return self._stalled(worker, member)
        stage = worker.stage or task_stage(worker.job["task"])
        return exit_reason(code, self.log(member.key), member.log_offset, worker.reported, stage)

    def _stalled(self, worker: Worker, member: MemberState) -> str:
        """The error of ``member`` of a worker the pool killed for making no progress."""
        error = f"worker made no progress for {worker.stalled:.0f} s (its bound: {worker.stall_bound}); killed"
        stage = worker.stage or task_stage(worker.job["task"])
        return with_log(with_stage(error, stage), self.log(member.key), member.log_offset)
