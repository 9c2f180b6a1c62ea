"""Loaders for tests/test_own_data.py (reachable as ``tests.synthetic_data:...``: tests put the repository on the
import path): a synthetic 3x32x32 dataset of four classes, and a loader that returns the wrong shapes."""

from __future__ import annotations

import numpy as np

CLASSES = ("top-left", "top-right", "bottom-left", "bottom-right")


def _images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise with a bright square in the quadrant (and colour channel) its label names."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), count)
    images = rng.integers(0, 60, (count, 3, 32, 32), dtype=np.uint8)
    for index, label in enumerate(labels):
        top, left = 16 * (label // 2), 16 * (label % 2)
        images[index, label % 3, top + 4 : top + 12, left + 4 : left + 12] = 255
    return images, labels


def load() -> dict[str, np.ndarray]:
    """600 training and 200 test images of 3x32x32 pixels in four classes."""
    train_images, train_labels = _images(600, 0)
    test_images, test_labels = _images(200, 1)
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }


def wrong_shapes() -> dict[str, np.ndarray]:
    """Training images of one shape and test images of another."""
    arrays = load()
    arrays["test_images"] = arrays["test_images"][:, :, :16]
    return arrays
