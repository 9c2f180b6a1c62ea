"""BatchAugmenter: determinism, pass-through, and geometry against torchvision's transforms."""

import math

import pytest
import torch
import torchvision.transforms.functional as TF

from gridsearch.training.augmentation import (
    AUGMENTATION_DEFAULTS,
    AUGMENTATION_PARAMS,
    BatchAugmenter,
    Distortion,
    _blur_matrix,
    distort,
)

BILINEAR = TF.InterpolationMode.BILINEAR
NO_DISTORTION = {"rotate": 0.0, "shift": 0.0, "shear": 0.0, "zoom": (1.0, 1.0), "elastic_alpha": 0.0}


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def blobs(n: int) -> torch.Tensor:
    """``n`` copies of an off-centre Gaussian blob, well inside a 28x28 image."""
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    blob = torch.exp(-((xs - 18.0) ** 2 + (ys - 9.0) ** 2) / (2 * 1.5**2))
    return blob.expand(n, 1, 28, 28).clone()


def centre_of_mass(images: torch.Tensor) -> torch.Tensor:
    """(N, 2) centre of mass (x, y) in pixels."""
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    moments = [(images * coordinate).sum(dim=(1, 2, 3)) for coordinate in (xs, ys)]
    return torch.stack(moments, dim=1) / images.sum(dim=(1, 2, 3))[:, None]


def test_defaults_are_the_study_values() -> None:
    assert set(AUGMENTATION_DEFAULTS) == AUGMENTATION_PARAMS
    assert AUGMENTATION_DEFAULTS["aug_p"] == 0.5
    assert AUGMENTATION_DEFAULTS["zoom"] == [0.95, 1.05]
    BatchAugmenter(**AUGMENTATION_DEFAULTS)


def test_shape_dtype_and_range() -> None:
    images = torch.rand(32, 1, 28, 28)
    out = BatchAugmenter(aug_p=1.0)(images, generator())
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.min() >= 0 and out.max() <= 1


def test_same_generator_state_gives_the_same_output() -> None:
    images = torch.rand(32, 1, 28, 28)
    augment = BatchAugmenter()
    assert torch.equal(augment(images, generator(1)), augment(images, generator(1)))
    assert not torch.equal(augment(images, generator(1)), augment(images, generator(2)))


def test_aug_p_zero_is_the_identity() -> None:
    images = torch.rand(32, 1, 28, 28)
    assert torch.equal(BatchAugmenter(aug_p=0.0)(images, generator()), images)


def test_aug_p_selects_samples() -> None:
    images = torch.rand(400, 1, 28, 28)
    changed = (BatchAugmenter()(images, generator()) != images).flatten(1).any(dim=1)
    assert 150 < changed.sum() < 250
    assert (BatchAugmenter(aug_p=1.0)(images, generator()) != images).flatten(1).any(dim=1).all()


def test_parameters_differ_across_the_batch_and_stay_in_range() -> None:
    params = BatchAugmenter().draw(64, 28, 28, generator(), torch.float32)
    for values in (params.angle, params.shift[:, 0], params.shift[:, 1], params.shear, params.zoom):
        assert values.unique().numel() == 64
    assert params.angle.abs().max() <= math.radians(7.5)
    assert params.shift.abs().max() <= 2.8 + 1e-5
    assert params.shear.abs().max() <= 0.1
    assert params.zoom.min() >= 0.95 and params.zoom.max() <= 1.05
    outputs = BatchAugmenter(aug_p=1.0)(blobs(8), generator())
    assert len({tuple(o.flatten().tolist()) for o in outputs}) == 8


def test_rotation_matches_torchvision_rotate() -> None:
    augment = BatchAugmenter(aug_p=1.0, **{**NO_DISTORTION, "rotate": 30.0})
    images = blobs(8)
    out = augment(images, generator())
    angles = augment.draw(8, 28, 28, generator(), torch.float32).angle
    expected = torch.stack([TF.rotate(image, math.degrees(angle), BILINEAR) for image, angle in zip(images, angles)])
    torch.testing.assert_close(centre_of_mass(out), centre_of_mass(expected), rtol=0, atol=0.01)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)


def test_shift_matches_torchvision_translate() -> None:
    images = blobs(1)
    params = Distortion(
        selected=torch.tensor([True]),
        angle=torch.zeros(1),
        shift=torch.tensor([[3.0, -2.0]]),
        shear=torch.zeros(1),
        zoom=torch.ones(1),
        displacement=None,
    )
    expected = TF.affine(images, angle=0.0, translate=[3, -2], scale=1.0, shear=[0.0, 0.0])
    torch.testing.assert_close(distort(images, params), expected, rtol=0, atol=1e-5)


def test_random_shifts_move_the_centre_of_mass() -> None:
    augment = BatchAugmenter(aug_p=1.0, **{**NO_DISTORTION, "shift": 0.1})
    images = blobs(16)
    moved = centre_of_mass(augment(images, generator())) - centre_of_mass(images)
    shift = augment.draw(16, 28, 28, generator(), torch.float32).shift
    torch.testing.assert_close(moved, shift, rtol=0, atol=0.01)


def test_affine_part_matches_torchvision_affine() -> None:
    images = torch.rand(1, 1, 28, 28, generator=generator())
    params = Distortion(
        selected=torch.tensor([True]),
        angle=torch.tensor([math.radians(10.0)]),
        shift=torch.tensor([[2.0, -3.0]]),
        shear=torch.tensor([0.2]),
        zoom=torch.tensor([1.1]),
        displacement=None,
    )
    expected = TF.affine(
        images,
        angle=-10.0,
        translate=[2, -3],
        scale=1.1,
        shear=[math.degrees(0.2), 0.0],
        interpolation=BILINEAR,
    )
    torch.testing.assert_close(distort(images, params), expected, rtol=0, atol=1e-5)


def test_elastic_field_is_a_small_nearly_uniform_shift_at_the_study_sigma() -> None:
    field = BatchAugmenter().draw(256, 28, 28, generator(), torch.float32).displacement
    assert field.shape == (256, 2, 28, 28)
    assert 0.05 < field.std() < 0.2
    assert (field - field.mean(dim=(2, 3), keepdim=True)).abs().max() < 1e-2


@pytest.mark.parametrize("sigma", [1.5, 4.0, 35.0])
def test_blur_matrix_matches_scipy_reflect(sigma: float) -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    noise = torch.rand(28, 5, generator=generator(), dtype=torch.float64)
    expected = ndimage.gaussian_filter1d(noise.numpy(), sigma, axis=0, mode="reflect")
    blurred = _blur_matrix(28, sigma, torch.device("cpu"), torch.float64) @ noise
    torch.testing.assert_close(blurred, torch.from_numpy(expected), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"aug_p": 1.5},
        {"rotate": -1.0},
        {"zoom": (1.1, 0.9)},
        {"zoom": (0.0, 1.0)},
        {"elastic_sigma": 0.0},
    ],
)
def test_rejects_bad_params(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        BatchAugmenter(**kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_the_generators_device() -> None:
    images = torch.rand(16, 1, 28, 28, device="cuda")
    cuda_generator = torch.Generator(device="cuda")
    out = [BatchAugmenter()(images, cuda_generator.manual_seed(0)) for _ in range(2)]
    assert out[0].device == images.device and torch.equal(out[0], out[1])
