"""Per-trial start-up overhead: a grid of trials that each train one small batch, run by the engine
(workers forked from the preloaded forkserver), beside the same job in a fresh ``python -m
gridsearch.engine.worker`` process (what every trial paid before). Last line: one JSON object.

A trial's overhead is its wall time in the database (claimed → finished) minus the time its worker
spent training and validating (the epochs' ``seconds``): process start, imports, data mapping,
model building, checkpoints and the coordinator's bookkeeping.

    python benchmarks/trial_overhead.py [--data-dir data] [--trials 24] [--fresh 5]
"""

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gridsearch.training import data  # noqa: E402


def sweep_file(folder: Path, trials: int) -> Path:
    """``trials`` LeNet-5-3 trials, each one batch of 50 images for one epoch (lr varies)."""
    document = {
        "name": "overhead",
        "architecture": "lenet53",
        "dataset": {"train_size": 50, "val_size": 50, "test_size": 50},
        "params": {"epochs": 1, "batch_size": 50},
        "grid": {"lr": [round(0.01 + 0.001 * i, 4) for i in range(trials)]},
    }
    path = folder / "overhead.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def engine_overheads(folder: Path, data_dir: Path, trials: int) -> tuple[list[float], float]:
    """Per-trial overheads of one ``run`` of the grid, and the run's wall time."""
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gridsearch",
            "run",
            str(sweep_file(folder, trials)),
            "--plain",
            "--data-dir",
            str(data_dir),
            "--db",
            str(folder / "results.db"),
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    wall = time.perf_counter() - started
    with sqlite3.connect(folder / "results.db") as db:
        rows = db.execute(
            "SELECT t.started_at, t.finished_at, SUM(e.seconds) FROM trials t "
            "JOIN epochs e ON e.trial_key = t.key GROUP BY t.key"
        ).fetchall()
    return [
        (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() - busy
        for start, end, busy in rows
    ], wall


def fresh_process_overheads(folder: Path, data_dir: Path, repeats: int) -> list[float]:
    """The same one-batch job in a fresh ``python -m gridsearch.engine.worker`` (full imports every time)."""
    from gridsearch.spec.sweep import load_sweep

    config = next(load_sweep(sweep_file(folder, 1)).trials()).config()
    overheads = []
    for repeat in range(repeats):
        job = {
            "task": "train",
            "cohort": "fresh",
            "members": [{"key": "fresh", "config": config, "run_dir": str(folder / f"fresh{repeat}")}],
            "data_dir": str(data_dir.resolve()),
            "device": "cpu",
            "parent_pid": os.getpid(),
            "test_size": 50,
        }
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "gridsearch.engine.worker"],
            input=json.dumps(job),
            text=True,
            capture_output=True,
            check=True,
            cwd=ROOT,
        )
        wall = time.perf_counter() - started
        events = [json.loads(line) for line in result.stdout.splitlines()]
        overheads.append(wall - sum(e["seconds"] for e in events if e["event"] == "epoch"))
    return overheads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=data.default_data_dir())
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--fresh", type=int, default=5, help="fresh-process runs for the reference")
    args = parser.parse_args()
    data.prepare(args.data_dir)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        engine, wall = engine_overheads(folder, args.data_dir, args.trials)
        fresh = fresh_process_overheads(folder, args.data_dir, args.fresh)
    engine_median, fresh_median = statistics.median(engine), statistics.median(fresh)
    print(
        json.dumps(
            {
                "trials": len(engine),
                "sweep_wall_s": round(wall, 2),
                "engine_median_overhead_s": round(engine_median, 3),
                "engine_max_overhead_s": round(max(engine), 3),
                "fresh_process_median_overhead_s": round(fresh_median, 3),
                "ratio_engine_to_fresh": round(engine_median / fresh_median, 3),
                "target_s": 0.5,
                "meets_target": engine_median <= 0.5,
            }
        )
    )


if __name__ == "__main__":
    main()
