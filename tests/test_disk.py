"""What a trial keeps on disk (real training on a real MNIST subset, in this process): a finished trial keeps
its best weights and its epoch history only; one stopped at a successive-halving budget keeps its resume
checkpoints (so do failed and interrupted ones: nothing is deleted until a trial finishes)."""

from __future__ import annotations

from pathlib import Path

import torch

from gridsearch.spec.sweep import resolved_defaults
from gridsearch.training import checkpoints
from gridsearch.training import loop as training

RESUME = {"last.pt", "last.pt.sha256", "last.prev.pt", "last.prev.pt.sha256"}


def config(epochs: int, patience: int = 40, hidden: int = 128) -> dict:
    params = {**resolved_defaults("lenet53"), "epochs": epochs, "batch_size": 50, "hidden": hidden, "lr": 0.1}
    return {
        "architecture": "lenet53",
        "seed": 0,
        "threads": 1,
        "select": "val_accuracy",
        "dataset": {"name": "mnist", "train_size": 200, "val_size": 100},
        "params": {**params, "patience": patience},
    }


def train(run_dir: Path, data_dir: Path, trial: dict, budget: int | None = None) -> tuple[dict, bool, list[dict]]:
    events: list[dict] = []
    run_dir.mkdir(exist_ok=True)
    summary, finished = training.train_trial(trial, run_dir, data_dir, torch.device("cpu"), events.append, budget)
    return dict(summary), finished, events


def names(run_dir: Path) -> set[str]:
    return {path.name for path in run_dir.iterdir()}


def test_a_finished_lenet53_trial_keeps_its_best_weights_and_history_in_under_1_2_mb(
    in_process_training, tmp_path, data_dir
):
    run_dir = tmp_path / "done"
    summary, finished, _events = train(run_dir, data_dir, config(epochs=2))
    assert finished and names(run_dir) == {"best.pt", "best.pt.sha256", "last.pt", "last.pt.sha256"}
    assert sum(path.stat().st_size for path in run_dir.iterdir()) <= 1_200_000
    best = checkpoints.load_verified(run_dir / "best.pt", "cpu")
    assert {tensor.dtype for tensor in best["model"].values() if tensor.is_floating_point()} == {torch.float32}
    history = checkpoints.load_verified(run_dir / "last.pt", "cpu")
    assert set(history) == {"history", "finished"} and len(history["history"]) == 2

    # a worker that finished just before its coordinator died runs again: it replays, trains nothing
    again, finished_again, replayed = train(run_dir, data_dir, config(epochs=2))
    assert finished_again and again == summary
    epochs = [event for event in replayed if event["event"] == "epoch"]
    assert len(epochs) == 2 and all(event["replayed"] for event in epochs)
    assert next(e for e in replayed if e["event"] == "started")["resumed_from_epoch"] == 2

    # the same folder asked for more epochs than its history holds (another config): restarts, says so
    _, _, longer = train(run_dir, data_dir, config(epochs=3))
    assert any("restarting the trial from scratch" in e.get("message", "") for e in longer)
    assert len([e for e in longer if e["event"] == "epoch" and not e.get("replayed")]) == 3


def test_a_trial_stopped_early_by_patience_is_finished_and_trimmed(in_process_training, tmp_path, data_dir):
    run_dir = tmp_path / "patience"
    summary, finished, _ = train(run_dir, data_dir, config(epochs=50, patience=0, hidden=8))
    assert finished and summary["epochs_run"] < 50 and not RESUME - {"last.pt", "last.pt.sha256"} & names(run_dir)


def test_a_trial_at_a_halving_budget_keeps_its_resume_checkpoints(in_process_training, tmp_path, data_dir):
    run_dir = tmp_path / "rung"
    _, finished, _ = train(run_dir, data_dir, config(epochs=3, hidden=8), budget=2)
    assert not finished and names(run_dir) >= RESUME  # a later rung goes on from here
    _, finished, events = train(run_dir, data_dir, config(epochs=3, hidden=8))
    assert finished and len([e for e in events if e["event"] == "epoch" and not e.get("replayed")]) == 1
    assert not {"last.prev.pt", "last.prev.pt.sha256"} & names(run_dir)
