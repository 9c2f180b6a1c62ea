"""Starting workers on this machine: forked from a forkserver that has torch and the engine loaded.

A fresh ``python -m gridsearch.engine.worker`` pays 1.5-3 s of ``import torch`` per trial. The standard
library's forkserver (``multiprocessing``) imports it once, in a clean single-threaded process that
has touched no device, and forks one new process per trial from it: each trial still has a
process of its own (isolation, determinism, memory freed at exit) and starts in tens of ms. The
dataset needs no preloading: workers memory-map the same ``.npy`` files, so the page cache shares it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import threading
from typing import Any

from gridsearch.engine import worker
from gridsearch.engine.jobs import Job
from gridsearch.training.events import Event


class ForkedWorker:
    """A worker process forked from the forkserver, seen as its process group."""

    def __init__(self, process: multiprocessing.process.BaseProcess):
        assert process.pid is not None, "started"
        self.process = process
        self.pid = process.pid

    def poll(self) -> int | None:
        """The exit code once the process has ended (negative: killed by that signal), else None."""
        return self.process.exitcode

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the end; the exit code, or None if still running."""
        self.process.join(timeout)
        return self.process.exitcode

    def send_signal(self, signal_number: int) -> None:
        """Signal the worker's process group (the worker alone if it has not called setsid yet)."""
        for kill in (os.killpg, os.kill):
            try:
                kill(self.pid, signal_number)
                return
            except (ProcessLookupError, PermissionError):
                continue


class LocalExecutor:
    """Runs worker jobs as processes of this machine, forked from a preloaded forkserver."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, Event | None]] = queue.Queue()
        """(trial key, event dict), then (trial key, None) once the worker's stream has ended."""
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(worker.PRELOAD)

    def start(self, key: str, job: Job) -> ForkedWorker:
        """Fork a worker for ``job``; its events go to the queue as ``(key, event)``, then ``(key, None)``."""
        reader, writer = self.context.Pipe(duplex=False)
        process = self.context.Process(target=worker.run_forked, args=(job, writer), name=f"trial-{key}")
        process.start()
        writer.close()  # the worker holds the only write end: end of file means it has exited
        threading.Thread(target=self._forward, args=(key, reader), daemon=True).start()
        return ForkedWorker(process)

    def _forward(self, key: str, reader: Any) -> None:
        with reader:
            while True:
                try:
                    self.events.put((key, json.loads(reader.recv_bytes())))
                except EOFError:
                    break
        self.events.put((key, None))

    def close(self) -> None:
        """Nothing to release: the forkserver exits with this process."""
