"""A trial's resolved config: what its key hashes and what a worker trains."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from gridsearch.vocabulary import as_written


class DatasetPart(TypedDict):
    """The part of the data split that shapes training: the first ``train_size`` images train, the
    last ``val_size`` validate."""

    name: str
    train_size: int
    val_size: int
    loader: NotRequired[str]
    """A loader's data (``spec.datasets``): the loader, its source's digest, and what it gave."""
    digest: NotRequired[str]
    shape: NotRequired[list[int]]
    classes: NotRequired[list[str]]
    digits: NotRequired[bool]
    sizes: NotRequired[list[int]]


class TrialConfig(TypedDict):
    """Architecture, every param with its default filled in, data split, seed, threads and select metric."""

    architecture: str
    params: dict[str, Any]
    """Param name -> value; values are as varied as the sweep file allows (numbers, strings, ranges)."""
    dataset: DatasetPart
    seed: int
    threads: int
    select: str
    code: NotRequired[dict[str, str]]
    """The user's own modules the trial trains (module -> SHA-256 of its source); absent for built-ins."""


def config_value(config: TrialConfig, name: str) -> Any:
    """The value of gridded param ``name`` (or the architecture) in a resolved trial config, as a sweep file
    writes it (``lr_step`` 4, not the 4.0 a float param stores; ``vocabulary.as_written``)."""
    return config["architecture"] if name == "architecture" else as_written(config["params"].get(name))
