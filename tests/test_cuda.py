"""On a CUDA GPU: the spatial transformers train reproducibly, per-trial and fused. Each way is run twice through
``gridsearch run --device cuda`` as a real subprocess, and the two runs' epoch rows must be bit-identical (CUDA's
deterministic kernels, the transformers' own gather-based sampling instead of ``grid_sample``'s atomic-add
backward). Skipped without CUDA; CI has no GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import architectures
from gridsearch.engine import worker
from tests.conftest import epoch_metrics, gridsearch, rows, write_sweep
from tests.test_fused import cohort_job, epochs
from tests.test_fused import config as fused_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TRANSFORMERS = {
    "name": "transformers_cuda",
    "dataset": {"train_size": 1000, "val_size": 300, "test_size": 300},
    "params": {"epochs": 2, "batch_size": 50, "hidden": 32, "patience": 5, "transformer_lr_scale": 0.5},
    "grid": [
        {"architecture": ["stn"], "lr": [0.005, 0.01]},
        {"architecture": ["tps_stn"], "lr": [0.005, 0.01]},
    ],
    "seeds": [0],
}


def run_twice(tmp_path: Path, data_dir: Path, name: str, *options: str) -> tuple[Path, Path]:
    """The transformers' sweep run twice on CUDA with ``options``, each in its own folder; the two databases."""
    databases = []
    for attempt in ("first", "second"):
        folder = tmp_path / f"{name}-{attempt}"
        folder.mkdir()
        sweep = write_sweep(folder, **TRANSFORMERS)
        gridsearch("run", str(sweep), "--device", "cuda", *options, cwd=folder, data_dir=data_dir, check=True)
        databases.append(folder / "results.db")
    return databases[0], databases[1]


@pytest.mark.parametrize("way", [("per-trial", "--fuse", "1"), ("fused", "--fuse", "2")], ids=lambda w: w[0])
def test_the_transformers_train_bit_identically_twice_on_cuda(tmp_path, data_dir, way):
    name, *options = way
    first, second = run_twice(tmp_path, data_dir, name, *options)
    assert len(epoch_metrics(first)) == 8  # 4 trials x 2 epochs
    assert epoch_metrics(first) == epoch_metrics(second)
    query = "SELECT key, status, device FROM trials ORDER BY key"
    assert rows(first, query) == rows(second, query)
    assert {device for _, _, device in rows(first, query)} == {"cuda:0"}
    evaluations = "SELECT trial_key, accuracy, errors FROM evaluations ORDER BY trial_key"
    assert rows(first, evaluations) == rows(second, evaluations) != []


@pytest.mark.parametrize("name", sorted(architectures.REGISTRY))
def test_every_architecture_steps_under_deterministic_cuda_kernels(name, in_process_training):
    """A forward and backward pass of each architecture's default network on CUDA with deterministic algorithms
    only (an op without a deterministic CUDA kernel raises), twice, giving the same gradients."""
    torch.use_deterministic_algorithms(True)
    images = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0)).cuda()
    labels = torch.arange(16).remainder(10).cuda()
    gradients = []
    for _ in range(2):
        torch.manual_seed(0)
        model = architectures.get(name).build().cuda().train()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        gradients.append([p.grad for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*gradients, strict=True))


def run_on_cuda(folder: Path, data_dir: Path, configs: list[dict], fused: bool, budget: int | None = None) -> dict:
    """``configs`` trained as one cohort on CUDA in this process (the worker's ``run_job``); each member's epoch
    rows (without their seconds), those replayed from a checkpoint left out."""
    job = {**cohort_job(folder, data_dir, configs, fused, budget), "device": "cuda"}
    events: list[dict] = []
    assert worker.run_job(job, events.append) == 0  # type: ignore[arg-type]
    return {
        member["key"]: epochs([e for e in events if e["key"] == member["key"] and not e.get("replayed")])
        for member in job["members"]
    }


@pytest.mark.parametrize("fused", [False, True], ids=["per-trial", "fused"])
def test_a_budget_then_a_resume_gives_the_numbers_of_an_undisturbed_run_on_cuda(
    in_process_training, tmp_path, data_dir, fused
):
    """Resuming on CUDA takes up the random states of the checkpoint (kept on the CPU: ``set_state`` takes no
    CUDA tensor) and goes on exactly as a run that never stopped."""
    configs = [fused_config("stn", 500, epochs=2, lr=lr) for lr in (0.005, 0.01)]
    undisturbed = run_on_cuda(tmp_path / "undisturbed", data_dir, configs, fused)
    first = run_on_cuda(tmp_path / "resumed", data_dir, configs, fused, budget=1)
    then = run_on_cuda(tmp_path / "resumed", data_dir, configs, fused)
    assert {key: first[key] + then[key] for key in first} == undisturbed
    assert all(len(rows) == 2 for rows in undisturbed.values())
