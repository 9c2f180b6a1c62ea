"""What a newcomer following the README and docs/ meets: a run refused for want of MNIST leaves no file behind, the
TensorBoard example writes the logs of trials an earlier run trained, one number format everywhere,
optimizer params shown only where they apply, and the ignore file."""

from __future__ import annotations

import json
from pathlib import Path

import gridsearch
from gridsearch.spec.params import applicable
from gridsearch.spec.sweep import load_sweep
from gridsearch.store.records import EpochMetrics, Evaluation, TrialSummary
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import TrialStatus
from tests.conftest import ROOT, cli, write_sweep


def test_a_run_refused_for_want_of_mnist_creates_no_database_and_no_run_folders(tmp_path):
    sweep = write_sweep(tmp_path)
    (tmp_path / "not-a-folder").write_text("MNIST is not here")
    result = cli("run", str(sweep), "--data-dir", "not-a-folder", "--plain", cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: MNIST is not in not-a-folder/MNIST/raw")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["not-a-folder", "sweep.yaml"]


def test_the_ignore_file_keeps_generated_folders_out_of_git():
    ignored = set((ROOT / ".gitignore").read_text().split())
    assert {"mlruns/", "tb/", "runs/", "results.db"} <= ignored


def stored_adam_sweep(folder: Path) -> Path:
    """A database holding a finished, selected and tested Adam sweep over ``lr_step`` (a float param, stored as
    4.0), written through ``Storage`` as the coordinator writes it."""
    sweep = load_sweep(
        write_sweep(folder, architecture="mlp", params={"epochs": 1, "optimizer": "adam"}, grid={"lr_step": [4, 5]})
    )
    storage = Storage(str(folder / "results.db"))
    storage.save_sweep(sweep, list(sweep.trials()))
    keys = [row.key for row in storage.trials("small")]
    for number, key in enumerate(keys):
        score = 0.9 - 0.1 * number
        metrics = EpochMetrics(
            epoch=0, train_loss=0.5, train_accuracy=score, val_loss=0.5, val_accuracy=score, lr=0.01, seconds=38.3
        )
        storage.record_epoch(key, metrics)
        summary = TrialSummary(
            best_epoch=0, val_accuracy=score, val_loss=0.5, epochs_run=1, train_seconds=0.1 + 38.219873280000024
        )
        storage.finish(key, TrialStatus.DONE, summary)
    storage.set_selected("small", keys[0])
    confusion = [[10 if i == j else 0 for j in range(10)] for i in range(10)]
    test = Evaluation(
        samples=100, accuracy=1.0, loss=0.1, errors=0, confusion=confusion, predictions=[0] * 100, seconds=1.0
    )
    storage.save_evaluation(keys[0], "test", test)
    storage.close()
    return folder / "results.db"


def test_params_print_as_written_and_only_where_they_apply_in_every_output(tmp_path):
    db = stored_adam_sweep(tmp_path)
    plan = cli("plan", "sweep.yaml", cwd=tmp_path, check=True).stdout.splitlines()
    assert plan[0].split() == ["key", "lr_step", "seed", "status"] and plan[1].split()[1] == "4"
    table = cli("trials", "small", cwd=tmp_path, check=True).stdout.splitlines()
    assert table[1].split()[1] == "4"
    csv = cli("trials", "small", "--format", "csv", cwd=tmp_path, check=True).stdout.splitlines()
    assert csv[1].split(",")[1] == "4" and csv[1].split(",")[8] == "38.32"  # seconds to the millisecond
    [first, _] = json.loads(cli("trials", "small", "--format", "json", cwd=tmp_path, check=True).stdout)
    assert first["lr_step"] == 4 and isinstance(first["lr_step"], int) and first["train_seconds"] == 38.32
    best = cli("best", "small", cwd=tmp_path, check=True).stdout
    assert "lr_step=4)" in best and "  lr_step: 4\n" in best and "  optimizer: adam\n" in best
    assert "momentum" not in best and "nesterov" not in best  # Adam uses neither
    params = json.loads(cli("best", "small", "--format", "json", cwd=tmp_path, check=True).stdout)["params"]
    assert params["lr_step"] == 4 and isinstance(params["lr_step"], int) and not {"momentum", "nesterov"} & set(params)
    api = gridsearch.trials(db, "small")
    assert api["lr_step"].tolist() == [4, 5] and api["lr_step"].dtype == "int64"
    assert gridsearch.epochs(db, "small")["lr_step"].tolist() == [4, 5]
    assert applicable({"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "lr_step": 4.0}) == {
        "optimizer": "sgd",
        "momentum": 0.9,
        "nesterov": True,
        "lr_step": 4,
    }
