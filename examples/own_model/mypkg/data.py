"""A data loader of one's own: no required arguments, a dict of numpy arrays (images uint8 N x H x W, labels
ints 0..9). Here a subset of MNIST, read from the IDX files in ``$GRIDSEARCH_DATA/MNIST/raw`` (else in the
checkout's ``data/MNIST/raw``, where the README puts them) with gzip and numpy alone."""

import gzip
import os
from pathlib import Path

import numpy as np

TRAIN, TEST = 6000, 2000
"""How many training and test images it gives."""


def _idx(path: Path, header: int, count: int, shape: tuple[int, ...]) -> np.ndarray:
    with gzip.open(path, "rb") as stream:
        data = np.frombuffer(stream.read(), dtype=np.uint8, offset=header)
    return data[: count * int(np.prod(shape))].reshape(count, *shape)


def load() -> dict[str, np.ndarray]:
    """``train_images``, ``train_labels``, ``test_images``, ``test_labels``."""
    checkout = Path(__file__).resolve().parents[3]
    raw = Path(os.environ.get("GRIDSEARCH_DATA", checkout / "data")) / "MNIST" / "raw"
    return {
        "train_images": _idx(raw / "train-images-idx3-ubyte.gz", 16, TRAIN, (28, 28)),
        "train_labels": _idx(raw / "train-labels-idx1-ubyte.gz", 8, TRAIN, ()).astype(np.int64),
        "test_images": _idx(raw / "t10k-images-idx3-ubyte.gz", 16, TEST, (28, 28)),
        "test_labels": _idx(raw / "t10k-labels-idx1-ubyte.gz", 8, TEST, ()).astype(np.int64),
    }
