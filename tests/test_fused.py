"""Fused cohorts: a cohort's members trained as one stacked model compute what their per-trial runs compute, up
to the order of floating-point sums; reproducibly; with per-member life (frozen when stopped, failed alone).
Real trials on MNIST subsets, through the worker's ``run_job`` in this process."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap

from architectures.sampling import affine_grid
from gridsearch.engine import worker
from gridsearch.spec.sweep import resolved_defaults
from gridsearch.training import data
from gridsearch.training.checkpoints import load_verified
from gridsearch.training.models import build_model
from gridsearch.training.optimizers import FusedOptimizer, Hyper
from gridsearch.training.stack import Stack, stack_epoch

TOLERANCE = 1e-3
"""Max relative difference (per tensor: max |fused - per-trial| / max |per-trial|) after one step. Measured on
the Intel CPU this was written on: at most 2.5e-6 for lenet53; 1.2e-5 for the STN's second convolution at lr 0.1
(grouped against single convolution sums; a per-trial run with 2 threads instead of 1 moves that tensor by
3.5e-6). On an AMD EPYC, where oneDNN picks other kernels: 5.3e-5 (lenet53's first convolution), 6.5e-4 (the
STN classifier's first convolution)."""
HEAD_TOLERANCE = 5e-2
"""The same for ill-conditioned tensors. A spatial transformer's regression layer (``theta``, ``control``): its
gradient passes through max-pool arg-maxes of near-equal resampled pixels, so it is ill-conditioned in the
per-trial run itself (``test_the_transformer_head_gradient_is_ill_conditioned_in_a_per_trial_run``). A BatchNorm
bias: it starts at zero, so after one step it is lr times a sum of upstream gradients that nearly cancel, and
its summation order shows (on the AMD EPYC: up to 2.1e-2, against 2.5e-6 on the Intel CPU)."""
VARIANTS: list[dict[str, Any]] = [
    {"lr": 0.05, "dropout": 0.25},
    {"lr": 0.01, "momentum": 0.5, "dropout": 0.0, "weight_decay": 0.0},
    {"lr": 0.1, "nesterov": False, "dropout": 0.4, "lr_step": 1.0},
]


def config(architecture: str, train_size: int, epochs: int = 1, threads: int = 1, **params: Any) -> dict:
    """A resolved trial config on the first ``train_size`` MNIST images (batches of 50), 200 to validate."""
    return {
        "architecture": architecture,
        "params": {**resolved_defaults(architecture), "epochs": epochs, "batch_size": 50, "hidden": 16, **params},
        "dataset": {"name": "mnist", "train_size": train_size, "val_size": 200},
        "seed": 0,
        "threads": threads,
        "select": "val_accuracy",
    }


def cohort_job(folder: Path, data_dir: Path, configs: list[dict], fused: bool, budget: int | None = None) -> dict:
    """The Job of ``configs`` as one cohort: members m0, m1, ... under ``folder``."""
    members = [{"key": f"m{i}", "config": c, "run_dir": str(folder / f"m{i}")} for i, c in enumerate(configs)]
    return {
        "task": "train",
        "cohort": "m0",
        "members": members,
        "data_dir": str(data_dir),
        "device": "cpu",
        "visible_gpu": None,
        "test_size": 100,
        "epoch_budget": budget,
        "coordinator_pid": os.getpid(),
        "fused": fused,
    }


def run(
    folder: Path, data_dir: Path, configs: list[dict], fused: bool, budget: int | None = None
) -> tuple[int, dict[str, list[dict]]]:
    """Train ``configs`` as one cohort (members m0, m1, ... under ``folder``); the exit code, each member's events."""
    job = cohort_job(folder, data_dir, configs, fused, budget)
    members = job["members"]
    events: list[dict] = []
    code = worker.run_job(job, events.append)  # type: ignore[arg-type]
    return code, {m["key"]: [e for e in events if e["key"] == m["key"]] for m in members}


def rows(events: list[dict]) -> list[dict]:
    """A member's epoch events."""
    return [e for e in events if e["event"] == "epoch"]


def epochs(events: list[dict]) -> list[tuple]:
    """The epoch rows a member reported, without their seconds."""
    return [tuple(v for k, v in e.items() if k not in ("seconds", "key")) for e in events if e["event"] == "epoch"]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """A member's weights: its resume checkpoint's, or once it is finished (the resume checkpoint then keeps only
    its history) its best epoch's, ``best.pt`` (after one epoch, the same weights)."""
    last = load_verified(run_dir / "last.pt", "cpu")
    return last["model"] if "model" in last else load_verified(run_dir / "best.pt", "cpu")["model"]


def batch_norm_biases(trial: dict) -> set[str]:
    """The names of the BatchNorm biases of ``trial``'s network."""
    model = build_model(trial)
    return {
        f"{name}.bias" for name, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)
    }


def relative(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per floating tensor: max |a - b| / max |b|."""
    return {
        name: ((a[name] - b[name]).abs().max() / b[name].abs().max().clamp_min(1e-30)).item()
        for name in b
        if b[name].is_floating_point()
    }


@pytest.mark.parametrize("architecture", ["lenet53", "stn", "tps_stn"])
def test_one_fused_step_gives_each_member_the_weights_of_its_per_trial_step(
    architecture, in_process_training, tmp_path, data_dir
):
    configs = [config(architecture, 50, **variant) for variant in VARIANTS]  # 50 images: one batch, one step
    assert run(tmp_path / "alone", data_dir, configs, fused=False)[0] == 0
    code, events = run(tmp_path / "fused", data_dir, configs, fused=True)
    assert code == 0
    for i in range(len(configs)):
        differences = relative(weights(tmp_path / "fused" / f"m{i}"), weights(tmp_path / "alone" / f"m{i}"))
        head = {
            name: d
            for name, d in differences.items()
            if name.split(".")[0] in ("theta", "control") or name in batch_norm_biases(configs[i])
        }
        body = {name: d for name, d in differences.items() if name not in head}
        assert max(body.values()) <= TOLERANCE, sorted(body.items(), key=lambda kv: -kv[1])[:3]
        assert not head or max(head.values()) <= HEAD_TOLERANCE, sorted(head.items(), key=lambda kv: -kv[1])[:3]
        started = next(e for e in events[f"m{i}"] if e["event"] == "started")
        assert (started["execution"], started["cohort"], started["cohort_size"]) == ("fused", "m0", 3)
        log = (tmp_path / "fused" / f"m{i}" / "worker.log").read_text()
        assert f"trial m{i} is member {i + 1} of 3, trained fused as one stacked model" in log


def test_the_transformer_head_gradient_is_ill_conditioned_in_a_per_trial_run(in_process_training, data_dir):
    """Why ``HEAD_TOLERANCE``: perturbing a per-trial STN's input by 1e-7 (relative, float32's resolution) moves
    its ``theta`` gradient a hundred times more than the classifier's own gradients (measured on an AMD EPYC:
    1.5e-3 against 6.0e-7)."""
    torch.manual_seed(0)
    model = build_model(config("stn", 50, dropout=0.0))
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    train, _ = data.training_splits(data_dir, 50, 10)
    images, labels = train.images.float() / 255, train.labels

    def gradients(x: torch.Tensor) -> dict[str, torch.Tensor]:
        copied = copy.deepcopy(model)
        F.cross_entropy(copied(x), labels).backward()
        return {name: p.grad for name, p in copied.named_parameters() if p.grad is not None}

    torch.manual_seed(1)
    moved = relative(gradients(images * (1 + 1e-7 * torch.randn_like(images))), gradients(images))
    assert moved["theta.weight"] > 100 * moved["classifier.classifier.6.weight"]


def test_two_epochs_fused_and_per_trial_numbers_differ_by_float_order(in_process_training, tmp_path, data_dir):
    """Two epochs of three members: the fused numbers stray from the per-trial ones by no more than ten times what
    the per-trial runs themselves stray by with 2 threads instead of 1 (another float summation order). At this
    size (6 steps an epoch at lr up to 0.1) training amplifies float-order differences: measured, train loss
    5.3e-3 fused against 1.4e-3 for 2 threads, val loss 8.6e-2 against 9.7e-2, val accuracy 0.20 against 0.17."""
    configs = [config("lenet53", 300, epochs=2, **variant) for variant in VARIANTS]
    _, alone = run(tmp_path / "alone", data_dir, configs, fused=False)
    _, threads = run(tmp_path / "threads", data_dir, [{**c, "threads": 2} for c in configs], fused=False)
    _, fused = run(tmp_path / "fused", data_dir, configs, fused=True)

    def gap(events: dict[str, list[dict]], name: str) -> float:
        """The largest relative difference of metric ``name`` from the per-trial runs, over members and epochs."""
        pairs = [(a[name], b[name]) for key in alone for a, b in zip(rows(alone[key]), rows(events[key]))]
        return max(abs(a - b) / max(abs(a), 1e-12) for a, b in pairs)

    for name in ("train_loss", "val_loss", "val_accuracy"):
        print(f"{name}: fused against per-trial {gap(fused, name):.2e}, 2 threads against 1 {gap(threads, name):.2e}")
    for name in ("train_loss", "val_loss", "val_accuracy"):
        assert 0 < gap(fused, name) <= 10 * gap(threads, name)


def test_two_fused_runs_are_bit_identical(in_process_training, tmp_path, data_dir):
    """Two epochs of three, to a budget: ``last.pt`` keeps the resume state (a finished trial's keeps its history)."""
    configs = [config("stn", 100, epochs=3, **variant) for variant in VARIANTS]
    _, first = run(tmp_path / "a", data_dir, configs, fused=True, budget=2)
    _, second = run(tmp_path / "b", data_dir, configs, fused=True, budget=2)
    for i, key in enumerate(first):
        assert epochs(first[key]) == epochs(second[key]) and len(epochs(first[key])) == 2
        a, b = (load_verified(tmp_path / run_ / f"m{i}" / "last.pt", "cpu") for run_ in ("a", "b"))
        assert all(torch.equal(a["model"][name], b["model"][name]) for name in a["model"])
        assert torch.equal(a["cpu_rng"], b["cpu_rng"]) and a["execution"] == "fused"


def test_a_member_with_lr_0_and_dropout_0_keeps_its_initial_weights(in_process_training, tmp_path, data_dir):
    still = config("lenet53", 150, epochs=2, lr=0.0, dropout=0.0)
    assert run(tmp_path, data_dir, [still, config("lenet53", 150, epochs=2, lr=0.05)], fused=True)[0] == 0
    torch.manual_seed(0)
    initial = dict(build_model(still).named_parameters())
    trained = weights(tmp_path / "m0")
    assert all(torch.equal(trained[name], p.detach()) for name, p in initial.items())
    assert not torch.equal(weights(tmp_path / "m1")["features.0.weight"], initial["features.0.weight"].detach())


def test_a_stopped_member_stays_frozen_while_the_others_train(in_process_training, data_dir):
    configs = [config("lenet53", 150, lr=0.05), config("lenet53", 150, lr=0.1, dropout=0.4)]
    models = []
    for c in configs:
        torch.manual_seed(0)
        models.append(build_model(c))
    stack = Stack(models, torch.device("cpu"), torch.zeros(2, 1, 28, 28))
    optimizer = FusedOptimizer(stack, "sgd")
    lr = torch.tensor([[0.05], [0.1]], dtype=torch.float64).expand(2, len(stack.names))
    optimizer.set_hyper(Hyper(lr, torch.tensor([0.9, 0.9]), torch.tensor([1.0, 1.0]), torch.tensor([5e-4, 5e-4])))
    train, _ = data.training_splits(data_dir, 150, 10)
    generator = torch.Generator().manual_seed(0)
    streams = [torch.get_rng_state()] * 2
    stack_epoch(stack, optimizer, train, 50, generator, [None], streams, [True, True], False)  # both train
    before = (stack.member(1), stack.member(1, optimizer.momentum_buffer), stack.member(0))
    before = tuple({k: v.clone() for k, v in part.items()} for part in before)
    buffers = {name: b[1].clone() for name, b in stack.buffers.items()}
    stack_epoch(stack, optimizer, train, 50, generator, [None], streams, [True, False], False)  # 1 stopped
    assert all(torch.equal(stack.member(1)[k], v) for k, v in before[0].items())
    assert all(torch.equal(stack.member(1, optimizer.momentum_buffer)[k], v) for k, v in before[1].items())
    assert all(torch.equal(stack.buffers[name][1], b) for name, b in buffers.items())
    assert not torch.equal(stack.member(0)["features.0.weight"], before[2]["features.0.weight"])


def test_an_early_stopped_member_leaves_the_others_numbers_unchanged(in_process_training, tmp_path, data_dir):
    pair = [config("lenet53", 150, epochs=3, **VARIANTS[0]), config("lenet53", 150, epochs=3, **VARIANTS[2])]
    stops = config("lenet53", 150, epochs=3, lr=0.03, patience=0)  # its best is epoch 0 or 1: it stops early
    _, alone = run(tmp_path / "pair", data_dir, pair, fused=True)
    _, three = run(tmp_path / "three", data_dir, [*pair, stops], fused=True)
    assert [epochs(three[k]) for k in ("m0", "m1")] == [epochs(alone[k]) for k in ("m0", "m1")]
    done = next(e for e in three["m2"] if e["event"] == "done")
    assert done["finished"] and done["epochs_run"] < 3


def test_a_diverging_member_fails_alone(in_process_training, tmp_path, data_dir):
    pair = [config("lenet53", 150, epochs=2, **VARIANTS[0]), config("lenet53", 150, epochs=2, **VARIANTS[1])]
    diverges = config("lenet53", 150, epochs=2, lr=1e30)
    _, alone = run(tmp_path / "pair", data_dir, pair, fused=True)
    code, three = run(tmp_path / "three", data_dir, [diverges, *pair], fused=True)
    assert code == 1
    assert three["m0"][-1]["event"] == "error" and three["m0"][-1]["error"].startswith("Diverged: training loss is")
    assert [epochs(three[k]) for k in ("m1", "m2")] == [epochs(alone[k]) for k in ("m0", "m1")]
    assert [three[k][-1]["event"] for k in ("m1", "m2")] == ["done", "done"]


def test_kill_9_mid_cohort_then_rerun_gives_the_numbers_of_an_undisturbed_fused_run(
    in_process_training, tmp_path, data_dir
):
    configs = [config("lenet53", 150, epochs=3, **variant) for variant in VARIANTS]
    _, undisturbed = run(tmp_path / "undisturbed", data_dir, configs, fused=True)
    folder = tmp_path / "killed"
    job = {**cohort_job(folder, data_dir, configs, fused=True), "parent_pid": os.getpid()}
    process = subprocess.Popen(
        [sys.executable, "-m", "gridsearch.engine.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(json.dumps(job))
    process.stdin.close()
    for line in process.stdout:  # the cohort's second epoch is recorded: kill it in the middle of its third
        event = json.loads(line)
        if event["event"] == "epoch" and event["key"] == "m2" and event["epoch"] == 1:
            break
    process.kill()
    process.wait()
    _, resumed = run(folder, data_dir, configs, fused=True)
    for key in resumed:
        assert [
            tuple(v for k, v in e.items() if k not in ("seconds", "key", "replayed")) for e in rows(resumed[key])
        ] == [tuple(v for k, v in e.items() if k not in ("seconds", "key")) for e in rows(undisturbed[key])]
        a, b = weights(folder / key), weights(tmp_path / "undisturbed" / key)
        assert all(torch.equal(a[name], b[name]) for name in b)
        assert next(e for e in resumed[key] if e["event"] == "started")["resumed_from_epoch"] >= 2


@pytest.mark.benchmark
def test_the_fused_cohorts_benchmark_runs_at_its_tiniest_size(data_dir):
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "fused_cohorts.py"
    command = [sys.executable, str(script), "--data-dir", str(data_dir), "--samples", "100", "--fuse", "2"]
    result = subprocess.run([*command, "--architectures", "lenet53"], capture_output=True, text=True, check=True)
    summary = json.loads(result.stdout.splitlines()[-1])
    figures = summary["results"]["lenet53"]
    assert set(figures["member_samples_per_s"]) == {"per-trial", "fused-2"}
    assert all(rate > 0 for rate in figures["member_samples_per_s"].values())
    assert figures["projected_grid_hours"]["per-trial"] > 0 and summary["device"] == "cpu"


@pytest.mark.benchmark
def test_the_fused_cohorts_benchmark_times_k_worker_processes_at_once(data_dir):
    """Per-trial at ``--slots-per-gpu 2``: two worker processes, each training one point as a one-trial job."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "fused_cohorts.py"
    command = [sys.executable, str(script), "--data-dir", str(data_dir), "--samples", "100", "--epochs", "2"]
    result = subprocess.run([*command, "--slots-per-gpu", "2", "--fuse", "2"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.splitlines()[-1])["results"]["lenet53"]
    assert set(figures["member_samples_per_s"]) == {"per-trial-2", "fused-2"} and not figures["errors"]
    assert all(rate > 0 for rate in figures["member_samples_per_s"].values())
    assert figures["gpu_utilisation_percent"] == {"per-trial-2": None, "fused-2": None}


def test_the_stns_affine_grid_is_torchs_bit_for_bit_and_vmap_traces_it():
    torch.manual_seed(0)
    theta = torch.randn(86, 2, 3, requires_grad=True)
    ours, torchs = affine_grid(theta, [86, 1, 28, 28]), F.affine_grid(theta, [86, 1, 28, 28], align_corners=False)
    assert torch.equal(ours, torchs)
    upstream = torch.randn_like(ours)
    assert torch.equal(*(torch.autograd.grad((grid * upstream).sum(), theta)[0] for grid in (ours, torchs)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "performance drop" fallback warning
        assert vmap(lambda t: affine_grid(t, [86, 1, 28, 28]))(torch.randn(3, 86, 2, 3)).shape == (3, 86, 28, 28, 2)


def test_a_resume_that_changes_the_way_says_so_and_goes_on_from_the_checkpoint(in_process_training, tmp_path, data_dir):
    configs = [config("lenet53", 150, epochs=2, **variant) for variant in VARIANTS[:2]]
    _, first = run(tmp_path, data_dir, configs, fused=False, budget=1)  # epoch 0 per-trial, in turn
    assert [e["event"] for e in first["m0"]] == ["hello", "started", "epoch", "done"]
    _, then = run(tmp_path, data_dir, configs, fused=True)  # epoch 1 fused
    for key in then:
        warning = next(e for e in then[key] if e["event"] == "warning")
        assert warning["message"] == "epochs 0-0 were trained per-trial; the rest is trained fused"
        assert [e["epoch"] for e in rows(then[key])] == [0, 1] and rows(then[key])[0]["replayed"]
    _, back = run(tmp_path, data_dir, configs, fused=False)  # nothing left: replayed per-trial, says so
    assert [e["message"] for e in back["m0"] if e["event"] == "warning"] == [
        "epochs 0-1 were trained fused; the rest is trained per-trial"
    ]


def numbers(events: list[dict]) -> list[tuple]:
    """The epoch rows a member reported, trained or replayed, without their seconds."""
    return [tuple(v for k, v in e.items() if k not in ("seconds", "key", "replayed")) for e in rows(events)]


def test_a_member_finished_per_trial_ends_with_its_cohort_and_the_others_get_the_numbers_of_an_undisturbed_run(
    in_process_training, tmp_path, data_dir
):
    """A trial that finished per-trial (``last.pt``: its history alone), its coordinator killed before recording it,
    then run again with ``--fuse``: it replays and is done, and its innocent cohort-mates train to the numbers of an
    undisturbed fused run, reporting no error."""
    configs = [config("lenet53", 150, epochs=2, **variant) for variant in VARIANTS]
    _, undisturbed = run(tmp_path / "undisturbed", data_dir, configs, fused=True)
    folder = tmp_path / "mixed"
    _, alone = run(folder, data_dir, configs[1:2], fused=False)  # m0 of a one-member cohort: trial 1 per-trial
    (folder / "m0").rename(folder / "m1")
    assert set(load_verified(folder / "m1" / "last.pt", "cpu")) == {"history", "finished"}
    code, mixed = run(folder, data_dir, configs, fused=True)
    assert code == 0
    assert not [e for events in mixed.values() for e in events if e["event"] == "error"]
    assert [mixed[key][-1]["event"] for key in mixed] == ["done", "done", "done"]
    assert all(e.get("replayed") for e in rows(mixed["m1"])) and numbers(mixed["m1"]) == numbers(alone["m0"])
    for key in ("m0", "m2"):
        assert epochs(mixed[key]) == epochs(undisturbed[key])


def test_checkpoints_have_one_format_and_a_cohort_resumes_from_members_trained_either_way(
    in_process_training, tmp_path, data_dir
):
    """A fused member's ``last.pt`` shrinks to its history once it is done, as a per-trial one's does. A cohort whose
    members were trained fused (m0, m1), per-trial (m2) or not yet (m3) resumes fused: m3 trains its first epoch
    while the others wait, then all go on as one stack; the fused ones get the numbers of an undisturbed run."""
    configs = [config("lenet53", 150, epochs=2, **variant) for variant in [*VARIANTS, {"lr": 0.02, "momentum": 0.8}]]
    _, undisturbed = run(tmp_path / "undisturbed", data_dir, configs, fused=True)
    for i in range(4):
        run_dir = tmp_path / "undisturbed" / f"m{i}"
        assert set(load_verified(run_dir / "last.pt", "cpu")) == {"history", "finished", "execution"}
        assert not (run_dir / "last.prev.pt").exists()
    folder = tmp_path / "mixed"
    run(folder, data_dir, configs[:2], fused=True, budget=1)  # m0, m1: epoch 0 fused
    _, per_trial = run(tmp_path / "alone", data_dir, configs[2:3], fused=False, budget=1)
    (tmp_path / "alone" / "m0").rename(folder / "m2")  # m2: epoch 0 per-trial
    code, resumed = run(folder, data_dir, configs, fused=True)
    assert code == 0 and [resumed[key][-1]["event"] for key in resumed] == ["done"] * 4
    for key in ("m0", "m1"):
        assert numbers(resumed[key]) == numbers(undisturbed[key])
        assert [bool(e.get("replayed")) for e in rows(resumed[key])] == [True, False]
    assert epochs(resumed["m3"]) == epochs(undisturbed["m3"])
    assert [e["message"] for e in resumed["m2"] if e["event"] == "warning"] == [
        "epochs 0-0 were trained per-trial; the rest is trained fused"
    ]
    assert numbers(resumed["m2"])[0] == numbers(per_trial["m0"])[0]
    for i in range(4):
        assert set(load_verified(folder / f"m{i}" / "last.pt", "cpu")) == {"history", "finished", "execution"}
