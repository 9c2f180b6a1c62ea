"""The stack's optimizer (``training/optimizers.py``) against ``torch.optim``, step for step: K members, each with its
own lr (and a spatial transformer's ``transformer_lr_scale``), momentum, Nesterov, weight decay and step schedule,
given the same gradients as K single models under ``torch.optim.SGD``/``Adam`` and ``LambdaLR``."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from gridsearch.spec.sweep import resolved_defaults
from gridsearch.training.models import build_model, make_optimizer, make_schedule
from gridsearch.training.optimizers import FusedOptimizer, hyper
from gridsearch.training.stack import Stack

STEPS, PER_EPOCH = 12, 3
TOLERANCE = 1e-6
"""Max relative difference (per tensor, max |stack - torch| / max |torch|) after 12 steps: the same arithmetic in
another order (a weight decay, momentum and lr spread over one flat tensor; ``torch.optim``'s scalar ``alpha``).
Measured on this machine's CPU: at most 2.3e-7."""
MEMBERS: dict[str, list[dict[str, Any]]] = {
    "sgd": [
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "lr_step": 1.0, "lr_gamma": 0.5},
        {"lr": 0.1, "momentum": 0.5, "nesterov": False, "weight_decay": 0.0},
        {"lr": 0.02, "momentum": 0.0, "nesterov": False, "weight_decay": 1e-3, "lr_step": 2.0, "lr_gamma": 0.7},
    ],
    "adam": [
        {"lr": 1e-3, "weight_decay": 0.0},
        {"lr": 3e-3, "weight_decay": 5e-4, "lr_step": 1.0, "lr_gamma": 0.5, "lr_min": 0.3},
    ],
}


def trial(architecture: str, kind: str, **params: Any) -> dict:
    return {
        "architecture": architecture,
        "params": {**resolved_defaults(architecture), "optimizer": kind, **params},
        "dataset": {"name": "mnist", "train_size": 1_000, "val_size": 100},
    }


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize(("architecture", "kind"), [("lenet53", "sgd"), ("lenet53", "adam"), ("stn", "sgd")])
def test_every_member_steps_as_torch_optim_steps_it_alone(architecture, kind):
    trials = [trial(architecture, kind, **params) for params in MEMBERS[kind]]
    models = []
    for seed, each in enumerate(trials):
        torch.manual_seed(seed)
        models.append(build_model(each))
    alone = [copy.deepcopy(model) for model in models]
    optimizers = [make_optimizer(model, each["params"]) for model, each in zip(alone, trials)]
    schedules = [make_schedule(optimizer, each["params"]) for optimizer, each in zip(optimizers, trials)]
    if architecture == "stn":  # two parameter groups, the transformer's at its own lr
        assert all(len(optimizer.param_groups) == 2 for optimizer in optimizers)
    stack = Stack(models, torch.device("cpu"), torch.zeros(2, 1, 28, 28))
    fused = FusedOptimizer(stack, kind)
    gradients = torch.Generator().manual_seed(0)
    for step in range(STEPS):
        if step % PER_EPOCH == 0:
            fused.set_hyper(hyper(optimizers, alone[0]))
        grads = [{name: torch.randn(p.shape, generator=gradients) for name, p in m.named_parameters()} for m in alone]
        for model, optimizer, grad in zip(alone, optimizers, grads):
            for name, p in model.named_parameters():
                p.grad = grad[name].clone()
            optimizer.step()
        stack.flat.grad = torch.cat([torch.stack([grad[name] for grad in grads]).reshape(-1) for name in stack.names])
        fused.step([True] * len(trials))
        if step % PER_EPOCH == PER_EPOCH - 1:
            for schedule in schedules:
                schedule.step()
    for m, (model, optimizer, each) in enumerate(zip(alone, optimizers, trials)):
        torch.manual_seed(m)
        written = build_model(each)
        written_optimizer = make_optimizer(written, each["params"])
        fused.write_back(m, written, written_optimizer)
        for (name, p), q in zip(model.named_parameters(), written.parameters()):
            assert relative(q.detach(), p.detach()) <= TOLERANCE, (m, name)
            state, ours = optimizer.state[p], written_optimizer.state.get(q, {})
            assert set(ours) == {key for key, value in state.items() if value is not None}, (m, name)
            for key, value in ours.items():
                assert relative(value.float(), state[key].float()) <= TOLERANCE, (m, name, key)
