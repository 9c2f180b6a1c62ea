"""Building what a trial trains: its network, optimizer, learning-rate schedule and augmentation.

Also used outside training, to rebuild a trained trial's network for evaluation, reports and the web app.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import architectures
from gridsearch.spec.config import TrialConfig
from gridsearch.spec.datasets import described
from gridsearch.spec.warm_start import content_digest, load_tensors, matching_tensors, split_reference
from gridsearch.training.augmentation import BatchAugmenter

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


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
        transformer = list(model.transformer_parameters())  # type: ignore[operator]  # the STNs define it
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


def build_model(config: TrialConfig) -> nn.Module:
    """The trial's network, with its architecture's own params."""
    entry = architectures.get(config["architecture"])
    own = {name: value for name, value in config["params"].items() if name in entry.params()}
    dataset = described(config["dataset"])
    model = entry.build(**own, **entry.data_params(dataset.shape, len(dataset.classes)))
    if config["params"].get("channels_last"):
        model = model.to(memory_format=torch.channels_last)
    return model


def uses_bf16(config: TrialConfig) -> bool:
    """Whether the trial runs its forward passes under bfloat16 autocast (``amp: bf16``)."""
    return config["params"].get("amp") == "bf16"


def make_augmenter(config: TrialConfig) -> Augment | None:
    """The batch augmentation of the trial's architecture, or None if it uses none."""
    if architectures.AUGMENTATION not in architectures.get(config["architecture"]).training_params:
        return None
    return BatchAugmenter.from_params(config["params"])


class CheckpointChanged(Exception):
    """An ``init_from`` file whose content is no longer the one the trial's key names."""


def warm_start(model: nn.Module, init_from: str, run_dir: Path) -> tuple[int, int]:
    """Load the tensors of the checkpoint ``init_from`` names whose name (or dotted suffix) and shape match
    (``gridsearch.spec.warm_start``); returns (loaded, left fresh). ``trial:<key>`` is that trial's best
    weights (beside ``run_dir``); a file must still have the content its reference's digest names."""
    if init_from.startswith("trial:"):
        path, digest = run_dir.parent / init_from.removeprefix("trial:") / "best.pt", None
    else:
        path, digest = split_reference(init_from)
    data = path.read_bytes()
    if digest is not None and content_digest(data) != digest:
        raise CheckpointChanged(
            f"init_from {path} changed after the sweep was read (its SHA-256 begins {content_digest(data)}, "
            f"not {digest}); run the sweep again to train new trials from the new file"
        )
    source = load_tensors(data)
    target = model.state_dict()
    matches = matching_tensors(
        {name: tuple(t.shape) for name, t in target.items()}, {n: tuple(t.shape) for n, t in source.items()}
    )
    model.load_state_dict({name: source[match] for name, match in matches.items()}, strict=False)
    return len(matches), len(target) - len(matches)


def make_schedule(optimizer: torch.optim.Optimizer, params: dict[str, Any]) -> torch.optim.lr_scheduler.LambdaLR:
    """The study's step schedule as a ``LambdaLR`` (see ``lr_factor``)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: lr_factor(epoch, params["lr_gamma"], params["lr_step"], params["lr_min"])
    )
