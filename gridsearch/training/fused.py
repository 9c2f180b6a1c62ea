"""Fused training: a cohort's members trained as one stacked model (``stack.py``), in one loop.

The coordinator forms a cohort only of trials that can train as one stack (``engine/jobs.py``,
``cohort_signature``): they share their seed, batch size, epochs and data split, so their per-trial runs draw
the same batches in the same order, and every param that shapes the network, so one template serves them all.
Each member lives the life of any trial (``lifecycle.Training``): started, resumed, checked, checkpointed and
ended by the same code as a per-trial run, and recorded the same way: the same events (``started`` also says
``execution: fused``, the cohort and the stack's size), ``best.pt`` as an ordinary single-model state_dict,
``last.pt`` in the one checkpoint format, so a member resumes fused or per-trial from it.

Members resumed at different epochs (a kill between their checkpoints, or some trained per-trial before) train
in the same stack: an epoch trains the members at that epoch, and the ones ahead wait, masked, until the others
catch up. A fused member equals its per-trial run up to the order of floating-point sums (grouped instead of
single convolutions, fused optimizer arithmetic): ``tests/test_fused.py`` measures how close.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gridsearch.spec.config import TrialConfig
from gridsearch.store.records import EpochMetrics
from gridsearch.training.data import Split
from gridsearch.training.events import Emit
from gridsearch.training.lifecycle import Diverged, Training, training_splits
from gridsearch.training.models import Augment, make_augmenter, make_deterministic, uses_bf16
from gridsearch.training.optimizers import FusedOptimizer, hyper
from gridsearch.training.stack import Stack, evaluate_stack, stack_epoch
from gridsearch.vocabulary import Execution


@dataclass
class Lockstep:
    """A stack in training: its members, the stacked model and optimizer, and the epoch's shared inputs."""

    trials: list[Training]
    stack: Stack
    optimizer: FusedOptimizer
    train: Split
    val: Split
    generator: torch.Generator
    """The batch generator all members share (its state: that of the members at the stack's epoch)."""
    augmenters: list[Augment | None]
    """One shared by every member, or one per member drawing from the same generator state."""
    streams: list[Any]
    """Each member's dropout stream."""


def train_stack(
    members: list[tuple[TrialConfig, Path, Emit]], data_dir: Path, device: torch.device, budget: int | None, cohort: str
) -> None:
    """Train ``members`` (one cohort, each as its config, run folder and events channel) as one stacked model, each
    to its end or to ``budget`` epochs, each reporting its events: ``started``, ``epoch``s, and ``done`` or
    ``error``. An exception leaves the members it reached unended: the caller reports them."""
    config = members[0][0]
    make_deterministic(config["threads"])
    trials = [Training.start(member, run_dir, emit, device) for member, run_dir, emit in members]
    todo = [trial for trial in trials if trial.trains_on(budget)]
    for trial in trials:
        if trial not in todo:  # nothing left to train: replayed and ended as its per-trial run would be
            trial.begin(Execution.FUSED, cohort)
            trial.end()
    if not todo:
        return
    train, val = training_splits(config, data_dir, device)
    stack = Stack([trial.model for trial in todo], device, train.images[:2].float().div(255))
    for trial in todo:
        trial.begin(Execution.FUSED, cohort, stack.k)
    optimizer = FusedOptimizer(stack, config["params"]["optimizer"])
    optimizer.take_up([trial.model for trial in todo], [trial.optimizer for trial in todo])
    epoch = min(len(trial.history) for trial in todo)
    first = next(trial for trial in todo if len(trial.history) == epoch)
    augmenters = [make_augmenter(trial.config) for trial in todo]
    if all(a is None for a in augmenters) or all(vars(a) == vars(augmenters[0]) for a in augmenters):
        augmenters = augmenters[:1]
    generator = first.rng.batch_generator(config["seed"], device)
    lockstep = Lockstep(todo, stack, optimizer, train, val, generator, augmenters, [t.rng.dropout for t in todo])
    while not all(trial.ended for trial in todo):
        for trial in todo:
            if len(trial.history) == epoch and not trial.ended and not trial.trains_on(budget):
                trial.end()
        active = [len(trial.history) == epoch and not trial.ended for trial in todo]
        if any(active):
            _epoch(lockstep, active)
        epoch += 1


def _epoch(lockstep: Lockstep, active: list[bool]) -> None:
    """Train the ``active`` members one epoch, check, record and report each (every checkpoint first, then the
    events: a kill leaves the members at most one epoch apart)."""
    trials, stack, optimizer = lockstep.trials, lockstep.stack, lockstep.optimizer
    config = trials[0].config
    bf16 = uses_bf16(config)
    started = time.perf_counter()
    lrs = [trial.lr for trial in trials]
    optimizer.set_hyper(hyper([trial.optimizer for trial in trials], trials[0].model))
    train_loss, train_accuracy = stack_epoch(
        stack,
        optimizer,
        lockstep.train,
        config["params"]["batch_size"],
        lockstep.generator,
        lockstep.augmenters,
        lockstep.streams,
        active,
        bf16,
    )
    for m, trial in enumerate(trials):
        if active[m]:
            try:
                trial.check(train_loss[m], lrs[m])
            except Diverged as exc:
                trial.fail(exc)
                active[m] = False
    val_loss, val_accuracy = evaluate_stack(stack, lockstep.val, bf16)
    seconds = (time.perf_counter() - started) / max(sum(active), 1)
    recorded = [trial for m, trial in enumerate(trials) if active[m]]
    for m, trial in enumerate(trials):
        if not active[m]:
            continue
        optimizer.write_back(m, trial.model, trial.optimizer)
        metrics = EpochMetrics(
            epoch=len(trial.history),
            train_loss=train_loss[m],
            train_accuracy=train_accuracy[m],
            val_loss=val_loss[m],
            val_accuracy=val_accuracy[m],
            lr=lrs[m],
            seconds=seconds,
        )
        trial.record(metrics, trial.rng.after(lockstep.streams[m], lockstep.generator))
    for trial in recorded:
        trial.report()
