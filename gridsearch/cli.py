"""The ``gridsearch`` command line: run, plan, status, trials, best, query, report, evaluate, inspect and serve."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from gridsearch import __version__
from gridsearch.api import DEFAULT_MAX_TRIALS, sweep_results
from gridsearch.errors import UserError
from gridsearch.spec import halving
from gridsearch.spec.config import config_value
from gridsearch.store import views
from gridsearch.store.connection import DEFAULT_DB, artifacts_dir, database_url, sqlite_path
from gridsearch.store.models import SCHEMA_VERSION
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import FINISHED, format_params

if TYPE_CHECKING:
    from gridsearch.spec.sweep import Sweep, Trial

PERCENT_COLUMNS = ("val_accuracy", "accuracy", "test_accuracy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gridsearch", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gridsearch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument(
            "--db",
            default=DEFAULT_DB,
            help="results database: a file path or any SQLAlchemy URL (default: %(default)s)",
        )
        return sub

    run = command("run", "run sweep files, one after the other (again to resume them)")
    run.add_argument("sweep_files", type=Path, nargs="+", metavar="sweep_file")
    run.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where MNIST lives or is downloaded (default: $GRIDSEARCH_DATA, else ./data)",
    )
    run.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="trials run in parallel (default: 1 on CPU; GPUs x --slots-per-gpu; a Dask cluster's worker threads)",
    )
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    run.add_argument(
        "--slots-per-gpu", type=_positive_int, default=1, help="trials run at once on each visible GPU (default: 1)"
    )
    run.add_argument(
        "--executor",
        choices=("local", "dask", "inline"),
        default="local",
        help="local: worker processes on this machine; dask: tasks on a Dask cluster; inline: one trial at a "
        "time in this process (for debugging; no timeout)",
    )
    run.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="with --executor dask: the scheduler, e.g. tcp://host:8786 (default: start a "
        "local cluster of --workers processes)",
    )
    run.add_argument(
        "--artifacts", default=None, help="folder for run folders and checkpoints (default: runs/ beside the database)"
    )
    run.add_argument("--retry-failed", action="store_true", help="run failed and timed-out trials again")
    run.add_argument(
        "--max-trials",
        type=_positive_int,
        default=DEFAULT_MAX_TRIALS,
        help="refuse grids larger than this (default: %(default)s)",
    )
    run.add_argument("--plain", action="store_true", help="log lines instead of the live display")
    run.add_argument(
        "--fail-fast",
        action="store_true",
        help="stop at the first trial that fails for good (its retries spent); the others are left interrupted "
        "(exit code 1)",
    )
    run.add_argument(
        "--tensorboard",
        type=Path,
        default=None,
        metavar="DIR",
        help="write each trial's epochs and hparams as TensorBoard logs under DIR/<sweep> (pip extra: tensorboard)",
    )

    plan = command("plan", "dry run: the expanded grid and which trials are done or pending")
    plan.add_argument("sweep_file", type=Path)
    plan.add_argument("--max-trials", type=_positive_int, default=DEFAULT_MAX_TRIALS)
    plan.add_argument(
        "--workers", type=_positive_int, default=None, help="trials in parallel, for the wall-time estimate"
    )
    plan.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="the device whose recorded epochs the estimate goes by (default: %(default)s, as run)",
    )
    _format_option(plan)

    command("status", "every sweep in the database with its trial counts")

    trials = command("trials", "the trials of a sweep, best first")
    trials.add_argument("sweep")
    trials.add_argument("--top", type=_positive_int, default=None, help="show only the best N")
    _format_option(trials)

    best = command("best", "the selected trial of a sweep and its test evaluation")
    best.add_argument("sweep")
    best.add_argument("--format", choices=("table", "json"), default="table")

    query = command("query", "run one read-only SQL statement on the database")
    query.add_argument("sql")
    _format_option(query)

    db = command("db", "upgrade: bring a database made by an older gridsearch to this version's schema")
    db.add_argument("action", choices=("upgrade",))

    report = command("report", "write an offline HTML report (figures, CSV tables) on sweeps")
    report.add_argument("sweeps", nargs="*", metavar="SWEEP", help="sweeps to cover (default: all)")
    report.add_argument(
        "--out", type=Path, default=None, help="output folder (default: reports/<sweep names>, or reports/all)"
    )
    _model_options(report)

    evaluate = command(
        "evaluate", "evaluate a sweep's selected trial (or any trial) on a suite, or a committee of its best trials"
    )
    target = evaluate.add_mutually_exclusive_group(required=True)
    target.add_argument("sweep", nargs="?", help="evaluate this sweep's selected trial")
    target.add_argument("--trial", help="evaluate this trial key instead")
    what = evaluate.add_mutually_exclusive_group(required=True)
    what.add_argument("--suite", choices=("robustness",))
    what.add_argument(
        "--ensemble",
        type=_ensemble_size,
        metavar="K|auto",
        help="average the probabilities of the sweep's K best done trials by validation (auto: K from 1 to 10 "
        "chosen on the validation images); stored as the evaluation ensemble/topK of the selected trial",
    )
    evaluate.add_argument(
        "--test-size",
        type=_positive_int,
        default=10000,
        help="official test images to transform (default: all %(default)s)",
    )
    evaluate.add_argument(
        "--usps",
        type=Path,
        default=None,
        help="folder with usps.h5 (default: $GRIDSEARCH_USPS, else ../shared/datasets/usps)",
    )
    _model_options(evaluate)

    inspect = command("inspect", "figures and tables about the data set itself")
    inspect.add_argument("--dataset", choices=("mnist",), default="mnist")
    inspect.add_argument(
        "--out", type=Path, default=Path("reports/inspect-mnist"), help="output folder (default: %(default)s)"
    )
    inspect.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where MNIST lives or is downloaded (default: $GRIDSEARCH_DATA, else ./data)",
    )

    export = command("export", "log every trial of a sweep to MLflow, reading the database only")
    export.add_argument("sweep")
    export.add_argument("--to", choices=("mlflow",), required=True, help="where to (pip extra: mlflow)")
    export.add_argument(
        "--tracking-uri", default=None, metavar="URI", help="MLflow tracking URI (default: MLflow's own default)"
    )
    export.add_argument("--experiment", default=None, metavar="NAME", help="MLflow experiment (default: the sweep)")

    serve = command("serve", "a local web app: live sweep dashboard and a draw-a-digit recognizer")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine only)"
    )
    serve.add_argument("--port", type=_port, default=8000, help="port (default: %(default)s; 0: a free one)")
    serve.add_argument(
        "--artifacts", default=None, help="folder of the run folders (default: runs/ beside the database)"
    )
    return parser


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, got {value}")
    return value


def _model_options(parser: argparse.ArgumentParser) -> None:
    """Options of the commands that load trained weights and MNIST."""
    parser.add_argument(
        "--artifacts", default=None, help="folder of the run folders (default: runs/ beside the database)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where MNIST lives or is downloaded (default: $GRIDSEARCH_DATA, else ./data)",
    )


def _format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")


def _ensemble_size(text: str) -> int | str:
    """``--ensemble``: a committee size, or ``auto``."""
    return text if text == "auto" else _positive_int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m gridsearch`` and the ``gridsearch`` console script."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # run names itself in its --retry-failed hint
    handler = {
        "run": cmd_run,
        "plan": cmd_plan,
        "status": cmd_status,
        "trials": cmd_trials,
        "best": cmd_best,
        "query": cmd_query,
        "db": cmd_db,
        "report": cmd_report,
        "evaluate": cmd_evaluate,
        "inspect": cmd_inspect,
        "serve": cmd_serve,
        "export": cmd_export,
    }[args.command]
    try:
        return handler(args)
    except UserError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # always one line
        return 2
    except BrokenPipeError:  # e.g. `gridsearch trials x | head`
        return 0
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130


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
            print(_format(_percent(views.trials_table(storage, result.name).head(5)), "table"))
            for note in result.notes:
                print(note)
            if result.selected is None:
                return 1
            print(_selected_line(storage, result.name))
            storage.close()
    return 0


def _retry_command(argv: list[str]) -> str:
    """This ``run`` command as typed, with ``--retry-failed``: what runs its failed trials again."""
    program = ["gridsearch"] if Path(sys.argv[0]).name == "gridsearch" else ["python", "-m", "gridsearch"]
    return shlex.join([*program, *argv, *([] if "--retry-failed" in argv else ["--retry-failed"])])


def _selected_line(storage: Storage, sweep: str) -> str:
    """The selected trial of ``sweep``: its gridded params, val score and test score, on one line."""
    row = storage.sweep(sweep)
    trial = storage.trial(row.selected_trial) if row.selected_trial else None
    if trial is None:
        return f"sweep {sweep} has no selected trial yet"
    test = storage.evaluation(trial.key, "test")
    gridded = format_params((name, config_value(trial.config, name)) for name in row.gridded_params)
    tested = f"test {test.accuracy:.3%} ({test.errors} errors in {test.samples})" if test else "not tested"
    return f"selected trial {trial.key} ({gridded}): val {trial.val_accuracy:.3%} at epoch {trial.best_epoch}; {tested}"


def cmd_plan(args: argparse.Namespace) -> int:
    from gridsearch.spec.sweep import load_sweep, resolve_warm_starts

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
    print(_format(table, args.format))
    if args.format == "table":
        counts = table["status"].value_counts()
        print(
            f"\n{sweep.name}: {len(table)} trials of {', '.join(sweep.architectures)}: "
            + ", ".join(f"{n} {status}" for status, n in counts.items())
        )
        for name in dict.fromkeys(unselected):
            print(
                f"init_from best:{name}: sweep {name!r} has no selected trial yet; these keys will "
                "change once it has one"
            )
        if sweep.rung_epochs:
            print("\n" + _rung_plan(len(set(table["key"])), sweep.search.factor, sweep.rung_epochs))
        print("\n" + _cost_lines(sweep, trials, storage, args.device, args.workers))
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


def cmd_status(args: argparse.Namespace) -> int:
    table = views.status_table(Storage(args.db, readonly=True))
    if table.empty:
        print("no sweeps yet")
        return 0
    print(_format(table, "table"))
    return 0


def cmd_trials(args: argparse.Namespace) -> int:
    table = views.trials_table(Storage(args.db, readonly=True), args.sweep)
    if args.top:
        table = table.head(args.top)
    print(_format(_percent(table) if args.format == "table" else table, args.format))
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    storage = Storage(args.db, readonly=True)
    row = storage.sweep(args.sweep)
    trial = storage.trial(row.selected_trial) if row.selected_trial else None
    if trial is None:
        statuses = [t.status for t in storage.trials(args.sweep)]
        finished = sum(status in FINISHED for status in statuses)
        print(f"sweep {args.sweep} has no selected trial yet ({finished} of {len(statuses)} trials finished)")
        return 1
    test = storage.evaluation(trial.key, "test")
    params = trial.config["params"]
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
    print(_selected_line(storage, args.sweep))
    if row.search.get("over_seeds"):
        print(_over_seeds_line(row.select_metric, _over_seeds(storage, args.sweep, trial.key)))
    print(f"architecture {trial.architecture}, seed {trial.seed}, params:")
    for name, value in params.items():
        print(f"  {name}: {value}")
    if test is not None:
        confusion = pd.DataFrame(test.confusion)
        confusion.index.name = "true\\pred"
        print(f"test loss {test.loss:.4f}; confusion matrix (rows: true digit, columns: predicted):")
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
    test = "not tested" if mean["test_accuracy"] is None else f"test {mean['test_accuracy']:.3%}"
    seeds = "; ".join(
        f"seed {s['seed']}: val {s['val_accuracy']:.3%}"
        + ("" if s["test_accuracy"] is None else f", test {s['test_accuracy']:.3%}")
        for s in chosen["seeds"]
    )
    return (
        f"selected the configuration with the best mean {select} over its {len(chosen['seeds'])} seeds "
        f"(the selected trial is its best seed): mean val {mean['val_accuracy']:.3%}, {test} ({seeds})"
    )


def cmd_query(args: argparse.Namespace) -> int:
    print(_format(views.query(Storage(args.db, readonly=True), args.sql), args.format))
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


def cmd_report(args: argparse.Namespace) -> int:
    from gridsearch.analysis.report import build_report
    from gridsearch.training.data import default_data_dir

    storage = Storage(args.db, readonly=True)
    out = args.out or Path("reports") / ("_".join(args.sweeps) if args.sweeps else "all")
    report = build_report(
        storage, args.sweeps, out, artifacts_dir(args.db, args.artifacts), args.data_dir or default_data_dir()
    )
    print(f"report written to {report.index}")
    if report.left_out:
        missing = "; ".join(report.left_out)
        print(f"warning: ROC AUC and confidences left out of the report: {missing}", file=sys.stderr)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from gridsearch.analysis import robustness
    from gridsearch.analysis.trained_models import load_model, selected_trial
    from gridsearch.training.data import default_data_dir, prepare, test_split
    from gridsearch.vocabulary import TrialStatus

    storage = Storage(args.db)
    if args.suite is None:
        return _evaluate_committee(storage, args)
    trial = selected_trial(storage, args.sweep) if args.sweep else storage.trial(args.trial)
    if trial is None:
        raise UserError(f"no trial with key {args.trial!r} in {storage.location}")
    if trial.status != TrialStatus.DONE:
        raise UserError(f"trial {trial.key} is {trial.status}, not done: nothing to evaluate")
    model = load_model(trial, artifacts_dir(args.db, args.artifacts))
    data_dir = args.data_dir or default_data_dir()
    prepare(data_dir)
    test = test_split(data_dir, args.test_size)
    usps = robustness.usps_folder(args.usps)
    results = robustness.run_suite(model, test.images, test.labels, usps)
    for name, result in results.items():
        storage.save_evaluation(trial.key, name, result)
    table = pd.DataFrame(
        [
            {
                "evaluation": name,
                "samples": r["samples"],
                "accuracy": r["accuracy"],
                "errors": r["errors"],
                "seconds": round(r["seconds"], 2),
            }
            for name, r in results.items()
        ]
    )
    print(_format(_percent(table), "table"))
    if robustness.USPS_NAME not in results:
        print(f"usps skipped: no usps.h5 in {usps} (pass --usps or set GRIDSEARCH_USPS)")
    elapsed = sum(result["seconds"] for result in results.values())
    print(f"trial {trial.key}: {len(results)} evaluations stored ({elapsed:.1f} s of evaluation)")
    return 0


def _evaluate_committee(storage: Storage, args: argparse.Namespace) -> int:
    from gridsearch.analysis.committee import build_committee
    from gridsearch.training.data import default_data_dir
    from gridsearch.vocabulary import format_percent

    if args.sweep is None:
        raise UserError("--ensemble needs a SWEEP (its best trials form the committee), not --trial")
    data_dir = args.data_dir or default_data_dir()
    size = None if args.ensemble == "auto" else args.ensemble
    committee = build_committee(storage, args.sweep, size, artifacts_dir(args.db, args.artifacts), data_dir)
    if size is None:
        tried = ", ".join(f"k={k} {format_percent(a)}" for k, a in committee.val_accuracies.items())
        print(f"val accuracy by committee size: {tried}; chosen k={len(committee.members)}")
    test = committee.test
    storage.save_evaluation(committee.members[0], committee.name, test)
    print(
        f"{committee.name} of {args.sweep} ({', '.join(committee.members)}): test accuracy "
        f"{format_percent(test['accuracy'])}, {test['errors']} errors in {test['samples']:,}; "
        f"stored as evaluation {committee.name} of trial {committee.members[0]}"
    )
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from gridsearch.analysis.inspection import write_inspection
    from gridsearch.training.data import default_data_dir, prepare

    data_dir = args.data_dir or default_data_dir()
    prepare(data_dir)
    print(f"inspection written to {write_inspection(args.out, data_dir, args.dataset)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from gridsearch.analysis.mlflow_export import export_to_mlflow

    done = export_to_mlflow(Storage(args.db, readonly=True), args.sweep, args.tracking_uri, args.experiment)
    print(
        f"sweep {args.sweep} -> MLflow experiment {done.experiment!r} (id {done.experiment_id}) at "
        f"{done.tracking_uri}: {len(done.logged)} runs logged, {len(done.replaced)} replaced, "
        f"{len(done.unchanged)} unchanged"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from gridsearch.web.app import serve

    storage = Storage(args.db, readonly=True)
    try:
        serve(storage, artifacts_dir(args.db, args.artifacts), args.host, args.port)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    return 0


def _percent(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    for column in PERCENT_COLUMNS:
        if column in table:
            table[column] = table[column].map(lambda v: f"{v:.3%}" if pd.notna(v) else "")
    return table


def _format(table: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return table.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return table.to_json(orient="records", indent=2)
    if table.empty:
        return "(no rows)"
    return table.to_string(index=False, na_rep="")
