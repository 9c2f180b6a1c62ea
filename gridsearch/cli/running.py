"""``run`` and ``plan``: running sweeps and what they will cost."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import Counter
from contextlib import closing
from dataclasses import fields
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
    from collections.abc import Mapping

    from gridsearch.spec.sweep import Sweep, Trial
    from gridsearch.store.models import TrialRow

from gridsearch.cli.output import format_table, percent_columns, selected_line


def cmd_run(args: argparse.Namespace) -> int:
    from gridsearch.engine.options import RunOptions

    known = {option.name for option in fields(RunOptions)} - {"gpus", "retry_command"}
    options = {name: value for name, value in vars(args).items() if name in known}
    results = sweep_results(
        args.sweep_files, RunOptions.from_keywords({**options, "retry_command": _retry_command(args.argv)})
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

    sweep = load_sweep(args.sweep_file, args.max_trials, build=False)  # without torch
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
    if sweep.search.asks:  # only its first batch is known before anything trains
        from gridsearch.engine.strategies import strategy_for

        trials = strategy_for(sweep).first_batch()
    else:
        trials = list(sweep.trials())
    stored = storage.trial_rows(t.key for t in trials) if storage else {}  # one bulk read, not a query per trial
    records = [
        {
            "key": t.key,
            **{name: config_value(config, name) for name in sweep.gridded_params},
            "seed": t.seed,
            "status": stored[t.key].status if t.key in stored else "new",
        }
        for t, config in ((t, t.config()) for t in trials)  # each config built once
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
        if storage is not None:
            for line in code_change_lines(sweep, trials, stored, storage):
                print(line)
        for name in dict.fromkeys(unselected):
            print(
                f"init_from best:{name}: sweep {name!r} has no selected trial yet; these keys will "
                "change once it has one"
            )
        if sweep.rule is not None:
            print(_objectives_line(sweep))
        search = sweep.search
        if search.asks:
            assert search.trials is not None and search.batch is not None
            print(
                f"\n{search.label}: the table is batch 1 of {-(-search.trials // search.batch)}; the other "
                f"{search.trials - search.batch} points are proposed from the results of the batches before them"
            )
        if search.describes_rungs:
            print("\n" + _rung_plan(sweep, len(set(table["key"]))))
        if args.fuse > 1:
            from gridsearch.engine.jobs import Cohorts

            cohorts = Cohorts(args.fuse, stacked=not args.in_turn)
            print("\n" + "\n".join(cohorts.describe([t.config() for t in trials], [t.key for t in trials])))
        print("\n" + _cost_lines(sweep, trials, storage, stored, args.device, args.workers))
    if storage is not None:
        storage.close()  # the last reader to close removes SQLite's -wal and -shm files
    return 0


def code_change_lines(sweep: Sweep, trials: list[Trial], stored: Mapping[str, TrialRow], storage: Storage) -> list[str]:
    """For each of the user's modules whose source changed since the sweep's stored trials trained it: how many
    of the sweep's trials are new for that alone (the same config, another digest), and the module's file."""
    from gridsearch.spec.usercode import CodeRef

    if not any(t.code for t in trials) or sweep.name not in storage.sweep_names():
        return []

    def without_code(config: Mapping[str, object]) -> str:
        return json.dumps({k: v for k, v in config.items() if k != "code"}, sort_keys=True)

    before: dict[str, dict[str, str]] = {}
    for row in storage.trials(sweep.name):
        if "code" in row.config:
            before[without_code(row.config)] = row.config["code"]
    changed: Counter[str] = Counter()
    for trial in trials:
        old = before.get(without_code(trial.config())) if trial.key not in stored else None
        for module in (m for m, digest in trial.code.items() if old is not None and old.get(m) != digest):
            changed[module] += 1
    folder = Path(sweep.folder or ".")
    lines = []
    for module, count in changed.items():
        source = CodeRef(module, "_").source_file()
        shown = source.relative_to(folder) if source.is_relative_to(folder) else source
        lines.append(f"{count} trial(s) new since their code changed: {shown}")
    return lines


def _cost_lines(
    sweep: Sweep,
    trials: list[Trial],
    storage: Storage | None,
    stored: Mapping[str, TrialRow],
    device: str,
    workers: int | None,
) -> str:
    """What ``sweep`` costs (its ``stored`` trials read already): epochs and training samples in all and still
    to do, and an estimate of the wall time from the epochs ``storage`` has recorded on ``device``."""
    from gridsearch.engine.cost import estimate, sweep_cost
    from gridsearch.engine.devices import resolve_device

    complete = storage is not None and storage.selected_trial(sweep.name) is not None
    cost = sweep_cost(sweep, trials, stored, complete)
    at_most = "at most " if sweep.rung_epochs else ""
    lines = [
        f"cost: {at_most}{cost.epochs:,} epochs, {cost.samples:,} training samples ({cost.train_size:,} per epoch); "
        f"{at_most}{cost.epochs_to_do:,} epochs ({cost.epochs_to_do * cost.train_size:,} samples) still to train"
    ]
    if storage is None:
        lines.append("estimate: nothing to go on: there is no database yet (run a few trials, then plan again)")
    else:
        lines.append(estimate(storage, cost, resolve_device(device, driver_only=True), workers))
    return "\n".join(lines)


def _rung_plan(sweep: Sweep, trials: int) -> str:
    """The schedule of a search with rungs: each bracket's rungs (one bracket for successive halving) with
    their trials and epochs, and the total vs the full grid."""
    from gridsearch.engine.cost import planned_rung_epochs

    search = sweep.search
    records = []
    for bracket in search.brackets:
        sizes = (
            halving.rung_sizes(trials, search.factor, len(bracket.budgets))
            if bracket.n is None
            else bracket.sizes(search.factor, trials)
        )
        records += [
            {"bracket": bracket.s, "rung": rung, "epochs": budget, "trials": size}
            for rung, (budget, size) in enumerate(zip(bracket.budgets, sizes))
        ]
    rungs = pd.DataFrame.from_records(records)
    rungs["epochs_trained"] = planned_rung_epochs(sweep, trials)
    if search.strategy != "hyperband":
        rungs = rungs.drop(columns="bracket")
    planned = int(rungs["epochs_trained"].sum())
    full = trials * (search.epochs or 1)
    return (
        f"{search.label}:\n{rungs.to_string(index=False)}\n"
        f"at most {planned:,} epochs in all, {planned / full:.0%} of the full grid's {full:,}"
    )


def _objectives_line(sweep: Sweep) -> str:
    """A sweep of several objectives: its objectives and how one trial of its front is selected."""
    assert sweep.rule is not None
    objectives = ", ".join(f"{o.metric} ({o.direction})" for o in sweep.objectives)
    return f"\nobjectives: {objectives}; the front's trial selected: {sweep.rule.describe()}"
