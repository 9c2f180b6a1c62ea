"""A stack: K single models of one structure trained as one, forward and backward in one call.

Each member's single model is kept as a slice of stacked tensors and all of them run at once:

- **Forward and backward**: ``torch.func.functional_call`` of one template module under ``torch.vmap`` over the
  stacked parameters and buffers (``vmap`` turns each convolution into one grouped convolution, each linear
  layer into one batched matmul, and batch norm into per-member statistics). One general mechanism for every
  architecture whose forward ``vmap`` can trace: :func:`stacked_form` tries it once per architecture.
- **Parameters**: one flat tensor, parameter by parameter with the K members' copies side by side, so each
  parameter is a contiguous ``(K, ...)`` view (``split``'s backward is one ``cat``: one gradient tensor).
- **Augmentation**: the same batch generator as the per-trial run; members whose augmentation params differ
  draw from the same generator state, each with its own params (so each sees what it would alone).
- **Dropout**: each member's masks come from its own RNG stream, the state its per-trial run's default
  generator would have, through the same ``F.dropout`` call on a tensor of ones, so a member draws the masks
  it would draw alone, with its own rate (a rate of 0 draws nothing, as ``F.dropout`` does).
- **Life by masking**: a member that is not ``active`` in an epoch (ended, failed, or ahead of the others after
  a resume) stays in the stack, shapes unchanged, but its parameters, optimizer state and batch-norm buffers are
  restored after every step, and it draws no dropout masks.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

import architectures
from gridsearch.training.data import Split
from gridsearch.training.loop import EVAL_BATCH_SIZE

if TYPE_CHECKING:
    from gridsearch.spec.datasets import Dataset
    from gridsearch.training.optimizers import FusedOptimizer

_forms: dict[tuple[str, tuple[int, ...], int], str | None] = {}


def stacked_form(architecture: str, dataset: Dataset) -> str | None:
    """None if ``architecture`` trains stacked on ``dataset`` (a two-member stack of its default model runs
    forward and backward under ``vmap`` on two images of the dataset's shape), else why not, in a few words.
    Tried once per architecture, image shape and number of classes."""
    found = (architecture, dataset.shape, len(dataset.classes))
    if found not in _forms:
        _forms[found] = _try_stacking(architecture, dataset)
    return _forms[found]


def _try_stacking(architecture: str, dataset: Dataset) -> str | None:
    entry = architectures.get(architecture)
    example = torch.zeros(2, *dataset.shape)
    fits = entry.data_params(dataset.shape, len(dataset.classes))
    try:
        with torch.random.fork_rng(devices=[]):  # the process's random streams stay as they were
            stack = Stack([entry.build(**fits), entry.build(**fits)], torch.device("cpu"), example)
            noise = stack.noise(len(example), [torch.get_rng_state()] * 2)
            stack.forward(stack.params(), stack.buffers | noise, example).sum().backward()
    except Exception as exc:  # any failure to trace means no stacked form, whatever its kind
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return None


class Noise(nn.Module):
    """Dropout with its mask given: the trainer puts each member's scaled mask in the buffer ``noise``."""

    noise: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("noise", torch.ones(()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.noise if self.training else x


def _dropouts(model: nn.Module, example: torch.Tensor) -> dict[str, list[int]]:
    """``model``'s dropout modules in the order its forward pass on ``example`` calls them (each once), with the
    shape of one sample at each one's input."""
    calls: dict[str, list[int]] = {}

    def seen(name: str, args: tuple[torch.Tensor, ...]) -> None:
        if name in calls:
            raise ValueError(f"dropout module {name} is called more than once per forward pass")
        calls[name] = list(args[0].shape[1:])

    hooks = [
        module.register_forward_hook(lambda module, args, out, name=name: seen(name, args))
        for name, module in model.named_modules()
        if isinstance(module, nn.Dropout)
    ]
    training = model.training
    try:
        model.eval()  # no randomness, no batch-norm update
        with torch.no_grad():
            model(example.to(next(model.parameters()).device))
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return calls


def _rates(model: nn.Module, names: list[str]) -> list[float]:
    return [float(model.get_submodule(name).p) for name in names]  # type: ignore[arg-type]


class Stack:
    """K single models of one structure as one: a flat parameter tensor, stacked buffers, a template module.

    Parameter ``i`` lives in ``flat`` as K contiguous copies, member by member, after the parameters before it.
    ``example``: a batch of the images it trains on, to trace its dropouts.
    """

    def __init__(self, models: list[nn.Module], device: torch.device, example: torch.Tensor):
        self.k = len(models)
        self.device = device
        self.shapes = _dropouts(models[0], example)
        """The shape of one sample at each dropout module's input, in the order the forward pass calls them."""
        self.dropouts = list(self.shapes)
        self.rates = [_rates(model, self.dropouts) for model in models]
        """Per member, the rate of each dropout module in ``dropouts``."""
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
def evaluate_stack(stack: Stack, split: Split, bf16: bool) -> tuple[list[float], list[float]]:
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
