"""Grid against random against sobol search at an equal number of trials, all run by the real engine
(``python -m gridsearch run``) in one database, so a point two searches share is trained once: the best
validation accuracy each search finds (its selected trial), and that trial's test accuracy, as the mean
and standard deviation over the random and sobol searches' seeds (the grid has no seed: one value).
Last line: one JSON object.

    python benchmarks/random_vs_grid.py [--data-dir data] [--train-size 2000] [--val-size 1000]
                                        [--epochs 2] [--search-seeds 4] [--workers 2] [--keep DIR]

The problem: a narrow LeNet-5-3 (hidden 16) on the first 2,000 training images, 2 epochs, searching lr,
lr_step and dropout with 8 trials: the grid lr 0.02, 0.08 x lr_step 1, 2 x dropout 0.1, 0.4, against 8
points of lr loguniform [0.01, 0.2], lr_step uniform [0.5, 3] and dropout uniform [0, 0.5].
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

GRID = {"lr": [0.02, 0.08], "lr_step": [1, 2], "dropout": [0.1, 0.4]}
SPACE = {"lr": {"loguniform": [0.01, 0.2]}, "lr_step": {"uniform": [0.5, 3]}, "dropout": {"uniform": [0, 0.5]}}
TRIALS = 8


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=data.default_data_dir())
    parser.add_argument("--train-size", type=int, default=2000, help="training images (the first N)")
    parser.add_argument("--val-size", type=int, default=1000, help="validation images (the last N)")
    parser.add_argument("--test-size", type=int, default=10000, help="test images the selected trials see")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--search-seeds", type=int, default=4, help="seeds of the random and sobol searches")
    parser.add_argument("--workers", type=int, default=2, help="trials in parallel")
    parser.add_argument("--keep", type=Path, default=None, help="keep the database and runs here")
    return parser.parse_args()


def sweep_file(folder: Path, name: str, args: argparse.Namespace, search: dict | None) -> Path:
    """A sweep of the narrow LeNet-5-3: the grid (``search`` None) or ``TRIALS`` points drawn by ``search``."""
    document = {
        "name": name,
        "architecture": "lenet53",
        "dataset": {"train_size": args.train_size, "val_size": args.val_size, "test_size": args.test_size},
        "params": {"epochs": args.epochs, "hidden": 16, "batch_size": 50, "patience": args.epochs},
        "grid": GRID if search is None else SPACE,
        "seeds": [0],
    }
    if search is not None:
        document["search"] = search
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def selected(db: Path, sweep: str) -> tuple[float, float]:
    """The val and test accuracy of ``sweep``'s selected trial."""
    with sqlite3.connect(db) as connection:
        return connection.execute(
            "SELECT t.val_accuracy, e.accuracy FROM sweeps s JOIN trials t ON t.key = s.selected_trial "
            "JOIN evaluations e ON e.trial_key = t.key AND e.name = 'test' WHERE s.name = ?",
            (sweep,),
        ).fetchone()


def main() -> None:
    args = arguments()
    data.prepare(args.data_dir)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="random_vs_grid-"))
    folder.mkdir(parents=True, exist_ok=True)
    names = {"grid": ["grid"]} | {
        strategy: [f"{strategy}-{seed}" for seed in range(args.search_seeds)] for strategy in ("random", "sobol")
    }
    files = [sweep_file(folder, "grid", args, None)] + [
        sweep_file(folder, f"{strategy}-{seed}", args, {"strategy": strategy, "trials": TRIALS, "seed": seed})
        for strategy in ("random", "sobol")
        for seed in range(args.search_seeds)
    ]
    db = folder / "results.db"
    command = [sys.executable, "-m", "gridsearch", "run", *map(str, files), "--db", str(db)]
    command += ["--data-dir", str(args.data_dir), "--workers", str(args.workers), "--plain"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    seconds = time.perf_counter() - started
    result: dict = {"trials_per_search": TRIALS, "search_seeds": args.search_seeds, "wall_seconds": round(seconds)}
    for strategy, sweeps in names.items():
        scores = [selected(db, sweep) for sweep in sweeps]
        val, test = [s[0] for s in scores], [s[1] for s in scores]
        result[strategy] = {"best_val_accuracy": summary(val), "its_test_accuracy": summary(test), "per_seed_val": val}
        print(
            f"{strategy:>6}: best val {summary(val)['mean']:.2%} ± {summary(val)['sd']:.2%}, "
            f"its test {summary(test)['mean']:.2%} ± {summary(test)['sd']:.2%} over {len(sweeps)} search(es)"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
