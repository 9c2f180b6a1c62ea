"""Speed features that must not cost determinism: bf16 autocast and channels_last, parallel workers
sized to the cores, and trials spread over GPUs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gridsearch.engine.devices import oversubscription
from gridsearch.engine.pool import least_busy_gpu
from gridsearch.spec.sweep import load_sweep
from gridsearch.training.loop import train_trial
from tests.conftest import cli, gridsearch, rows, write_sweep


def _train(folder: Path, data_dir: Path, sweep: Path) -> list[dict]:
    config = next(load_sweep(sweep).trials()).config()
    folder.mkdir()
    epochs: list[dict] = []
    train_trial(
        config,
        folder,
        data_dir,
        torch.device("cpu"),
        lambda event: epochs.append(event) if event["event"] == "epoch" else None,
    )
    return [{k: v for k, v in e.items() if k != "seconds"} for e in epochs]


def test_bf16_and_channels_last_train_repeatably_and_are_part_of_the_key(in_process_training, tmp_path, data_dir):
    small = {
        "dataset": {"train_size": 300, "val_size": 200, "test_size": 100},
        "params": {"epochs": 2, "batch_size": 50, "hidden": 32},
        "grid": {"lr": [0.05]},
    }
    plain = write_sweep(tmp_path, "plain.yaml", **small)
    fast = write_sweep(
        tmp_path, "fast.yaml", **{**small, "params": {**small["params"], "amp": "bf16", "channels_last": True}}
    )
    plain_trial, fast_trial = (next(load_sweep(path).trials()) for path in (plain, fast))
    assert "amp" not in plain_trial.config()["params"]  # defaults leave existing keys unchanged
    assert fast_trial.config()["params"]["amp"] == "bf16" and fast_trial.key != plain_trial.key

    first, second = _train(tmp_path / "a", data_dir, fast), _train(tmp_path / "b", data_dir, fast)
    assert first == second  # bit-identical epochs
    reference = _train(tmp_path / "c", data_dir, plain)
    assert first != reference  # bf16 really changed the arithmetic
    assert first[-1]["val_accuracy"] > 0.5 and reference[-1]["val_accuracy"] > 0.5  # both learn


def test_bad_speed_params_are_refused(tmp_path):
    sweep = write_sweep(tmp_path, params={"amp": "fp8"})
    result = cli("plan", str(sweep), cwd=tmp_path)
    assert result.returncode == 2 and "amp" in result.stderr and "bf16" in result.stderr


def test_workers_beyond_the_cores_get_a_warning(tmp_path, data_dir):
    assert oversubscription(2, 1, 2) is None
    assert "4 threads on 2 cores" in oversubscription(2, 2, 2)
    sweep = write_sweep(
        tmp_path,
        dataset={"train_size": 100, "val_size": 100, "test_size": 100},
        params={"epochs": 1, "batch_size": 50, "hidden": 8},
        grid={"lr": [0.05]},
    )
    result = cli("run", str(sweep), "--workers", "512", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert "warning: 512 workers x 1 thread(s) per trial" in result.stderr
    assert rows(tmp_path / "results.db", "SELECT status FROM trials") == [("done",)]


def test_trials_spread_evenly_over_gpus():
    assert least_busy_gpu([], []) is None
    assert least_busy_gpu(["0", "1"], []) == "0"
    assert least_busy_gpu(["0", "1"], ["0"]) == "1"
    assert least_busy_gpu(["0", "1"], ["0", "1", "1"]) == "0"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_packed_gpu_trials_match_one_at_a_time(tmp_path, data_dir):
    sweep = write_sweep(tmp_path, params={"epochs": 2, "batch_size": 50, "hidden": 32, "amp": "bf16"})
    for db, slots in (("one.db", "1"), ("packed.db", "4")):
        gridsearch(
            "run",
            str(sweep),
            "--device",
            "cuda",
            "--slots-per-gpu",
            slots,
            "--db",
            str(tmp_path / db),
            "--artifacts",
            str(tmp_path / db.replace(".db", "")),
            cwd=tmp_path,
            data_dir=data_dir,
            check=True,
        )
    query = "SELECT trial_key, epoch, train_loss, val_accuracy FROM epochs ORDER BY 1, 2"
    assert rows(tmp_path / "one.db", query) == rows(tmp_path / "packed.db", query)
    assert {device for (device,) in rows(tmp_path / "packed.db", "SELECT device FROM trials")} == {"cuda:0"}


FAULTS_OF_A_SECOND_EVALUATION = """
import resource, sys, torch, architectures
from gridsearch.engine.devices import keep_freed_memory
from gridsearch.training import predict
if sys.argv[1] == "kept":
    keep_freed_memory()
torch.set_num_threads(1)
torch.manual_seed(0)
model, images = architectures.get("lenet53").build(), torch.zeros(2000, 1, 28, 28, dtype=torch.uint8)
predict.logits(model, images, False)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
outputs = predict.logits(model, images, False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, outputs.sum().item())
"""


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="glibc's allocator on Linux")
def test_freed_activations_are_kept_for_the_next_batch_and_the_outputs_do_not_change():
    """An evaluation run again page-faults nothing in once ``keep_freed_memory`` has been called (glibc gave each
    batch's activations back to the kernel: hundreds of thousands of page faults), with the same outputs."""

    def run(mode: str) -> tuple[int, str]:
        found = subprocess.run(
            [sys.executable, "-c", FAULTS_OF_A_SECOND_EVALUATION, mode], capture_output=True, text=True, check=True
        )
        faults, total = found.stdout.split()
        return int(faults), total

    (default, default_total), (kept, kept_total) = run("default"), run("kept")
    assert default > 100_000 and kept < 1_000
    assert kept_total == default_total
