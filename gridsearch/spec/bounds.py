"""What a trial will ask of the machine, known before it trains: its threads against the cores, its parameters and
activations (from one build and one forward pass on PyTorch's meta device: shapes only, no memory) against the
device's memory, its batch against its training split and its epochs against a ceiling.

The validator refuses a sweep whose values go past these bounds, in one line naming the file's line, before
anything is stored; the coordinator sizes each run folder's disk space from the same parameter count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import architectures
from gridsearch.spec.config import TrialConfig
from gridsearch.spec.datasets import Dataset, described
from gridsearch.spec.document import Document, Location

if TYPE_CHECKING:
    from gridsearch.spec.grid_validation import GridPart

MAX_EPOCHS = 100_000
"""The most ``epochs`` a trial may ask for unless the sweep sets ``patience`` (which stops it early)."""
THREADS_PER_CORE = 4
"""``threads`` above the machine's cores are warned about, and refused above this many times them."""
FLOAT_BYTES = 4
OPTIMIZER_SLOTS = {"sgd": 1, "adam": 2}
"""Tensors of optimizer state per parameter (SGD's momentum; Adam's two moments)."""


@dataclass(frozen=True)
class Footprint:
    """A network's size: trainable parameters, and the activations one image makes in a forward pass (values
    summed over the outputs of its innermost modules; 0 when the meta device could not run the forward pass)."""

    parameters: int
    activations: int

    def training_bytes(self, batch_size: int, optimizer: str) -> int:
        """At least what training it needs: weights, their gradients and the optimizer's state, and a batch's
        activations kept for the backward pass with their gradients."""
        slots = 2 + OPTIMIZER_SLOTS.get(optimizer, 2)
        return FLOAT_BYTES * (self.parameters * slots + 2 * self.activations * batch_size)


@dataclass(frozen=True)
class Memory:
    """The memory a run's trials train in: bytes, and what it is in words."""

    size: int
    name: str


def device_memory(device: str) -> Memory:
    """The memory of ``device`` ('cpu': this machine's; 'cuda': the first visible GPU's)."""
    if device == "cuda":
        import torch

        properties = torch.cuda.get_device_properties(0)
        return Memory(properties.total_memory, f"the {properties.total_memory / 1e9:.1f} GB of GPU {properties.name}")
    size = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return Memory(size, f"the {size / 1e9:.1f} GB of memory of this machine")


def machine_cores() -> int:
    """The cores of this machine."""
    return os.cpu_count() or 1


def footprint(architecture: str, own: dict[str, Any], dataset: Dataset) -> Footprint:
    """The footprint of ``architecture`` built with its own params ``own`` for ``dataset``'s images and classes;
    ``ValueError``, ``TypeError`` or ``RuntimeError`` from its builder if it cannot be built with them."""
    return _footprint(architecture, json.dumps(own, sort_keys=True), dataset.shape, len(dataset.classes))


@lru_cache(maxsize=256)
def _footprint(architecture: str, own: str, shape: tuple[int, int, int], classes: int) -> Footprint:
    import torch

    entry = architectures.get(architecture)
    with torch.device("meta"):  # shapes only: no memory, however large the values
        model = entry.build(**json.loads(own), **entry.data_params(shape, classes))
    parameters = architectures.count_parameters(model)
    outputs: list[int] = []

    def count(_module: Any, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            outputs.append(output.numel())

    leaves = [module for module in model.modules() if next(module.children(), None) is None]
    handles = [module.register_forward_hook(count) for module in leaves]
    try:
        model.train()
        model(torch.zeros((2, *shape), device="meta"))  # two images: batch norm trains on more than one
        activations = sum(outputs) // 2
    except (RuntimeError, NotImplementedError, ValueError, TypeError):  # an operation the meta device lacks
        activations = 0
    finally:
        for handle in handles:
            handle.remove()
    return Footprint(parameters, activations)


def parameter_count(config: TrialConfig) -> int:
    """The trainable parameters of a resolved trial ``config``'s network."""
    entry = architectures.get(config["architecture"])
    own = {name: value for name, value in config["params"].items() if name in entry.params()}
    return footprint(config["architecture"], own, described(config["dataset"])).parameters


def given(document: Document, parts: list[GridPart], name: str) -> Iterator[tuple[Location, int]]:
    """Every value the sweep file gives the integer param ``name`` (its fixed value, each gridded value, the top
    of a distribution), with where it is."""
    params = document.data.get("params")
    if isinstance(params, dict) and isinstance(params.get(name), int):
        yield ("params", name), params[name]
    for at, _, mapping in parts:
        values = mapping.get(name)
        if isinstance(values, list):
            yield from (((*at, name, index), value) for index, value in enumerate(values) if isinstance(value, int))
        elif isinstance(values, dict) and len(values) == 1:
            kind, ends = next(iter(values.items()))
            if isinstance(ends, list) and ends and isinstance(ends[-1], int):
                yield (*at, name, kind), ends[-1]


def check_sweep_bounds(document: Document, parts: list[GridPart], threads: int, train_size: int) -> None:
    """Refuse ``threads`` above ``THREADS_PER_CORE`` times the machine's cores, a ``batch_size`` larger than the
    training split and ``epochs`` above ``MAX_EPOCHS`` unless the sweep sets ``patience``: one
    :class:`UserError` naming the file's line."""
    cores = machine_cores()
    if threads > THREADS_PER_CORE * cores:
        raise document.fail(
            ("threads",),
            f"{threads} threads per trial is more than {THREADS_PER_CORE} x the {cores} cores of this machine "
            f"(at most {THREADS_PER_CORE * cores}; more than {cores} only slows each trial down)",
        )
    for at, size in given(document, parts, "batch_size"):
        if size > train_size:
            raise document.fail(at, f"batch_size {size:,} is more than the {train_size:,} images of the training split")
    patience = any(True for _ in given(document, parts, "patience"))
    for at, epochs in given(document, parts, "epochs"):
        if epochs > MAX_EPOCHS and not patience:
            raise document.fail(
                at, f"{epochs:,} epochs is more than {MAX_EPOCHS:,}; set patience to stop early, or ask for fewer"
            )


def check_memory(fits: Footprint, batch_size: int, optimizer: str, memory: Memory) -> str | None:
    """Why a network of footprint ``fits`` cannot train in ``memory`` with batches of ``batch_size``; None if
    it can."""
    needed = fits.training_bytes(batch_size, optimizer)
    if needed <= memory.size:
        return None
    activations = f", {fits.activations:,} activation values per image" if fits.activations else ""
    return (
        f"needs at least {needed / 1e9:,.1f} GB to train ({fits.parameters:,} parameters{activations}, "
        f"batches of {batch_size:,}, {optimizer}), more than {memory.name}"
    )
