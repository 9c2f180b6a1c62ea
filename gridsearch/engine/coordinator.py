"""The coordinator: runs a sweep's trials and records what they report.

It is the database's only writer during a run, and it wires four parts together, each with one job:
the search strategy (``strategies``) decides which trials train and how far; the worker pool
(``pool``) starts and watches their processes; the event recorder (``recorder``) maps what workers
report to the store; selection (``selection``) picks the best trial and tests it once.

The coordinator claims each trial atomically (so two ``run`` commands never train the same trial),
starts a worker as soon as a slot frees, renews the leases of its running trials, and restarts a
worker killed from outside from its checkpoint. Ctrl-C, SIGTERM or a crash leave trials
'interrupted' or 'running' with a stale lease; the next ``run`` resumes them.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridsearch.engine.cost import sweep_cost
from gridsearch.engine.devices import code_version
from gridsearch.engine.failures import commonest_error, exit_reason, headline
from gridsearch.engine.local_executor import LocalExecutor
from gridsearch.engine.pool import POLL_SECONDS, Executor, Placement, Worker, WorkerPool
from gridsearch.engine.progress import SweepProgress
from gridsearch.engine.recorder import EventRecorder
from gridsearch.engine.selection import select_and_test
from gridsearch.engine.strategies import strategy_for
from gridsearch.engine.tensorboard import TensorBoardLog
from gridsearch.spec import halving
from gridsearch.spec.config import TrialConfig, config_value
from gridsearch.spec.sweep import Sweep, resolve_warm_starts
from gridsearch.store import views
from gridsearch.store.models import TrialRow
from gridsearch.store.records import Evaluation
from gridsearch.store.storage import Owner, Storage
from gridsearch.vocabulary import CLAIMABLE, FAILURES, SCORED, TrialStatus, format_params

HEARTBEAT_SECONDS = 10.0
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
    fail_fast: bool = False
    """Stop the sweep at the first trial that fails for good (its retries spent), interrupting the others."""
    retry_command: str | None = None
    """What to run to train the failed trials again, as the user would type it (None: said in words)."""
    tensorboard: Path | None = None
    """``run --tensorboard DIR``: write each trial's epochs and hparams as TensorBoard logs under DIR/<sweep>."""


@dataclass
class SweepOutcome:
    """What a finished ``run`` reports: final statuses and the selected trial (tested on the test set)."""

    statuses: dict[str, str]
    selected: str | None = None
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)
    stopped: str | None = None
    """With ``fail_fast``: why the sweep stopped (one line); it is then unfinished, like an interrupted one."""


class FailedFast(Exception):
    """A trial failed for good in a run with ``fail_fast``; the message says which and why."""


def trial_label(config: TrialConfig, gridded: list[str], show_seed: bool) -> str:
    """Short description of a trial by its gridded params, e.g. 'lr=0.05 lr_step=3'."""
    pairs = [(name, config_value(config, name)) for name in gridded]
    return format_params(pairs + ([("seed", config["seed"])] if show_seed else []))


class Coordinator:
    """Runs one sweep to completion (or interruption) and selects its best trial."""

    def __init__(self, storage: Storage, sweep: Sweep, options: RunOptions, executor: Executor | None = None):
        self.storage = storage
        self.sweep = resolve_warm_starts(sweep, storage.selected_trial)
        self.options = options
        self.executor: Executor = executor or LocalExecutor()
        placement = Placement(
            options.data_dir, options.artifacts, options.device, options.gpus, self.sweep.dataset.test_size
        )
        self.pool = WorkerPool(self.executor, placement, self.sweep.timeout)
        self.owner = Owner.this_process()
        self.version = code_version()
        self.restarts: dict[str, int] = {}
        self.retries: dict[str, int] = {}
        self.configs: dict[str, TrialConfig] = {}

    def run(self) -> SweepOutcome:
        """Run the sweep's search over its unfinished trials, then select and test the best."""
        trials = list(self.sweep.trials())
        self.storage.save_sweep(self.sweep, trials)
        keys = list(dict.fromkeys(trial.key for trial in trials))
        self.configs = {trial.key: trial.config() for trial in trials}
        if self.options.retry_failed:
            self.storage.reset_failed(keys)
        rows = self.storage.trials(self.sweep.name)
        complete = self.storage.selected_trial(self.sweep.name) is not None
        cost = sweep_cost(self.sweep, trials, {row.key: row for row in rows}, complete)
        self.progress = SweepProgress(
            self.sweep.name, self._statuses(), self.options.workers, self.options.live, cost.epochs_to_do
        )
        self.recorder = EventRecorder(self.storage, self.progress, self.version)
        if self.options.tensorboard is not None:
            self.recorder.tensorboard = TensorBoardLog(self.options.tensorboard, self.sweep, self.configs)
        strategy = strategy_for(self.sweep, self._rung_started, self.progress.message)
        previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            finalists = strategy.search(keys, self._evaluate_candidates)
        except KeyboardInterrupt:
            self._stop_all("interrupted: run the same command again to resume")
            self.progress.close()
            return SweepOutcome(self._statuses(), interrupted=True)
        except FailedFast as failure:
            self._stop_all(str(failure))
            self.progress.close()
            return SweepOutcome(self._statuses(), stopped=str(failure))
        finally:
            signal.signal(signal.SIGTERM, previous_handler)
            if self.recorder.tensorboard is not None:
                self.recorder.tensorboard.close()
        try:
            return self._select_and_test(finalists)
        finally:
            self.progress.close()

    # -- training: the strategies' evaluate_candidates ------------------------------------------

    def _evaluate_candidates(self, keys: Sequence[str], budget: int | None) -> list[halving.Standing]:
        """Train ``keys`` to ``budget`` epochs (None: to their end); their standings within it."""
        self._train(list(keys), budget)
        epochs = views.epochs(self.storage, keys)
        statuses = self._statuses()
        return [
            halving.standing(
                key,
                epochs[epochs["trial_key"] == key].to_dict("records"),
                budget or self.configs[key]["params"]["epochs"],
                self.sweep.select,
                failed=statuses[key] in FAILURES,
            )
            for key in keys
        ]

    def _train(self, keys: list[str], budget: int | None) -> None:
        """Train those of ``keys`` that need it, a new trial as soon as a slot frees; wait for those
        another live coordinator is running."""
        todo = deque(key for key in keys if needs_training(self.storage.trial(key), budget))
        elsewhere: set[str] = set()
        last_heartbeat = time.monotonic()
        while todo or self.pool.running or elsewhere:
            while todo and len(self.pool) < self.options.workers:
                key = todo.popleft()
                if self.storage.claim(key, self.owner):
                    self._start(key, budget)
                elif needs_training(self.storage.trial(key), budget):
                    elsewhere.add(key)  # another live coordinator runs it
            for worker, event in self.pool.events():
                self.recorder.record(worker, event)
            for worker in self.pool.exited():
                self._finish(worker, todo)
            self.pool.enforce_timeout()
            if time.monotonic() - last_heartbeat > HEARTBEAT_SECONDS:
                self.storage.heartbeat(self.pool.running, self.owner)
                last_heartbeat = time.monotonic()
            if not todo and not self.pool.running and elsewhere:
                time.sleep(2 * POLL_SECONDS)
                todo.extend(
                    sorted((k for k in elsewhere if needs_training(self.storage.trial(k), budget)), key=keys.index)
                )
                elsewhere.clear()

    def _rung_started(self, rung: int, rungs: int, budget: int, keys: Sequence[str]) -> None:
        self.storage.set_rung(self.sweep.name, keys, rung)
        self.progress.rung_started(rung, rungs, budget, len(keys))

    def _start(self, key: str, budget: int | None) -> None:
        config = self.configs[key]
        row = self.storage.trial(key)
        worker = self.pool.start(key, "train", config, budget)
        label = trial_label(config, self.sweep.gridded_params, len(self.sweep.seeds) > 1)
        self.progress.trial_started(key, label, worker.epochs, row.epochs_run if row else 0)

    def _finish(self, worker: Worker, todo: deque[str]) -> None:
        """Record how a worker that has exited ended; restart it if it was killed from outside, retry it if
        it failed and the sweep allows ``retries``, stop the sweep if it failed and the run is ``fail_fast``."""
        code = worker.handle.poll()
        key = worker.key
        restart = ""
        if worker.stopped_by_us == "timeout":
            status, error = (
                TrialStatus.TIMEOUT,
                (f"exceeded the sweep's timeout of {self.sweep.timeout:g} s during epoch {worker.last_epoch + 1}"),
            )
        elif code == 0 and worker.summary is not None:
            status, error = (TrialStatus.DONE if worker.finished else TrialStatus.STOPPED), None
        elif code is not None and code < 0 and -code in STOP_SIGNALS and self.restarts.get(key, 0) < MAX_RESTARTS:
            self.restarts[key] = self.restarts.get(key, 0) + 1
            status = TrialStatus.INTERRUPTED
            error = f"worker killed by {signal.Signals(-code).name} after epoch {worker.last_epoch}"
            restart = "restarting from its checkpoint"
        else:
            log = self.options.artifacts / key / "worker.log"
            status = TrialStatus.FAILED
            error = worker.error or exit_reason(code, log, worker.log_offset, worker.reported)
            if self.retries.get(key, 0) < self.sweep.retries:
                self.retries[key] = self.retries.get(key, 0) + 1
                status = TrialStatus.INTERRUPTED
                restart = f"retry {self.retries[key]} of {self.sweep.retries}, from its checkpoint"
        if restart:
            todo.appendleft(key)
        summary = worker.summary if status in SCORED else None
        self.storage.finish(key, status, summary, error)
        if summary is not None:
            detail = f"val {summary['val_accuracy']:.2%} at epoch {summary['best_epoch']}"
            if status == TrialStatus.STOPPED:
                detail += f", stopped after epoch {summary['epochs_run'] - 1}"
        else:
            detail = f"{headline(error)}{f'; {restart}' if restart else ''}"
        self.progress.trial_finished(key, status, detail)
        if self.options.fail_fast and status in FAILURES:
            label = trial_label(self.configs[key], self.sweep.gridded_params, len(self.sweep.seeds) > 1)
            raise FailedFast(
                f"stopped at the first failed trial (--fail-fast): trial {key} ({label}) {status}: {headline(error)}; "
                f"{len(self.pool)} running trial(s) interrupted; to resume and run it again: "
                f"{self._retry_command()}"
            )

    def _stop_all(self, why: str) -> None:
        """Stop every worker and leave their trials 'interrupted'; say ``why``."""
        for worker in self.pool.stop_all():
            self.storage.finish(worker.key, TrialStatus.INTERRUPTED, error=None)
        self.progress.message(why)

    def _statuses(self) -> dict[str, str]:
        return {row.key: row.status for row in self.storage.trials(self.sweep.name)}

    # -- selection and test ------------------------------------------------------------------

    def _select_and_test(self, finalists: list[str]) -> SweepOutcome:
        test_size = self.sweep.dataset.test_size
        selection = select_and_test(
            self.storage,
            self.sweep.name,
            self.sweep.select,
            finalists,
            test_size,
            self._evaluate,
            self.sweep.over_seeds,
        )
        outcome = SweepOutcome(self._statuses(), selection.best if selection.tested else None)
        if selection.best is None:
            outcome.notes.append(self._nothing_finished())
        elif not selection.tested:
            log = self.options.artifacts / selection.best / "worker.log"
            outcome.notes.append(
                f"the test evaluation of trial {selection.best} failed (see {log}); run again to retry"
            )
        return outcome

    def _nothing_finished(self) -> str:
        """Why no trial was selected: the commonest error and the command that runs the failed trials again."""
        rows = self.storage.trials(self.sweep.name)
        commonest = commonest_error(rows)
        if commonest is None:
            return "no trial finished, so none was selected"
        error, count, failed = commonest
        return (
            f"no trial finished, so none was selected: {failed} of {len(rows)} trials failed, {count} of them with: "
            f"{error}\n(`gridsearch trials {self.sweep.name}` lists every error, and each trial's worker.log is in "
            f"{self.options.artifacts}/<key>/); once fixed, run them again: {self._retry_command()}"
        )

    def _retry_command(self) -> str:
        return self.options.retry_command or "the same command with --retry-failed"

    def _evaluate(self, key: str) -> Evaluation | None:
        """Evaluate the trial's best weights on the test set in a worker; None if the worker failed."""
        self.progress.message(f"testing trial {key} on {self.sweep.dataset.test_size} test images")
        worker = self.pool.start(key, "evaluate", self.configs[key])
        try:
            while worker.events_open or worker.handle.poll() is None:
                for each, event in self.pool.events():
                    self.recorder.record(each, event)
        except KeyboardInterrupt:
            self.pool.stop_all()
            raise
        finally:
            self.pool.running.pop(key, None)
        return worker.evaluation


def needs_training(row: TrialRow | None, budget: int | None) -> bool:
    """Whether trial ``row`` must train for a run to ``budget`` epochs (None: to its end). A trial that is
    pending, interrupted or running elsewhere does, even if it is past ``budget`` (its worker then just
    reports it stopped there); a stopped one only below ``budget``."""
    if row is None or row.status not in CLAIMABLE:
        return False
    return row.status != TrialStatus.STOPPED or budget is None or row.epochs_run < budget


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
