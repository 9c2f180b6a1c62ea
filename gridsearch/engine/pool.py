"""The worker pool: starts worker jobs through an executor, watches them, and ends them.

It knows processes, not trials' meaning: which workers run, which GPU each has, what each has
reported, whether one overran the sweep's timeout, and how to stop them all. The coordinator decides
what to start; the recorder decides what an event means for the store.
"""

from __future__ import annotations

import os
import queue
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from gridsearch.engine.failures import log_size
from gridsearch.engine.jobs import Job
from gridsearch.spec.config import TrialConfig
from gridsearch.store.records import Evaluation, TrialSummary
from gridsearch.training.events import Event

POLL_SECONDS = 0.5
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
    """Starts worker jobs and delivers their events on ``events`` as ``(key, event)``, then ``(key, None)``."""

    events: queue.Queue[tuple[str, Event | None]]

    def start(self, key: str, job: Job) -> WorkerHandle: ...

    def close(self) -> None: ...


@dataclass
class Worker:
    """A running worker and what it has reported so far."""

    key: str
    job: Job
    handle: WorkerHandle
    started: float
    epochs: int
    """The epoch this job trains to (its budget, or the trial's epochs)."""
    gpu: str | None = None
    events_open: bool = True
    summary: TrialSummary | None = None
    finished: bool = False
    """From the ``done`` event: the trial is over (not just at its budget)."""
    evaluation: Evaluation | None = None
    error: str | None = None
    last_epoch: int = -1
    stopped_by_us: str | None = None
    """'timeout' or 'interrupt' when the pool itself ended the process."""
    reported: bool = False
    """Whether it has sent an event (a worker that dies before it has says so)."""
    log_offset: int = 0
    """The size of the run folder's ``worker.log`` when it started: what it writes comes after."""


@dataclass(frozen=True)
class Placement:
    """Where jobs run: data and artifact folders, device, and the GPUs trials are spread over."""

    data_dir: Path
    artifacts: Path
    device: str = "cpu"
    gpus: list[str] = field(default_factory=list)
    test_size: int = 10000


class WorkerPool:
    """Workers of one run: start them, hand over their events, collect the ones that have exited."""

    def __init__(self, executor: Executor, placement: Placement, timeout: float | None = None):
        self.executor = executor
        self.placement = placement
        self.timeout = timeout
        self.running: dict[str, Worker] = {}

    def __len__(self) -> int:
        return len(self.running)

    def start(self, key: str, task: str, config: TrialConfig, budget: int | None = None) -> Worker:
        """Start a ``train`` (to ``budget`` epochs, None: to the end) or ``evaluate`` job for trial ``key``."""
        place = self.placement
        run_dir = place.artifacts / key
        run_dir.mkdir(parents=True, exist_ok=True)
        gpu = least_busy_gpu(place.gpus, [worker.gpu for worker in self.running.values()])
        job = Job(
            task="train" if task == "train" else "evaluate",
            key=key,
            config=config,
            run_dir=str(run_dir),
            data_dir=str(place.data_dir.resolve()),
            device=place.device,
            visible_gpu=gpu,
            test_size=place.test_size,
            epoch_budget=budget,
            coordinator_pid=os.getpid(),
        )
        log_offset = log_size(run_dir / "worker.log")
        handle = self.executor.start(key, job)
        worker = Worker(key, job, handle, time.monotonic(), budget or config["params"]["epochs"], gpu)
        worker.log_offset = log_offset
        self.running[key] = worker
        return worker

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
                worker.reported = True
                yield worker, event

    def exited(self) -> list[Worker]:
        """Remove and return the workers whose process has ended and whose events are all in."""
        done = [key for key, w in self.running.items() if not w.events_open and w.handle.poll() is not None]
        return [self.running.pop(key) for key in done]

    def enforce_timeout(self) -> None:
        """Kill workers that have run longer than the sweep's timeout (marked 'timeout')."""
        if self.timeout is None:
            return
        for worker in self.running.values():
            if worker.stopped_by_us is None and time.monotonic() - worker.started > self.timeout:
                worker.stopped_by_us = "timeout"
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


def least_busy_gpu(gpus: list[str], busy: list[str | None]) -> str | None:
    """The GPU of ``gpus`` that appears least in ``busy`` (the first on ties), None without GPUs."""
    return min(gpus, key=busy.count) if gpus else None
