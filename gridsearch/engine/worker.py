"""The worker: one process per job, training a cohort of trials (or evaluating one) and reporting JSON events.

Two ways in, one job: on the coordinator's machine a worker is forked from a forkserver that has
already imported torch, the engine and every architecture (``run_forked``, started by
``gridsearch/engine/local_executor.py``), so a trial starts in a fraction of a second instead of paying a fresh
``import torch``; on a Dask worker host it is a plain subprocess, ``python -m gridsearch.engine.worker``,
reading its job on stdin and writing events on its original stdout (``main``). Either way the
worker runs in its own session (its process group is killed as a whole), dies with its parent
and, when forked, with its coordinator too (a lone ``kill -9`` of the coordinator's pid, as the OOM
killer sends, ends its workers at once rather than at their next event), sends everything it prints to
the trial's ``worker.log``, and never touches the database: the coordinator is its only writer.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import json
import os
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

from gridsearch.engine.devices import keep_freed_memory
from gridsearch.engine.heartbeat import Heartbeat, failure_stage
from gridsearch.engine.jobs import Job, Member
from gridsearch.errors import DISK_FULL
from gridsearch.training.events import Emit, Error, Event, Hello
from gridsearch.vocabulary import Execution

PR_SET_PDEATHSIG = 1
PRELOAD = ["gridsearch.training.loop", "gridsearch.training.fused", "torch._inductor"]
"""What the forkserver imports once, before it forks workers: the engine (with torch and every
architecture) and ``torch._inductor``, which ``torch.use_deterministic_algorithms`` imports lazily
(1.8 s of the 2 s a trial paid without it)."""


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this process when its parent dies (Linux), so no orphan trains on."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def die_with(pid: int) -> None:
    """Kill this worker's process group as soon as process ``pid`` ends.

    A forked worker's parent is the forkserver, not the coordinator, and the forkserver lives as long
    as any worker holds its "alive" pipe: the kernel's parent-death signal alone would let workers train
    on after a lone ``kill -9`` of the coordinator. A thread waits on a pidfd of the coordinator instead
    (polling once a second where pidfds are missing); it only sleeps, so training stays deterministic.
    """

    def watch() -> None:
        try:
            select.select([os.pidfd_open(pid)], [], [])
        except (AttributeError, OSError):  # no pidfd support, or ``pid`` has already ended
            while _alive(pid):
                time.sleep(1.0)
        os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, name="coordinator-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def configure(job: Job) -> None:
    """Per-job process settings that must be in place before torch touches a device."""
    keep_freed_memory()
    os.environ["OMP_NUM_THREADS"] = str(job["members"][0]["config"]["threads"])  # the cohort shares it
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    if job["visible_gpu"] is not None:  # pins the worker to one GPU; it then sees it as cuda:0
        os.environ["CUDA_VISIBLE_DEVICES"] = str(job["visible_gpu"])


LogTo = Callable[[Path], None]
"""Sends what the process prints from now on to this member's ``worker.log``."""


def log_to(log: Path) -> None:
    """Point this process's stdout and stderr at ``log`` (appended to)."""
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)


TASK_DONE = {"train": "trained", "evaluate": "evaluated", "measure": "measured"}
"""What a worker does to each member of a job, as its log says."""


def run_job(job: Job, emit: Emit, log: LogTo | None = None) -> int:
    """Run a job's members, each reporting its events (tagged with its ``key``) through ``emit``: a ``fused`` job
    as one stack (``run_stack``), else one after another, a member that raises reporting an ``error`` and the next
    one going on. The exit code: 1 if any member failed. ``log``: switches the process's output to each member's
    ``worker.log`` as it starts."""
    members = job["members"]
    unimportable = import_user_code(job)
    if unimportable is not None:
        for member in members:
            tagged(member["key"], emit)(
                Error(event="error", error=unimportable, infrastructure=True, unimportable=True)
            )
        return 1
    if job.get("fused") and job["task"] == "train" and len(members) > 1:
        return 1 if run_stack(job, emit, log) else 0
    failed = False
    for index, member in enumerate(members):
        run_dir = Path(member["run_dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        if log is not None:
            log(run_dir / "worker.log")
        if len(members) > 1:
            print(
                f"cohort {job['cohort']}: trial {member['key']} is member {index + 1} of {len(members)}, "
                f"{TASK_DONE[job['task']]} in turn by process {os.getpid()}",
                file=sys.stderr,
                flush=True,
            )
        send = tagged(member["key"], emit)
        try:
            run_member(job, member, send)
        except (Exception, SystemExit) as exc:
            print_traceback()
            send(error_event(exc, job, member))
            failed = True
    return 1 if failed else 0


def import_user_code(job: Job) -> str | None:
    """Put the job's ``code_path`` first on the import path and import the user's own architectures its members
    train; None, or the one line saying what could not be imported."""
    import architectures
    from gridsearch.spec.usercode import code_path

    code_path(job.get("code_path", []))
    for name in dict.fromkeys(member["config"]["architecture"] for member in job["members"]):
        if architectures.is_reference(name):
            try:
                architectures.get(name).build  # noqa: B018 -- imports the user's module
            except Exception as exc:
                return f"worker on {os.uname().nodename} cannot import {name}: {type(exc).__name__}: {exc}"
    return None


def tagged(key: str, emit: Emit, ended: dict[str, str] | None = None) -> Emit:
    """``emit`` for the member ``key``: its events tagged with its key (and how each ended noted in ``ended``)."""

    def send(event: Event) -> None:
        if ended is not None and event["event"] in ("done", "error"):
            ended[key] = event["event"]
        emit(cast(Event, {**event, "key": key}))

    return send


def run_stack(job: Job, emit: Emit, log: LogTo | None = None) -> bool:
    """Train the job's members as one stacked model (``gridsearch.training.fused``), the process's output in the
    first one's ``worker.log`` and a line in each member's saying so; whether any of them failed."""
    import torch

    from gridsearch.training.fused import train_stack

    members, ended = job["members"], dict[str, str]()
    device = torch.device(job["device"])
    for index, member in enumerate(members):
        run_dir = Path(member["run_dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        if log is not None and index == 0:
            log(run_dir / "worker.log")
        with open(run_dir / "worker.log", "a") as file:
            file.write(
                f"cohort {job['cohort']}: trial {member['key']} is member {index + 1} of {len(members)}, trained "
                f"{Execution.FUSED} as one stacked model by process {os.getpid()}\n"
            )
        tagged(member["key"], emit)(hello(device))
    channels = [tagged(member["key"], emit, ended) for member in members]
    stack = [(member["config"], Path(member["run_dir"]), send) for member, send in zip(members, channels)]
    try:
        train_stack(stack, Path(job["data_dir"]), device, job["epoch_budget"], job["cohort"])
    except (Exception, SystemExit) as exc:
        print_traceback()
        for member, send in zip(members, channels):
            if member["key"] not in ended:
                send(error_event(exc, job, member))
    return "error" in ended.values()


def hello(device: Any) -> Hello:
    """The ``hello`` event of a member this process takes up on ``device``."""
    import torch

    return {"event": "hello", "pid": os.getpid(), "device": str(device), "torch_version": torch.__version__}


def print_traceback() -> None:
    """The exception being handled, printed to the log: unless the log's disk is full (the error event says it)."""
    with contextlib.suppress(OSError):
        traceback.print_exc()


def run_member(job: Job, member: Member, emit: Emit) -> None:
    """Train (on its own), evaluate or measure one member of ``job``, reporting its events through ``emit``."""
    import torch

    from gridsearch.training import loop as training

    device = torch.device(job["device"])
    run_dir, data_dir, config = Path(member["run_dir"]), Path(job["data_dir"]), member["config"]
    emit(hello(device))
    if job["task"] == "train":
        training.train_trial(config, run_dir, data_dir, device, emit, job["epoch_budget"], job["cohort"])
    elif job["task"] == "measure":
        from gridsearch.training.inference import inference_ms

        emit({"event": "measured", "inference_ms": inference_ms(config, run_dir, data_dir, device)})
    else:
        evaluation, best_epoch = training.evaluate_trial(config, run_dir, data_dir, device, job["test_size"])
        emit({"event": "evaluation", **evaluation, "best_epoch": best_epoch})


def error_event(exc: BaseException, job: Job, member: Member) -> Error:
    """The ``error`` event of a member that raised ``exc``, with the stage it raised in."""
    return {
        "event": "error",
        "error": error_reason(exc, job, member),
        "infrastructure": outside_trial(exc, member),
        "stage": failure_stage(exc.__traceback__, job["task"]),
        "disk_full": isinstance(exc, OSError) and exc.errno in DISK_FULL,
    }


def outside_trial(exc: BaseException, member: Member) -> bool:
    """Whether ``exc`` is the member's run folder failing (removed, made read-only, its disk full) rather than
    the trial: an ``OSError`` about a file in it, or a full disk wherever it was (a log line that did not fit
    names no file)."""
    if not isinstance(exc, OSError):
        return False
    if exc.errno in DISK_FULL:
        return True
    run_dir = os.path.abspath(member["run_dir"])
    names = [os.path.abspath(os.fsdecode(n)) for n in (exc.filename, exc.filename2) if isinstance(n, str | bytes)]
    return any(os.path.commonpath([run_dir, name]) == run_dir for name in names)


def error_reason(exc: BaseException, job: Job, member: Member) -> str:
    """What a trial's ``error`` says about ``exc``; a CUDA out-of-memory error says so and what to change."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        torch.cuda.empty_cache()  # an inline trial's memory goes back before the next one
        gpu = "" if job["visible_gpu"] is None else f" {job['visible_gpu']}"
        detail = " ".join(str(exc).split())[:300]
        return (
            f"CUDA out of memory on GPU{gpu} (batch_size {member['config']['params']['batch_size']}): {detail} "
            "(lower batch_size, or run fewer trials per GPU with --slots-per-gpu)"
        )
    return f"{type(exc).__name__}: {exc}"


def run_forked(job: Job, events: Connection) -> None:
    """Entry point of a worker forked by the forkserver; ``events`` is the write end of a Pipe."""
    os.setsid()  # its own process group: Ctrl-C reaches the coordinator only, timeouts kill it whole
    die_with_parent(os.getppid())
    die_with(job["coordinator_pid"])
    log_to(Path(job["members"][0]["run_dir"]) / "worker.log")
    faulthandler.enable()  # a crash in native code (SIGSEGV, abort) leaves its Python traceback in the log
    configure(job)
    emit = one_at_a_time(lambda event: events.send_bytes(json.dumps(event).encode()))
    heartbeat = Heartbeat(emit, job["task"]).start()
    code = run_job(job, emit, log_to)
    heartbeat.stop()
    events.close()
    sys.exit(code)


def one_at_a_time(send: Emit) -> Emit:
    """``send``, with one event sent at a time (the heartbeat's thread sends too)."""
    lock = threading.Lock()

    def emit(event: Event) -> None:
        with lock:
            send(event)

    return emit


def main() -> None:
    """Entry point of ``python -m gridsearch.engine.worker``: the job on stdin, events on the original stdout."""
    job: Job = json.load(sys.stdin)
    die_with_parent(job["parent_pid"])
    configure(job)
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints from libraries go to the log, not into the protocol
    faulthandler.enable()

    def send(event: Event) -> None:
        protocol.write(json.dumps(event) + "\n")
        protocol.flush()

    emit = one_at_a_time(send)
    Heartbeat(emit, job["task"]).start()
    sys.exit(run_job(job, emit, log_to))


if __name__ == "__main__":
    main()
