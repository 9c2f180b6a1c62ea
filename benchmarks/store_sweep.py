"""Storing a 10,000-trial sweep: ``Storage.save_sweep`` of a new sweep (trials, params and sweep links
written), then of the same sweep again (what every ``run`` does first), then reading every trial back in
bulk (``Storage.trial_rows``) as ``plan`` and the coordinator do. Real SQLite files through the project's
own ``Storage``. The last line is one JSON object (seconds)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gridsearch.spec.sweep import load_sweep
from gridsearch.store.storage import Storage


def sweep_file(folder: Path, side: int) -> Path:
    """A ``side`` x ``side`` grid of a tiny mlp: ``side ** 2`` trials."""
    document = {
        "name": "scale",
        "architecture": "mlp",
        "dataset": {"train_size": 1000, "val_size": 500, "test_size": 500},
        "params": {"epochs": 100},
        "grid": {"lr": [round(0.001 * (i + 1), 4) for i in range(side)], "lr_step": list(range(1, side + 1))},
    }
    path = folder / "scale.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return round(time.perf_counter() - started, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=100, help="grid side: side x side trials (default 100)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        sweep = load_sweep(sweep_file(Path(folder), args.side), args.side**2)
        trials = list(sweep.trials())
        storage = Storage(str(Path(folder) / "results.db"))
        try:
            first = timed(lambda: storage.save_sweep(sweep, trials))
            again = timed(lambda: storage.save_sweep(sweep, trials))
            keys = [trial.key for trial in trials]
            read = timed(lambda: storage.trial_rows(keys)) if hasattr(storage, "trial_rows") else None
            one_by_one = timed(lambda: [storage.trial(key) for key in keys])
        finally:
            storage.close()
    print(
        json.dumps(
            {
                "trials": len(trials),
                "save_sweep_new_s": first,
                "save_sweep_again_s": again,
                "trial_rows_bulk_s": read,
                "trial_one_query_each_s": one_by_one,
            }
        )
    )


if __name__ == "__main__":
    main()
