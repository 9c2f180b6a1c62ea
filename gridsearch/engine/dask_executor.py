"""Running workers on a Dask cluster, for sweeps that outgrow one machine.

Each job (a cohort of trials, or one trial's evaluation) is one Dask task. On whichever Dask worker host Dask
picks, the task runs gridsearch's worker in its own subprocess (``python -m gridsearch.engine.worker``, as
isolated and deterministic as on one machine)
and forwards the worker's JSON events through Dask's event log (``Worker.log_event`` →
``Client.subscribe_topic``), so the coordinator records epochs as they happen. The task also returns
every event, so nothing is lost if a streamed one arrives late. If a Dask worker dies mid-trial,
the scheduler re-runs the task elsewhere and the trial resumes from its last checkpoint, which is
why ``--artifacts`` must be a folder every worker host can reach. The coordinator stays the only
writer of the database.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from gridsearch.engine.jobs import Job
from gridsearch.errors import UserError
from gridsearch.training.events import Event

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
CHECK_SECONDS = 0.5
"""How often a running task forwards events and checks whether it was cancelled."""
PROBE_SECONDS = 3.0
"""How long ``--scheduler``'s address may take to accept a connection."""
CONNECT_SECONDS = 5.0
"""How long the client waits for the scheduler to answer (and, once it has lost it, to come back)."""
WORKERLESS_SECONDS = 10.0
"""How long a cluster may have no worker before the run stops."""
RESULT_EVENTS = ("done", "evaluation", "error")
"""The events that end a job, delivered again with the task's result (epochs too, marked replayed)."""


def run_worker_task(job: Job, topic: str) -> dict[str, Any]:
    """The Dask task: run ``job`` in a worker subprocess on this host; returns its exit code and events. The
    subprocess is killed as soon as the task is cancelled or its Dask worker loses the scheduler."""
    from distributed import get_worker
    from distributed.core import Status

    running = (Status.running, Status.paused)

    dask_worker = get_worker()
    task_key = dask_worker.get_current_task()
    run_dir = Path(job["members"][0]["run_dir"])  # until the worker switches to each member's log
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")])))
    with open(run_dir / "worker.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gridsearch.engine.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            start_new_session=True,
        )
    assert process.stdin is not None
    process.stdin.write(json.dumps({**job, "parent_pid": os.getpid()}).encode())
    process.stdin.close()
    lines: queue.Queue[bytes | None] = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    events: list[dict[str, Any]] = []
    while True:
        try:
            line = lines.get(timeout=CHECK_SECONDS)
        except queue.Empty:
            task = dask_worker.state.tasks.get(task_key)
            # cancelled by the coordinator, or the coordinator or the scheduler gone (the Dask worker then closes)
            if task is None or task.state == "cancelled" or dask_worker.status not in running:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            continue
        if line is None:
            break
        events.append(json.loads(line))
        dask_worker.log_event(topic, {"key": job["cohort"], "event": events[-1]})
    return {"code": process.wait(), "events": events}


def _read_lines(stream: Any, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


class DaskJob:
    """A job's Dask task, seen as a worker process by the coordinator."""

    def __init__(self, future: Any):
        self.future = future
        self.code: int | None = None
        self.ended = threading.Event()
        self.cancelled = False
        """Whether the coordinator cancelled it (else a cancellation means the scheduler went away)."""

    def poll(self) -> int | None:
        return self.code

    def wait(self, timeout: float) -> int | None:
        self.ended.wait(timeout)
        return self.code

    def send_signal(self, signal_number: int) -> None:
        """Cancel the task: its worker subprocess is killed on its host."""
        self.cancelled = True
        if not self.future.done():
            self.future.cancel(reason="gridsearch stopped it")


class DaskExecutor:
    """Starts worker jobs as tasks on a Dask cluster (a local one when no scheduler address is given)."""

    def __init__(self, scheduler: str | None, local_workers: int):
        from distributed import Client, LocalCluster

        # the client logs each failed reconnection with a traceback; the run says what happened in one line
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
        self.events: queue.Queue[tuple[str, Event | None]] = queue.Queue()
        self.cluster = None
        try:
            if scheduler is None:
                self.cluster = LocalCluster(
                    n_workers=local_workers, threads_per_worker=1, processes=True, dashboard_address=None
                )
                self.client = Client(self.cluster)
            else:
                check_reachable(scheduler)
                self.client = Client(scheduler, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError, ValueError) as exc:
            raise UserError(f"--scheduler {scheduler}: cannot reach a Dask scheduler there ({exc})") from None
        self.address = scheduler or self.cluster.scheduler_address  # type: ignore[union-attr]
        self.topic = f"gridsearch-{uuid.uuid4().hex}"
        self.client.subscribe_topic(self.topic, self._on_event)
        self.gone: str | None = None
        """Why the cluster can run nothing more (its scheduler lost, or no worker left for a while)."""
        self.workerless_since: float | None = None
        self.next_check = 0.0

    def capacity(self) -> int:
        """Workers (jobs) the cluster runs at once: one per Dask worker thread."""
        return sum(self.client.nthreads().values())

    def start(self, key: str, job: Job) -> DaskJob:
        """Submit ``job`` as a task; its events go to the queue as ``(cohort, event)``, then ``(cohort, None)``."""
        future = self.client.submit(
            run_worker_task, job, self.topic, pure=False, key=f"gridsearch-{job['task']}-{key}-{uuid.uuid4().hex[:8]}"
        )
        handle = DaskJob(future)
        future.add_done_callback(lambda done: self._finished(key, handle, done))
        return handle

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        _, message = event
        self.events.put((message["key"], message["event"]))

    def _finished(self, key: str, handle: DaskJob, future: Any) -> None:
        """Deliver the task's epochs and result again (recording is idempotent), then its end."""
        if future.status == "finished":
            result = future.result()
            for event in result["events"]:
                if event["event"] == "epoch":
                    self.events.put((key, {**event, "replayed": True}))  # type: ignore[arg-type]
                elif event["event"] in RESULT_EVENTS:
                    self.events.put((key, event))
            handle.code = result["code"]
        elif future.status == "cancelled":
            if not handle.cancelled and self.gone is None:  # not by us: the client lost the scheduler
                self.gone = f"the Dask scheduler {self.address} went away ({self.client.status})"
            handle.code = -signal.SIGKILL
        else:
            error = f"Dask task failed: {future.exception()!r}"
            self.events.put((key, {"event": "error", "error": error, "infrastructure": False}))
            handle.code = 1
        self.events.put((key, None))
        handle.ended.set()

    def lost(self) -> str | None:
        """Why the cluster can run nothing more: the scheduler gone (the client lost it, and every task with it),
        or no Dask worker left for ``WORKERLESS_SECONDS``; None while it works."""
        now = time.monotonic()
        if self.gone is None and self.client.status not in ("running", "newly-created"):
            self.gone = f"the Dask scheduler {self.address} went away ({self.client.status})"
        elif self.gone is None and now >= self.next_check:
            self.next_check = now + CHECK_SECONDS * 4
            if self.client.nthreads():
                self.workerless_since = None
            elif self.workerless_since is None:
                self.workerless_since = now
            elif now - self.workerless_since > WORKERLESS_SECONDS:
                self.gone = f"the Dask cluster at {self.address} has had no worker for {WORKERLESS_SECONDS:g} s"
        if self.gone is None:
            return None
        return (
            f"{self.gone}: the run stopped, its trials are interrupted and resumable: run the same command again "
            "against a working cluster"
        )

    def close(self) -> None:
        """Disconnect from the cluster (and stop the local one)."""
        self.client.close(timeout=CONNECT_SECONDS)
        if self.cluster is not None:
            self.cluster.close()


def check_reachable(scheduler: str) -> None:
    """``OSError`` at once if nothing listens at a ``tcp://HOST:PORT`` scheduler address (Dask's own client
    would retry for its whole timeout); other protocols are left to Dask."""
    if "://" in scheduler and not scheduler.startswith("tcp://"):
        return
    host, _, port = scheduler.removeprefix("tcp://").rpartition(":")
    if not host or not port.isdigit():
        return
    with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS):
        pass
