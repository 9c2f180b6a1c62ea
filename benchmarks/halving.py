"""Successive halving against the full grid on a reduced LeNet-5-3 grid, both run by the real engine
(``python -m gridsearch run``), each in its own database and run folder so that no trial is shared:
epochs trained, wall time, and the selected trial's test accuracy (official test set). Last line: one
JSON object.

    python benchmarks/halving.py [--data-dir data] [--train-size 4000] [--val-size 2000] [--epochs 9]
                                 [--min-epochs 1] [--workers 2] [--keep DIR]

Targets: halving trains at most 1/3 of the full grid's epochs, and its selected trial's test accuracy
is within 0.1 points of the full grid's selected trial's. The grid: lr 0.04, 0.06, 0.08 x lr_step 3, 5, 7
(9 points of the study's 25), with the study's recipe otherwise (grids/lenet53.yaml).
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

from gridsearch.training import data  # noqa: E402

GRID = {"lr": [0.04, 0.06, 0.08], "lr_step": [3, 5, 7]}
FACTOR = 3
TARGET_EPOCHS_RATIO = 1 / 3
TARGET_POINTS = 0.1


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=data.default_data_dir())
    parser.add_argument("--train-size", type=int, default=4000, help="training images (the first N)")
    parser.add_argument("--val-size", type=int, default=2000, help="validation images (the last N)")
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--min-epochs", type=int, default=1, help="epochs of the first halving rung")
    parser.add_argument("--workers", type=int, default=2, help="trials in parallel (both runs)")
    parser.add_argument("--keep", type=Path, default=None, help="keep both runs' folders here")
    return parser.parse_args()


def write_sweep(folder: Path, name: str, args: argparse.Namespace, halving: bool) -> Path:
    """The study's LeNet-5-3 sweep file, on the reduced grid and data; with ``search: halving`` if asked."""
    document = yaml.safe_load((ROOT / "grids" / "lenet53.yaml").read_text())
    document.update(
        name=name,
        grid=GRID,
        dataset={"name": "mnist", "train_size": args.train_size, "val_size": args.val_size, "test_size": 10000},
    )
    document["params"]["epochs"] = args.epochs
    if halving:
        document["search"] = {"strategy": "halving", "factor": FACTOR, "min_epochs": args.min_epochs}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def run(folder: Path, sweep: Path, args: argparse.Namespace) -> dict:
    """Run ``sweep`` with the CLI in ``folder`` (its own results.db and runs/); what it trained and selected."""
    command = [
        sys.executable,
        "-m",
        "gridsearch",
        "run",
        str(sweep),
        "--db",
        str(folder / "results.db"),
        "--data-dir",
        str(args.data_dir),
        "--workers",
        str(args.workers),
        "--device",
        "cpu",
        "--plain",
    ]
    started = time.perf_counter()
    with open(folder / "run.log", "w") as log:
        subprocess.run(
            command, check=True, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(ROOT))
        )
    wall = time.perf_counter() - started
    with sqlite3.connect(folder / "results.db") as db:
        epochs, train_seconds = db.execute("SELECT COUNT(*), SUM(seconds) FROM epochs").fetchone()
        key, val, test, errors, config = db.execute(
            "SELECT t.key, t.val_accuracy, e.accuracy, e.errors, t.config FROM sweeps s "
            "JOIN trials t ON t.key = s.selected_trial JOIN evaluations e ON e.trial_key = t.key "
            "AND e.name = 'test'"
        ).fetchone()
        rungs = db.execute(
            "SELECT rung, COUNT(*) FROM sweep_trials WHERE rung IS NOT NULL GROUP BY rung ORDER BY rung"
        ).fetchall()
    params = json.loads(config)["params"]
    result = {
        "epochs_trained": epochs,
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(wall, 1),
        "selected": key,
        "lr": params["lr"],
        "lr_step": params["lr_step"],
        "val_accuracy": val,
        "test_accuracy": test,
        "test_errors": errors,
    }
    if rungs:
        result["trials_reaching_rung"] = [sum(n for rung, n in rungs if rung >= r) for r, _ in rungs]
    print(json.dumps({"run": sweep.stem, **result}), flush=True)
    return result


def epoch_numbers(db: Path) -> dict[tuple[str, int], tuple]:
    with sqlite3.connect(db) as connection:
        return {
            (key, epoch): rest
            for key, epoch, *rest in connection.execute(
                "SELECT trial_key, epoch, train_loss, train_accuracy, val_loss, val_accuracy, lr FROM epochs"
            )
        }


def full_grid_rank(db: Path, key: str) -> int:
    """1-based rank of trial ``key`` in the full grid by val accuracy (ties: lower val loss)."""
    with sqlite3.connect(db) as connection:
        ranked = [k for (k,) in connection.execute("SELECT key FROM trials ORDER BY val_accuracy DESC, val_loss")]
    return ranked.index(key) + 1


def main() -> None:
    args = arguments()
    data.prepare(args.data_dir)
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        folders = {name: root / name for name in ("grid", "halving")}
        grid = run(folders["grid"], write_sweep(folders["grid"], "grid", args, halving=False), args)
        halving = run(folders["halving"], write_sweep(folders["halving"], "halving", args, halving=True), args)
        full, halved = (epoch_numbers(folders[name] / "results.db") for name in ("grid", "halving"))
        rank = full_grid_rank(folders["grid"] / "results.db", halving["selected"])
    ratio = halving["epochs_trained"] / grid["epochs_trained"]
    points = 100 * (halving["test_accuracy"] - grid["test_accuracy"])
    print(
        json.dumps(
            {
                "epochs_ratio": round(ratio, 3),
                "wall_ratio": round(halving["wall_seconds"] / grid["wall_seconds"], 3),
                "test_accuracy_difference_points": round(points, 3),
                "meets_targets": ratio <= TARGET_EPOCHS_RATIO and abs(points) <= TARGET_POINTS,
                "halving_pick_rank_in_full_grid": rank,
                "halving_epochs_identical_to_full_grid": halved.items() <= full.items(),
                "grid": grid,
                "halving": halving,
                "trials": len(GRID["lr"]) * len(GRID["lr_step"]),
                "factor": FACTOR,
                "min_epochs": args.min_epochs,
                "epochs": args.epochs,
                "train_size": args.train_size,
                "val_size": args.val_size,
                "test_size": 10000,
                "workers": args.workers,
                "device": "cpu",
            }
        )
    )


if __name__ == "__main__":
    main()
