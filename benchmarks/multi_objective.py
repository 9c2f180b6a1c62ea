"""Multi-objective successive halving against the full grid, run by the real engine (``python -m gridsearch run``):
the hypervolume of the front each finds, over validation accuracy (max) and parameter count (min), and the epochs
each trains. Targets: halving's hypervolume >= 0.95 of the grid's, at <= 1/3 of its epochs. Last line: one JSON
object.

    python benchmarks/multi_objective.py [--data-dir data] [--train-size 3000] [--val-size 1000] [--epochs 18]
                                         [--min-epochs 2] [--seeds 0 1 2] [--workers 2] [--keep DIR]

The grid: 12 points, the small ConvNet at channels 2, 4, 8, 16 (1,122 to 29,066 parameters) x lr 0.01, 0.03, 0.1,
on the first 3,000 training images, 18 epochs; halving with factor 3 from 2 epochs: rungs of 2, 6 and 18 epochs for
12, 4 and 2 trials (64 epochs against the grid's 216). Each seed (the trials' seed: initial weights and batch order)
gets a database of its own: the halving sweep runs first, then the grid sweep over the same points, which trains
only what halving did not (a trial resumed from its checkpoint gives the numbers of training straight through).

The halving sweep's front is the one it stores: every trial it scored, at its best epoch within the epochs it
trained (a trial stopped at rung 0 is a network of the accuracy it reached in 1 epoch). Hypervolumes use Optuna's
exact computation over (-val accuracy, parameters), from a reference point known before anything trains: the
accuracy of a guess (10%) and 1.1 times the grid's largest network. A stricter one is reported beside it (the grid's
worst value of each objective over all its trials, 10% of their range beyond: the accuracies near the top only);
a point beyond a reference point adds nothing.
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

import numpy as np
import yaml
from optuna._hypervolume import compute_hypervolume

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gridsearch.training import data  # noqa: E402

GRID = {"channels": [2, 4, 8, 16], "lr": [0.01, 0.03, 0.1]}
CHANCE = 0.1
"""The accuracy of a guess among 10 classes: the reference point's accuracy."""
OBJECTIVES = [{"metric": "val_accuracy", "direction": "max"}, {"metric": "parameters", "direction": "min"}]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=data.default_data_dir())
    parser.add_argument("--train-size", type=int, default=3000, help="training images (the first N)")
    parser.add_argument("--val-size", type=int, default=1000, help="validation images (the last N)")
    parser.add_argument("--test-size", type=int, default=1000, help="test images the selected trials see")
    parser.add_argument("--epochs", type=int, default=18)
    parser.add_argument("--min-epochs", type=int, default=2, help="epochs of rung 0 (factor 3)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the trials' seeds, one run each")
    parser.add_argument("--workers", type=int, default=2, help="trials in parallel")
    parser.add_argument("--keep", type=Path, default=None, help="keep the databases and runs here")
    return parser.parse_args()


def sweep_file(folder: Path, name: str, args: argparse.Namespace, seed: int, halving: bool) -> Path:
    document = {
        "name": name,
        "architecture": "convnet",
        "dataset": {"train_size": args.train_size, "val_size": args.val_size, "test_size": args.test_size},
        "params": {"epochs": args.epochs, "batch_size": 50},
        "grid": GRID,
        "seeds": [seed],
        "objectives": OBJECTIVES,
        "select": {"rule": "smallest_within", "metric": "val_accuracy", "tolerance": 0.5, "then": "parameters"},
    }
    if halving:
        document["search"] = {"strategy": "halving", "factor": 3, "min_epochs": args.min_epochs}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def run(files: list[Path], db: Path, args: argparse.Namespace) -> float:
    command = [sys.executable, "-m", "gridsearch", "run", *map(str, files), "--db", str(db)]
    command += ["--data-dir", str(args.data_dir), "--workers", str(args.workers), "--plain"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return time.perf_counter() - started


def query(db: Path, sql: str, *params: object) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute(sql, params).fetchall()


def front(db: Path, sweep: str) -> list[tuple[str, float, float]]:
    """The stored front of ``sweep``: (trial key, val accuracy, parameters), best accuracy first."""
    found = query(
        db,
        'SELECT f.trial_key, f."values" FROM fronts f JOIN sweeps s ON s.id = f.sweep_id WHERE s.name = ? '
        "ORDER BY f.position",
        sweep,
    )
    return [(key, (v := json.loads(values))["val_accuracy"], v["parameters"]) for key, values in found]


def hypervolume(points: list[tuple[str, float, float]], reference: np.ndarray) -> float:
    losses = np.array([(-accuracy, size) for _, accuracy, size in points]).reshape(-1, 2)
    inside = losses[(losses < reference).all(axis=1)]
    return float(compute_hypervolume(inside, reference)) if len(inside) else 0.0


def one_seed(folder: Path, seed: int, args: argparse.Namespace) -> dict:
    db = folder / f"seed{seed}.db"
    halving, grid = f"halving-{seed}", f"grid-{seed}"
    seconds = run([sweep_file(folder, halving, args, seed, halving=True)], db, args)
    halving_epochs = query(db, "SELECT COUNT(*) FROM epochs")[0][0]
    reached = [n for _, n in query(db, "SELECT rung, COUNT(*) FROM sweep_trials GROUP BY rung ORDER BY rung")]
    seconds_grid = run([sweep_file(folder, grid, args, seed, halving=False)], db, args)
    grid_epochs = query(db, "SELECT SUM(epochs_run) FROM trials")[0][0]
    final = query(db, "SELECT val_accuracy, parameter_count FROM trials WHERE status = 'done'")
    worst = np.array([-min(a for a, _ in final), max(p for _, p in final)])
    best = np.array([-max(a for a, _ in final), min(p for _, p in final)])
    references = {"chance": np.array([-CHANCE, 1.1 * worst[1]]), "grid_nadir": worst + 0.1 * (worst - best)}
    found, full = front(db, halving), front(db, grid)
    ratios = {name: hypervolume(found, ref) / hypervolume(full, ref) for name, ref in references.items()}
    return {
        "seed": seed,
        "hypervolume_ratio": round(ratios["chance"], 4),
        "hypervolume_ratio_grid_nadir": round(ratios["grid_nadir"], 4),
        "epochs_ratio": round(halving_epochs / grid_epochs, 4),
        "halving_epochs": halving_epochs,
        "grid_epochs": grid_epochs,
        "trials_per_rung": [sum(reached[i:]) for i in range(len(reached))],
        "halving_front": [[key, round(a, 4), int(p)] for key, a, p in found],
        "grid_front": [[key, round(a, 4), int(p)] for key, a, p in full],
        "selected": {
            name: query(db, "SELECT selected_trial FROM sweeps WHERE name = ?", name)[0][0] for name in (halving, grid)
        },
        "wall_seconds": {"halving": round(seconds), "rest_of_grid": round(seconds_grid)},
    }


def main() -> None:
    args = arguments()
    data.prepare(args.data_dir)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="multi_objective-"))
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        result = one_seed(folder, seed, args)
        results.append(result)
        print(
            f"seed {seed}: hypervolume {result['hypervolume_ratio']:.3f} of the grid's "
            f"({result['hypervolume_ratio_grid_nadir']:.3f} from the grid's nadir) at "
            f"{result['halving_epochs']} of {result['grid_epochs']} epochs ({result['epochs_ratio']:.3f}); "
            f"front {len(result['halving_front'])} points (grid's: {len(result['grid_front'])})",
            flush=True,
        )
    meets = all(r["hypervolume_ratio"] >= 0.95 and r["epochs_ratio"] <= 1 / 3 for r in results)
    print(
        json.dumps(
            {
                "meets_targets": meets,
                "grid": GRID,
                "epochs": args.epochs,
                "min_epochs": args.min_epochs,
                "train_size": args.train_size,
                "val_size": args.val_size,
                "workers": args.workers,
                "seeds": results,
            }
        )
    )


if __name__ == "__main__":
    main()
