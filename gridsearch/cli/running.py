"""``run`` and ``plan``: running sweeps and what they will cost."""

from __future__ import annotations

import argparse
import shlex
import sys
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from gridsearch.api import sweep_results
from gridsearch.spec import halving
from gridsearch.spec.config import config_value
from gridsearch.store import views
from gridsearch.store.connection import database_url, sqlite_path
from gridsearch.store.storage import Storage

if TYPE_CHECKING:
    from gridsearch.spec.sweep import Sweep, Trial

from gridsearch.cli.output import format_table, percent_columns, selected_line


def cmd_run(args: argparse.Namespace) -> int:
    results = sweep_results(
        args.sweep_files,
        db=args.db,
        workers=args.workers,
        data_dir=args.data_dir,
        artifacts=args.artifacts,
        device=args.device,
        slots_per_gpu=args.slots_per_gpu,
        executor=args.executor,
        scheduler=args.scheduler,
        retry_failed=args.retry_failed,
        max_trials=args.max_trials,
        plain=args.plain,
        tensorboard=args.tensorboard,
        fail_fast=args.fail_fast,
        retry_command=_retry_command(args.argv),
    )
    with closing(results):  # stops the workers and closes the database, also on an early return
        for result in results:
            if result.stopped:
                print(result.stopped, file=sys.stderr)
                return 1
            if result.interrupted:
                return 130
            storage = Storage(args.db, readonly=True)
            print(format_table(percent_columns(views.trials_table(storage, result.name).head(5)), "table"))
            for note in result.notes:
                print(note)
            if result.selected is None:
                storage.close()
                return 1
            print(selected_line(storage, result.name))
            storage.close()
    return 0


def _retry_command(argv: list[str]) -> str:
    """This ``run`` command as typed, with ``--retry-failed``: what runs its failed trials again."""
    program = ["gridsearch"] if Path(sys.argv[0]).name == "gridsearch" else ["python", "-m", "gridsearch"]
    return shlex.join([*program, *argv, *([] if "--retry-failed" in argv else ["--retry-failed"])])


def cmd_plan(args: argparse.Namespace) -> int:
    from gridsearch.spec.sweep import load_sweep, resolve_warm_starts
    from gridsearch.spec.warm_start import fit_lines

    sweep = load_sweep(args.sweep_file, args.max_trials)
    path = sqlite_path(database_url(args.db))
    no_database_yet = path is not None and not path.exists()  # then every trial is new
    storage = None if no_database_yet else Storage(args.db, readonly=True)
    unselected: list[str] = []

    def selected_trial(name: str) -> str:
        key = storage.selected_trial(name) if storage else None
        if key is None:
            unselected.append(name)
        return key or f"<best of {name}>"

    sweep = resolve_warm_starts(sweep, selected_trial)
    trials = list(sweep.trials())
    known = {t.key: row.status for t in trials if storage and (row := storage.trial(t.key))}
    records = [
        {
            "key": t.key,
            **{name: config_value(t.config(), name) for name in sweep.gridded_params},
            "seed": t.seed,
            "status": known.get(t.key, "new"),
        }
        for t in trials
    ]
    table = pd.DataFrame.from_records(records)
    print(format_table(table, args.format))
    if args.format == "table":
        counts = table["status"].value_counts()
        print(
            f"\n{sweep.name}: {len(table)} trials of {', '.join(sweep.architectures)}: "
            + ", ".join(f"{n} {status}" for status, n in counts.items())
        )
        for line in fit_lines(trials):
            print(line)
        for name in dict.fromkeys(unselected):
            print(
                f"init_from best:{name}: sweep {name!r} has no selected trial yet; these keys will "
                "change once it has one"
            )
        if sweep.rung_epochs:
            print("\n" + _rung_plan(len(set(table["key"])), sweep.search.factor, sweep.rung_epochs))
        print("\n" + _cost_lines(sweep, trials, storage, args.device, args.workers))
    if storage is not None:
        storage.close()  # the last reader to close removes SQLite's -wal and -shm files
    return 0


def _cost_lines(sweep: Sweep, trials: list[Trial], storage: Storage | None, device: str, workers: int | None) -> str:
    """What ``sweep`` costs: epochs and training samples in all and still to do, and an estimate of the
    wall time from the epochs ``storage`` has recorded on ``device``."""
    from gridsearch.engine.cost import estimate, sweep_cost
    from gridsearch.engine.devices import resolve_device

    rows = {t.key: row for t in trials if storage and (row := storage.trial(t.key))}
    complete = storage is not None and storage.selected_trial(sweep.name) is not None
    cost = sweep_cost(sweep, trials, rows, complete)
    at_most = "at most " if sweep.rung_epochs else ""
    lines = [
        f"cost: {at_most}{cost.epochs:,} epochs, {cost.samples:,} training samples ({cost.train_size:,} per epoch); "
        f"{at_most}{cost.epochs_to_do:,} epochs ({cost.epochs_to_do * cost.train_size:,} samples) still to train"
    ]
    if storage is None:
        lines.append("estimate: nothing to go on: there is no database yet (run a few trials, then plan again)")
    else:
        lines.append(estimate(storage, cost, resolve_device(device), workers))
    return "\n".join(lines)


def _rung_plan(trials: int, factor: int, budgets: list[int]) -> str:
    """The successive-halving schedule: trials and epochs of each rung, and the total vs the full grid."""
    planned = halving.planned_epochs(trials, factor, budgets)
    rungs = pd.DataFrame(
        {
            "rung": range(len(budgets)),
            "epochs": budgets,
            "trials": halving.rung_sizes(trials, factor, len(budgets)),
            "epochs_trained": planned,
        }
    )
    full = trials * budgets[-1]
    return (
        f"successive halving (factor {factor}):\n{rungs.to_string(index=False)}\n"
        f"at most {sum(planned):,} epochs in all, {sum(planned) / full:.0%} of the full grid's {full:,}"
    )
