"""The datasets a sweep may train on: each a small typed description (``Dataset``) that the whole engine reads.

A built-in dataset is one entry of ``DATASETS``, beside the reader that gives its arrays: adding one touches only
this file. A sweep may also name its own data, ``dataset: {loader: mypkg.data:load, ...}``: a function with no
required arguments that returns a dict of numpy arrays ``train_images``, ``train_labels``, ``test_images``,
``test_labels`` (images uint8 N x H x W or N x C x H x W, labels ints 0..K-1). Either is parsed once into uint8
``.npy`` arrays (``training.data.prepare``); a loader's under a folder named by its module's source digest, which
its trials' keys include. Nothing here imports torch.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from gridsearch.errors import UserError
from gridsearch.spec.usercode import CodeRef

ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
"""The arrays of every dataset, in this order."""


class Arrays(TypedDict):
    """A dataset's arrays: images uint8 (N, C, H, W), labels int64 (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


@dataclass(frozen=True)
class Dataset:
    """A dataset of images in classes that a sweep may name."""

    name: str
    title: str
    """Its name as people write it, e.g. ``Fashion-MNIST``."""
    shape: tuple[int, int, int]
    """One image's shape: channels, height, width."""
    classes: tuple[str, ...]
    """The name of each label, in label order."""
    digits: bool
    """Whether its images are handwritten digits (the recognizer and the other-handwriting sets apply)."""
    training_size: int
    """Images in its training set (train and validation images are cut from it)."""
    test_size: int
    """Images in its test set."""
    folder: str
    """Its folder in the data folder: its raw files in ``raw/``, its parsed arrays in ``gridsearch/``."""
    read: Callable[[Path], Arrays] | None = None
    """A built-in's reader, given the data folder."""
    loader: str | None = None
    """A user's loader, ``package.module:name``."""
    digest: str | None = None
    """The SHA-256 of the loader module's source."""

    @property
    def noun(self) -> str:
        """What one of its classes is called: ``digit`` or ``class``."""
        return "digit" if self.digits else "class"

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def side(self) -> int:
        """Its images' height (the recognizer's drawings are made square at this size)."""
        return self.shape[1]

    def arrays(self, data_dir: Path) -> Arrays:
        """Its arrays, read (or loaded) afresh and checked; :class:`UserError` in one line if they are not right."""
        if self.read is not None:
            return check(self.read(Path(data_dir)), self.title, self)
        assert self.loader is not None
        return run_loader(CodeRef.parse(self.loader) or CodeRef("", ""))

    def part(self, train_size: int, val_size: int) -> dict[str, Any]:
        """What a trial's key records of it: a built-in by its name alone (keys never change), a loader's
        data by the loader, its source's digest and what it gave."""
        part: dict[str, Any] = {"name": self.name, "train_size": train_size, "val_size": val_size}
        if self.loader is not None:
            part |= {
                "loader": self.loader,
                "digest": self.digest,
                "shape": list(self.shape),
                "classes": list(self.classes),
                "digits": self.digits,
                "sizes": [self.training_size, self.test_size],
            }
        return part


def check(arrays: Mapping[str, Any], source: str, expected: Dataset | None = None) -> Arrays:
    """``arrays`` as uint8 (N, C, H, W) images and int64 labels; :class:`UserError` in one line naming ``source``
    if they are not a dataset's four arrays (or not ``expected``'s shapes and classes)."""
    if not isinstance(arrays, Mapping) or sorted(arrays) != sorted(ARRAYS):
        given = sorted(arrays) if isinstance(arrays, Mapping) else type(arrays).__name__
        raise UserError(f"{source}: must return a dict of numpy arrays {', '.join(ARRAYS)}, got {given}")
    out: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim not in (3, 4):
            what = f"{images.dtype} array of shape {images.shape}" if isinstance(images, np.ndarray) else type(images)
            raise UserError(f"{source}: {split}_images must be a uint8 array N x H x W or N x C x H x W, got {what}")
        if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu" or labels.shape != images.shape[:1]:
            what = f"{labels.dtype} array of shape {labels.shape}" if isinstance(labels, np.ndarray) else type(labels)
            raise UserError(f"{source}: {split}_labels must be {len(images)} integer labels, got {what}")
        out[f"{split}_images"] = images if images.ndim == 4 else images[:, None]
        out[f"{split}_labels"] = labels.astype(np.int64)
    shape = out["train_images"].shape[1:]
    if out["test_images"].shape[1:] != shape or min(shape) < 1 or len(out["train_images"]) == 0:
        raise UserError(
            f"{source}: train images of shape {out['train_images'].shape} and test images of shape "
            f"{out['test_images'].shape} are not images of one shape"
        )
    classes = len(expected.classes) if expected else int(max(out["train_labels"].max(), out["test_labels"].max())) + 1
    for name in ("train_labels", "test_labels"):
        if out[name].size and not 0 <= out[name].min() <= out[name].max() < classes:
            raise UserError(f"{source}: {name} must lie in 0..{classes - 1}")
    if expected is not None and (shape != expected.shape or len(out["train_images"]) != expected.training_size):
        raise UserError(
            f"{source}: {len(out['train_images']):,} training images of shape {tuple(shape)}, not {expected.title}'s "
            f"{expected.training_size:,} of shape {expected.shape}"
        )
    return Arrays(**out)  # type: ignore[typeddict-item]


_LOADED: dict[str, Arrays] = {}
"""Each loader's checked arrays by the loader and its source's digest, loaded once per process."""


def loader_folder(loader: str, digest: str) -> str:
    """Where a loader's arrays are kept in the data folder: named by the loader and its module's source digest."""
    return f"loaders/{hashlib.sha256(f'{loader} {digest}'.encode()).hexdigest()[:16]}"


def run_loader(ref: CodeRef) -> Arrays:
    """The checked arrays that the loader ``ref`` returns; :class:`UserError` in one line if it cannot be imported,
    raises or returns something else."""
    digest = f"{ref} {ref.digest()}"
    if digest not in _LOADED:
        function = ref.load()
        if not callable(function):
            raise UserError(f"{ref}: is not a function")
        try:
            arrays = function()
        except Exception as exc:
            raise UserError(f"{ref}: the loader raised {type(exc).__name__}: {exc}") from None
        _LOADED[digest] = check(arrays, f"loader {ref}")
    return _LOADED[digest]


def from_loader(ref: CodeRef, name: str | None, classes: list[str] | None, digits: bool) -> Dataset:
    """The description of the data that the loader ``ref`` returns (it is run here, once per process)."""
    arrays = run_loader(ref)
    found = int(max(arrays["train_labels"].max(), arrays["test_labels"].max())) + 1
    if classes is not None and len(classes) < found:
        raise UserError(f"loader {ref}: its labels go up to {found - 1}, but only {len(classes)} classes are named")
    digest = ref.digest()
    channels, height, width = arrays["train_images"].shape[1:]
    return Dataset(
        name or str(ref),
        name or str(ref),
        (channels, height, width),
        tuple(classes) if classes is not None else tuple(str(label) for label in range(found)),
        digits,
        len(arrays["train_images"]),
        len(arrays["test_images"]),
        loader_folder(str(ref), digest),
        loader=str(ref),
        digest=digest,
    )


def described(dataset: Dataset | Mapping[str, Any] | str) -> Dataset:
    """The description of a dataset given as itself, a trial config's dataset part or a built-in's name."""
    if isinstance(dataset, Dataset):
        return dataset
    if isinstance(dataset, str):
        return DATASETS[dataset]
    if "loader" not in dataset:
        return DATASETS[dataset["name"]]
    channels, height, width = dataset["shape"]
    return Dataset(
        dataset["name"],
        dataset["name"],
        (channels, height, width),
        tuple(dataset["classes"]),
        dataset["digits"],
        dataset["sizes"][0],
        dataset["sizes"][1],
        loader_folder(dataset["loader"], dataset["digest"]),
        loader=dataset["loader"],
        digest=dataset["digest"],
    )


# --- the built-in datasets' readers ---------------------------------------------------------------------------

IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
"""The four original idx files of MNIST and Fashion-MNIST (MNIST's names); ``ARRAYS`` in this order."""
FASHION_MNIST_VARIABLE = "GRIDSEARCH_FASHION_MNIST"
"""A folder holding Fashion-MNIST's raw files, looked in instead of ``DEBIAN_FASHION_MNIST``."""
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's package ``dataset-fashion-mnist`` installs Fashion-MNIST's raw files."""
USPS_VARIABLE = "GRIDSEARCH_USPS"
"""A folder holding USPS's ``usps.h5`` (else ``usps/`` in the data folder)."""
SKLEARN_TRAINING = 1437
"""scikit-learn's 1,797 digits: the first 1,437 train (and validate), the last 360 test."""


def _arrays(values: list[np.ndarray]) -> Arrays:
    return Arrays(**dict(zip(ARRAYS, values, strict=True)))  # type: ignore[typeddict-item]


def _mnist(data_dir: Path) -> Arrays:
    """MNIST's arrays through torchvision, which downloads the raw files it does not find."""
    from torchvision.datasets import MNIST

    try:
        train = MNIST(str(data_dir), train=True, download=True)
        test = MNIST(str(data_dir), train=False, download=True)
    except Exception as exc:  # torchvision raises URLError, RuntimeError, OSError... when offline
        raw = Path(data_dir) / "MNIST" / "raw"
        missing = [name for name in IDX_FILES if not (raw / name).exists()]
        raise UserError(
            f"MNIST is not in {raw} and could not be downloaded ({type(exc).__name__}: "
            f"{exc}); put {', '.join(missing) or 'the four MNIST .gz files'} there, "
            "or pass --data-dir"
        ) from None
    return _arrays([train.data.numpy(), train.targets.numpy(), test.data.numpy(), test.targets.numpy()])


def fashion_folders(data_dir: Path) -> list[Path]:
    """Where Fashion-MNIST's raw files are looked for, in order."""
    elsewhere = os.environ.get(FASHION_MNIST_VARIABLE) or DEBIAN_FASHION_MNIST
    return [Path(data_dir) / "FashionMNIST" / "raw", Path(elsewhere)]


def _fashion_mnist(data_dir: Path) -> Arrays:
    """Fashion-MNIST's idx files, from the first folder of ``fashion_folders`` that holds all four."""
    folders = fashion_folders(data_dir)
    found = next((folder for folder in folders if all((folder / name).is_file() for name in IDX_FILES)), None)
    if found is None:
        raise UserError(
            f"Fashion-MNIST is not in {' nor '.join(str(folder) for folder in folders)}: it needs "
            f"{', '.join(IDX_FILES)} in one of them (`apt-get install dataset-fashion-mnist` puts them in "
            f"{DEBIAN_FASHION_MNIST}; or set {FASHION_MNIST_VARIABLE} to a folder that holds them)"
        )
    return _arrays([read_idx(found / name) for name in IDX_FILES])


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


def usps_folder(data_dir: Path) -> Path:
    """``$GRIDSEARCH_USPS``, else ``usps/`` in the data folder."""
    return Path(os.environ.get(USPS_VARIABLE) or Path(data_dir) / "usps")


def _usps(data_dir: Path) -> Arrays:
    """USPS's 16x16 digits (floats in [0, 1], ink high) from ``usps.h5``."""
    import h5py

    path = usps_folder(data_dir) / "usps.h5"
    if not path.is_file():
        raise UserError(f"USPS is not in {path.parent}: it needs usps.h5 there (or set {USPS_VARIABLE} to its folder)")
    try:
        with h5py.File(path, "r") as file:
            values = [file[f"{split}/{what}"][:] for split in ("train", "test") for what in ("data", "target")]
    except (OSError, KeyError) as exc:
        raise UserError(f"{path}: not USPS's h5 file ({exc})") from None
    for index in (0, 2):
        values[index] = np.rint(np.clip(values[index], 0, 1) * 255).astype(np.uint8).reshape(-1, 16, 16)
    return _arrays(values)


def _sklearn_digits(data_dir: Path) -> Arrays:
    """scikit-learn's bundled 8x8 digits (values 0..16) as uint8, split at ``SKLEARN_TRAINING``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    cut = SKLEARN_TRAINING
    return _arrays([images[:cut], labels[:cut], images[cut:], labels[cut:]])


_DIGITS = tuple(str(digit) for digit in range(10))
DATASETS: dict[str, Dataset] = {
    "mnist": Dataset("mnist", "MNIST", (1, 28, 28), _DIGITS, True, 60000, 10000, "MNIST", _mnist),
    "fashion_mnist": Dataset(
        "fashion_mnist",
        "Fashion-MNIST",
        (1, 28, 28),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        False,
        60000,
        10000,
        "FashionMNIST",
        _fashion_mnist,
    ),
    "usps": Dataset("usps", "USPS", (1, 16, 16), _DIGITS, True, 7291, 2007, "USPS", _usps),
    "sklearn_digits": Dataset(
        "sklearn_digits",
        "scikit-learn digits",
        (1, 8, 8),
        _DIGITS,
        True,
        SKLEARN_TRAINING,
        360,
        "SklearnDigits",
        _sklearn_digits,
    ),
}
"""The built-in datasets a sweep may name, by name."""
