"""Registry of the network architectures a sweep can name.

An architecture is a name mapped to a module builder (usually the ``nn.Module`` class itself).
The builder's keyword parameters, with their type annotations and defaults, are the sweep params
the architecture accepts; ``gridsearch.spec`` validates sweep files against them. An architecture may
also switch on trainer-side extras, named here by plain strings (``AUGMENTATION``, ``TRANSFORMER``):
``gridsearch.spec`` maps each to its sweep params. This package imports nothing from ``gridsearch``.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

AUGMENTATION = "augmentation"
"""Extra: the trainer's batched random distortions of the training images (their params: ``aug_p``, ...)."""
TRANSFORMER = "transformer"
"""Extra: a spatial transformer's localisation net learns at ``lr * transformer_lr_scale``; the module
defines ``transformer_parameters()``."""
EXTRAS = frozenset({AUGMENTATION, TRANSFORMER})
"""Every trainer-side extra an architecture may name in ``training_params``."""


@dataclass(frozen=True)
class Architecture:
    """One registry entry: how to build the network and which training extras it uses."""

    name: str
    build: Callable[..., nn.Module]
    description: str
    training_params: frozenset[str] = field(default_factory=frozenset)
    """The trainer-side extras this architecture switches on (a subset of ``EXTRAS``)."""

    def params(self) -> dict[str, inspect.Parameter]:
        """The builder's keyword parameters: name -> ``inspect.Parameter`` (annotation, default)."""
        signature = inspect.signature(self.build)
        return {
            name: p
            for name, p in signature.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "self"
        }

    def defaults(self) -> dict[str, Any]:
        """Default values of the builder's parameters."""
        return {name: p.default for name, p in self.params().items() if p.default is not p.empty}


REGISTRY: dict[str, Architecture] = {}


def register(
    name: str,
    build: Callable[..., nn.Module],
    description: str,
    training_params: frozenset[str] | set[str] = frozenset(),
) -> None:
    """Add an architecture to the registry under ``name``, with the ``EXTRAS`` it switches on."""
    if name in REGISTRY:
        raise ValueError(f"architecture {name!r} is registered twice")
    unknown = set(training_params) - EXTRAS
    if unknown:
        raise ValueError(f"architecture {name!r}: unknown training_params {sorted(unknown)} (known: {sorted(EXTRAS)})")
    REGISTRY[name] = Architecture(name, build, description, frozenset(training_params))


def get(name: str) -> Architecture:
    """The registered architecture called ``name`` (``KeyError`` if there is none)."""
    return REGISTRY[name]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _import_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_import_all()
