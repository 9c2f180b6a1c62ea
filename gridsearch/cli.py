"""The ``gridsearch`` command line: run, plan, status, trials, best, query, report, evaluate, inspect and serve."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from gridsearch.errors import UserError
from gridsearch.spec import halving
from gridsearch.spec.config import config_value
from gridsearch.store import views
from gridsearch.store.connection import DEFAULT_DB, artifacts_dir, database_url, sqlite_path
from gridsearch.store.models import SCHEMA_VERSION
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import FINISHED, format_params

PERCENT_COLUMNS = ("val_accuracy", "accuracy", "test_accuracy")
DEFAULT_MAX_TRIALS = 10_000


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gridsearch", description=__doc__)
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

    plan = command("plan", "dry run: the expanded grid and which trials are done or pending")
    plan.add_argument("sweep_file", type=Path)
    plan.add_argument("--max-trials", type=_positive_int, default=DEFAULT_MAX_TRIALS)
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

    evaluate = command("evaluate", "evaluate a sweep's selected trial (or any trial) on an evaluation suite")
    target = evaluate.add_mutually_exclusive_group(required=True)
    target.add_argument("sweep", nargs="?", help="evaluate this sweep's selected trial")
    target.add_argument("--trial", help="evaluate this trial key instead")
    evaluate.add_argument("--suite", choices=("robustness",), required=True)
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
    import os

    from gridsearch.engine.coordinator import Coordinator, RunOptions
    from gridsearch.engine.devices import oversubscription, resolve_device, visible_gpus
    from gridsearch.engine.local_executor import LocalExecutor
    from gridsearch.engine.pool import Executor
    from gridsearch.spec.sweep import load_sweep
    from gridsearch.training.data import default_data_dir, prepare

    if args.scheduler and args.executor != "dask":
        raise UserError("--scheduler needs --executor dask")
    sweeps = [load_sweep(path, args.max_trials) for path in args.sweep_files]  # all valid before any runs
    storage = Storage(args.db, upgrade=True)
    if storage.upgraded_from is not None:
        print(_upgraded(storage), file=sys.stderr)
    artifacts = _writable_folder(artifacts_dir(args.db, args.artifacts))
    data_dir = args.data_dir or default_data_dir()
    prepare(data_dir)
    device = resolve_device(args.device)
    executor: Executor
    gpus: list[str] = []
    if args.executor == "dask":
        from gridsearch.engine.dask_executor import DaskExecutor

        executor = DaskExecutor(args.scheduler, args.workers or os.cpu_count() or 1)
        workers = args.workers or executor.capacity()
    elif args.executor == "inline":
        from gridsearch.engine.inline_executor import InlineExecutor

        if (args.workers or 1) != 1:
            raise UserError("--executor inline runs one trial at a time: leave out --workers")
        executor, workers = InlineExecutor(), 1
    else:
        executor = LocalExecutor()
        gpus = visible_gpus() if device == "cuda" else []
        workers = args.workers or (len(gpus) * args.slots_per_gpu if gpus else 1)
        if device == "cpu" and (
            warning := oversubscription(workers, max(sweep.threads for sweep in sweeps), len(os.sched_getaffinity(0)))
        ):
            print(f"warning: {warning}", file=sys.stderr)
    options = RunOptions(
        data_dir=data_dir,
        artifacts=artifacts,
        workers=workers,
        device=device,
        gpus=gpus,
        retry_failed=args.retry_failed,
        live=False if args.plain else None,
    )
    try:
        for sweep in sweeps:
            outcome = Coordinator(storage, sweep, options, executor).run()
            if outcome.interrupted:
                return 130
            print(_format(_percent(views.trials_table(storage, sweep.name).head(5)), "table"))
            for note in outcome.notes:
                print(note)
            if outcome.selected is None:
                return 1
            print(_selected_line(storage, sweep.name))
    finally:
        executor.close()
    return 0


def _writable_folder(folder: Path) -> Path:
    """``folder``, created if needed; :class:`UserError` if checkpoints cannot be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise UserError(f"--artifacts {folder}: cannot write checkpoints there ({exc.strerror})") from None
    return folder


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
    return 0


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
        print(json.dumps(report, indent=2))
        return 0
    print(_selected_line(storage, args.sweep))
    print(f"architecture {trial.architecture}, seed {trial.seed}, params:")
    for name, value in params.items():
        print(f"  {name}: {value}")
    if test is not None:
        confusion = pd.DataFrame(test.confusion)
        confusion.index.name = "true\\pred"
        print(f"test loss {test.loss:.4f}; confusion matrix (rows: true digit, columns: predicted):")
        print(confusion.to_string())
    return 0


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


def cmd_inspect(args: argparse.Namespace) -> int:
    from gridsearch.analysis.inspection import write_inspection
    from gridsearch.training.data import default_data_dir, prepare

    data_dir = args.data_dir or default_data_dir()
    prepare(data_dir)
    print(f"inspection written to {write_inspection(args.out, data_dir, args.dataset)}")
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
