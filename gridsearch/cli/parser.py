"""The command line's arguments: one subparser per command."""

from __future__ import annotations

import argparse
from pathlib import Path

from gridsearch import __version__
from gridsearch.engine.options import DEFAULT_MAX_TRIALS, DEVICES, EXECUTORS
from gridsearch.spec.datasets import DATASETS
from gridsearch.store.connection import DEFAULT_DB
from gridsearch.store.faults import DEFAULT_WAIT_SECONDS
from gridsearch.vocabulary import TERMINAL_COLUMNS

DESCRIPTION = "Deterministic hyperparameter grid searches over digit-recognition networks."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gridsearch", description=DESCRIPTION)
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
        help="where the datasets live (MNIST is downloaded there; default: $GRIDSEARCH_DATA, else ./data)",
    )
    run.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        help="worker processes at once, each training one cohort (default: 1 on CPU; GPUs x --slots-per-gpu; "
        "a Dask cluster's threads)",
    )
    run.add_argument("--device", choices=DEVICES, default="auto")
    run.add_argument(
        "--slots-per-gpu",
        type=_positive_int,
        default=1,
        help="worker processes at once on each visible GPU (default: 1)",
    )
    run.add_argument(
        "--fuse",
        type=_positive_int,
        default=1,
        metavar="K",
        help="hand a worker up to K trials that can train as one stack (the same architecture, seed, data split "
        "and every param but the optimizer's, dropout, augmentation and patience) as one cohort, trained as one "
        "stacked model (default: 1)",
    )
    run.add_argument(
        "--in-turn",
        action="store_true",
        help="with --fuse K: train a cohort's members one after another in its worker, not as one stacked model",
    )
    run.add_argument(
        "--executor",
        choices=EXECUTORS,
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
        "--db-wait",
        type=_seconds,
        default=DEFAULT_WAIT_SECONDS,
        metavar="SECONDS",
        help="how long to wait out a database that is unreachable (a server restart), locked or on a full disk, "
        "and an artifacts folder on a full disk, before stopping (default: %(default)g; the trials stay resumable)",
    )
    run.add_argument(
        "--stall-after",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="kill a worker that made no progress for this long and train its trials again (default: 3 x the "
        "trials' longest epoch, at least 60 s; 0: never)",
    )
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
        "--workers",
        type=_positive_int,
        default=None,
        help="worker processes at once, as run's --workers, for the wall-time estimate",
    )
    plan.add_argument(
        "--fuse", type=_positive_int, default=1, metavar="K", help="as run's --fuse K: say which cohorts will form"
    )
    plan.add_argument("--in-turn", action="store_true", help="as run's --in-turn (with --fuse K)")
    plan.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="the device whose recorded epochs the estimate goes by (default: %(default)s, as run)",
    )
    _format_option(plan)

    status = command("status", "every sweep in the database with its trial counts")
    _wide_option(status)

    trials = command("trials", "the trials of a sweep, best first")
    trials.add_argument("sweep")
    trials.add_argument("--top", type=_positive_int, default=None, help="show only the best N")
    _wide_option(trials)
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
    what.add_argument(
        "--front",
        action="store_true",
        help="test every member of the sweep's Pareto front (several objectives) on its test images, as its "
        "selected trial was; never changes the selection",
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
        help="folder with usps.h5 (default: $GRIDSEARCH_USPS, else usps/ in $GRIDSEARCH_DATA or ./data)",
    )
    _model_options(evaluate)

    inspect = command("inspect", "figures and tables about the data set itself")
    inspect.add_argument("--dataset", choices=tuple(DATASETS), default="mnist")
    inspect.add_argument("--out", type=Path, default=None, help="output folder (default: reports/inspect-DATASET)")
    inspect.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the datasets live (MNIST is downloaded there; default: $GRIDSEARCH_DATA, else ./data)",
    )

    export = command("export", "log every trial of a sweep to MLflow or TensorBoard, reading the database only")
    export.add_argument("sweep")
    export.add_argument(
        "--to", choices=("mlflow", "tensorboard"), required=True, help="where to (pip extra: mlflow, tensorboard)"
    )
    export.add_argument(
        "--logdir", type=Path, default=Path("tb"), metavar="DIR", help="TensorBoard: logs under DIR/<sweep> (tb)"
    )
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
        help="where the datasets live (MNIST is downloaded there; default: $GRIDSEARCH_DATA, else ./data)",
    )


def _wide_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wide", action="store_true", help=f"every column in full (default: the table fits {TERMINAL_COLUMNS} columns)"
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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text}")
    return value
