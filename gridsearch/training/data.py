"""The datasets (``vocabulary.DATASETS``), each parsed once into uint8 ``.npy`` arrays that every worker memory-maps.

``prepare`` runs in the coordinator. MNIST: ``torchvision.datasets.MNIST(data_dir, download=True)`` (offline when
the four ``.gz`` files are already in ``<data_dir>/MNIST/raw/``). Fashion-MNIST: never downloaded; its four idx
``.gz`` files (MNIST's file names) are read with numpy from ``<data_dir>/FashionMNIST/raw/``, else from
``$GRIDSEARCH_FASHION_MNIST``, else from Debian's ``dataset-fashion-mnist`` folder. Then one ``.npy`` file per
array under ``<data_dir>/<folder>/gridsearch/``. Workers map those files copy-on-write, so all trials share one
copy of the pixels in the page cache and index batches straight from the tensor, with no per-sample path.
``Images`` are the same arrays as numpy ones, read without importing torch (reports whose sections run no weights).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gridsearch.errors import UserError
from gridsearch.vocabulary import DATASETS

if TYPE_CHECKING:
    import torch

RAW_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
"""The four original idx files of every dataset, by MNIST's names; the arrays of ``ARRAYS`` in this order."""
ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
"""Each dataset's folder in the data folder (torchvision's name): its raw files in ``raw/``, its arrays in
``gridsearch/``."""
FASHION_MNIST_VARIABLE = "GRIDSEARCH_FASHION_MNIST"
"""A folder holding Fashion-MNIST's raw files, looked in instead of ``DEBIAN_FASHION_MNIST``."""
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's package ``dataset-fashion-mnist`` installs Fashion-MNIST's raw files."""
IMAGE_SIDE = 28


def default_data_dir() -> Path:
    """``$GRIDSEARCH_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("GRIDSEARCH_DATA", "data"))


def arrays_dir(data_dir: Path, dataset: str = "mnist") -> Path:
    """Where ``prepare`` puts the parsed arrays of ``dataset``."""
    return Path(data_dir) / FOLDERS[dataset] / "gridsearch"


def prepare(data_dir: Path, dataset: str = "mnist") -> Path:
    """Make sure the parsed arrays of ``dataset`` exist under ``data_dir``; returns their folder."""
    target = arrays_dir(data_dir, dataset)
    if all((target / f"{name}.npy").exists() for name in ARRAYS):
        return target
    arrays = _mnist(data_dir) if dataset == "mnist" else _from_raw_files(dataset, raw_folders(data_dir, dataset))
    target.mkdir(parents=True, exist_ok=True)
    for name, array in zip(ARRAYS, arrays, strict=True):
        tmp = target / f"{name}.{os.getpid()}.tmp.npy"
        np.save(tmp, array.astype(np.uint8))
        os.replace(tmp, target / f"{name}.npy")  # atomic: concurrent runs never read half a file
    return target


def _mnist(data_dir: Path) -> list[np.ndarray]:
    """MNIST's arrays through torchvision, which downloads the raw files it does not find."""
    from torchvision.datasets import MNIST

    try:
        train = MNIST(str(data_dir), train=True, download=True)
        test = MNIST(str(data_dir), train=False, download=True)
    except Exception as exc:  # torchvision raises URLError, RuntimeError, OSError... when offline
        raw = Path(data_dir) / FOLDERS["mnist"] / "raw"
        missing = [name for name in RAW_FILES if not (raw / name).exists()]
        raise UserError(
            f"MNIST is not in {raw} and could not be downloaded ({type(exc).__name__}: "
            f"{exc}); put {', '.join(missing) or 'the four MNIST .gz files'} there, "
            "or pass --data-dir"
        ) from None
    return [train.data.numpy(), train.targets.numpy(), test.data.numpy(), test.targets.numpy()]


def raw_folders(data_dir: Path, dataset: str) -> list[Path]:
    """Where the raw files of ``dataset`` are looked for, in order (Fashion-MNIST: MNIST's torchvision downloads)."""
    elsewhere = os.environ.get(FASHION_MNIST_VARIABLE) or DEBIAN_FASHION_MNIST
    return [Path(data_dir) / FOLDERS[dataset] / "raw", Path(elsewhere)]


def _from_raw_files(dataset: str, folders: list[Path]) -> list[np.ndarray]:
    """The arrays of ``dataset`` from the first of ``folders`` that holds its four raw files; :class:`UserError`,
    in one line saying where it looked and how to get them, if none does."""
    known = DATASETS[dataset]
    found = next((folder for folder in folders if all((folder / name).is_file() for name in RAW_FILES)), None)
    if found is None:
        raise UserError(
            f"{known.title} is not in {' nor '.join(str(folder) for folder in folders)}: it needs "
            f"{', '.join(RAW_FILES)} in one of them (`apt-get install dataset-fashion-mnist` puts them in "
            f"{DEBIAN_FASHION_MNIST}; or set {FASHION_MNIST_VARIABLE} to a folder that holds them)"
        )
    arrays = [read_idx(found / name) for name in RAW_FILES]
    classes = len(known.classes)
    for images, labels in (arrays[:2], arrays[2:]):
        if (
            images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE)
            or labels.shape != images.shape[:1]
            or labels.max(initial=0) >= classes
        ):
            raise UserError(
                f"{found}: images of shape {images.shape} with labels of shape {labels.shape} are not "
                f"{known.title}'s ({IMAGE_SIDE}x{IMAGE_SIDE} images, one label of {classes} each)"
            )
    if len(arrays[0]) != known.training_size:
        raise UserError(
            f"{found / RAW_FILES[0]}: {len(arrays[0]):,} images, not {known.title}'s {known.training_size:,}"
        )
    return arrays


def read_idx(path: Path) -> np.ndarray:
    """The uint8 array of a gzipped idx file (LeCun's format: two zero bytes, type 0x08, the number of
    dimensions, each dimension as a big-endian 32-bit count, then the bytes); :class:`UserError` if it is not one."""
    try:
        with gzip.open(path, "rb") as file:
            content = file.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise UserError(f"{path}: not a readable .gz file ({exc})") from None
    if len(content) < 4 or content[:3] != b"\x00\x00\x08":
        raise UserError(f"{path}: not an idx file of unsigned bytes")
    dims = content[3]
    header = 4 + 4 * dims
    shape = struct.unpack(f">{dims}I", content[4:header]) if len(content) >= header else None
    if shape is None or len(content) - header != int(np.prod(shape)):
        raise UserError(f"{path}: the idx file is cut short or has extra bytes")
    return np.frombuffer(content, np.uint8, offset=header).reshape(shape)


def _array(data_dir: Path, dataset: str, name: str) -> np.ndarray:
    path = arrays_dir(data_dir, dataset) / f"{name}.npy"
    # mode "c" (copy-on-write) shares the pages between workers and gives torch a writable array.
    return np.load(path, mmap_mode="c")


def _load(data_dir: Path, dataset: str, name: str) -> torch.Tensor:
    import torch

    return torch.from_numpy(_array(data_dir, dataset, name))


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


def training_images(data_dir: Path, train_size: int, val_size: int, dataset: str = "mnist") -> tuple[Images, Images]:
    """``training_splits`` as numpy arrays."""
    images = _array(data_dir, dataset, "train_images")[:, None]
    labels = _array(data_dir, dataset, "train_labels").astype(np.int64)
    total = len(labels)
    return (
        Images(images[:train_size], labels[:train_size]),
        Images(images[total - val_size :], labels[total - val_size :]),
    )


def test_images(data_dir: Path, size: int = 10000, dataset: str = "mnist") -> Images:
    """``test_split`` as numpy arrays."""
    return Images(
        _array(data_dir, dataset, "test_images")[:size, None],
        _array(data_dir, dataset, "test_labels")[:size].astype(np.int64),
    )


def training_splits(data_dir: Path, train_size: int, val_size: int, dataset: str = "mnist") -> tuple[Split, Split]:
    """The first ``train_size`` and the last ``val_size`` images of ``dataset``'s official training set."""
    images = _load(data_dir, dataset, "train_images").unsqueeze(1)
    labels = _load(data_dir, dataset, "train_labels").long()
    total = len(labels)
    train = Split(images[:train_size], labels[:train_size])
    val = Split(images[total - val_size :], labels[total - val_size :])
    return train, val


def test_split(data_dir: Path, size: int = 10000, dataset: str = "mnist") -> Split:
    """The first ``size`` images of ``dataset``'s official test set."""
    return Split(
        _load(data_dir, dataset, "test_images")[:size].unsqueeze(1),
        _load(data_dir, dataset, "test_labels")[:size].long(),
    )
