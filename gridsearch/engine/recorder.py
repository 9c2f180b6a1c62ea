"""The event recorder: what each event a worker sends means for the store and the progress display.

One method per event kind, picked from a dispatch table; the coordinator stays the database's only
writer because it is the only caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from gridsearch.engine.failures import with_stage
from gridsearch.engine.pool import MemberState, Worker
from gridsearch.engine.progress import SweepProgress
from gridsearch.engine.tensorboard import TensorBoardLog
from gridsearch.store.records import EpochMetrics, Evaluation, TrialSummary
from gridsearch.store.storage import Storage
from gridsearch.training import events
from gridsearch.training.run_folders import describe

SUMMARY_FIELDS = tuple(TrialSummary.__annotations__)
EPOCH_FIELDS = tuple(EpochMetrics.__annotations__)
EVALUATION_FIELDS = tuple(Evaluation.__annotations__)


class EventRecorder:
    """Records worker events: provenance, parameter counts, epochs, warnings, summaries and errors."""

    def __init__(self, storage: Storage, progress: SweepProgress, code_version: str):
        self.storage = storage
        self.progress = progress
        self.code_version = code_version
        self.handlers: dict[str, Callable[[Worker, MemberState, Any], None]] = {
            "hello": self.hello,
            "started": self.started,
            "epoch": self.epoch,
            "warning": self.warning,
            "done": self.done,
            "evaluation": self.evaluation,
            "measured": self.measured,
            "error": self.error,
            "progress": self.progress_event,
        }
        self.tensorboard: TensorBoardLog | None = None
        """``run --tensorboard DIR``: the live TensorBoard log every event is also handed to."""

    def record(self, worker: Worker, event: events.Event) -> None:
        """Dispatch ``event`` of ``worker`` to its handler, with the cohort member it is about."""
        member = worker.members[event.get("key", worker.key)]
        if event["event"] != "progress":
            worker.progressed = time.monotonic()  # any event is progress; a heartbeat only if it counts more
        self.handlers[event["event"]](worker, member, event)
        if self.tensorboard is not None and worker.job["task"] == "train":
            self.tensorboard.record(member.key, event)

    def hello(self, worker: Worker, member: MemberState, event: events.Hello) -> None:
        member.started = time.monotonic()
        if worker.job["task"] == "train":
            self.storage.update_trial(
                member.key,
                worker_pid=event["pid"],
                device=event["device"],
                torch_version=event["torch_version"],
                code_version=self.code_version,
            )
        elif member.made_by and worker.job["task"] == "evaluate":
            self.progress.message(f"trial {member.key}: testing the weights made by {describe(member.made_by)}")

    def started(self, worker: Worker, member: MemberState, event: events.Started) -> None:
        self.storage.update_trial(member.key, parameter_count=event["parameter_count"])
        if event["resumed_from_epoch"]:
            made_by = f", from checkpoints made by {describe(member.made_by)}" if member.made_by else ""
            self.progress.message(f"trial {member.key} resumed after epoch {event['resumed_from_epoch']}{made_by}")

    def epoch(self, worker: Worker, member: MemberState, event: events.Epoch) -> None:
        metrics = cast(EpochMetrics, {name: event[name] for name in EPOCH_FIELDS})  # type: ignore[literal-required]
        self.storage.record_epoch(member.key, metrics)
        member.last_epoch = metrics["epoch"]
        member.longest_epoch = max(member.longest_epoch, metrics["seconds"])
        if not event.get("replayed"):
            self.progress.epoch(member.key, metrics, member.epochs)

    def warning(self, worker: Worker, member: MemberState, event: events.WarningEvent) -> None:
        self.progress.message(f"trial {member.key}: warning: {event['message']}")

    def done(self, worker: Worker, member: MemberState, event: events.Done) -> None:
        member.summary = cast(TrialSummary, {name: event[name] for name in SUMMARY_FIELDS})  # type: ignore[literal-required]
        member.finished = event["finished"]

    def evaluation(self, worker: Worker, member: MemberState, event: events.Evaluated) -> None:
        member.evaluation = cast(Evaluation, {name: event[name] for name in EVALUATION_FIELDS})  # type: ignore[literal-required]

    def measured(self, worker: Worker, member: MemberState, event: events.Measured) -> None:
        self.storage.save_measurement(member.key, "inference_ms", event["inference_ms"], worker.job["device"])

    def error(self, worker: Worker, member: MemberState, event: events.Error) -> None:
        member.error = with_stage(event["error"], event["stage"]) if "stage" in event else event["error"]
        member.infrastructure = event["infrastructure"]
        member.disk_full = event.get("disk_full", False)
        member.unimportable = event.get("unimportable", False)

    def progress_event(self, worker: Worker, member: MemberState, event: events.Progress) -> None:
        """The worker's heartbeat: progress if it counts more forward calls than the last one."""
        if event["calls"] > worker.calls:
            worker.calls, worker.progressed = event["calls"], time.monotonic()
        worker.stage = event["stage"]
