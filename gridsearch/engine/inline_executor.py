"""Running worker jobs inside the coordinator's own process, one at a time (``run --executor inline``).

For debugging a trial (a breakpoint or a traceback in the trial's own code reaches your terminal) and
for tests that check what the engine records rather than how processes are isolated. A trial gives the
same numbers as in a worker process with the same thread count. What it gives up: one trial at a time,
no ``timeout`` (nothing can be killed), and the trial's prints go to this terminal, not ``worker.log``.
"""

from __future__ import annotations

import queue

from gridsearch.engine import worker
from gridsearch.engine.jobs import Job
from gridsearch.training.events import Event


class FinishedJob:
    """A job that ran to its end before ``start`` returned."""

    def __init__(self, code: int):
        self.code = code

    def poll(self) -> int | None:
        return self.code

    def wait(self, timeout: float) -> int | None:
        return self.code

    def send_signal(self, signal_number: int) -> None:
        """Nothing to signal: the job has ended."""


class InlineExecutor:
    """Runs each job to its end in this process when it is started; its events are then queued."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, Event | None]] = queue.Queue()

    def start(self, key: str, job: Job) -> FinishedJob:
        """Run ``job`` now; its events go to the queue as ``(key, event)``, then ``(key, None)``."""
        code = worker.run_job(job, lambda event: self.events.put((key, event)))
        self.events.put((key, None))
        return FinishedJob(code)

    def lost(self) -> str | None:
        """Never: the workers run on this machine."""
        return None

    def close(self) -> None:
        """Nothing to release."""
