"""Training one trial per-trial: one epoch (``train_epoch``), one evaluation (``evaluate``), and the loop that
takes a trial through its life (``lifecycle.Training``) one epoch at a time (``train_trial``).

Everything here runs inside a worker process. A trial is deterministic: its seed fixes the weights,
the batch order and dropout; ``torch.use_deterministic_algorithms(True)`` fixes the kernels; the
thread count comes from the trial's config. Every seed is the trial's own ``seed`` (part of its key),
so all grid points of one seed start from the same weights and see the same batches, as in the study:
differences between them come from the hyperparameters alone.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gridsearch.spec.config import TrialConfig
from gridsearch.spec.datasets import described
from gridsearch.store.records import EpochMetrics, Evaluation, TrialSummary
from gridsearch.training import data, predict
from gridsearch.training.checkpoints import load_verified
from gridsearch.training.data import Split
from gridsearch.training.events import Emit
from gridsearch.training.lifecycle import Randomness, Training, training_splits
from gridsearch.training.models import Augment, build_model, make_augmenter, make_deterministic, uses_bf16
from gridsearch.vocabulary import Execution

EVAL_BATCH_SIZE = predict.BATCH_SIZE


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
    config: TrialConfig,
    run_dir: Path,
    data_dir: Path,
    device: torch.device,
    emit: Emit,
    budget: int | None = None,
    cohort: str | None = None,
) -> tuple[TrialSummary, bool]:
    """Train the trial ``config`` in its run folder ``run_dir`` (resuming from its checkpoint), to its end or to
    ``budget`` epochs (a successive-halving rung; training on later gives the numbers of never stopping); its
    summary and whether it is over. Its events (``started``, ``epoch``s, ``done``) go to ``emit``."""
    make_deterministic(config["threads"])
    trial = Training.start(config, run_dir, emit, device)
    trial.begin(Execution.PER_TRIAL, cohort)
    train, val = training_splits(config, data_dir, device)
    generator = trial.rng.take_up(config["seed"], device)
    augment, bf16 = make_augmenter(config), uses_bf16(config)
    while trial.trains_on(budget):
        started, lr = time.perf_counter(), trial.lr
        loss, accuracy = train_epoch(
            trial.model, trial.optimizer, train, config["params"]["batch_size"], generator, augment, bf16
        )
        trial.check(loss, lr)
        val_loss, val_accuracy, _ = evaluate(trial.model, val, bf16)
        metrics = EpochMetrics(
            epoch=len(trial.history),
            train_loss=loss,
            train_accuracy=accuracy,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            lr=lr,
            seconds=time.perf_counter() - started,
        )
        trial.record(metrics, Randomness.now(device, generator))
        trial.report()
    return trial.end()


def evaluate_trial(
    config: TrialConfig, run_dir: Path, data_dir: Path, device: torch.device, test_size: int
) -> tuple[Evaluation, int]:
    """Evaluate the trial's best weights on the first ``test_size`` official test images of its dataset; the
    evaluation and the epoch of those weights."""
    make_deterministic(config["threads"])
    model = build_model(config).to(device)
    state = load_verified(run_dir / "best.pt", device)
    model.load_state_dict(state["model"])
    test = data.test_split(data_dir, test_size, config["dataset"]).to(device)
    started = time.perf_counter()
    loss, accuracy, predicted = evaluate(model, test, uses_bf16(config))
    labels = test.labels.cpu()
    classes = len(described(config["dataset"]).classes)
    confusion = torch.zeros(classes, classes, dtype=torch.long)
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
