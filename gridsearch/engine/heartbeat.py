"""A worker's heartbeat: what it reports about itself while it runs, so that the coordinator can tell a worker that
trains from one that has stopped without dying (SIGSTOP, a hung file read, a deadlocked library).

Progress is the number of module forward calls the process has made (a global forward hook that only counts:
training batches, validation and test evaluation alike), sent every ``PROGRESS_SECONDS`` by a thread of its own
with the stage the worker is in (``vocabulary.Stage``, read from the main thread's stack). The hook changes no
tensor and the thread only reads, so training stays deterministic. A stopped process sends nothing, a hung or
deadlocked one sends a count that no longer grows: either way the coordinator sees no progress.

The stage of a failure is read the same way, from its traceback: a frame in ``training/checkpoints.py`` makes it
the checkpoint stage, else the job's task says training or test evaluation.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType

from gridsearch.engine.jobs import Task
from gridsearch.training.events import Progress
from gridsearch.vocabulary import Stage

PROGRESS_SECONDS = 2.0
"""How often a worker reports its progress."""
CHECKPOINT_MODULE = "gridsearch.training.checkpoints"
"""Where checkpoint files are written and read (named, not imported: the coordinator imports this without torch)."""


def task_stage(task: Task) -> Stage:
    """The stage a job of ``task`` is in outside its checkpoint files."""
    return Stage.TEST_EVALUATION if task == "evaluate" else Stage.TRAINING


def frame_stage(frame: FrameType | None, task: Task) -> Stage:
    """The stage of a thread whose innermost frame is ``frame``."""
    while frame is not None:
        if frame.f_globals.get("__name__") == CHECKPOINT_MODULE:
            return Stage.CHECKPOINT
        frame = frame.f_back
    return task_stage(task)


def failure_stage(trace: TracebackType | None, task: Task) -> Stage:
    """The stage an exception with traceback ``trace`` was raised in."""
    while trace is not None:
        if trace.tb_frame.f_globals.get("__name__") == CHECKPOINT_MODULE:
            return Stage.CHECKPOINT
        trace = trace.tb_next
    return task_stage(task)


class Heartbeat:
    """Counts forward calls and reports them with the stage every ``seconds``, from a daemon thread, until stopped."""

    def __init__(self, emit: Callable[[Progress], None], task: Task, seconds: float = PROGRESS_SECONDS):
        self.emit = emit
        self.task = task
        self.seconds = seconds
        self.calls = 0
        self.main = threading.main_thread().ident
        self.stopped = threading.Event()

    def start(self) -> Heartbeat:
        """Count forward calls from now on and start reporting."""
        from torch.nn.modules.module import register_module_forward_hook

        register_module_forward_hook(self._count)
        threading.Thread(target=self._report, name="heartbeat", daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def _count(self, *_: object) -> None:
        self.calls += 1

    def _report(self) -> None:
        while not self.stopped.wait(self.seconds):
            frame = sys._current_frames().get(self.main) if self.main is not None else None
            try:
                self.emit({"event": "progress", "calls": self.calls, "stage": frame_stage(frame, self.task)})
            except (OSError, ValueError):  # the coordinator has gone (the worker ends with it) or the stream closed
                return
