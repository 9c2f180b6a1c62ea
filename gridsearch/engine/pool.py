"""The worker pool: starts worker jobs through an executor, watches them, and ends them.

It knows processes, not trials' meaning: which workers run, which GPU each has, what each has
reported, whether one overran the sweep's timeout, and how to stop them all. The coordinator decides
what to start; the recorder decides what an event means for the store.
"""

from __future__ import annotations

import os
import queue
import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from gridsearch.engine.failures import log_size
from gridsearch.engine.jobs import Job, Member, Task
from gridsearch.errors import DISK_FULL, Unavailable
from gridsearch.spec.config import TrialConfig
from gridsearch.store.records import Evaluation, TrialSummary
from gridsearch.training.events import Event
from gridsearch.training.run_folders import Maker, claim
from gridsearch.vocabulary import Stage

POLL_SECONDS = 0.5
STALL_MIN_SECONDS = 60.0
STALL_EPOCHS = 3
"""A worker has stalled once it made no progress for this many of its trials' longest recorded epoch, and at
least ``STALL_MIN_SECONDS``."""
STALL_FIRST_SECONDS = 600.0
"""The bound of a worker none of whose trials has a recorded epoch yet."""
EXIT_GRACE_SECONDS = 5.0
"""How long a worker that has closed its event stream may take to exit before the loop moves on."""
STOP_GRACE_SECONDS = 5.0
"""How long interrupted workers get to exit after SIGTERM before SIGKILL."""


class WorkerHandle(Protocol):
    """A started worker, as an executor reports it (a local process, or a Dask task)."""

    def poll(self) -> int | None: ...

    def wait(self, timeout: float) -> int | None: ...

    def send_signal(self, signal_number: int) -> None: ...


class Executor(Protocol):
    """Starts worker jobs and delivers their events on ``events`` as ``(cohort, event)``, then ``(cohort, None)``;
    ``lost`` says why it can start and watch none any more (a Dask cluster gone), else None."""

    events: queue.Queue[tuple[str, Event | None]]

    def start(self, cohort: str, job: Job) -> WorkerHandle: ...

    def lost(self) -> str | None: ...

    def close(self) -> None: ...


@dataclass
class MemberState:
    """One trial of a running cohort and what it has reported so far."""

    key: str
    epochs: int
    """The epoch this job trains it to (its budget, or the trial's epochs)."""
    log_offset: int = 0
    """The size of its run folder's ``worker.log`` when the job started: what the job writes comes after."""
    started: float | None = None
    """When its worker said ``hello`` for it (monotonic seconds); None until then."""
    summary: TrialSummary | None = None
    finished: bool = False
    """From the ``done`` event: the trial is over (not just at its budget)."""
    evaluation: Evaluation | None = None
    error: str | None = None
    infrastructure: bool = False
    """Its error came from outside the trial (the run folder failed), not from training it."""
    disk_full: bool = False
    """Its error was a full disk."""
    unimportable: bool = False
    """Its worker could not import the user's code it trains: the run stops."""
    last_epoch: int = -1
    longest_epoch: float = 0.0
    """Its longest recorded epoch (seconds), replayed ones included: what its worker's stall bound grows with."""
    made_by: Maker | None = None
    """Who made its run folder, when that is another database or code version than this run."""

    @property
    def ended(self) -> bool:
        """Whether it reported its end (a summary, an evaluation or an error)."""
        return self.summary is not None or self.evaluation is not None or self.error is not None

    @property
    def in_progress(self) -> bool:
        return self.started is not None and not self.ended


@dataclass
class Worker:
    """A running worker (one process, or one Dask task) training or evaluating a cohort of trials."""

    key: str
    """The cohort's id (its first member's key)."""
    job: Job
    handle: WorkerHandle
    members: dict[str, MemberState]
    started: float
    """When it was started (monotonic seconds)."""
    gpu: str | None = None
    events_open: bool = True
    stopped_by_us: str | None = None
    """'timeout', 'stall' or 'interrupt' when the pool itself ended the process."""
    timed_out: str | None = None
    """The member that overran the sweep's timeout."""
    progressed: float = field(default_factory=time.monotonic)
    """When it last made progress (monotonic seconds): an event, or a heartbeat with more forward calls."""
    calls: int = -1
    """The forward calls its last heartbeat counted."""
    stage: Stage | None = None
    """What its last heartbeat said it was doing."""
    stalled: float | None = None
    """How long it had made no progress when the pool killed it for that ('stall')."""
    stall_bound: str = ""
    """The bound it overran, in words."""

    @property
    def reported(self) -> bool:
        """Whether it has sent an event (a worker that dies before it has says so)."""
        return any(member.started is not None for member in self.members.values())


@dataclass(frozen=True)
class Placement:
    """Where jobs run: data and artifact folders, device, and the GPUs trials are spread over."""

    data_dir: Path
    artifacts: Path
    device: str = "cpu"
    gpus: list[str] = field(default_factory=list)
    test_size: int = 10000
    fused: bool = False
    """Train a cohort of several trials as one stacked model (else its members one after another)."""
    maker: Maker | None = None
    """This run, as each run folder records who made it (None: not recorded)."""
    code_path: tuple[str, ...] = ()
    """Folders first on each worker's import path: the sweep file's, where the user's own code is."""


class WorkerPool:
    """Workers of one run: start them, hand over their events, collect the ones that have exited."""

    def __init__(
        self, executor: Executor, placement: Placement, timeout: float | None = None, stall_after: float | None = None
    ):
        self.executor = executor
        self.placement = placement
        self.timeout = timeout
        self.stall_after = stall_after
        """Seconds without progress after which a worker is killed (None: from its epochs; 0: never)."""
        self.running: dict[str, Worker] = {}

    def __len__(self) -> int:
        return len(self.running)

    def start(self, task: Task, cohort: Sequence[tuple[str, TrialConfig]], budget: int | None = None) -> Worker:
        """Start a ``train`` job (to ``budget`` epochs, None: to the end) for a cohort of ``(key, config)``
        trials, or an ``evaluate`` job for one."""
        place = self.placement
        members = [Member(key=key, config=config, run_dir=str(place.artifacts / key)) for key, config in cohort]
        made_by: dict[str, Maker | None] = {}
        for member in members:
            try:
                Path(member["run_dir"]).mkdir(parents=True, exist_ok=True)
                made_by[member["key"]] = claim(Path(member["run_dir"]), place.maker) if place.maker else None
            except OSError as exc:
                if exc.errno in DISK_FULL:
                    raise  # the coordinator waits for space
                raise artifacts_unavailable(place.artifacts, exc) from None
        gpu = least_busy_gpu(place.gpus, [worker.gpu for worker in self.running.values()])
        cohort_id = members[0]["key"]
        job = Job(
            task=task,
            cohort=cohort_id,
            members=members,
            data_dir=str(place.data_dir.resolve()),
            device=place.device,
            visible_gpu=gpu,
            test_size=place.test_size,
            epoch_budget=budget,
            coordinator_pid=os.getpid(),
            fused=place.fused and task == "train" and len(members) > 1,
            code_path=list(place.code_path),
        )
        states = {
            member["key"]: MemberState(
                member["key"],
                budget or member["config"]["params"]["epochs"],
                log_size(Path(member["run_dir"]) / "worker.log"),
                made_by=made_by[member["key"]],
            )
            for member in members
        }
        handle = self.executor.start(cohort_id, job)
        worker = Worker(cohort_id, job, handle, states, time.monotonic(), gpu)
        self.running[cohort_id] = worker
        return worker

    def keys(self) -> list[str]:
        """The keys of every trial in a running cohort."""
        return [key for worker in self.running.values() for key in worker.members]

    def events(self) -> Iterator[tuple[Worker, Event]]:
        """The events sent since the last call (waiting up to POLL_SECONDS for the first), with their
        worker. A worker whose stream ended is marked so, and its exit code collected at once."""
        timeout = POLL_SECONDS
        while True:
            try:
                key, event = self.executor.events.get(timeout=timeout)
            except queue.Empty:
                return
            timeout = 0
            worker = self.running.get(key)
            if worker is None:
                continue
            if event is None:
                worker.events_open = False
                worker.handle.wait(EXIT_GRACE_SECONDS)
            else:
                yield worker, event

    def exited(self) -> list[Worker]:
        """Remove and return the workers whose process has ended and whose events are all in."""
        done = [key for key, w in self.running.items() if not w.events_open and w.handle.poll() is not None]
        return [self.running.pop(key) for key in done]

    def enforce_timeout(self) -> None:
        """Kill workers whose trial in progress has trained longer than the sweep's timeout (marked 'timeout')."""
        if self.timeout is None:
            return
        now = time.monotonic()
        for worker in self.running.values():
            current = next((m for m in worker.members.values() if m.in_progress), None)
            if current is None and not worker.reported:  # the first member, still starting
                current = next(iter(worker.members.values()))
            since = worker.started if current is None or current.started is None else current.started
            if worker.stopped_by_us is None and current is not None and now - since > self.timeout:
                worker.stopped_by_us, worker.timed_out = "timeout", current.key
                worker.handle.send_signal(signal.SIGKILL)

    def bound(self, worker: Worker) -> tuple[float, str]:
        """How long ``worker`` may make no progress before it counts as stalled, and why that long."""
        if self.stall_after is not None:
            return self.stall_after, f"--stall-after {self.stall_after:g} s"
        longest = max(member.longest_epoch for member in worker.members.values())
        if not longest:
            return STALL_FIRST_SECONDS, f"{STALL_FIRST_SECONDS:g} s before a first epoch is recorded"
        bound = max(STALL_MIN_SECONDS, STALL_EPOCHS * longest)
        why = f"{STALL_EPOCHS} x its longest epoch ({longest:.1f} s), {STALL_MIN_SECONDS:g} s at least"
        return bound, f"{bound:.0f} s: {why}"

    def enforce_stalls(self) -> None:
        """Kill workers that made no progress for their bound (marked 'stall': their trials are trained again)."""
        if self.stall_after == 0:
            return
        now = time.monotonic()
        for worker in self.running.values():
            bound, why = self.bound(worker)
            if worker.stopped_by_us is None and worker.events_open and now - worker.progressed > bound:
                worker.stopped_by_us, worker.stalled, worker.stall_bound = "stall", now - worker.progressed, why
                worker.handle.send_signal(signal.SIGKILL)

    def stop_all(self) -> list[Worker]:
        """Stop every worker (SIGTERM, then SIGKILL after a grace period); returns them."""
        workers = list(self.running.values())
        for worker in workers:
            worker.stopped_by_us = "interrupt"
            worker.handle.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for worker in workers:
            if worker.handle.wait(max(0.1, deadline - time.monotonic())) is None:
                worker.handle.send_signal(signal.SIGKILL)
                worker.handle.wait(STOP_GRACE_SECONDS)
        self.running.clear()
        return workers


class ExecutorLost(Unavailable):
    """The executor lost what runs the workers (the Dask scheduler, or every Dask worker): the run stops."""


class CodeUnavailable(Unavailable):
    """A worker could not import the user's own code: the run stops (its trials resumable)."""


class ArtifactsUnavailable(Unavailable):
    """The artifacts folder cannot be written: the run stops (its trials resumable)."""


def artifacts_unavailable(folder: Path, exc: OSError) -> ArtifactsUnavailable:
    """The one line that stops a run whose artifacts folder cannot be written."""
    return ArtifactsUnavailable(
        f"artifacts folder {folder} cannot be written ({exc.strerror or exc}); the run stopped, its trials are "
        "resumable: make the folder writable (or free space) and run the same command again"
    )


def writable(folder: Path) -> OSError | None:
    """None if a file can be created in ``folder`` (made if missing), else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b"gridsearch")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        return exc
    return None


def least_busy_gpu(gpus: list[str], busy: list[str | None]) -> str | None:
    """The GPU of ``gpus`` that appears least in ``busy`` (the first on ties), None without GPUs."""
    return min(gpus, key=busy.count) if gpus else None
