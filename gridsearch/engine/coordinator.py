"""The coordinator: runs a sweep's trials and records what they report.

It is the database's only writer during a run, and it wires four parts together, each with one job:
the search strategy (``strategies``) decides which trials train and how far, batch by batch, from the
results so far; the worker pool (``pool``) starts and watches their processes; the event recorder
(``recorder``) maps what workers report to the store; selection (``selection``) picks the best trial
and tests it once.

Trials are handed to workers in cohorts, formed here by one rule (``jobs.Cohorts``): up to ``--fuse K`` trials
that can train as one stack (the same ``cohort_signature``), in the strategy's order; ``run`` says once what
cohorts that makes. The coordinator claims each trial atomically (so two ``run`` commands never train the same
trial), starts a worker for a cohort as soon as one of ``--workers`` slots frees, renews the leases of its
running trials, and restarts a worker killed from outside from its members' checkpoints. Ctrl-C,
SIGTERM or a crash leave trials 'interrupted' or 'running' with a stale lease; the next ``run`` resumes them.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridsearch import __version__
from gridsearch.engine.cost import Setting, sweep_cost
from gridsearch.engine.devices import code_version
from gridsearch.engine.endings import Endings
from gridsearch.engine.failures import headline, nothing_finished
from gridsearch.engine.jobs import Cohorts, Task
from gridsearch.engine.local_executor import LocalExecutor
from gridsearch.engine.objectives import select_on_front, with_values
from gridsearch.engine.options import RunOptions
from gridsearch.engine.pool import (
    POLL_SECONDS,
    ArtifactsUnavailable,
    CodeUnavailable,
    Executor,
    ExecutorLost,
    Placement,
    Worker,
    WorkerPool,
    artifacts_unavailable,
    writable,
)
from gridsearch.engine.progress import SweepProgress
from gridsearch.engine.recorder import EventRecorder
from gridsearch.engine.selection import select_and_test
from gridsearch.engine.space import SpaceWatch, trial_bytes
from gridsearch.engine.strategies import SearchCallbacks, strategy_for
from gridsearch.engine.tensorboard import TensorBoardLog
from gridsearch.errors import DISK_FULL
from gridsearch.spec import halving
from gridsearch.spec.bounds import parameter_count
from gridsearch.spec.config import TrialConfig, config_value
from gridsearch.spec.sweep import Sweep, Trial, resolve_warm_starts
from gridsearch.store import views
from gridsearch.store.models import TrialRow
from gridsearch.store.records import Evaluation
from gridsearch.store.storage import Owner, Storage
from gridsearch.training.run_folders import Maker
from gridsearch.vocabulary import CLAIMABLE, FAILURES, SCORED, TrialStatus, format_count, format_params

HEARTBEAT_SECONDS = 10.0


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


class Coordinator(SearchCallbacks):
    """Runs one sweep to completion (or interruption) and selects its best trial; the strategy's callbacks."""

    def __init__(self, storage: Storage, sweep: Sweep, options: RunOptions, executor: Executor | None = None):
        assert options.data_dir is not None and options.artifacts is not None, "resolved options"
        self.storage = storage
        self.sweep = resolve_warm_starts(sweep, storage.selected_trial)
        self.options = options
        self.artifacts = options.artifacts
        self.executor: Executor = executor or LocalExecutor()
        self.version = code_version()
        placement = Placement(
            options.data_dir,
            options.artifacts,
            options.device,
            options.gpus,
            self.sweep.dataset.test_size,
            fused=not options.in_turn,
            maker=Maker(database_id=storage.database_id, gridsearch=__version__, code=self.version),
            code_path=(self.sweep.folder,) if self.sweep.folder else (),
        )
        self.pool = WorkerPool(self.executor, placement, self.sweep.timeout, options.stall_after)
        self.owner = Owner.this_process()
        self.endings = Endings(self.sweep.timeout, self.sweep.retries, self._log)
        self.evaluation_failures: dict[str, str] = {}
        self.configs: dict[str, TrialConfig] = {}
        self.cohorts = Cohorts(options.fuse, stacked=not options.in_turn)
        self.signatures: dict[str, Hashable | None] = {}

    def run(self) -> SweepOutcome:
        """Run the sweep's search over its unfinished trials, then select and test the best. Whatever ends
        it (an exception included) ends its workers first: none trains epochs nobody records."""
        waiting = self.storage.faults.waiting
        try:
            return self._run()
        except BaseException:
            self.pool.stop_all()
            raise
        finally:
            self.storage.faults.waiting = waiting

    def _run(self) -> SweepOutcome:
        strategy = strategy_for(self.sweep, self)
        trials = strategy.candidates()
        self.storage.save_sweep(self.sweep, trials, prune=not self.sweep.search.asks)
        self.configs = {trial.key: trial.config() for trial in trials}
        if self.options.retry_failed:
            self.storage.reset_failed([row.key for row in self.storage.trials(self.sweep.name)])
        rows = self.storage.trials(self.sweep.name)
        complete = self.storage.selected_trial(self.sweep.name) is not None
        cost = sweep_cost(self.sweep, trials, {row.key: row for row in rows}, complete)
        self.progress = SweepProgress(
            self.sweep.name,
            self._statuses(),
            self.options.workers or 1,
            False if self.options.plain else None,
            cost.to_do,
        )
        self.storage.faults.waiting = self.progress.message
        self.space = SpaceWatch(self.artifacts, self.options.db_wait, self.progress.message)
        self.recorder = EventRecorder(self.storage, self.progress, self.version)
        if self.options.tensorboard is not None:
            self.recorder.tensorboard = TensorBoardLog(self.options.tensorboard, self.sweep, self.configs)
        previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            finalists = strategy.search(self._evaluate_candidates)
        except KeyboardInterrupt:
            self._stop_all("interrupted: run the same command again to resume")
            self.progress.close()
            return SweepOutcome(self._statuses(), interrupted=True)
        except FailedFast as failure:
            self._stop_all(str(failure))
            self.progress.close()
            return SweepOutcome(self._statuses(), stopped=str(failure))
        except (ArtifactsUnavailable, ExecutorLost):  # the database works: the stopped trials are marked resumable
            self._stop_all(None)
            self.progress.close()
            raise
        except BaseException:  # ``run`` stops the workers
            self.progress.close()
            raise
        finally:
            signal.signal(signal.SIGTERM, previous_handler)
            if self.recorder.tensorboard is not None:
                self.recorder.tensorboard.close()
        try:
            return self._select_and_test(finalists)
        finally:
            self.progress.close()

    # -- the strategy's callbacks ---------------------------------------------------------------

    def rung_started(self, rung: int, rungs: int, budget: int, keys: Sequence[str]) -> None:
        self.storage.set_rung(self.sweep.name, keys, rung)
        self.progress.rung_started(rung, rungs, budget, len(keys))

    def message(self, text: str) -> None:
        self.progress.message(text)

    # -- training: the strategies' evaluate_candidates ------------------------------------------

    def _evaluate_candidates(self, trials: Sequence[Trial], budget: int | None) -> list[halving.Standing]:
        """Train ``trials`` to ``budget`` epochs (None: to their end); their standings within it: to their
        end, each trial's recorded best epoch; within a budget, from one read of their epochs."""
        new = [trial for trial in trials if trial.key not in self.configs]
        if new:  # proposed by a strategy that asks
            self.storage.save_sweep(self.sweep, new, prune=False)
            self.configs.update({trial.key: trial.config() for trial in new})
            self.progress.add_trials({trial.key: TrialStatus.PENDING for trial in new})
        keys = list(dict.fromkeys(trial.key for trial in trials))
        self._train(keys, budget)
        rows = self.storage.trial_rows(keys)
        if budget is None:
            standings = [_final_standing(key, rows.get(key), self.sweep.select) for key in keys]
        else:
            epochs = self.storage.faults.call(lambda: views.epochs_by_trial(self.storage, keys))
            standings = [
                halving.standing(key, epochs.get(key, []), budget, self.sweep.select, rows[key].status in FAILURES)
                for key in keys
            ]
        if not self.sweep.objectives:
            return standings
        return with_values(self.storage, self.sweep, standings, budget, self._measure)

    def _train(self, keys: list[str], budget: int | None) -> None:
        """Train those of ``keys`` that need it, a new cohort as soon as a slot frees; wait for those
        another live coordinator is running."""
        rows = self.storage.trial_rows(keys)
        todo = deque(key for key in keys if needs_training(rows.get(key), budget))
        if self.options.fuse > 1 and todo:
            self.progress.message(self.cohorts.describe([self.configs[key] for key in todo])[0])
        elsewhere: set[str] = set()
        last_heartbeat = time.monotonic()
        while todo or self.pool.running or elsewhere:
            while todo and len(self.pool) < (self.options.workers or 1) and self.space.room_for(self._needs(todo)):
                cohort = self._claim_cohort(todo, budget, elsewhere)
                if cohort:
                    self._start(cohort, budget, todo)
            self._watch()
            for worker in self.pool.exited():
                self._finish(worker, todo)
            self.pool.enforce_timeout()
            if time.monotonic() - last_heartbeat > HEARTBEAT_SECONDS:
                self.storage.heartbeat(self.pool.keys(), self.owner)
                last_heartbeat = time.monotonic()
            if not todo and not self.pool.running and elsewhere:
                time.sleep(2 * POLL_SECONDS)
                rows = self.storage.trial_rows(list(elsewhere))
                todo.extend(sorted((k for k in elsewhere if needs_training(rows.get(k), budget)), key=keys.index))
                elsewhere.clear()

    def _claim_cohort(self, todo: deque[str], budget: int | None, elsewhere: set[str]) -> list[str]:
        """Take from ``todo`` the first trial and up to ``fuse - 1`` more of its cohort (``Cohorts``), in order,
        claiming each; those another live coordinator runs go to ``elsewhere``."""
        first = todo.popleft()
        signature = self._signature(first)
        mates: Iterable[str] = ()
        if signature is not None:  # a copy: members leave ``todo`` as they are found
            mates = (key for key in list(todo) if self._signature(key) == signature)
        cohort: list[str] = []
        for key in itertools.chain([first], mates):
            if len(cohort) == self.options.fuse:
                break
            if key != first:
                todo.remove(key)
            if self.storage.claim(key, self.owner):
                cohort.append(key)
            elif needs_training(self.storage.trial(key), budget):
                elsewhere.add(key)  # another live coordinator runs it
        return cohort

    def _signature(self, key: str) -> Hashable | None:
        if key not in self.signatures:
            self.signatures[key] = self.cohorts.signature(self.configs[key])
        return self.signatures[key]

    def _needs(self, todo: deque[str]) -> int:
        """The disk space the next cohort of ``todo`` needs for its run folders."""
        return trial_bytes(parameter_count(self.configs[todo[0]])) * min(self.options.fuse, len(todo))

    def _watch(self) -> None:
        """Record what the workers sent, kill those that stalled, and stop if the executor lost its cluster."""
        for worker, event in self.pool.events():
            self.recorder.record(worker, event)
        self.pool.enforce_stalls()
        if (lost := self.executor.lost()) is not None:
            raise ExecutorLost(lost)

    def _start(self, cohort: list[str], budget: int | None, todo: deque[str]) -> None:
        rows = self.storage.trial_rows(cohort)
        try:
            worker = self.pool.start("train", [(key, self.configs[key]) for key in cohort], budget)
        except OSError as exc:  # a full disk (the others stop the run): back to the queue, until there is room
            assert exc.errno in DISK_FULL, exc
            for key in cohort:
                self.storage.finish(key, TrialStatus.INTERRUPTED)
            todo.extendleft(reversed(cohort))
            self.space.failed()
            return
        for key in cohort:
            label = trial_label(self.configs[key], self.sweep.gridded_params, len(self.sweep.seeds) > 1)
            row = rows.get(key)
            trained, setting = row.epochs_run if row else 0, Setting.of_config(self.configs[key])
            self.progress.trial_started(key, label, worker.members[key].epochs, trained, setting)

    def _finish(self, worker: Worker, todo: deque[str]) -> None:
        """Record how each member of a worker that has exited ended (``Endings``); those trained again go back to
        the front of ``todo``. A run folder that failed because the artifacts folder cannot be written stops the
        run (a full disk is waited for instead); with ``fail_fast`` a member that failed for good stops the sweep."""
        code = worker.handle.poll()
        again: list[str] = []
        failed_for_good = None
        folder_failed = False
        for member in worker.members.values():
            key = member.key
            ending = self.endings.of(worker, member, code)
            summary = member.summary if ending.status in SCORED else None
            self.storage.finish(key, ending.status, summary, ending.error)
            again += [key] if ending.again else []
            folder_failed |= ending.folder_failed
            if ending.status == TrialStatus.INTERRUPTED and not ending.next:
                self.progress.trial_finished(key, ending.status, "back in the queue: its cohort's worker ended first")
                continue
            self.progress.trial_finished(key, ending.status, ending.said(summary))
            if ending.status in FAILURES and failed_for_good is None:
                failed_for_good = (key, ending.status, ending.error)
        unimportable = [m.error for m in worker.members.values() if m.unimportable]
        if unimportable:
            raise CodeUnavailable(
                f"{unimportable[0]}; the run stopped, its trials are resumable: make the code importable on every "
                "worker (the sweep file's folder at the same path, or the package installed) and run it again"
            )
        if any(member.disk_full for member in worker.members.values()):
            self.space.failed()
        problem = writable(self.artifacts) if folder_failed else None
        if problem is not None and problem.errno not in DISK_FULL:
            raise artifacts_unavailable(self.artifacts, problem)
        todo.extendleft(reversed(again))
        if self.options.fail_fast and failed_for_good is not None:
            raise self._failed_fast(*failed_for_good)

    def _failed_fast(self, key: str, status: str, error: str | None) -> FailedFast:
        label = trial_label(self.configs[key], self.sweep.gridded_params, len(self.sweep.seeds) > 1)
        return FailedFast(
            f"stopped at the first failed trial (--fail-fast): trial {key} ({label}) {status}: {headline(error)}; "
            f"{len(self.pool)} running trial(s) interrupted; to resume and run it again: {self._retry_command()}"
        )

    def _log(self, key: str) -> Path:
        return self.artifacts / key / "worker.log"

    def _stop_all(self, why: str | None) -> None:
        """Stop every worker and leave their unfinished trials 'interrupted'; say ``why`` (if given)."""
        for worker in self.pool.stop_all():
            for member in worker.members.values():
                if member.summary is None:
                    self.storage.finish(member.key, TrialStatus.INTERRUPTED, error=None)
        if why is not None:
            self.progress.message(why)

    def _statuses(self) -> dict[str, str]:
        return {row.key: row.status for row in self.storage.trials(self.sweep.name)}

    # -- selection and test ------------------------------------------------------------------

    def _select_and_test(self, finalists: list[str]) -> SweepOutcome:
        """Select the best finalist and test it, once every finalist has ended: selection waits for a trial
        left unfinished (its run folder failed) rather than pick among the others."""
        unfinished = [row.key for row in self.storage.trial_rows(finalists).values() if row.status in CLAIMABLE]
        if unfinished:
            outcome = SweepOutcome(self._statuses())
            outcome.notes.append(
                f"no trial selected yet: {len(unfinished)} trial(s) did not finish ({', '.join(unfinished[:5])}"
                f"{', ...' if len(unfinished) > 5 else ''}); run the same command again to finish them"
            )
            return outcome
        test_size = self.sweep.dataset.test_size
        if self.sweep.objectives:
            selection = select_on_front(self.storage, self.sweep, test_size, self._evaluate)
        else:
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
            rows = self.storage.trials(self.sweep.name)
            outcome.notes.append(nothing_finished(rows, self.sweep.name, self.artifacts, self._retry_command()))
        elif not selection.tested:
            failed = next(iter(self.evaluation_failures.items()), (selection.best, "no reason recorded"))
            outcome.notes.append(
                f"the test evaluation of trial {failed[0]} failed: {headline(failed[1])} (its error in `gridsearch "
                f"trials {self.sweep.name}`; its log: {self._log(failed[0])}); run again to retry"
            )
        return outcome

    def _retry_command(self) -> str:
        return self.options.retry_command or "the same command with --retry-failed"

    def _evaluate(self, key: str) -> Evaluation | None:
        """Evaluate the trial's best weights on the test set in a worker; None if the worker failed (the reason
        kept with the trial until an evaluation succeeds)."""
        self.progress.message(f"testing trial {key} on {format_count(self.sweep.dataset.test_size)} test images")
        worker = self._one_off("evaluate", [key])
        member = worker.members[key]
        reason = None if member.evaluation else self.endings.evaluation_failure(worker, member, worker.handle.poll())
        self.storage.update_trial(key, error=reason)
        if reason is not None:
            self.evaluation_failures[key] = reason
        return member.evaluation

    def _measure(self, keys: list[str]) -> None:
        """Measure the inference time of each of ``keys`` in one worker (the recorder stores each); one that fails
        is said, and has no point (nor a promotion) until a later run measures it."""
        self.progress.message(f"measuring the inference time of {len(keys)} trial(s)")
        for key, member in self._one_off("measure", keys).members.items():
            if member.error:
                self.progress.message(f"trial {key}: inference time not measured: {headline(member.error)}")

    def _one_off(self, task: Task, keys: list[str]) -> Worker:
        """Run ``task`` for the trials ``keys`` in one worker, recording its events until it ends; the worker."""
        rows = self.storage.trial_rows([key for key in keys if key not in self.configs])
        worker = self.pool.start(task, [(key, self.configs.get(key) or rows[key].config) for key in keys])
        try:
            while worker.events_open or worker.handle.poll() is None:
                self._watch()
        except (KeyboardInterrupt, ExecutorLost):
            self.pool.stop_all()
            raise
        finally:
            self.pool.running.pop(worker.key, None)
        return worker


def needs_training(row: TrialRow | None, budget: int | None) -> bool:
    """Whether trial ``row`` must train for a run to ``budget`` epochs (None: to its end). A trial that is
    pending, interrupted or running elsewhere does, even if it is past ``budget`` (its worker then just
    reports it stopped there); a stopped one only below ``budget``."""
    if row is None or row.status not in CLAIMABLE:
        return False
    return row.status != TrialStatus.STOPPED or budget is None or row.epochs_run < budget


def _final_standing(key: str, row: TrialRow | None, select: str) -> halving.Standing:
    """Where a trial trained to its end stands: its recorded best epoch (none if it failed or is unscored)."""
    if row is None or row.status in FAILURES or getattr(row, select) is None:
        return halving.Standing(key, None, None)
    return halving.Standing(key, getattr(row, select), row.val_loss)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
