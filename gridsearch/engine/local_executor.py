"""Starting workers on this machine: forked from a forkserver that has torch and the engine loaded.

A fresh ``python -m gridsearch.engine.worker`` pays 1.5-3 s of ``import torch`` per trial. The standard
library's forkserver (``multiprocessing``) imports it once, in a clean single-threaded process that
has touched no device, and forks one new process per trial from it: each trial still has a
process of its own (isolation, determinism, memory freed at exit) and starts in tens of ms. The
dataset needs no preloading: workers memory-map the same ``.npy`` files, so the page cache shares it.

Unlike ``multiprocessing``'s own processes, a worker does not re-run the caller's ``__main__`` before it
starts (``_Popen``): its target lives in this package, so ``run`` works from a script without an
``if __name__ == "__main__"`` guard, from ``python -`` (standard input) and from a notebook.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import queue
import threading
import time
from multiprocessing import context, forkserver, popen_forkserver, reduction, spawn, util
from typing import Any

from gridsearch.engine import worker
from gridsearch.engine.jobs import Job
from gridsearch.errors import Unavailable
from gridsearch.training.events import Event

START_ATTEMPTS = 3
"""How many times a worker's start is tried when the forkserver dies while starting (``EOFError``): the standard
library starts a new forkserver on the next try."""

MAIN_MODULE_KEYS = ("init_main_from_name", "init_main_from_path")
"""What ``multiprocessing`` sends a child so that it re-imports the parent's ``__main__`` first."""


class _Popen(popen_forkserver.Popen):
    """The forkserver's ``Popen``, minus re-importing ``__main__`` in the child.

    ``multiprocessing`` prepares each child by running the parent's main module again (as
    ``__mp_main__``) so that targets defined there unpickle: a script without a main guard then runs
    its whole sweep again in every worker (which hangs), ``python -`` makes it read ``'<stdin>'`` (which
    fails). A worker's target, ``worker.run_forked``, needs none of it. The body is the standard
    library's ``_launch`` (3.10 to 3.13) with those keys left out of the preparation data.
    """

    def _launch(self, process_obj: Any) -> None:
        prep_data = spawn.get_preparation_data(process_obj._name)
        for key in MAIN_MODULE_KEYS:
            prep_data.pop(key, None)
        buf = io.BytesIO()
        context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            context.set_spawning_popen(None)
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)  # type: ignore[attr-defined]
        _parent_w = os.dup(w)  # the child's sentinel of this process, as in the standard library
        close = util.close_fds  # type: ignore[attr-defined]  # (missing from typeshed)
        self.finalizer = util.Finalize(self, close, (_parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _WorkerProcess(context.ForkServerProcess):
    """A forkserver process started through ``_Popen``."""

    @staticmethod
    def _Popen(process_obj: Any) -> _Popen:
        return _Popen(process_obj)


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


class ForkserverFailed(Unavailable):
    """The forkserver that starts this machine's workers died while starting, on every try: the run stops."""


class LocalExecutor:
    """Runs worker jobs as processes of this machine, forked from a preloaded forkserver."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, Event | None]] = queue.Queue()
        """(trial key, event dict), then (trial key, None) once the worker's stream has ended."""
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(worker.PRELOAD)

    def start(self, key: str, job: Job) -> ForkedWorker:
        """Fork a worker for ``job``; its events go to the queue as ``(key, event)``, then ``(key, None)``. A
        forkserver that dies while starting is replaced (``START_ATTEMPTS`` tries), then stops the run."""
        failure: Exception | None = None
        for attempt in range(1, START_ATTEMPTS + 1):
            reader, writer = self.context.Pipe(duplex=False)
            process = _WorkerProcess(target=worker.run_forked, args=(job, writer), name=f"trial-{key}")
            try:
                process.start()
            except (EOFError, ConnectionError) as exc:
                reader.close()
                writer.close()
                failure = exc
                time.sleep(0.2 * attempt)  # lets the dead forkserver exit, so that the next try replaces it
                continue
            writer.close()  # the worker holds the only write end: end of file means it has exited
            threading.Thread(target=self._forward, args=(key, reader), daemon=True).start()
            return ForkedWorker(process)
        raise ForkserverFailed(
            f"the forkserver that starts workers died while starting, {START_ATTEMPTS} times ({failure or 'EOF'}); "
            "the run stopped, its trials are resumable: check memory and the installation "
            "(python -c 'import torch'), then run the same command again"
        )

    def _forward(self, key: str, reader: Any) -> None:
        with reader:
            while True:
                try:
                    self.events.put((key, json.loads(reader.recv_bytes())))
                except EOFError:
                    break
        self.events.put((key, None))

    def lost(self) -> str | None:
        """Never: the workers run on this machine."""
        return None

    def close(self) -> None:
        """Nothing to release: the forkserver exits with this process."""
