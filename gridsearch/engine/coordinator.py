"""The coordinator: runs a sweep's trials in a pool of worker processes and records what they report.

It is the database's only writer during a run. It claims each trial atomically (so two ``run``
commands never train the same trial), starts a worker as soon as a slot frees, renews the leases of
its running trials, and, when every trial is finished, selects the best one and has it evaluated
once on the test set. Ctrl-C, SIGTERM or a crash leave trials 'interrupted' or 'running' with a
stale lease; the next ``run`` resumes them from their last epoch checkpoint.

A successive-halving sweep runs rung by rung (see ``gridsearch.spec.halving``): every trial of a rung trains
to the rung's epochs, then the best go on from their checkpoints and the rest stay 'stopped'. The
promotions are recomputed from the recorded epochs on every run, so a resumed sweep makes the same ones.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gridsearch import __version__
from gridsearch.engine.local_executor import LocalExecutor
from gridsearch.engine.progress import SweepProgress
from gridsearch.errors import UserError
from gridsearch.spec import halving
from gridsearch.spec.sweep import SELECT_METRICS, Sweep, resolve_warm_starts
from gridsearch.store.models import UNFINISHED, TrialRow
from gridsearch.store.storage import Owner, Storage, config_value

PROJECT_ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT_SECONDS = 10.0
POLL_SECONDS = 0.5
EXIT_GRACE_SECONDS = 5.0
"""How long a worker that has closed its event stream may take to exit before the loop moves on."""
MAX_RESTARTS = 2
"""How often one run restarts a trial whose worker was killed from outside, before calling it failed."""
STOP_SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass
class RunOptions:
    """How to run a sweep: parallelism, device and where data and artifacts live."""

    data_dir: Path
    artifacts: Path
    workers: int = 1
    device: str = "cpu"
    gpus: list[str] = field(default_factory=list)
    """With ``device='cuda'``: the GPUs to use (ids for ``CUDA_VISIBLE_DEVICES``), trials spread evenly."""
    retry_failed: bool = False
    live: bool | None = None


class WorkerHandle(Protocol):
    """A started worker, as an executor reports it (a local process, or a Dask task)."""

    def poll(self) -> int | None: ...

    def wait(self, timeout: float) -> int | None: ...

    def send_signal(self, signal_number: int) -> None: ...


class Executor(Protocol):
    """Starts worker jobs and delivers their events on ``events`` as ``(key, event)``, then ``(key, None)``."""

    events: queue.Queue

    def start(self, key: str, job: dict[str, Any]) -> WorkerHandle: ...

    def close(self) -> None: ...


@dataclass
class Worker:
    """A running worker and what it has reported so far."""

    key: str
    task: str
    handle: WorkerHandle
    started: float
    epochs: int
    gpu: str | None = None
    events_open: bool = True
    summary: dict[str, Any] | None = None
    evaluation: dict[str, Any] | None = None
    error: str | None = None
    last_epoch: int = -1
    stopped_by_us: str | None = None
    """'timeout' or 'interrupt' when the coordinator itself ended the process."""


@dataclass
class SweepOutcome:
    """What a finished ``run`` reports: final statuses and the selected trial (tested on the test set)."""

    statuses: dict[str, str]
    selected: str | None = None
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


def code_version() -> str:
    """The git commit of the engine's code (with '+dirty' for local changes), else the package version."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return __version__


def resolve_device(device: str) -> str:
    """'cpu' or 'cuda' for ``--device auto|cpu|cuda``; UserError if CUDA is asked for but absent."""
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise UserError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return "cpu"


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (ids or UUIDs)."""
    import torch

    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [entry.strip() for entry in listed.split(",") if entry.strip()][: torch.cuda.device_count()]
    return [str(index) for index in range(torch.cuda.device_count())]


def least_busy_gpu(gpus: list[str], busy: list[str | None]) -> str | None:
    """The GPU of ``gpus`` that appears least in ``busy`` (the first on ties), None without GPUs."""
    return min(gpus, key=busy.count) if gpus else None


def oversubscription(workers: int, threads: int, cores: int) -> str | None:
    """Why ``workers`` trials of ``threads`` threads each overload ``cores`` cores, or None if they fit."""
    if workers * threads <= cores:
        return None
    return (
        f"{workers} workers x {threads} thread(s) per trial = {workers * threads} threads on {cores} "
        f"cores: trials will slow each other down (threads stay fixed per trial, for determinism; "
        f"use --workers {max(1, cores // threads)})"
    )


def trial_label(config: dict[str, Any], gridded: list[str], show_seed: bool) -> str:
    """Short description of a trial by its gridded params, e.g. 'lr=0.05 lr_step=3'."""
    parts = [
        f"{name}={config_value(config, name):g}"
        if isinstance(config_value(config, name), float)
        else f"{name}={config_value(config, name)}"
        for name in gridded
    ]
    if show_seed:
        parts.append(f"seed={config['seed']}")
    return " ".join(parts)


class Coordinator:
    """Runs one sweep to completion (or interruption) and selects its best trial."""

    def __init__(self, storage: Storage, sweep: Sweep, options: RunOptions, executor: Executor | None = None):
        self.storage = storage
        self.sweep = resolve_warm_starts(sweep, storage.selected_trial)
        self.options = options
        self.executor = executor or LocalExecutor()
        self.events = self.executor.events
        self.owner = Owner.this_process()
        self.version = code_version()
        self.running: dict[str, Worker] = {}
        self.restarts: dict[str, int] = {}
        self.configs: dict[str, dict[str, Any]] = {}
        self.finalists: list[str] | None = None
        """Successive halving: the trials of the last rung, among which the best is selected."""

    # -- running trials --------------------------------------------------------------------

    def run(self) -> SweepOutcome:
        """Run every unfinished trial of the sweep (rung by rung for successive halving), then select
        and test the best."""
        trials = list(self.sweep.trials())
        self.storage.save_sweep(self.sweep, trials)
        keys = list(dict.fromkeys(trial.key for trial in trials))
        self.configs = {trial.key: trial.config() for trial in trials}
        if self.options.retry_failed:
            self.storage.reset_failed(keys)
        rows = self.storage.trials(self.sweep.name)
        self.progress = SweepProgress(
            self.sweep.name, {r.key: r.status for r in rows}, self.options.workers, self.options.live
        )
        previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            if self.sweep.rung_epochs is None:
                self._train(keys)
            else:
                self._run_rungs(keys, self.sweep.rung_epochs)
        except KeyboardInterrupt:
            self._stop_all()
            self.progress.close()
            return SweepOutcome(self._statuses(), interrupted=True)
        finally:
            signal.signal(signal.SIGTERM, previous_handler)
        try:
            return self._select_and_test()
        finally:
            self.progress.close()

    def _train(self, keys: list[str], budget: int | None = None) -> None:
        """Train those of ``keys`` that need it up to ``budget`` epochs (None: to the end), a new trial as
        soon as a slot frees; wait for those another live coordinator is running."""
        todo = deque(row.key for row in map(self.storage.trial, keys) if needs_training(row, budget))
        elsewhere: set[str] = set()
        last_heartbeat = time.monotonic()
        while todo or self.running or elsewhere:
            while todo and len(self.running) < self.options.workers:
                key = todo.popleft()
                if self.storage.claim(key, self.owner):
                    self._start(key, budget)
                elif needs_training(self.storage.trial(key), budget):
                    elsewhere.add(key)  # another live coordinator runs it
            self._handle_events()
            for key in [k for k, w in self.running.items() if w.handle.poll() is not None and not w.events_open]:
                self._finish(self.running.pop(key), todo)
            self._enforce_timeouts()
            if time.monotonic() - last_heartbeat > HEARTBEAT_SECONDS:
                self.storage.heartbeat(self.running, self.owner)
                last_heartbeat = time.monotonic()
            if not todo and not self.running and elsewhere:
                time.sleep(2 * POLL_SECONDS)
                elsewhere = {k for k in elsewhere if needs_training(self.storage.trial(k), budget)}
                todo.extend(sorted(elsewhere, key=keys.index))
                elsewhere.clear()

    def _run_rungs(self, keys: list[str], budgets: list[int]) -> None:
        """Successive halving: train every trial of each rung to its budget, then promote the best."""
        candidates = keys
        for rung, budget in enumerate(budgets):
            last = rung == len(budgets) - 1
            self.storage.set_rung(self.sweep.name, candidates, rung)
            self.progress.rung_started(rung, len(budgets), budget, len(candidates))
            self._train(candidates, None if last else budget)
            if last:
                self.finalists = candidates
                return
            promoted = halving.promote(self._standings(candidates, budget), self.sweep.search.factor, self.sweep.select)
            self.progress.message(
                f"rung {rung} done: the best {len(promoted)} of {len(candidates)} trials go on "
                f"to {budgets[rung + 1]} epochs"
            )
            candidates = [key for key in keys if key in promoted]

    def _standings(self, keys: list[str], budget: int) -> list[halving.Standing]:
        """Each trial's result within ``budget`` epochs, from the recorded epochs."""
        epochs = self.storage.epochs(keys)
        statuses = {row.key: row.status for row in self.storage.trials(self.sweep.name)}
        return [
            halving.standing(
                key,
                epochs[epochs["trial_key"] == key].to_dict("records"),
                budget,
                self.sweep.select,
                failed=statuses[key] in ("failed", "timeout"),
            )
            for key in keys
        ]

    def _start(self, key: str, budget: int | None) -> None:
        config = self.configs[key]
        run_dir = self.options.artifacts / key
        run_dir.mkdir(parents=True, exist_ok=True)
        job = {"task": "train", "config": config, "epoch_budget": budget}
        worker = self._launch(key, job, run_dir)
        worker.epochs = budget or worker.epochs
        self.running[key] = worker
        label = trial_label(config, self.sweep.gridded_params, len(self.sweep.seeds) > 1)
        self.progress.trial_started(key, label, worker.epochs)

    def _launch(self, key: str, job: dict[str, Any], run_dir: Path) -> Worker:
        gpu = least_busy_gpu(self.options.gpus, [worker.gpu for worker in self.running.values()])
        job = {
            **job,
            "key": key,
            "run_dir": str(run_dir),
            "data_dir": str(self.options.data_dir.resolve()),
            "device": self.options.device,
            "visible_gpu": gpu,
            "test_size": self.sweep.dataset.test_size,
        }
        handle = self.executor.start(key, job)
        return Worker(key, job["task"], handle, time.monotonic(), job["config"]["params"]["epochs"], gpu)

    def _handle_events(self) -> None:
        """Record every event the workers sent; waits up to POLL_SECONDS for the first."""
        timeout = POLL_SECONDS
        while True:
            try:
                key, event = self.events.get(timeout=timeout)
            except queue.Empty:
                return
            timeout = 0
            worker = self.running.get(key)
            if worker is None:
                continue
            if event is None:  # the worker is exiting: collect its exit code now, not a poll later
                worker.events_open = False
                worker.handle.wait(EXIT_GRACE_SECONDS)
            elif worker.task == "evaluate":
                if event["event"] == "evaluation":
                    worker.evaluation = {k: v for k, v in event.items() if k != "event"}
                elif event["event"] == "error":
                    worker.error = event["error"]
            elif event["event"] == "hello":
                self.storage.update_trial(
                    key,
                    worker_pid=event["pid"],
                    device=event["device"],
                    torch_version=event["torch_version"],
                    code_version=self.version,
                )
            elif event["event"] == "started":
                self.storage.update_trial(key, parameter_count=event["parameter_count"])
                if event["resumed_from_epoch"]:
                    self.progress.message(f"trial {key} resumed after epoch {event['resumed_from_epoch'] - 1}")
            elif event["event"] == "epoch":
                metrics = {k: v for k, v in event.items() if k not in ("event", "replayed")}
                self.storage.record_epoch(key, metrics)
                worker.last_epoch = metrics["epoch"]
                if not event.get("replayed"):
                    self.progress.epoch(key, metrics, worker.epochs)
            elif event["event"] == "warning":
                self.progress.message(f"trial {key}: warning: {event['message']}")
            elif event["event"] == "done":
                worker.summary = {k: v for k, v in event.items() if k != "event"}
            elif event["event"] == "error":
                worker.error = event["error"]

    def _finish(self, worker: Worker, todo: deque[str]) -> None:
        """Record how a worker that has exited ended, and restart it if it was killed from outside."""
        code = worker.handle.poll()
        key = worker.key
        if worker.stopped_by_us == "timeout":
            status, error = (
                "timeout",
                f"exceeded the sweep's timeout of {self.sweep.timeout:g} s during epoch {worker.last_epoch + 1}",
            )
        elif code == 0 and worker.summary is not None:
            status, error = ("done" if worker.summary.pop("finished") else "stopped"), None
        elif code < 0 and -code in STOP_SIGNALS and self.restarts.get(key, 0) < MAX_RESTARTS:
            self.restarts[key] = self.restarts.get(key, 0) + 1
            status = "interrupted"
            error = f"worker killed by {signal.Signals(-code).name} after epoch {worker.last_epoch}"
            todo.appendleft(key)
        else:
            status, error = "failed", worker.error or _exit_reason(code, self.options.artifacts / key)
        self.storage.finish(key, status, worker.summary if status in ("done", "stopped") else None, error)
        detail = (
            f"val {worker.summary['val_accuracy']:.2%} at epoch {worker.summary['best_epoch']}"
            if status in ("done", "stopped")
            else error + ("; restarting from its checkpoint" if status == "interrupted" else "")
        )
        if status == "stopped":
            detail += f", stopped after epoch {worker.summary['epochs_run'] - 1}"
        self.progress.trial_finished(key, status, detail)

    def _enforce_timeouts(self) -> None:
        if self.sweep.timeout is None:
            return
        for worker in self.running.values():
            if worker.stopped_by_us is None and time.monotonic() - worker.started > self.sweep.timeout:
                worker.stopped_by_us = "timeout"
                worker.handle.send_signal(signal.SIGKILL)

    def _stop_all(self) -> None:
        """Stop every worker (SIGTERM, then SIGKILL) and leave their trials 'interrupted'."""
        for worker in self.running.values():
            worker.stopped_by_us = "interrupt"
            worker.handle.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for worker in self.running.values():
            if worker.handle.wait(max(0.1, deadline - time.monotonic())) is None:
                worker.handle.send_signal(signal.SIGKILL)
                worker.handle.wait(5)
            self.storage.finish(worker.key, "interrupted", error=None)
        self.running.clear()
        self.progress.message("interrupted: run the same command again to resume")

    def _statuses(self) -> dict[str, str]:
        return {row.key: row.status for row in self.storage.trials(self.sweep.name)}

    # -- selection and test ------------------------------------------------------------------

    def _select_and_test(self) -> SweepOutcome:
        rows = self.storage.trials(self.sweep.name)
        outcome = SweepOutcome({row.key: row.status for row in rows})
        best = select_best(
            [row for row in rows if self.finalists is None or row.key in self.finalists], self.sweep.select
        )
        if best is None:
            self.storage.set_selected(self.sweep.name, None)
            outcome.notes.append("no trial finished, so none was selected")
            return outcome
        previous = self.storage.evaluation(best.key, "test")
        if previous is None or previous.samples != self.sweep.dataset.test_size:
            self.progress.message(f"testing trial {best.key} on {self.sweep.dataset.test_size} test images")
            if self._evaluate(best.key) is None:
                outcome.notes.append(
                    f"the test evaluation of trial {best.key} failed (see "
                    f"{self.options.artifacts / best.key / 'worker.log'}); run again to retry"
                )
                return outcome
        outcome.selected = best.key
        self.storage.set_selected(self.sweep.name, best.key)
        return outcome

    def _evaluate(self, key: str) -> dict[str, Any] | None:
        """Evaluate the trial's best weights on the test set, in a worker, and store the result;
        None if the worker failed."""
        worker = self._launch(key, {"task": "evaluate", "config": self.configs[key]}, self.options.artifacts / key)
        self.running[key] = worker
        try:
            while worker.events_open or worker.handle.poll() is None:
                self._handle_events()
        except KeyboardInterrupt:
            worker.handle.send_signal(signal.SIGKILL)
            raise
        finally:
            self.running.pop(key, None)
        if worker.evaluation is None:
            return None
        self.storage.save_evaluation(key, "test", worker.evaluation)
        return worker.evaluation


def needs_training(row: TrialRow, budget: int | None) -> bool:
    """Whether trial ``row`` must train for a run to ``budget`` epochs (None: to its end). A trial that is
    pending, interrupted or running elsewhere does, even if it is past ``budget`` (its worker then just
    reports it stopped there); a stopped one only below ``budget``."""
    if row.status not in UNFINISHED:
        return False
    return row.status != "stopped" or budget is None or row.epochs_run < budget


def select_best(rows: list[TrialRow], select: str) -> TrialRow | None:
    """The finished trial with the best ``select`` score; ties go to the lower val loss, then grid order."""
    done = [row for row in rows if row.status == "done" and getattr(row, select) is not None]
    if not done:
        return None
    sign = 1 if SELECT_METRICS[select] == "max" else -1
    return min(done, key=lambda row: (-sign * getattr(row, select), row.val_loss))


def _exit_reason(code: int | None, run_dir: Path) -> str:
    if code is not None and code < 0:
        reason = f"worker killed by {signal.Signals(-code).name}"
    else:
        reason = f"worker exited with code {code}"
    log = run_dir / "worker.log"
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return f"{reason}: {lines[-1]}" if lines else reason


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
