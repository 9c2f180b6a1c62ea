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
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import architectures
from gridsearch.spec.config import TrialConfig
from gridsearch.spec.halving import best_epoch
from gridsearch.store.records import EpochMetrics, Evaluation, TrialSummary
from gridsearch.training import data, predict
from gridsearch.training.checkpoints import (
    is_history_only,
    keep_history_only,
    load_verified,
    resume_state,
    save_atomically,
)
from gridsearch.training.data import Split
from gridsearch.training.events import Emit
from gridsearch.training.models import (
    Augment,
    build_model,
    make_augmenter,
    make_deterministic,
    make_optimizer,
    make_schedule,
    uses_bf16,
    warm_start,
)
from gridsearch.vocabulary import Execution, Metric, metric

EVAL_BATCH_SIZE = predict.BATCH_SIZE


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


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


def evaluate(model: nn.Module, split: Split, bf16: bool = False) -> tuple[float, float, torch.Tensor]:
    """(mean loss, accuracy, predicted labels) of ``model`` on ``split``, computed as everywhere else
    (``predict.logits``)."""
    outputs = predict.logits(model, split.images, bf16)
    predicted = outputs.argmax(1)
    accuracy = (predicted == split.labels).float().mean().item()
    return predict.mean_loss(outputs, split.labels), accuracy, predicted.cpu()


def train_trial(
    config: TrialConfig, run_dir: Path, data_dir: Path, device: torch.device, emit: Emit, budget: int | None = None
) -> tuple[TrialSummary, bool]:
    """Train the trial ``config``, resuming from ``run_dir/last.pt`` if present; returns its summary and
    whether it is over (all epochs, or stopped early) rather than stopped at ``budget``.

    Emits ``{"event": "epoch", ...}`` after each epoch (and once per past epoch on resume). Keeps
    the best weights by the config's ``select`` metric in ``run_dir/best.pt``. With a ``budget``, stops
    once that many epochs are trained (a successive-halving rung); training on later from ``last.pt``
    gives the same numbers as never stopping, since the schedule depends on the epoch number alone.
    """
    params, select = config["params"], metric(config["select"])
    make_deterministic(config["threads"])
    torch.manual_seed(config["seed"])
    generator = torch.Generator(device).manual_seed(config["seed"])
    split = config["dataset"]
    train, val = (
        s.to(device) for s in data.training_splits(data_dir, split["train_size"], split["val_size"], split["name"])
    )
    model = build_model(config).to(device)
    augment = make_augmenter(config)
    optimizer = make_optimizer(model, params)
    schedule = make_schedule(optimizer, params)
    history: list[EpochMetrics] = []

    def warn(message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)
        emit({"event": "warning", "message": message})

    state = resume_state(run_dir, device, warn)
    if state is not None and is_history_only(state) and not _over(state["history"], params, select):
        warn(
            "last.pt holds only the history of a trial that finished before this one's end; "
            "restarting the trial from scratch"
        )
        state = None
    if state is not None and is_history_only(state):
        history = state["history"]
        for metrics in history:
            emit({"event": "epoch", "replayed": True, **metrics})
    elif state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["cpu_rng"])
        generator.set_state(state["generator"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        history = state["history"]
        if history and state.get("execution", Execution.PER_TRIAL) != Execution.PER_TRIAL:
            warn(f"epochs 0-{len(history) - 1} were trained {state['execution']}; the rest is trained per-trial")
        for metrics in history:
            emit({"event": "epoch", "replayed": True, **metrics})
    elif params["init_from"]:
        loaded, fresh = warm_start(model, params["init_from"], run_dir)
        print(f"warm start from {params['init_from']}: {loaded} tensors loaded, {fresh} fresh", file=sys.stderr)
    emit(
        {
            "event": "started",
            "parameter_count": architectures.count_parameters(model),
            "resumed_from_epoch": len(history),
        }
    )

    best = best_epoch(history, select.name)
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
        metrics = EpochMetrics(
            epoch=epoch,
            train_loss=train_loss,
            train_accuracy=train_accuracy,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            lr=lr,
            seconds=time.perf_counter() - started,
        )
        history.append(metrics)
        if best is None or select.better(metrics[select.name], best[select.name]):  # type: ignore[literal-required]
            best = metrics
            save_atomically({"model": model.state_dict(), "epoch": epoch}, run_dir / "best.pt")
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "cpu_rng": torch.get_rng_state(),
            "generator": generator.get_state(),
            "history": history,
            "execution": Execution.PER_TRIAL.value,
        }
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
        save_atomically(state, run_dir / "last.pt", keep_previous=True)
        emit({"event": "epoch", **metrics})
    finished = _over(history, params, select)
    assert best is not None, "a trial trains at least one epoch"
    if finished:
        keep_history_only(run_dir, history)
    summary = TrialSummary(
        best_epoch=best["epoch"],
        val_accuracy=best["val_accuracy"],
        val_loss=best["val_loss"],
        epochs_run=len(history),
        train_seconds=sum(m["seconds"] for m in history),
    )
    return summary, finished


def _over(history: list[EpochMetrics], params: dict[str, Any], select: Metric) -> bool:
    """Whether a trial with ``history`` is finished: all its epochs trained, or out of patience."""
    return len(history) >= params["epochs"] or _out_of_patience(
        len(history), best_epoch(history, select.name), params["patience"]
    )


def _out_of_patience(epoch: int, best: EpochMetrics | None, patience: int) -> bool:
    """Early stopping: whether epoch ``epoch`` comes more than ``patience`` epochs after the best."""
    return best is not None and epoch - best["epoch"] > patience


def evaluate_trial(
    config: TrialConfig, run_dir: Path, data_dir: Path, device: torch.device, test_size: int
) -> tuple[Evaluation, int]:
    """Evaluate the trial's best weights on the first ``test_size`` official test images of its dataset; the
    evaluation and the epoch of those weights."""
    make_deterministic(config["threads"])
    model = build_model(config).to(device)
    state = load_verified(run_dir / "best.pt", device)
    model.load_state_dict(state["model"])
    test = data.test_split(data_dir, test_size, config["dataset"]["name"]).to(device)
    started = time.perf_counter()
    loss, accuracy, predicted = evaluate(model, test, uses_bf16(config))
    labels = test.labels.cpu()
    confusion = torch.zeros(10, 10, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    evaluation = Evaluation(
        samples=len(test),
        accuracy=accuracy,
        loss=loss,
        errors=int((predicted != labels).sum()),
        confusion=confusion.tolist(),
        predictions=predicted.tolist(),
        seconds=time.perf_counter() - started,
    )
    return evaluation, state["epoch"]
