"""Every search strategy at about one epoch budget on one CPU-sized problem, over several search seeds, run by
the real engine (``python -m gridsearch run``, one database per search so nothing is shared): the best
validation accuracy each finds (its selected trial), that trial's test accuracy, and the epochs it trained.
Then reproducibility: our ``tpe`` sweep run with 1 and with 2 workers, against Optuna's own
``study.optimize(n_jobs=2)`` with a seeded TPE sampler run twice on the same objective and budget: how many
of the proposed points differ between the two runs. Last line: one JSON object.

    python benchmarks/search_strategies.py [--data-dir data] [--train-size 2000] [--val-size 1000]
                                           [--epochs 4] [--search-seeds 3] [--workers 2] [--keep DIR]

The problem: a narrow LeNet-5-3 (hidden 16) on the first 2,000 training images, ``epochs`` epochs a trial,
searching ``lr``, ``dropout`` and ``lr_min`` (which does not matter: the schedule never falls to it within
4 epochs). Budget: 8 full trials (32 epochs at 4 epochs): the 2 x 2 x 2 grid; 8 random, sobol, tpe and gp
points (tpe and gp in batches of 2); successive halving (factor 2, from 1 epoch) over 16 random points, 32
epochs; Hyperband (factor 2, from 1 epoch) over 16 random points, at most 28.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import summary  # noqa: E402

from gridsearch.training import data  # noqa: E402

GRID = {"lr": [0.02, 0.08], "dropout": [0.1, 0.4], "lr_min": [0.01, 0.02]}
SPACE = {"lr": {"loguniform": [0.01, 0.2]}, "dropout": {"uniform": [0, 0.5]}, "lr_min": {"uniform": [0.01, 0.02]}}
TRIALS = 8
SEARCHES = {
    "random": {"strategy": "random", "trials": TRIALS},
    "sobol": {"strategy": "sobol", "trials": TRIALS},
    "halving": {"strategy": "halving", "sample": "random", "trials": 2 * TRIALS, "factor": 2, "min_epochs": 1},
    "hyperband": {"strategy": "hyperband", "sample": "random", "trials": 2 * TRIALS, "factor": 2, "min_epochs": 1},
    "tpe": {"strategy": "tpe", "trials": TRIALS, "batch": 2},
    "gp": {"strategy": "gp", "trials": TRIALS, "batch": 2},
}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=data.default_data_dir())
    parser.add_argument("--train-size", type=int, default=2000, help="training images (the first N)")
    parser.add_argument("--val-size", type=int, default=1000, help="validation images (the last N)")
    parser.add_argument("--test-size", type=int, default=10000, help="test images the selected trials see")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--search-seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="trials in parallel")
    parser.add_argument("--keep", type=Path, default=None, help="keep the databases and runs here")
    return parser.parse_args()


def document(name: str, args: argparse.Namespace, search: dict | None) -> dict:
    """The sweep: the grid (``search`` None) or the space searched by ``search``."""
    sweep = {
        "name": name,
        "architecture": "lenet53",
        "dataset": {"train_size": args.train_size, "val_size": args.val_size, "test_size": args.test_size},
        "params": {"epochs": args.epochs, "hidden": 16, "batch_size": 50, "patience": args.epochs, "lr_step": 1},
        "grid": GRID if search is None else SPACE,
        "seeds": [0],
    }
    if search is not None:
        sweep["search"] = search
    return sweep


def run(folder: Path, sweep: dict, args: argparse.Namespace, workers: int) -> Path:
    """Run ``sweep`` in its own database under ``folder``; the database."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    db = folder / "results.db"
    command = [sys.executable, "-m", "gridsearch", "run", str(path), "--db", str(db), "--plain"]
    command += ["--data-dir", str(args.data_dir), "--workers", str(workers)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return db


def outcome(db: Path) -> tuple[float, float, int]:
    """The selected trial's val and test accuracy, and the epochs the sweep trained."""
    with sqlite3.connect(db) as connection:
        val, test = connection.execute(
            "SELECT t.val_accuracy, e.accuracy FROM sweeps s JOIN trials t ON t.key = s.selected_trial "
            "JOIN evaluations e ON e.trial_key = t.key AND e.name = 'test'"
        ).fetchone()
        (epochs,) = connection.execute("SELECT COUNT(*) FROM epochs").fetchone()
    return val, test, epochs


def points(db: Path) -> list[str]:
    """The sweep's trial keys, in the order they were proposed."""
    with sqlite3.connect(db) as connection:
        return [key for (key,) in connection.execute("SELECT trial_key FROM sweep_trials ORDER BY position")]


def optuna_points(args: argparse.Namespace, folder: Path) -> list[tuple]:
    """The points Optuna's ``study.optimize(n_jobs=2)`` with ``TPESampler(seed=0)`` proposes for the same
    objective (a trial of the same problem, trained in this process) and budget."""
    import optuna
    import torch

    from gridsearch.spec.sweep import load_sweep
    from gridsearch.training.loop import train_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    template = folder / "template.yaml"
    base = document("optuna", args, None)
    template.write_text(yaml.safe_dump({**base, "grid": {"lr": [0.02]}}, sort_keys=False))
    config = next(load_sweep(template).trials()).config()

    def objective(trial: optuna.Trial) -> float:
        params = {
            "lr": round(trial.suggest_float("lr", 0.01, 0.2, log=True), 6),
            "dropout": round(trial.suggest_float("dropout", 0.0, 0.5), 6),
            "lr_min": round(trial.suggest_float("lr_min", 0.01, 0.02), 6),
        }
        run_dir = Path(tempfile.mkdtemp(dir=folder))
        trial_config = {**config, "params": {**config["params"], **params}}
        summary, _ = train_trial(trial_config, run_dir, args.data_dir, torch.device("cpu"), lambda event: None)
        return summary["val_accuracy"]

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(objective, n_trials=TRIALS, n_jobs=2)
    return sorted(tuple(sorted(trial.params.items())) for trial in study.trials)


def main() -> None:
    args = arguments()
    data.prepare(args.data_dir)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="search_strategies-"))
    started = time.perf_counter()
    result: dict = {"trials_budget": TRIALS, "epochs_per_trial": args.epochs, "search_seeds": args.search_seeds}
    runs = {"grid": [run(folder / "grid", document("grid", args, None), args, args.workers)]}
    for name, search in SEARCHES.items():
        runs[name] = [
            run(folder / f"{name}-{seed}", document(name, args, {**search, "seed": seed}), args, args.workers)
            for seed in range(args.search_seeds)
        ]
    for name, dbs in runs.items():
        scores = [outcome(db) for db in dbs]
        val, test, epochs = ([s[i] for s in scores] for i in range(3))
        result[name] = {
            "best_val_accuracy": summary(val),
            "its_test_accuracy": summary(test),
            "epochs": summary(epochs),
            "per_seed_val": val,
        }
        print(
            f"{name:>9}: best val {summary(val)['mean']:.2%} ± {summary(val)['sd']:.2%}, its test "
            f"{summary(test)['mean']:.2%} ± {summary(test)['sd']:.2%}, {summary(epochs)['mean']:.0f} epochs, "
            f"over {len(dbs)} search(es)"
        )
    ours_one = points(runs["tpe"][0])
    ours_two = points(run(folder / "tpe-0-workers-1", document("tpe", args, {**SEARCHES["tpe"], "seed": 0}), args, 1))
    ours_differ = len(set(ours_one) ^ set(ours_two)) // 2
    first, second = optuna_points(args, folder), optuna_points(args, folder)
    optuna_differ = TRIALS - len(set(first) & set(second))
    result["reproducibility"] = {
        "gridsearch_tpe_workers_2_vs_1_points_differing": ours_differ,
        "optuna_tpe_n_jobs_2_twice_points_differing": optuna_differ,
        "of": TRIALS,
    }
    print(
        f"points differing between two runs: gridsearch tpe {ours_differ} of {TRIALS}, optuna n_jobs=2 "
        f"{optuna_differ} of {TRIALS}"
    )
    result["wall_seconds"] = round(time.perf_counter() - started)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
