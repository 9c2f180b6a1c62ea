"""Training one trial: the loop, the schedule, checkpoints and resume.

Everything here runs inside a worker process. A trial is deterministic: its seed fixes the weights,
the batch order and dropout; ``torch.use_deterministic_algorithms(True)`` fixes the kernels; the
thread count comes from the trial's config. Every seed is the trial's own ``seed`` (part of its key),
so all grid points of one seed start from the same weights and see the same batches, as in the study:
differences between them come from the hyperparameters alone.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import architectures
from gridsearch.training import data
from gridsearch.training.augmentation import AUGMENTATION_PARAMS, BatchAugmenter
from gridsearch.training.checkpoints import load_verified, resume_state, save_atomically
from gridsearch.training.data import Split

Emit = Callable[[dict[str, Any]], None]
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
EVAL_BATCH_SIZE = 1000


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


def make_deterministic(threads: int) -> None:
    """Fix the thread count and select deterministic kernels only."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def lr_factor(epoch: int, lr_gamma: float, lr_step: float, lr_min: float) -> float:
    """The study's step schedule: ``max(lr_gamma ** floor((1 + epoch) / lr_step), lr_min)``."""
    return max(lr_gamma ** math.floor((1 + epoch) / lr_step), lr_min)


def make_optimizer(model: nn.Module, params: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD or Adam; a spatial transformer's own parameters learn at ``lr * transformer_lr_scale``."""
    groups: list[dict[str, Any]] = [{"params": list(model.parameters())}]
    if "transformer_lr_scale" in params:
        transformer = list(model.transformer_parameters())
        own = set(map(id, transformer))
        groups = [
            {"params": [p for p in model.parameters() if id(p) not in own]},
            {"params": transformer, "lr": params["lr"] * params["transformer_lr_scale"]},
        ]
    if params["optimizer"] == "adam":
        return torch.optim.Adam(groups, lr=params["lr"], weight_decay=params["weight_decay"])
    return torch.optim.SGD(
        groups,
        lr=params["lr"],
        momentum=params["momentum"],
        nesterov=params["nesterov"] and params["momentum"] > 0,
        weight_decay=params["weight_decay"],
    )


def build_model(config: dict[str, Any]) -> nn.Module:
    """The trial's network, with its architecture's own params."""
    entry = architectures.get(config["architecture"])
    own = {name: value for name, value in config["params"].items() if name in entry.params()}
    model = entry.build(**own)
    if config["params"].get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    return model


def uses_bf16(config: dict[str, Any]) -> bool:
    """Whether the trial runs its forward passes under bfloat16 autocast (``amp: bf16``)."""
    return config["params"].get("amp") == "bf16"


def make_augmenter(config: dict[str, Any]) -> Augment | None:
    """The batch augmentation of the trial's architecture, or None if it uses none."""
    names = architectures.get(config["architecture"]).training_params & AUGMENTATION_PARAMS
    if not names:
        return None
    return BatchAugmenter(**{name: config["params"][name] for name in names})


def warm_start(model: nn.Module, checkpoint: Path, device: torch.device) -> tuple[int, int]:
    """Load the tensors of ``checkpoint`` whose name (or dotted suffix) and shape match; returns
    (loaded, left fresh). A LeNet-5-3 checkpoint thus fills the classifier inside an STN."""
    state = torch.load(checkpoint, map_location=device, weights_only=True)
    source = state.get("model", state)
    target = model.state_dict()
    loaded = {}
    for name, tensor in target.items():
        candidates = [k for k in source if (k == name or name.endswith("." + k)) and source[k].shape == tensor.shape]
        if candidates:
            loaded[name] = source[max(candidates, key=len)]
    model.load_state_dict(loaded, strict=False)
    return len(loaded), len(target) - len(loaded)


def checkpoint_path(init_from: str, run_dir: Path) -> Path:
    """The file an ``init_from`` value names: ``trial:<key>`` is that trial's best weights."""
    if init_from.startswith("trial:"):
        return run_dir.parent / init_from.removeprefix("trial:") / "best.pt"
    return Path(init_from)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: Split,
    batch_size: int,
    generator: torch.Generator,
    augment: Augment | None = None,
    bf16: bool = False,
) -> tuple[float, float]:
    """One pass over ``train`` in a seeded random order; returns (mean loss, accuracy)."""
    model.train()
    order = torch.randperm(len(train), generator=generator, device=generator.device)
    batches = order.split(batch_size)
    if len(batches[-1]) == 1:  # batch norm cannot train on a single sample
        batches = batches[:-1]
    total_loss = torch.zeros((), device=train.images.device)
    correct = torch.zeros((), dtype=torch.long, device=train.images.device)
    seen = 0
    for index in batches:
        images = train.images[index].float().div_(255)
        if augment is not None:
            images = augment(images, generator)
        labels = train.labels[index]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(images.device.type, torch.bfloat16, enabled=bf16):
            output = model(images)
            loss = F.cross_entropy(output, labels)
        loss.backward()
        optimizer.step()
        total_loss += loss.detach() * len(index)
        correct += (output.argmax(1) == labels).sum()
        seen += len(index)
    return total_loss.item() / seen, correct.item() / seen


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, bf16: bool = False) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy, predicted labels) of ``model`` on ``split``."""
    model.eval()
    total_loss = torch.zeros((), device=split.images.device)
    predictions = []
    for start in range(0, len(split), EVAL_BATCH_SIZE):
        images = split.images[start : start + EVAL_BATCH_SIZE].float().div_(255)
        labels = split.labels[start : start + EVAL_BATCH_SIZE]
        with torch.autocast(images.device.type, torch.bfloat16, enabled=bf16):
            output = model(images)
        total_loss += F.cross_entropy(output.float(), labels, reduction="sum")
        predictions.append(output.argmax(1))
    predicted = torch.cat(predictions)
    accuracy = (predicted == split.labels).float().mean().item()
    return total_loss.item() / len(split), accuracy, predicted.cpu()


def is_better(value: float, best: float | None, select: str) -> bool:
    if best is None:
        return True
    return value < best if select == "val_loss" else value > best


def train_trial(
    config: dict[str, Any], run_dir: Path, data_dir: Path, device: torch.device, emit: Emit, budget: int | None = None
) -> dict[str, Any]:
    """Train the trial ``config``, resuming from ``run_dir/last.pt`` if present; returns its summary.

    Emits ``{"event": "epoch", ...}`` after each epoch (and once per past epoch on resume). Keeps
    the best weights by the config's ``select`` metric in ``run_dir/best.pt``. With a ``budget``, stops
    once that many epochs are trained (a successive-halving rung); training on later from ``last.pt``
    gives the same numbers as never stopping, since the schedule depends on the epoch number alone.
    The summary's ``finished`` tells whether the trial is over (all epochs, or early stopped).
    """
    params, select = config["params"], config["select"]
    make_deterministic(config["threads"])
    torch.manual_seed(config["seed"])
    generator = torch.Generator(device).manual_seed(config["seed"])
    split = config["dataset"]
    train, val = (s.to(device) for s in data.training_splits(data_dir, split["train_size"], split["val_size"]))
    model = build_model(config).to(device)
    augment = make_augmenter(config)
    optimizer = make_optimizer(model, params)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: lr_factor(epoch, params["lr_gamma"], params["lr_step"], params["lr_min"])
    )
    history: list[dict[str, Any]] = []

    def warn(message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)
        emit({"event": "warning", "message": message})

    state = resume_state(run_dir, device, warn)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["cpu_rng"])
        generator.set_state(state["generator"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        history = state["history"]
        for metrics in history:
            emit({"event": "epoch", "replayed": True, **metrics})
    elif params["init_from"]:
        loaded, fresh = warm_start(model, checkpoint_path(params["init_from"], run_dir), device)
        print(f"warm start from {params['init_from']}: {loaded} tensors loaded, {fresh} fresh", file=sys.stderr)
    emit(
        {
            "event": "started",
            "parameter_count": architectures.count_parameters(model),
            "resumed_from_epoch": len(history),
        }
    )

    best = _best(history, select)
    end = params["epochs"] if budget is None else min(budget, params["epochs"])
    for epoch in range(len(history), end):
        if _out_of_patience(epoch, best, params["patience"]):
            break
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_accuracy = train_epoch(
            model, optimizer, train, params["batch_size"], generator, augment, uses_bf16(config)
        )
        if not math.isfinite(train_loss):
            raise Diverged(f"training loss is {train_loss} at epoch {epoch} (lr {lr:g})")
        val_loss, val_accuracy, _ = evaluate(model, val, uses_bf16(config))
        schedule.step()
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_accuracy": train_accuracy,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "lr": lr,
            "seconds": time.perf_counter() - started,
        }
        history.append(metrics)
        if best is None or is_better(metrics[select], best[select], select):
            best = metrics
            save_atomically({"model": model.state_dict(), "epoch": epoch}, run_dir / "best.pt")
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "cpu_rng": torch.get_rng_state(),
            "generator": generator.get_state(),
            "history": history,
        }
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
        save_atomically(state, run_dir / "last.pt", keep_previous=True)
        emit({"event": "epoch", **metrics})
    finished = len(history) >= params["epochs"] or _out_of_patience(len(history), best, params["patience"])
    return {
        "best_epoch": best["epoch"],
        "val_accuracy": best["val_accuracy"],
        "val_loss": best["val_loss"],
        "epochs_run": len(history),
        "train_seconds": sum(m["seconds"] for m in history),
        "finished": finished,
    }


def _out_of_patience(epoch: int, best: dict[str, Any] | None, patience: int) -> bool:
    """Early stopping: whether epoch ``epoch`` comes more than ``patience`` epochs after the best."""
    return best is not None and epoch - best["epoch"] > patience


def _best(history: list[dict[str, Any]], select: str) -> dict[str, Any] | None:
    best = None
    for metrics in history:
        if is_better(metrics[select], best[select] if best else None, select):
            best = metrics
    return best


def evaluate_trial(
    config: dict[str, Any], run_dir: Path, data_dir: Path, device: torch.device, test_size: int
) -> dict[str, Any]:
    """Evaluate the trial's best weights on the first ``test_size`` official test images."""
    make_deterministic(config["threads"])
    model = build_model(config).to(device)
    state = load_verified(run_dir / "best.pt", device)
    model.load_state_dict(state["model"])
    test = data.test_split(data_dir, test_size).to(device)
    started = time.perf_counter()
    loss, accuracy, predicted = evaluate(model, test, uses_bf16(config))
    labels = test.labels.cpu()
    confusion = torch.zeros(10, 10, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    return {
        "samples": len(test),
        "accuracy": accuracy,
        "loss": loss,
        "errors": int((predicted != labels).sum()),
        "confusion": confusion.tolist(),
        "predictions": predicted.tolist(),
        "seconds": time.perf_counter() - started,
        "best_epoch": state["epoch"],
    }
