"""The Python API: run sweeps and read their results as pandas DataFrames.

It works the same from a notebook cell, a script (main guard or not) and ``python -`` (standard input)::

    import gridsearch

    outcome = gridsearch.run("grids/quick.yaml", db="results.db", workers=2)
    print(outcome["quick"].selected, outcome["quick"].test_accuracy)
    trials = gridsearch.trials("results.db", "quick")      # one row per trial, best first
    epochs = gridsearch.epochs("results.db", "quick")      # one row per trial and epoch

``run`` takes the options of ``gridsearch run`` as keyword arguments, prepares MNIST itself and, like the
command, stops after a sweep that was interrupted or in which no trial finished. Bad input raises
:class:`gridsearch.errors.UserError` (the command's one ``error:`` line) before anything runs.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import pandas as pd

from gridsearch.errors import UserError
from gridsearch.spec.config import config_value
from gridsearch.store import views
from gridsearch.store.connection import artifacts_dir
from gridsearch.store.models import SCHEMA_VERSION
from gridsearch.store.storage import Storage

if TYPE_CHECKING:
    from gridsearch.engine.options import RunOptions
    from gridsearch.engine.pool import Executor


@dataclass(frozen=True)
class SweepResult:
    """How one sweep ended: every trial's status, the selected trial and its scores."""

    name: str
    statuses: dict[str, str]
    """Trial key -> final status ('done', 'failed', ...), in grid order."""
    selected: str | None = None
    """Key of the selected trial (best by the sweep's ``select``, tested once), or None."""
    params: dict[str, Any] = field(default_factory=dict)
    """The selected trial's gridded params."""
    best_epoch: int | None = None
    val_accuracy: float | None = None
    val_loss: float | None = None
    test_accuracy: float | None = None
    """Accuracy of the selected trial on the sweep's test images (a fraction), or None if untested."""
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)
    """What the run said at the end (e.g. why nothing was selected)."""
    stopped: str | None = None
    """With ``fail_fast``: why the run stopped at a failed trial (one line); the sweep is then ``interrupted``."""

    @property
    def counts(self) -> dict[str, int]:
        """Number of trials by status."""
        return dict(Counter(self.statuses.values()))


@dataclass(frozen=True)
class RunResult:
    """The sweeps a ``run`` got to, in order; ``result[name]`` is one of them."""

    db: str
    sweeps: dict[str, SweepResult]

    def __getitem__(self, name: str) -> SweepResult:
        return self.sweeps[name]

    @property
    def ok(self) -> bool:
        """Whether every sweep ran to the end and selected a trial."""
        return bool(self.sweeps) and all(s.selected and not s.interrupted for s in self.sweeps.values())


def run(sweep_files: str | Path | Sequence[str | Path], **options: Any) -> RunResult:
    """Run sweep files one after the other (again to resume them), as ``gridsearch run`` does.

    ``options`` are ``gridsearch run``'s, by the names of :class:`~gridsearch.engine.options.RunOptions`:
    ``db`` (default ``results.db``); ``workers``: worker processes at once (default 1 on a CPU, GPUs x
    ``slots_per_gpu`` on GPUs); ``fuse``: the most trials in one cohort (default 1); ``data_dir``: the
    datasets (default ``$GRIDSEARCH_DATA``, else ``./data``; MNIST downloaded and each parsed if needed); ``artifacts``:
    checkpoints (default ``runs/`` beside the database); ``device``: auto, cpu or cuda; ``executor``: local,
    dask (``scheduler``: its address) or inline; ``retry_failed``: run failed and timed-out trials again;
    ``max_trials``; ``plain``: log lines instead of the live display (automatic when not on a terminal, as in
    a notebook); ``tensorboard``: a folder for live TensorBoard logs of each trial (needs the ``tensorboard``
    extra); ``fail_fast``: stop at the first trial that fails for good (the others are left interrupted).
    """
    from gridsearch.engine.options import RunOptions

    files = [sweep_files] if isinstance(sweep_files, str | Path) else list(sweep_files)
    keywords = {"retry_command": "the same gridsearch.run(...) with retry_failed=True", **options}
    run_options = RunOptions.from_keywords(keywords)
    results = sweep_results(files, run_options)
    return RunResult(run_options.db, {result.name: result for result in results})


def sweep_results(sweep_files: Sequence[str | Path], options: RunOptions) -> Generator[SweepResult, None, None]:
    """``run``, one sweep at a time: each sweep's result as soon as it has ended (the command prints them)."""
    from gridsearch.engine.coordinator import Coordinator
    from gridsearch.engine.devices import resolve_device
    from gridsearch.spec.bounds import device_memory
    from gridsearch.spec.sweep import load_sweep
    from gridsearch.training.data import default_data_dir, prepare

    if not sweep_files:
        raise UserError("run: name at least one sweep file")
    options.check()
    if options.executor == "dask" and options.scheduler:  # refused at once, not after the sweeps are read
        from gridsearch.engine.dask_executor import check_reachable

        try:
            check_reachable(options.scheduler)
        except OSError as exc:
            raise UserError(f"--scheduler {options.scheduler}: cannot reach a Dask scheduler there ({exc})") from None
    device = resolve_device(options.device)
    memory = device_memory(device)
    sweeps = [load_sweep(Path(path), options.max_trials, memory=memory) for path in sweep_files]  # all valid first
    if options.tensorboard is not None:  # run --tensorboard DIR: its package is there before anything runs
        from gridsearch.engine.tensorboard import require_tensorboard

        require_tensorboard()
    data = options.data_dir if options.data_dir is not None else default_data_dir()
    for dataset in {sweep.dataset.name: sweep.dataset.description for sweep in sweeps}.values():
        prepare(data, dataset)  # before the database: a run refused for want of its data leaves no file behind
    storage = Storage(options.db, upgrade=True, wait=options.db_wait)
    if storage.upgraded_from is not None:
        print(
            f"upgraded {storage.location} from schema version {storage.upgraded_from} to {SCHEMA_VERSION}",
            file=sys.stderr,
        )
    folder = writable_folder(artifacts_dir(options.db, None if options.artifacts is None else str(options.artifacts)))
    pool, workers, gpus = _executor(options, device, max(s.threads for s in sweeps))
    resolved = replace(options, data_dir=data, artifacts=folder, workers=workers, device=device, gpus=gpus)
    try:
        for sweep in sweeps:
            outcome = Coordinator(storage, sweep, resolved, pool).run()
            statuses = {key: str(status) for key, status in outcome.statuses.items()}
            if outcome.interrupted or outcome.stopped:
                result = SweepResult(
                    sweep.name, statuses, interrupted=True, notes=outcome.notes, stopped=outcome.stopped
                )
            else:
                result = _sweep_result(storage, sweep.name, statuses, outcome.selected, outcome.notes)
            yield result
            if result.interrupted or result.selected is None:
                return
    finally:
        pool.close()
        storage.close()


def _executor(options: RunOptions, device: str, threads: int) -> tuple[Executor, int, list[str]]:
    """The executor, how many cohorts run at once, and the GPUs they are spread over."""
    from gridsearch.engine.devices import oversubscription, visible_gpus
    from gridsearch.engine.local_executor import LocalExecutor

    workers = options.workers
    if options.executor == "dask":
        from gridsearch.engine.dask_executor import DaskExecutor

        dask = DaskExecutor(options.scheduler, workers or os.cpu_count() or 1)
        return dask, workers or dask.capacity(), []
    if options.executor == "inline":
        from gridsearch.engine.inline_executor import InlineExecutor

        if (workers or 1) != 1:
            raise UserError("--executor inline runs one trial at a time: leave out --workers")
        return InlineExecutor(), 1, []
    gpus = visible_gpus() if device == "cuda" else []
    workers = workers or (len(gpus) * options.slots_per_gpu if gpus else 1)
    if device == "cpu" and (warning := oversubscription(workers, threads, len(os.sched_getaffinity(0)))):
        print(f"warning: {warning}", file=sys.stderr)
    return LocalExecutor(), workers, gpus


def _sweep_result(
    storage: Storage, name: str, statuses: dict[str, str], selected: str | None, notes: list[str]
) -> SweepResult:
    trial = storage.trial(selected) if selected else None
    if trial is None:
        return SweepResult(name, statuses, notes=notes)
    test = storage.evaluation(trial.key, "test")
    gridded = storage.sweep(name).gridded_params
    return SweepResult(
        name,
        statuses,
        selected=trial.key,
        params={param: config_value(trial.config, param) for param in gridded},
        best_epoch=trial.best_epoch,
        val_accuracy=trial.val_accuracy,
        val_loss=trial.val_loss,
        test_accuracy=test.accuracy if test else None,
        notes=notes,
    )


def writable_folder(folder: Path) -> Path:
    """``folder``, created if needed; :class:`UserError` if checkpoints cannot be written there."""
    from gridsearch.engine.pool import writable

    problem = writable(folder)
    if problem is not None:
        raise UserError(f"--artifacts {folder}: cannot write checkpoints there ({problem.strerror})")
    return folder


def trials(db: str | Path, sweep: str) -> pd.DataFrame:
    """One row per trial of ``sweep``, best first: ``key``, its gridded params as columns, ``seed``,
    ``status``, (``rung``,) ``best_epoch``, ``epochs_run``, ``val_accuracy``, ``val_loss``, ``train_seconds``,
    ``error`` and ``selected`` (True for the selected trial). Accuracies are fractions."""
    storage = Storage(str(db), readonly=True)
    try:
        table = views.trials_table(storage, sweep)
        if not table.empty:
            table["selected"] = table["key"] == storage.selected_trial(sweep)
        return table
    finally:
        storage.close()


EPOCH_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_lr", "seconds")
"""The per-epoch columns ``epochs`` can return (``columns=``)."""


@overload
def epochs(
    db: str | Path,
    sweep: str,
    trials: Iterable[str] | None = None,
    columns: Sequence[str] | None = None,
    chunksize: None = None,
) -> pd.DataFrame: ...


@overload
def epochs(
    db: str | Path,
    sweep: str,
    trials: Iterable[str] | None = None,
    columns: Sequence[str] | None = None,
    *,
    chunksize: int,
) -> Iterator[pd.DataFrame]: ...


def epochs(
    db: str | Path,
    sweep: str,
    trials: Iterable[str] | None = None,
    columns: Sequence[str] | None = None,
    chunksize: int | None = None,
) -> pd.DataFrame | Iterator[pd.DataFrame]:
    """One row per trial of ``sweep`` and epoch (from 0): ``key``, the gridded params, ``seed``, then
    ``epoch``, train and val loss and accuracy, ``epoch_lr`` (the schedule's learning rate in that epoch; a
    gridded ``lr`` is the trial's base rate) and ``seconds``; by trial (best first) and epoch.

    ``trials``: only these trial keys (each must be in the sweep); ``columns``: only these of
    ``EPOCH_COLUMNS`` (``key``, the gridded params, ``seed`` and ``epoch`` always come). ``chunksize``: an
    iterator of DataFrames instead, each a few whole trials of about ``chunksize`` rows, read from the
    database one at a time, so memory stays bounded whatever the sweep's size."""
    wanted = list(EPOCH_COLUMNS if columns is None else columns)
    unknown = [name for name in wanted if name not in EPOCH_COLUMNS]
    if unknown:
        raise UserError(f"epochs: unknown columns {', '.join(map(repr, unknown))} (known: {', '.join(EPOCH_COLUMNS)})")
    if chunksize is not None and (isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1):
        raise UserError(f"chunksize: expected a positive integer, got {chunksize!r}")
    stored = [{"epoch_lr": "lr"}.get(name, name) for name in wanted]
    storage = Storage(str(db), readonly=True)
    try:
        keys = None if trials is None else list(dict.fromkeys([trials] if isinstance(trials, str) else trials))
        table = views.trials_table(storage, sweep, keys)
        if keys is not None and len(table) < len(keys):
            missing = [key for key in keys if key not in set(table["key"] if not table.empty else ())]
            raise UserError(f"epochs: sweep {sweep!r} has no trial {', '.join(map(repr, missing))}")
        gridded = [*storage.sweep(sweep).gridded_params, "seed"]
    except BaseException:
        storage.close()
        raise
    if chunksize is None:
        try:
            return _with_params(table, gridded, views.epochs(storage, list(table.get("key", [])), stored))
        finally:
            storage.close()
    return _epoch_chunks(storage, table, gridded, chunksize, stored)


def _epoch_chunks(
    storage: Storage, table: pd.DataFrame, gridded: list[str], chunksize: int, columns: list[str]
) -> Iterator[pd.DataFrame]:
    """``epochs`` as a few whole trials at a time; closes ``storage`` once read (or dropped)."""
    try:
        if table.empty:
            return
        trials = list(zip(table["key"], table["epochs_run"].fillna(0).astype(int), strict=True))
        for rows in views.epoch_chunks(storage, trials, chunksize, columns):
            yield _with_params(table, gridded, rows)
    finally:
        storage.close()


def _with_params(table: pd.DataFrame, gridded: list[str], rows: pd.DataFrame) -> pd.DataFrame:
    """The epochs ``rows`` of some trials of ``table`` with each trial's key, gridded params and seed before
    them, by trial (in ``table``'s order, best first) and epoch."""
    if table.empty:
        return table
    rows = rows.rename(columns={"trial_key": "key", "lr": "epoch_lr"})
    return table[["key", *gridded]].merge(rows, on="key", how="inner")


def evaluations(db: str | Path, sweep: str) -> pd.DataFrame:
    """Every stored evaluation of the trials of ``sweep`` (the selected trial's ``test``, robustness suites):
    ``key``, ``name``, ``accuracy``, ``loss``, ``errors``, ``samples``, ``confusion`` and ``predictions``."""
    storage = Storage(str(db), readonly=True)
    try:
        keys = [trial.key for trial in storage.trials(sweep)]
        return views.evaluations(storage, keys).rename(columns={"trial_key": "key"})
    finally:
        storage.close()
