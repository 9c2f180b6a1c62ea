"""The robustness suite's transforms and MNIST-style preprocessing (the command is tested in test_report)."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gridsearch.analysis import robustness
from tests.conftest import ROOT, needs

USPS = Path(
    os.environ.get("GRIDSEARCH_USPS")
    or next((f for f in (ROOT / "data" / "usps", ROOT.parent / "shared" / "datasets" / "usps") if f.is_dir()), "")
    or ROOT / "data" / "usps"
)
"""USPS as ``evaluate`` finds it (``$GRIDSEARCH_USPS``, else ``data/usps``), or in the shared datasets folder."""


def digit_images() -> torch.Tensor:
    """Two synthetic uint8 28x28 'digits': a vertical bar and a box, off centre."""
    images = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    images[0, 0, 6:22, 12:15] = 255
    images[1, 0, 8:18, 8:20] = 200
    return images


def test_geometric_transforms_move_the_ink_as_described():
    images = digit_images()
    shifted = robustness.transformed("shift+3+3", images)
    assert torch.equal(shifted[0, 0, 9:25, 15:18], images[0, 0, 6:22, 12:15])
    rotated = robustness.transformed("rotate45", images).float()
    assert rotated.sum().item() == pytest.approx(images.float().sum().item(), rel=0.1)  # ink kept, moved
    bar = robustness.transformed("rotate45", images)[0, 0].float()
    rows_, cols = torch.nonzero(bar > 128, as_tuple=True)
    assert abs(np.corrcoef(rows_.numpy(), cols.numpy())[0, 1]) > 0.9  # the vertical bar is now diagonal
    assert robustness.transformed("scale0.75", images).float().sum() < images.float().sum()


def test_pixelwise_transforms():
    images = digit_images()
    assert torch.equal(robustness.transformed("inverted", images), 255 - images)
    assert torch.equal(robustness.transformed("clean", images), images)
    thicker, thinner = (robustness.transformed(n, images) for n in ("thicker", "thinner"))
    assert (thicker[0] > 0).sum() == 18 * 5 - 4 and (thinner[0] > 0).sum() == 14 * 1
    assert bool((thicker >= images).all()) and bool((thinner <= images).all())


def test_random_conditions_are_seeded():
    images = digit_images()
    for name in ("noise0.3", "elastic", "rotate15"):
        first, again = robustness.transformed(name, images), robustness.transformed(name, images)
        assert torch.equal(first, again) and not torch.equal(first, images)


def test_mnist_style_fits_a_20_pixel_box_centred_by_mass():
    digit = np.zeros((1, 16, 16), dtype=np.float32)
    digit[0, 2:14, 5:9] = 1.0  # 12 tall, 4 wide
    (image,) = robustness.mnist_style(digit)
    ys, xs = torch.nonzero(image[0] > 0, as_tuple=True)
    assert ys.max() - ys.min() + 1 == 20 and 6 <= xs.max() - xs.min() + 1 <= 8  # aspect kept
    mass = image[0].float()
    centre = [
        ((torch.arange(28).float()[:, None] * mass).sum() / mass.sum()).item(),
        ((torch.arange(28).float()[None, :] * mass).sum() / mass.sum()).item(),
    ]
    assert centre == [pytest.approx(14.0, abs=0.5), pytest.approx(14.0, abs=0.5)]  # where MNIST's are


def test_external_sets_load_in_mnist_format():
    images, labels = robustness.load_sklearn_digits()
    assert images.shape == (1797, 1, 28, 28) and images.dtype == torch.uint8 and labels.tolist()[:3] == [0, 1, 2]
    if not (USPS / "usps.h5").exists():
        needs(f"USPS at {USPS}", "set GRIDSEARCH_USPS to a folder with usps.h5")
    images, labels = robustness.load_usps(USPS)
    assert images.shape == (2007, 1, 28, 28) and np.bincount(labels.numpy()).tolist()[:3] == [359, 264, 198]
    ink = images[:, 0] > 0
    height = ink.any(2).sum(1)
    width = ink.any(1).sum(1)
    assert torch.maximum(height, width).min() >= 18 and torch.maximum(height, width).max() <= 20


def test_the_suite_is_n_by_n_and_other_handwriting_only_for_digits(tmp_path):
    """A 4-class model of 3x32x32 images: every condition's confusion is 4x4, and no other handwriting; a 16x16
    digit model gets scikit-learn's digits made into its size, not USPS (the set it trained on)."""
    import architectures
    from tests import synthetic_data

    torch.manual_seed(0)
    convnet = architectures.get("convnet")
    arrays = synthetic_data.load()
    images, labels = torch.from_numpy(arrays["test_images"][:40]), torch.from_numpy(arrays["test_labels"][:40])
    model = convnet.build(channels=4, **convnet.data_params((3, 32, 32), 4)).eval()
    results = robustness.run_suite(model, False, images, labels, USPS, digits=False, cache=tmp_path, dataset="own")
    assert sorted(results) == sorted(robustness.PREFIX + name for name in robustness.CONDITIONS)
    assert all(np.array(r["confusion"]).shape == (4, 4) and r["samples"] == 40 for r in results.values())
    digits = convnet.build(channels=4, **convnet.data_params((1, 16, 16), 10)).eval()
    small = torch.zeros(20, 1, 16, 16, dtype=torch.uint8)
    results = robustness.run_suite(digits, False, small, torch.arange(20) % 10, USPS, True, tmp_path, "usps")
    assert robustness.USPS_NAME not in results and results[robustness.DIGITS_NAME]["samples"] == 1797
    assert np.array(results[robustness.DIGITS_NAME]["confusion"]).shape == (10, 10)
