"""Storing a 10,000-trial sweep: ``Storage.save_sweep`` of a new sweep (trials, params and sweep links
written), then of the same sweep again (what every ``run`` does first), then reading every trial back in
bulk (``Storage.trial_rows``) as ``plan`` and the coordinator do, against one query per trial. With
``--epochs N`` (default 100) each trial also gets N recorded epochs (1 M rows at 10k x 100, inserted through
the ``Storage``'s own engine) and ``gridsearch.epochs`` is timed for 10 trials, and for every trial in
chunks of 100,000 rows (timed, then read again under tracemalloc for its peak Python memory; ``--whole``:
the same for the whole table at once). Real SQLite files. The last line is one JSON object (seconds, MB)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import yaml
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gridsearch
from gridsearch.spec.sweep import load_sweep
from gridsearch.store.models import EpochRow, TrialRow
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


def record_epochs(storage: Storage, keys: list[str], epochs: int) -> None:
    """``epochs`` made-up epochs per trial, written as the coordinator's rows look, 100 trials per statement."""
    table = EpochRow.metadata.tables["epochs"]
    for start in range(0, len(keys), 100):
        rows = [
            {
                "trial_key": key,
                "epoch": epoch,
                "train_loss": 1.0 / (epoch + 1),
                "train_accuracy": 0.9,
                "val_loss": 1.0 / (epoch + 1),
                "val_accuracy": 0.9 + epoch * 1e-4,
                "lr": 0.01,
                "seconds": 0.5,
            }
            for key in keys[start : start + 100]
            for epoch in range(epochs)
        ]
        with storage.engine.begin() as connection:
            connection.execute(insert(table), rows)
    with storage.engine.begin() as connection:
        connection.execute(TrialRow.__table__.update().values(status="done", epochs_run=epochs, val_accuracy=0.9))


def peak_mb(action) -> tuple[float, float]:
    """Seconds and peak traced MB of ``action``."""
    tracemalloc.start()
    seconds = timed(action)
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return seconds, round(peak, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=100, help="grid side: side x side trials (default 100)")
    parser.add_argument("--epochs", type=int, default=100, help="epochs recorded per trial (0: none)")
    parser.add_argument("--whole", action="store_true", help="also read every epoch at once")
    args = parser.parse_args()
    figures: dict[str, object] = {}
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
            if args.epochs:
                figures["epoch_rows"] = len(keys) * args.epochs
                figures["record_epochs_s"] = timed(lambda: record_epochs(storage, keys, args.epochs))
        finally:
            storage.close()
        db = Path(folder) / "results.db"
        if args.epochs:
            some = keys[:: len(keys) // 10][:10]
            figures["epochs_10_trials_s"] = timed(lambda: gridsearch.epochs(db, "scale", trials=some))

            def chunked() -> int:
                return sum(len(frame) for frame in gridsearch.epochs(db, "scale", chunksize=100_000))

            figures["epochs_chunked_s"] = timed(chunked)
            figures["epochs_chunked_peak_mb"] = peak_mb(chunked)[1]
            if args.whole:
                figures["epochs_whole_s"] = timed(lambda: gridsearch.epochs(db, "scale"))
                figures["epochs_whole_peak_mb"] = peak_mb(lambda: gridsearch.epochs(db, "scale"))[1]
    print(
        json.dumps(
            {
                "trials": len(trials),
                "save_sweep_new_s": first,
                "save_sweep_again_s": again,
                "trial_rows_bulk_s": read,
                "trial_one_query_each_s": one_by_one,
                **figures,
            }
        )
    )


if __name__ == "__main__":
    main()
