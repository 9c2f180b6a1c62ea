"""Fused cohorts: the trials of a cohort trained as ONE stacked model, in one loop.

The members of a cohort share their seed, batch size, epochs and data split (``cohort_signature``), so their
per-trial runs draw the same batches in the same order and, for one architecture, start from the same weights.
Here every member's single model is kept as a slice of stacked tensors and all of them run at once:

- **Forward and backward**: ``torch.func.functional_call`` of one template module under ``torch.vmap`` over the
  stacked parameters and buffers (``vmap`` turns each convolution into one grouped convolution, each linear
  layer into one batched matmul, and batch norm into per-member statistics). One general mechanism for every
  architecture whose forward ``vmap`` can trace; :func:`stacked_form` tries it once per architecture, and a
  cohort of an architecture without one is trained member by member (the worker says so in one line).
- **Parameters**: one flat tensor, parameter by parameter with the K members' copies side by side, so each
  parameter is a contiguous ``(K, ...)`` view (``split``'s backward is one ``cat``: one gradient tensor).
- **Optimizer**: :class:`FusedOptimizer`, SGD (Nesterov) and Adam on that flat tensor, every member's ``lr``
  (with the spatial transformers' ``transformer_lr_scale`` and the study's step schedule), ``momentum``,
  ``nesterov`` and ``weight_decay`` as tensors: a handful of elementwise kernels per step, whatever K is.
- **Augmentation**: the same batch generator as the per-trial run; members whose augmentation params differ
  draw from the same generator state, each with its own params (so each sees what it would alone).
- **Dropout**: each member's masks come from its own RNG stream, the state its per-trial run's default
  generator would have, through the same ``F.dropout`` call on a tensor of ones, so a member draws the masks
  it would draw alone, with its own rate (a rate of 0 draws nothing, as ``F.dropout`` does).
- **Life by masking**: a member that stops early or fails (its training loss is not finite) stays in the stack,
  shapes unchanged, but its parameters, optimizer state and batch-norm buffers are restored after every step.

Records are those of a per-trial run, member by member: the same events (``started`` also says
``execution: fused``, the cohort and its size), ``best.pt`` as an ordinary single-model state_dict, and
``last.pt`` in the per-trial format (plus ``execution``), so a member resumes fused or per-trial from it. A
fused member equals its per-trial run up to the order of floating-point sums (grouped instead of single
convolutions, fused optimizer arithmetic): ``tests/test_fused.py`` measures how close.
"""

from __future__ import annotations

import copy
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

import architectures
from gridsearch.spec.config import TrialConfig
from gridsearch.spec.halving import best_epoch
from gridsearch.spec.params import AUGMENTATION_PARAMS, TRANSFORMER_PARAMS
from gridsearch.store.records import EpochMetrics, TrialSummary
from gridsearch.training import data
from gridsearch.training.checkpoints import (
    CorruptCheckpoint,
    load_verified,
    previous_path,
    resume_state,
    save_atomically,
)
from gridsearch.training.data import Split
from gridsearch.training.events import Emit
from gridsearch.training.loop import EVAL_BATCH_SIZE, _out_of_patience
from gridsearch.training.models import (
    build_model,
    make_augmenter,
    make_deterministic,
    make_optimizer,
    make_schedule,
    uses_bf16,
    warm_start,
)
from gridsearch.vocabulary import Execution, metric

PER_MEMBER = frozenset(
    {"lr", "momentum", "nesterov", "weight_decay", "lr_gamma", "lr_step", "lr_min", "patience", "init_from"}
    | {"dropout"}
    | set(TRANSFORMER_PARAMS)
    | set(AUGMENTATION_PARAMS)
)
"""Params the members of one stack may differ in; every other param (and ``elastic_alpha > 0``, which decides
how many random numbers an augmentation draws) must be equal."""


def stack_signature(config: TrialConfig) -> tuple:
    """What the members of one stack share beyond their cohort: every param but those in ``PER_MEMBER``."""
    params = config["params"]
    shared = sorted((name, repr(value)) for name, value in params.items() if name not in PER_MEMBER)
    return (config["architecture"], tuple(shared), params.get("elastic_alpha", 0) > 0)


@cache
def stacked_form(architecture: str) -> str | None:
    """None if ``architecture`` trains stacked (a two-member stack of its default model runs forward and
    backward under ``vmap``), else why not, in a few words."""
    entry = architectures.get(architecture)
    try:
        with torch.random.fork_rng(devices=[]):  # the worker's random streams stay as they were
            models = [entry.build(), entry.build()]
            stack = Stack(models, torch.device("cpu"))
            noise = stack.noise(2, [torch.get_rng_state()] * 2)
            stack.forward(stack.params(), stack.buffers | noise, torch.zeros(2, 1, 28, 28)).sum().backward()
    except Exception as exc:  # any failure to trace means no stacked form, whatever its kind
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return None


def stacks(configs: Sequence[TrialConfig]) -> tuple[list[list[int]], dict[int, str]]:
    """The cohort's members (by index) grouped into stacks of two or more, and why each other one trains alone."""
    groups: dict[tuple, list[int]] = {}
    alone: dict[int, str] = {}
    for index, config in enumerate(configs):
        reason = stacked_form(config["architecture"])
        if reason is None:
            groups.setdefault(stack_signature(config), []).append(index)
        else:
            alone[index] = f"architecture {config['architecture']} has no stacked form ({reason})"
    for group in [g for g in groups.values() if len(g) == 1]:
        alone[group[0]] = "no other member of its cohort has the same shape-setting params"
    return [g for g in groups.values() if len(g) > 1], alone


class Noise(nn.Module):
    """Dropout with its mask given: the trainer puts each member's scaled mask in the buffer ``noise``."""

    noise: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("noise", torch.ones(()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.noise if self.training else x


def _dropouts(model: nn.Module) -> list[str]:
    """The names of ``model``'s dropout modules, in the order its forward pass calls them (each once)."""
    calls: list[str] = []
    hooks = [
        module.register_forward_hook(lambda module, args, out, name=name: calls.append(name))
        for name, module in model.named_modules()
        if isinstance(module, nn.Dropout)
    ]
    training = model.training
    try:
        model.eval()  # no randomness, no batch-norm update
        with torch.no_grad():
            model(torch.zeros(2, 1, 28, 28, device=next(model.parameters()).device))
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    if len(set(calls)) != len(calls):
        raise ValueError(f"a dropout module is called more than once per forward pass: {calls}")
    return calls


def _rates(model: nn.Module, names: list[str]) -> list[float]:
    return [float(model.get_submodule(name).p) for name in names]  # type: ignore[arg-type]


class Stack:
    """K single models of one structure as one: a flat parameter tensor, stacked buffers, a template module.

    Parameter ``i`` lives in ``flat[offsets[i] : offsets[i + 1]]`` as K contiguous copies, member by member.
    """

    def __init__(self, models: list[nn.Module], device: torch.device):
        self.k = len(models)
        self.device = device
        self.dropouts = _dropouts(models[0])
        self.rates = [_rates(model, self.dropouts) for model in models]
        """Per member, the rate of each dropout module in ``dropouts``."""
        self.shapes: dict[str, list[int]] = {}
        template = copy.deepcopy(models[0])
        for name in self.dropouts:
            template.set_submodule(name, Noise())
        self.template = template
        self.names = [name for name, _ in models[0].named_parameters()]
        self.sizes = [self.k * p.numel() for _, p in models[0].named_parameters()]
        own = [dict(model.named_parameters()) for model in models]
        self.flat = torch.cat([torch.stack([o[name].detach() for o in own]).reshape(-1) for name in self.names])
        self.flat.requires_grad_(True)
        self.param_shapes = [tuple(p.shape) for _, p in models[0].named_parameters()]
        buffers = [dict(model.named_buffers()) for model in models]
        self.buffers = {name: torch.stack([b[name] for b in buffers]) for name in buffers[0]}
        self.cell = torch.cat(
            [(i * self.k + torch.arange(self.k)).repeat_interleave(size // self.k) for i, size in enumerate(self.sizes)]
        ).to(device)
        """For each element of ``flat``: ``parameter * K + member``, to spread a (K, parameters) table over it."""
        self._ones: dict[tuple[str, int], torch.Tensor] = {}
        self._dropout_inputs(models[0])

    def _dropout_inputs(self, model: nn.Module) -> None:
        """Record the shape of one sample at each dropout module's input."""
        hooks = [
            model.get_submodule(name).register_forward_hook(
                lambda module, args, out, name=name: self.shapes.__setitem__(name, list(args[0].shape[1:]))
            )
            for name in self.dropouts
        ]
        training = model.training
        try:
            model.eval()
            with torch.no_grad():
                model(torch.zeros(2, 1, 28, 28, device=self.device))
        finally:
            model.train(training)
            for hook in hooks:
                hook.remove()

    def params(self) -> dict[str, torch.Tensor]:
        """Each parameter as a ``(K, ...)`` view of ``flat`` (gradients flow back to ``flat``)."""
        blocks = self.flat.split(self.sizes)
        return {name: block.view(self.k, *shape) for name, block, shape in zip(self.names, blocks, self.param_shapes)}

    def member(self, index: int, flat: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Member ``index``'s slice of ``flat`` (the parameters by default, or optimizer state laid out alike),
        parameter by parameter (detached views)."""
        blocks = (self.flat if flat is None else flat).detach().split(self.sizes)
        return {
            name: block.view(self.k, *shape)[index] for name, block, shape in zip(self.names, blocks, self.param_shapes)
        }

    def spread(self, table: torch.Tensor) -> torch.Tensor:
        """A (K, parameters) or (K,) table as one value per element of ``flat``."""
        if table.dim() == 1:
            table = table.view(self.k, 1).expand(self.k, len(self.names))
        return table.to(self.device, self.flat.dtype).T.reshape(-1)[self.cell]

    def noise(self, n: int, streams: list[Any], active: Sequence[bool] | None = None) -> dict[str, torch.Tensor]:
        """Every member's dropout masks for a batch of ``n``, each drawn from its own stream as its per-trial run
        draws them (``streams[m]``: the state of the device's default generator; replaced by the state after).
        Inactive members draw nothing (their masks are ones)."""
        generator = dropout_generator(self.device)
        out = {}
        for layer, name in enumerate(self.dropouts):
            ones = self._ones.get((name, n))
            if ones is None:
                ones = self._ones[(name, n)] = torch.ones(n, *self.shapes[name], device=self.device)
            drawn: dict[tuple[int, float], torch.Tensor] = {}
            after: dict[int, Any] = {}
            masks = []
            for m in range(self.k):
                rate = self.rates[m][layer]
                if (active is not None and not active[m]) or not 0 < rate < 1:
                    masks.append(ones if rate < 1 else torch.zeros_like(ones))  # F.dropout draws nothing here
                    continue
                state = streams[m]
                if (id(state), rate) not in drawn:
                    generator.set_state(state)
                    drawn[(id(state), rate)] = F.dropout(ones, rate, True)
                    after.setdefault(id(state), generator.get_state())
                masks.append(drawn[(id(state), rate)])
                streams[m] = after[id(state)]
            out[f"{name}.noise"] = torch.stack(masks)
        return out

    def forward(
        self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], x: torch.Tensor
    ) -> torch.Tensor:
        """(K, N, classes): every member on ``x`` (N, ...) shared, or on its own ``x[m]`` (K, N, ...)."""

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
            return functional_call(self.template, (p, b), (images,))

        shared = x.dim() == 4
        return vmap(one, in_dims=(0, 0, None if shared else 0))(params, buffers, x)


def dropout_generator(device: torch.device) -> torch.Generator:
    """The generator ``F.dropout`` draws from on ``device``."""
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return torch.default_generator


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


@dataclass(frozen=True)
class StackMember:
    """A member as the worker hands it over: its trial, run folder and the events channel tagged with its key."""

    key: str
    config: TrialConfig
    run_dir: Path
    emit: Emit


@dataclass
class Trial:
    """A member in training: its record form (a single model with its per-trial optimizer and schedule, which
    hold its hyperparameters, written to ``best.pt``/``last.pt``) and where it stands."""

    member: StackMember
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    stream: torch.Tensor
    """Its dropout stream: the state its per-trial run's default generator on the device would have."""
    cpu_rng: torch.Tensor
    """The CPU generator's state after building its model (what a per-trial run on CUDA saves)."""
    history: list[EpochMetrics] = field(default_factory=list)
    generator: torch.Tensor | None = None
    """The batch generator's state it resumes from; None for a fresh start."""
    execution: Execution = Execution.FUSED
    """How its resumed epochs were trained."""
    ended: bool = False

    @property
    def params(self) -> dict[str, Any]:
        return self.member.config["params"]

    @property
    def best(self) -> EpochMetrics | None:
        return best_epoch(self.history, metric(self.member.config["select"]).name)

    def warn(self, message: str) -> None:
        print(f"warning: trial {self.member.key}: {message}", file=sys.stderr, flush=True)
        self.member.emit({"event": "warning", "message": message})

    def resume(self, state: dict[str, Any], device: torch.device) -> None:
        """Take up a per-trial-format resume checkpoint."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.cpu_rng = state["cpu_rng"]
        self.stream = state["cuda_rng"] if device.type == "cuda" else state["cpu_rng"]
        self.generator = state["generator"]
        self.history = state["history"]
        self.execution = Execution(state.get("execution", Execution.PER_TRIAL))

    def over(self, budget: int | None) -> bool:
        """Whether it has nothing left to train (within ``budget`` epochs)."""
        epochs = self.params["epochs"] if budget is None else min(budget, self.params["epochs"])
        return len(self.history) >= epochs or _out_of_patience(len(self.history), self.best, self.params["patience"])

    def end(self) -> None:
        """Report it done: over (all epochs, or stopped early) or stopped at a budget."""
        best = self.best
        assert best is not None, "a trial trains at least one epoch"
        finished = len(self.history) >= self.params["epochs"] or _out_of_patience(
            len(self.history), best, self.params["patience"]
        )
        summary = TrialSummary(
            best_epoch=best["epoch"],
            val_accuracy=best["val_accuracy"],
            val_loss=best["val_loss"],
            epochs_run=len(self.history),
            train_seconds=sum(m["seconds"] for m in self.history),
        )
        self.member.emit({"event": "done", **summary, "finished": finished})
        self.ended = True

    def fail(self, error: str) -> None:
        self.member.emit({"event": "error", "error": error, "infrastructure": False})
        self.ended = True


def _prepare(member: StackMember, device: torch.device) -> Trial:
    """Build a member's model exactly as its per-trial run does, then resume it or warm-start it."""
    config, params = member.config, member.config["params"]
    torch.manual_seed(config["seed"])
    model = build_model(config).to(device)
    optimizer = make_optimizer(model, params)
    trial = Trial(
        member,
        model,
        optimizer,
        make_schedule(optimizer, params),
        stream=dropout_generator(device).get_state(),
        cpu_rng=torch.get_rng_state(),
    )
    member.emit({"event": "hello", "pid": os.getpid(), "device": str(device), "torch_version": torch.__version__})
    state = resume_state(member.run_dir, device, trial.warn)
    if state is not None:
        trial.resume(state, device)
    elif params["init_from"]:
        loaded, fresh = warm_start(model, params["init_from"], member.run_dir)
        print(f"trial {member.key}: warm start from {params['init_from']}: {loaded} tensors loaded, {fresh} fresh")
    return trial


def _in_step(trials: list[Trial]) -> list[list[Trial]]:
    """The unfinished trials in groups that can train in lockstep: at the same epoch with the same batch
    generator. A trial one epoch ahead of the others (a kill between their checkpoints) steps back to its
    previous checkpoint when that one is in step."""
    epoch = min(len(t.history) for t in trials)
    for trial in trials:
        if len(trial.history) > epoch:
            try:
                device = next(trial.model.parameters()).device
                state = load_verified(previous_path(trial.member.run_dir / "last.pt"), device)
            except CorruptCheckpoint:
                continue
            if len(state["history"]) == epoch:
                trial.resume(state, device)
    groups: dict[tuple[int, bytes], list[Trial]] = {}
    for trial in trials:
        generator = b"" if trial.generator is None else trial.generator.numpy().tobytes()
        groups.setdefault((len(trial.history), generator), []).append(trial)
    return list(groups.values())


def train_stack(
    members: list[StackMember], data_dir: Path, device: torch.device, budget: int | None, cohort: str
) -> None:
    """Train ``members`` (one cohort, one stack signature) as one stacked model, each to its end or to ``budget``
    epochs, reporting each member's events through its ``emit``: ``hello``, ``started``, ``epoch``s, and
    ``done`` or ``error``. An exception leaves the members it reached unended: the caller reports them."""
    config = members[0].config
    make_deterministic(config["threads"])
    split = config["dataset"]
    train, val = (
        s.to(device) for s in data.training_splits(data_dir, split["train_size"], split["val_size"], split["name"])
    )
    trials = [_prepare(member, device) for member in members]
    for trial in trials:
        if trial.over(budget):  # nothing left to train: report it as its per-trial run would
            _start(trial, cohort, 1)
            trial.end()
    todo = [t for t in trials if not t.ended]
    if not todo:
        return
    for group in _in_step(todo):
        _train_group(group, train, val, device, budget, cohort)


def _start(trial: Trial, cohort: str, size: int) -> None:
    """The member's ``started`` event (how it is trained), its resume line if the way changed, its past epochs."""
    done = len(trial.history)
    if done and trial.execution != Execution.FUSED:
        trial.warn(f"epochs 0-{done - 1} were trained {trial.execution}; the rest is trained {Execution.FUSED}")
    trial.member.emit(
        {
            "event": "started",
            "parameter_count": architectures.count_parameters(trial.model),
            "resumed_from_epoch": done,
            "execution": Execution.FUSED,
            "cohort": cohort,
            "cohort_size": size,
        }
    )
    for metrics in trial.history:
        trial.member.emit({"event": "epoch", "replayed": True, **metrics})


def _hyper(trials: list[Trial], group_of: list[int]) -> Hyper:
    """The members' hyperparameters for this epoch, read from their per-trial optimizers (whose schedules set
    each group's ``lr``, the transformer's at ``lr * transformer_lr_scale``)."""
    groups = [t.optimizer.param_groups for t in trials]
    return Hyper(
        lr=torch.tensor([[g[i]["lr"] for i in group_of] for g in groups], dtype=torch.float64),
        momentum=torch.tensor([g[0].get("momentum", 0.0) for g in groups], dtype=torch.float64),
        nesterov=torch.tensor([float(g[0].get("nesterov", False)) for g in groups]),
        weight_decay=torch.tensor([g[0]["weight_decay"] for g in groups], dtype=torch.float64),
    )


def _load_optimizer(optimizer: FusedOptimizer, stack: Stack, trials: list[Trial]) -> None:
    """Take up each member's per-trial optimizer state (empty for a fresh start)."""
    for m, trial in enumerate(trials):
        for p, name in zip(trial.model.parameters(), stack.names):
            state = trial.optimizer.state.get(p, {})
            for key, flat in (
                ("momentum_buffer", optimizer.momentum_buffer),
                ("exp_avg", optimizer.exp_avg),
                ("exp_avg_sq", optimizer.exp_avg_sq),
            ):
                if flat is not None and state.get(key) is not None:
                    stack.member(m, flat)[name].copy_(state[key])
            if "step" in state:
                optimizer.steps[m] = int(state["step"])


@torch.no_grad()
def _record_form(trial: Trial, m: int, stack: Stack, optimizer: FusedOptimizer) -> None:
    """Write member ``m``'s slice of the stack back into its single model and per-trial optimizer."""
    own = dict(trial.model.named_parameters())
    for name, value in stack.member(m).items():
        own[name].copy_(value)
    for name, value in trial.model.named_buffers():
        if name in stack.buffers:
            value.copy_(stack.buffers[name][m])
    momentum = trial.optimizer.param_groups[0].get("momentum", 0.0)
    for p, name in zip(trial.model.parameters(), stack.names):
        if optimizer.kind == "sgd":
            if momentum != 0:
                trial.optimizer.state[p] = {"momentum_buffer": stack.member(m, optimizer.momentum_buffer)[name].clone()}
        else:
            trial.optimizer.state[p] = {
                "step": torch.tensor(float(optimizer.steps[m]), dtype=torch.float32),
                "exp_avg": stack.member(m, optimizer.exp_avg)[name].clone(),
                "exp_avg_sq": stack.member(m, optimizer.exp_avg_sq)[name].clone(),
            }


def _train_group(
    trials: list[Trial], train: Split, val: Split, device: torch.device, budget: int | None, cohort: str
) -> None:
    """Train trials that are in step as one stack until each is over, failed, or at ``budget``."""
    config, params = trials[0].member.config, trials[0].params
    stack = Stack([t.model for t in trials], device)
    for trial in trials:
        _start(trial, cohort, stack.k)
    optimizer = FusedOptimizer(stack, params["optimizer"])
    _load_optimizer(optimizer, stack, trials)
    groups = trials[0].optimizer.param_groups
    group_ids = [
        next(i for i, g in enumerate(groups) if any(q is p for q in g["params"])) for p in trials[0].model.parameters()
    ]
    generator = torch.Generator(device).manual_seed(config["seed"])
    if trials[0].generator is not None:
        generator.set_state(trials[0].generator)
    augmenters = [make_augmenter(t.member.config) for t in trials]
    shared = all(a is None for a in augmenters) or all(vars(a) == vars(augmenters[0]) for a in augmenters)
    streams = [t.stream for t in trials]
    bf16 = uses_bf16(config)
    epoch = len(trials[0].history)
    end = params["epochs"] if budget is None else min(budget, params["epochs"])
    while True:
        for trial in trials:
            if not trial.ended and _out_of_patience(epoch, trial.best, trial.params["patience"]):
                trial.end()
        active = [not t.ended for t in trials]
        if epoch >= end or not any(active):
            break
        started = time.perf_counter()
        lrs = [t.optimizer.param_groups[0]["lr"] for t in trials]
        optimizer.set_hyper(_hyper(trials, group_ids))
        train_loss, train_accuracy = stack_epoch(
            stack,
            optimizer,
            train,
            params["batch_size"],
            generator,
            augmenters if not shared else augmenters[:1],
            streams,
            active,
            bf16,
        )
        for m, trial in enumerate(trials):
            if active[m] and not math.isfinite(train_loss[m]):
                trial.fail(f"Diverged: training loss is {train_loss[m]} at epoch {epoch} (lr {lrs[m]:g})")
                active[m] = False
        val_loss, val_accuracy = _evaluate(stack, val, bf16)
        seconds = (time.perf_counter() - started) / max(sum(active), 1)
        finished = []
        for m, trial in enumerate(trials):
            if not active[m]:
                continue
            with warnings.catch_warnings():  # its optimizer never steps: the stack's does
                warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))
                trial.schedule.step()
            metrics = EpochMetrics(
                epoch=epoch,
                train_loss=train_loss[m],
                train_accuracy=train_accuracy[m],
                val_loss=val_loss[m],
                val_accuracy=val_accuracy[m],
                lr=lrs[m],
                seconds=seconds,
            )
            best = trial.best
            trial.history.append(metrics)
            select = metric(trial.member.config["select"])
            _record_form(trial, m, stack, optimizer)
            if best is None or select.better(metrics[select.name], best[select.name]):  # type: ignore[literal-required]
                save_atomically({"model": trial.model.state_dict(), "epoch": epoch}, trial.member.run_dir / "best.pt")
            trial.stream = streams[m]
            finished.append(trial)
        for trial in finished:  # every checkpoint first, then the events: a kill leaves members at most one apart
            state = {
                "model": trial.model.state_dict(),
                "optimizer": trial.optimizer.state_dict(),
                "schedule": trial.schedule.state_dict(),
                "cpu_rng": trial.stream if device.type == "cpu" else trial.cpu_rng,
                "generator": generator.get_state(),
                "history": trial.history,
                "execution": Execution.FUSED.value,
            }
            if device.type == "cuda":
                state["cuda_rng"] = trial.stream
            save_atomically(state, trial.member.run_dir / "last.pt", keep_previous=True)
        for trial in finished:
            trial.member.emit({"event": "epoch", **trial.history[-1]})
        epoch += 1
    for trial in trials:
        if not trial.ended:
            trial.end()


def stack_epoch(
    stack: Stack,
    optimizer: FusedOptimizer,
    train: Split,
    batch_size: int,
    generator: torch.Generator,
    augmenters: list[Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None],
    streams: list[Any],
    active: list[bool],
    bf16: bool,
) -> tuple[list[float], list[float]]:
    """One pass over ``train`` in the seeded order of the per-trial run; each member's (mean loss, accuracy).
    ``augmenters``: one shared by all members, or one per member drawing from the same generator state."""
    stack.template.train()
    order = torch.randperm(len(train), generator=generator, device=generator.device)
    batches = order.split(batch_size)
    if len(batches[-1]) == 1:  # batch norm cannot train on a single sample
        batches = batches[:-1]
    total_loss = torch.zeros(stack.k, device=train.images.device)
    correct = torch.zeros(stack.k, dtype=torch.long, device=train.images.device)
    seen = 0
    everyone = all(active)
    for index in batches:
        images = train.images[index].float().div_(255)
        x = images
        if augmenters[0] is not None:
            if len(augmenters) == 1:
                x = augmenters[0](images, generator)
            else:
                before = generator.get_state()
                drawn = []
                for augment in augmenters:
                    generator.set_state(before)
                    drawn.append(augment(images, generator))  # type: ignore[misc]
                x = torch.stack(drawn)
        labels = train.labels[index]
        kept = None if everyone else {name: b.clone() for name, b in stack.buffers.items()}
        noise = stack.noise(len(index), streams, active)
        with torch.autocast(images.device.type, torch.bfloat16, enabled=bf16):
            output = stack.forward(stack.params(), stack.buffers | noise, x)
            losses = vmap(F.cross_entropy, in_dims=(0, None))(output, labels)
        losses.sum().backward()
        optimizer.step(active)
        if kept is not None:  # inactive members' batch-norm buffers as they were
            keep = torch.tensor(active, device=stack.device)
            for name, buffer in stack.buffers.items():
                buffer.copy_(torch.where(keep.view(-1, *[1] * (buffer.dim() - 1)), buffer, kept[name]))
        total_loss += losses.detach() * len(index)
        correct += (output.argmax(-1) == labels).sum(1)
        seen += len(index)
    return [loss / seen for loss in total_loss.tolist()], [count / seen for count in correct.tolist()]


@torch.no_grad()
def _evaluate(stack: Stack, split: Split, bf16: bool) -> tuple[list[float], list[float]]:
    """Each member's (mean loss, accuracy) on ``split``, as ``loop.evaluate`` computes them."""
    stack.template.eval()
    params = stack.params()
    total_loss = torch.zeros(stack.k, device=split.images.device)
    predictions = []
    for start in range(0, len(split), EVAL_BATCH_SIZE):
        images = split.images[start : start + EVAL_BATCH_SIZE].float().div_(255)
        labels = split.labels[start : start + EVAL_BATCH_SIZE]
        with torch.autocast(images.device.type, torch.bfloat16, enabled=bf16):
            output = stack.forward(params, stack.buffers, images)
        total_loss += vmap(partial(F.cross_entropy, reduction="sum"), in_dims=(0, None))(output.float(), labels)
        predictions.append(output.argmax(-1))
    accuracy = (torch.cat(predictions, dim=1) == split.labels).float().mean(1)
    return [loss / len(split) for loss in total_loss.tolist()], accuracy.tolist()
