"""Reading results: ``status``, ``trials``, ``best``, ``query`` and ``db``."""

from __future__ import annotations

import argparse
import json

import pandas as pd

from gridsearch.cli.output import format_table, narrow, percent_columns, selected_line
from gridsearch.spec.datasets import described
from gridsearch.spec.params import applicable
from gridsearch.store import views
from gridsearch.store.models import SCHEMA_VERSION
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import FINISHED, format_percent, format_value


def cmd_status(args: argparse.Namespace) -> int:
    with Storage(args.db, readonly=True) as storage:
        table = views.status_table(storage)
    if table.empty:
        print("no sweeps yet")
        return 0
    if (table["dataset"] == "mnist").all():  # the dataset is shown when a sweep trains on another
        table = table.drop(columns="dataset")
    print(format_table(table if args.wide else narrow(table), "table"))
    return 0


def cmd_trials(args: argparse.Namespace) -> int:
    with Storage(args.db, readonly=True) as storage:
        table = views.trials_table(storage, args.sweep)
        gridded = storage.sweep(args.sweep).gridded_params
    if args.top:
        table = table.head(args.top)
    if args.format == "table":
        table = percent_columns(table) if args.wide else narrow(percent_columns(table), params=gridded)
    print(format_table(table, args.format))
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    with Storage(args.db, readonly=True) as storage:
        row = storage.sweep(args.sweep)
        trial = storage.trial(row.selected_trial) if row.selected_trial else None
        if trial is None:
            statuses = [t.status for t in storage.trials(args.sweep)]
            finished = sum(status in FINISHED for status in statuses)
            print(f"sweep {args.sweep} has no selected trial yet ({finished} of {len(statuses)} trials finished)")
            return 1
        test = storage.evaluation(trial.key, "test")
        params = applicable(trial.config["params"])  # as written, and only those its optimizer uses
        if args.format == "json":
            tested = test and {
                "accuracy": test.accuracy,
                "loss": test.loss,
                "errors": test.errors,
                "samples": test.samples,
                "confusion": test.confusion,
            }
            report = {
                "sweep": row.name,
                "trial": trial.key,
                "architecture": trial.architecture,
                "dataset": trial.config["dataset"]["name"],
                "select": row.select_metric,
                "best_epoch": trial.best_epoch,
                "val_accuracy": trial.val_accuracy,
                "val_loss": trial.val_loss,
                "params": params,
                "seed": trial.seed,
                "test": tested,
            }
            if row.search.get("over_seeds"):
                report["over_seeds"] = _over_seeds(storage, args.sweep, trial.key)
            print(json.dumps(report, indent=2))
            return 0
        print(selected_line(storage, args.sweep))
        if row.search.get("over_seeds"):
            print(_over_seeds_line(row.select_metric, _over_seeds(storage, args.sweep, trial.key)))
        print(f"architecture {trial.architecture}, seed {trial.seed}, params:")
        for name, value in params.items():
            if format_value(value) != "":  # an empty field (init_from: none) is not printed
                print(f"  {name}: {format_value(value)}")
        if test is not None:
            confusion = pd.DataFrame(test.confusion)
            confusion.index.name = "true\\pred"
            noun = described(trial.config["dataset"]).noun
            print(f"test loss {test.loss:.4f}; confusion matrix (rows: true {noun}, columns: predicted):")
            print(confusion.to_string())
        return 0


def _over_seeds(storage: Storage, sweep: str, key: str) -> dict:
    """The selected configuration of an ``over_seeds: mean`` sweep: its mean val and test scores and each seed's."""
    from gridsearch.engine.selection import seeds_of

    trials = seeds_of(storage.trials(sweep), key)
    tests = [storage.evaluation(trial.key, "test") for trial in trials]
    seeds = [
        {
            "seed": trial.seed,
            "trial": trial.key,
            "val_accuracy": trial.val_accuracy,
            "val_loss": trial.val_loss,
            "test_accuracy": test and test.accuracy,
        }
        for trial, test in zip(trials, tests)
    ]
    return {
        "mean": {
            "val_accuracy": sum(trial.val_accuracy or 0.0 for trial in trials) / len(trials),
            "val_loss": sum(trial.val_loss or 0.0 for trial in trials) / len(trials),
            "test_accuracy": None if None in tests else sum(test.accuracy for test in tests if test) / len(tests),
        },
        "seeds": seeds,
    }


def _over_seeds_line(select: str, chosen: dict) -> str:
    """How an ``over_seeds: mean`` sweep selected: the configuration's means, then each of its seeds."""
    mean = chosen["mean"]
    test = "not tested" if mean["test_accuracy"] is None else f"test {format_percent(mean['test_accuracy'])}"
    seeds = "; ".join(
        f"seed {s['seed']}: val {format_percent(s['val_accuracy'])}"
        + ("" if s["test_accuracy"] is None else f", test {format_percent(s['test_accuracy'])}")
        for s in chosen["seeds"]
    )
    return (
        f"selected the configuration with the best mean {select} over its {len(chosen['seeds'])} seeds "
        f"(the selected trial is its best seed): mean val {format_percent(mean['val_accuracy'])}, {test} ({seeds})"
    )


def cmd_query(args: argparse.Namespace) -> int:
    with Storage(args.db, readonly=True) as storage:
        table = views.query(storage, args.sql)
    print(format_table(table, args.format))
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    storage = Storage(args.db, create=False, upgrade=True)
    storage.close()
    if storage.upgraded_from is None:
        print(f"{storage.location} is at schema version {SCHEMA_VERSION}: nothing to upgrade")
    else:
        print(_upgraded(storage))
    return 0


def _upgraded(storage: Storage) -> str:
    return f"upgraded {storage.location} from schema version {storage.upgraded_from} to {SCHEMA_VERSION}"
