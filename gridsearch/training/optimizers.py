"""The optimizer of a stack: SGD (with momentum and Nesterov) and Adam over its flat parameters, every member with
its own ``lr`` (with the spatial transformers' ``transformer_lr_scale`` and its schedule), ``momentum``,
``nesterov`` and ``weight_decay``.

Why not torch's own: ``torch.optim``'s functional forms (``torch.optim.sgd.sgd``, ``torch.optim.adam.adam``, foreach
or not) take one lr, momentum and weight decay per call, so K members would take K calls (times their parameter
groups) a step; here they are (K, parameters) tables spread over the flat tensor, a handful of elementwise kernels
a step whatever K is. ``tests/test_optimizers.py`` checks every member against ``torch.optim`` step for step.

Each member keeps its ``torch.optim`` optimizer and ``LambdaLR`` schedule (its record form): the stack's optimizer
reads each member's hyperparameters from it every epoch (:func:`hyper`), takes up its state on a resume
(:meth:`FusedOptimizer.take_up`) and writes its slice back into it after every epoch
(:meth:`FusedOptimizer.write_back`), so ``last.pt`` holds what a per-trial run's does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from gridsearch.training.stack import Stack


@dataclass
class Hyper:
    """One step's per-member hyperparameters, as (K, parameters) tables or (K,) vectors."""

    lr: torch.Tensor
    momentum: torch.Tensor
    nesterov: torch.Tensor
    weight_decay: torch.Tensor


class FusedOptimizer:
    """SGD (with momentum and Nesterov) or Adam over a :class:`Stack`'s flat parameters, each member with its
    own hyperparameters, computing what ``torch.optim``'s single-tensor paths compute for each member alone.
    Members not ``active`` keep their parameters and state unchanged."""

    BETAS = (0.9, 0.999)
    EPS = 1e-8

    def __init__(self, stack: Stack, kind: str):
        self.stack = stack
        self.kind = kind
        flat = stack.flat.detach()
        self.momentum_buffer = torch.zeros_like(flat) if kind == "sgd" else None
        self.exp_avg = torch.zeros_like(flat) if kind == "adam" else None
        self.exp_avg_sq = torch.zeros_like(flat) if kind == "adam" else None
        self.steps = [0] * stack.k
        self.spread: dict[str, torch.Tensor] = {}

    def set_hyper(self, hyper: Hyper) -> None:
        """Spread the members' hyperparameters over the flat tensor (once per epoch: they change with it)."""
        self.spread = {name: self.stack.spread(getattr(hyper, name).float()) for name in Hyper.__dataclass_fields__}
        self.lr_table = hyper.lr

    def take_up(self, models: list[nn.Module], optimizers: list[torch.optim.Optimizer]) -> None:
        """Take up each member's ``torch.optim`` state (none after a fresh start; its model's parameters key it)."""
        for m, (model, optimizer) in enumerate(zip(models, optimizers)):
            for p, name in zip(model.parameters(), self.stack.names):
                state = optimizer.state.get(p, {})
                for key in ("momentum_buffer", "exp_avg", "exp_avg_sq"):
                    flat = getattr(self, key)
                    if flat is not None and state.get(key) is not None:
                        self.stack.member(m, flat)[name].copy_(state[key])
                if "step" in state:
                    self.steps[m] = int(state["step"])

    @torch.no_grad()
    def write_back(self, m: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Write member ``m``'s slice of the stack into its single model and its ``torch.optim`` state."""
        own = dict(model.named_parameters())
        for name, value in self.stack.member(m).items():
            own[name].copy_(value)
        for name, value in model.named_buffers():
            if name in self.stack.buffers:
                value.copy_(self.stack.buffers[name][m])
        momentum = optimizer.param_groups[0].get("momentum", 0.0)
        for p, name in zip(model.parameters(), self.stack.names):
            if self.kind == "sgd":
                if momentum != 0:
                    optimizer.state[p] = {"momentum_buffer": self.stack.member(m, self.momentum_buffer)[name].clone()}
            else:
                optimizer.state[p] = {
                    "step": torch.tensor(float(self.steps[m]), dtype=torch.float32),
                    "exp_avg": self.stack.member(m, self.exp_avg)[name].clone(),
                    "exp_avg_sq": self.stack.member(m, self.exp_avg_sq)[name].clone(),
                }

    @torch.no_grad()
    def step(self, active: list[bool]) -> None:
        """One step for every member; the inactive ones are restored afterwards."""
        flat, grad = self.stack.flat, self.stack.flat.grad
        assert grad is not None
        everyone = all(active)
        state = [t for t in (self.momentum_buffer, self.exp_avg, self.exp_avg_sq) if t is not None]
        saved = None if everyone else [flat.detach().clone(), *(t.clone() for t in state)]
        for m, on in enumerate(active):
            self.steps[m] += on
        s = self.spread
        grad = grad + s["weight_decay"] * flat
        if self.kind == "sgd":
            buf = self.momentum_buffer
            assert buf is not None
            buf.mul_(s["momentum"]).add_(grad)  # a zero buffer gives the first step's clone of the gradient
            update = torch.where(s["nesterov"].bool(), grad + s["momentum"] * buf, buf)
            flat.sub_(s["lr"] * update)
        else:
            beta1, beta2 = self.BETAS
            assert self.exp_avg is not None and self.exp_avg_sq is not None
            self.exp_avg.lerp_(grad, 1 - beta1)
            self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            steps = [max(n, 1) for n in self.steps]
            correction1 = torch.tensor([1 - beta1**n for n in steps], dtype=torch.float64)
            root2 = torch.tensor([(1 - beta2**n) ** 0.5 for n in steps], dtype=torch.float64)
            step_size = self.stack.spread(self.lr_table.double() / correction1.view(-1, 1))
            denom = (self.exp_avg_sq.sqrt() / self.stack.spread(root2)).add_(self.EPS)
            flat.sub_(step_size * self.exp_avg / denom)
        if saved is not None:
            keep = self.stack.spread(torch.tensor(active, dtype=torch.float32)).bool()
            for tensor, before in zip([flat, *state], saved):
                tensor.copy_(torch.where(keep, tensor, before))
        self.stack.flat.grad = None


def hyper(optimizers: list[torch.optim.Optimizer], model: nn.Module) -> Hyper:
    """The members' hyperparameters for this epoch, read from their ``torch.optim`` optimizers (whose schedules set
    each parameter group's ``lr``: a spatial transformer's at ``lr * transformer_lr_scale``); ``model``: the first
    one's model, to tell which group each parameter is in."""
    groups = optimizers[0].param_groups
    group_of = [next(i for i, g in enumerate(groups) if any(q is p for q in g["params"])) for p in model.parameters()]
    tables = [o.param_groups for o in optimizers]
    return Hyper(
        lr=torch.tensor([[g[i]["lr"] for i in group_of] for g in tables], dtype=torch.float64),
        momentum=torch.tensor([g[0].get("momentum", 0.0) for g in tables], dtype=torch.float64),
        nesterov=torch.tensor([float(g[0].get("nesterov", False)) for g in tables]),
        weight_decay=torch.tensor([g[0]["weight_decay"] for g in tables], dtype=torch.float64),
    )
