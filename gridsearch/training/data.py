"""The datasets (``spec.datasets``), each parsed once into uint8 ``.npy`` arrays that every worker memory-maps.

``prepare`` runs in the coordinator: it reads a built-in's files (or runs a sweep's loader) once and writes one
``.npy`` file per array under ``<data_dir>/<folder>/gridsearch/``. Workers map those files copy-on-write, so all
trials share one copy of the pixels in the page cache and index batches straight from the tensor, with no
per-sample path. ``Images`` are the same arrays as numpy ones, read without importing torch (reports whose
sections run no weights).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gridsearch.spec.datasets import ARRAYS, Dataset, described

if TYPE_CHECKING:
    import torch

DatasetRef = Dataset | Mapping[str, Any] | str
"""A dataset as callers have it: its description, a trial config's dataset part, or a built-in's name."""


def default_data_dir() -> Path:
    """``$GRIDSEARCH_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("GRIDSEARCH_DATA", "data"))


def arrays_dir(data_dir: Path, dataset: DatasetRef = "mnist") -> Path:
    """Where ``prepare`` puts the parsed arrays of ``dataset``."""
    return Path(data_dir) / described(dataset).folder / "gridsearch"


def prepare(data_dir: Path, dataset: DatasetRef = "mnist") -> Path:
    """Make sure the parsed arrays of ``dataset`` exist under ``data_dir``; returns their folder."""
    target = arrays_dir(data_dir, dataset)
    if all((target / f"{name}.npy").exists() for name in ARRAYS):
        return target
    arrays = described(dataset).arrays(Path(data_dir))
    target.mkdir(parents=True, exist_ok=True)
    for name in ARRAYS:
        tmp = target / f"{name}.{os.getpid()}.tmp.npy"
        np.save(tmp, arrays[name])  # type: ignore[literal-required]
        os.replace(tmp, target / f"{name}.npy")  # atomic: concurrent runs never read half a file
    return target


def _array(data_dir: Path, dataset: DatasetRef, name: str) -> np.ndarray:
    path = arrays_dir(data_dir, dataset) / f"{name}.npy"
    # mode "c" (copy-on-write) shares the pages between workers and gives torch a writable array.
    return np.load(path, mmap_mode="c")


def _images(data_dir: Path, dataset: DatasetRef, name: str) -> np.ndarray:
    """Images (N, C, H, W) (arrays parsed before the datasets had channels are (N, H, W))."""
    images = _array(data_dir, dataset, name)
    return images if images.ndim == 4 else images[:, None]


@dataclass(frozen=True)
class Split:
    """Images as uint8 ``(N, C, H, W)`` and labels as int64 ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Images:
    """A split as numpy arrays: images uint8 ``(N, C, H, W)`` and labels int64 ``(N,)`` (no torch)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def split(self) -> Split:
        """The same images as tensors (sharing the memory)."""
        import torch

        return Split(torch.from_numpy(self.images), torch.from_numpy(self.labels))


def training_images(
    data_dir: Path, train_size: int, val_size: int, dataset: DatasetRef = "mnist"
) -> tuple[Images, Images]:
    """The first ``train_size`` and the last ``val_size`` images of ``dataset``'s training set, as numpy arrays."""
    images = _images(data_dir, dataset, "train_images")
    labels = _array(data_dir, dataset, "train_labels").astype(np.int64)
    total = len(labels)
    return (
        Images(images[:train_size], labels[:train_size]),
        Images(images[total - val_size :], labels[total - val_size :]),
    )


def test_images(data_dir: Path, size: int | None = None, dataset: DatasetRef = "mnist") -> Images:
    """The first ``size`` (default: all) images of ``dataset``'s test set, as numpy arrays."""
    return Images(
        _images(data_dir, dataset, "test_images")[:size],
        _array(data_dir, dataset, "test_labels")[:size].astype(np.int64),
    )


def training_splits(
    data_dir: Path, train_size: int, val_size: int, dataset: DatasetRef = "mnist"
) -> tuple[Split, Split]:
    """``training_images`` as tensors."""
    train, val = training_images(data_dir, train_size, val_size, dataset)
    return train.split(), val.split()


def test_split(data_dir: Path, size: int | None = None, dataset: DatasetRef = "mnist") -> Split:
    """``test_images`` as tensors."""
    return test_images(data_dir, size, dataset).split()
