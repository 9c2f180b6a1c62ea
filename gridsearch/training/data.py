"""MNIST, parsed once into uint8 ``.npy`` arrays that every worker memory-maps.

``prepare`` runs in the coordinator: ``torchvision.datasets.MNIST(data_dir, download=True)``
(offline when the four ``.gz`` files are already in ``<data_dir>/MNIST/raw/``), then one ``.npy``
file per array. Workers map those files copy-on-write, so all trials share one copy of the pixels
in the page cache and index batches straight from the tensor, with no per-sample path. ``Images`` are the same
arrays as numpy ones, read without importing torch (reports whose sections run no weights).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gridsearch.errors import UserError

if TYPE_CHECKING:
    import torch

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")


def default_data_dir() -> Path:
    """``$GRIDSEARCH_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("GRIDSEARCH_DATA", "data"))


def arrays_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "MNIST" / "gridsearch"


def prepare(data_dir: Path) -> Path:
    """Make sure the parsed MNIST arrays exist under ``data_dir``; returns their folder."""
    target = arrays_dir(data_dir)
    if all((target / f"{name}.npy").exists() for name in ARRAYS):
        return target
    from torchvision.datasets import MNIST

    try:
        train = MNIST(str(data_dir), train=True, download=True)
        test = MNIST(str(data_dir), train=False, download=True)
    except Exception as exc:  # torchvision raises URLError, RuntimeError, OSError... when offline
        raw = Path(data_dir) / "MNIST" / "raw"
        missing = [name for name in MNIST_FILES if not (raw / name).exists()]
        raise UserError(
            f"MNIST is not in {raw} and could not be downloaded ({type(exc).__name__}: "
            f"{exc}); put {', '.join(missing) or 'the four MNIST .gz files'} there, "
            "or pass --data-dir"
        ) from None
    target.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": train.data,
        "train_labels": train.targets,
        "test_images": test.data,
        "test_labels": test.targets,
    }
    for name, tensor in arrays.items():
        tmp = target / f"{name}.{os.getpid()}.tmp.npy"
        np.save(tmp, tensor.numpy().astype(np.uint8))
        os.replace(tmp, target / f"{name}.npy")  # atomic: concurrent runs never read half a file
    return target


def _array(data_dir: Path, name: str) -> np.ndarray:
    path = arrays_dir(data_dir) / f"{name}.npy"
    # mode "c" (copy-on-write) shares the pages between workers and gives torch a writable array.
    return np.load(path, mmap_mode="c")


def _load(data_dir: Path, name: str) -> torch.Tensor:
    import torch

    return torch.from_numpy(_array(data_dir, name))


@dataclass(frozen=True)
class Split:
    """Images as uint8 ``(N, 1, 28, 28)`` and labels as int64 ``(N,)``."""

    images: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Images:
    """A split as numpy arrays: images uint8 ``(N, 1, 28, 28)`` and labels int64 ``(N,)`` (no torch)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def split(self) -> Split:
        """The same images as tensors (sharing the memory)."""
        import torch

        return Split(torch.from_numpy(self.images), torch.from_numpy(self.labels))


def training_images(data_dir: Path, train_size: int, val_size: int) -> tuple[Images, Images]:
    """``training_splits`` as numpy arrays."""
    images = _array(data_dir, "train_images")[:, None]
    labels = _array(data_dir, "train_labels").astype(np.int64)
    total = len(labels)
    return (
        Images(images[:train_size], labels[:train_size]),
        Images(images[total - val_size :], labels[total - val_size :]),
    )


def test_images(data_dir: Path, size: int = 10000) -> Images:
    """``test_split`` as numpy arrays."""
    return Images(_array(data_dir, "test_images")[:size, None], _array(data_dir, "test_labels")[:size].astype(np.int64))


def training_splits(data_dir: Path, train_size: int, val_size: int) -> tuple[Split, Split]:
    """The first ``train_size`` and the last ``val_size`` images of the official training set."""
    images = _load(data_dir, "train_images").unsqueeze(1)
    labels = _load(data_dir, "train_labels").long()
    total = len(labels)
    train = Split(images[:train_size], labels[:train_size])
    val = Split(images[total - val_size :], labels[total - val_size :])
    return train, val


def test_split(data_dir: Path, size: int = 10000) -> Split:
    """The first ``size`` images of the official test set."""
    return Split(_load(data_dir, "test_images")[:size].unsqueeze(1), _load(data_dir, "test_labels")[:size].long())
