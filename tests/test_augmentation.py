"""BatchAugmenter: determinism, pass-through, geometry against torchvision's transforms, and the same
ranges as sweep files."""

import inspect
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision.transforms.functional as TF
import yaml

from gridsearch.errors import UserError
from gridsearch.spec.params import AUGMENTATION_PARAMS, FloatRange
from gridsearch.spec.sweep import load_sweep
from gridsearch.training.augmentation import (
    AUGMENTATION_DEFAULTS,
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
    assert AUGMENTATION_DEFAULTS == {
        "aug_p": 0.5,
        "rotate": 7.5,
        "shift": 0.1,
        "shear": 0.1,
        "zoom": [0.95, 1.05],
        "elastic_alpha": 5.5,
        "elastic_sigma": 35.0,
    }
    signature = inspect.signature(BatchAugmenter).parameters
    assert {name: p.default for name, p in signature.items()} == AUGMENTATION_DEFAULTS
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
    "kwargs, message",
    [
        ({"aug_p": 1.5}, "aug_p must be in [0, 1] (probability per sample), got 1.5"),
        ({"rotate": -1.0}, "rotate must be in [0, 180] (degrees), got -1.0"),
        ({"shift": 1.0}, "shift must be in [0, 1) (fraction of the size), got 1.0"),
        ({"shear": 1.5}, "shear must be in [0, 1.5) (radians), got 1.5"),
        ({"zoom": (1.1, 0.9)}, "zoom must be a [low, high] pair of numbers"),
        ({"zoom": (0.0, 1.0)}, "zoom must be a [low, high] pair in [0.1, 10] (magnification factors)"),
        ({"elastic_sigma": 0.0}, "elastic_sigma must be in (0, 1000] (pixels), got 0.0"),
        ({"elastic_alpha": math.inf}, "elastic_alpha must be a finite number"),
        ({"rotate": True}, "rotate must be float, got bool True"),
    ],
)
def test_rejects_bad_params(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        BatchAugmenter(**kwargs)
    assert str(error.value).startswith(message)


PROBES: list[Any] = [-math.inf, -1.0, -5e-324, -0.0, 0.0, 5e-324, 0.5, 1, 1.5, math.pi / 2, 180.0, 1e12, 1e300]
PROBES += [math.inf, math.nan, True]
"""Values to try for every augmentation param, besides each side of its bounds in the table."""


def probes(name: str) -> list[Any]:
    """Values of param ``name`` to try: ``PROBES``, its bounds and the floats just either side of them."""
    param = AUGMENTATION_PARAMS[name]
    numbers = list(PROBES)
    for bound in (param.low, param.high):
        if bound is not None:
            numbers += [math.nextafter(bound, -math.inf), bound, math.nextafter(bound, math.inf)]
    values = numbers
    if param.type is FloatRange:
        values = [[1.1, 0.9]] + [[n, n] for n in numbers] + [sorted([n, 1.0]) for n in numbers if n == n]
    return list({repr(value): value for value in values}.values())


def sweep_params(folder: Path, name: str, value: Any) -> dict[str, Any] | None:
    """A trial's resolved params if a sweep file may set param ``name`` to ``value``, else None."""
    path = folder / "probe.yaml"
    document = {"name": "probe", "architecture": "lenet53_augmented", "params": {name: value}, "grid": {"lr": [0.1]}}
    path.write_text(yaml.safe_dump(document))
    try:
        (trial,) = load_sweep(path).trials()
    except UserError as error:
        assert f"params.{name}: must be" in str(error)
        return None
    return trial.params


@pytest.mark.parametrize(
    "name, value", [(name, value) for name in AUGMENTATION_PARAMS for value in probes(name)], ids=repr
)
def test_the_augmenter_takes_exactly_what_sweep_files_accept(tmp_path: Path, name: str, value: Any) -> None:
    """Each value a sweep file accepts builds an augmenter, as training builds it, whose output is finite
    and in [0, 1]; each value it refuses, the augmenter refuses too."""
    params = sweep_params(tmp_path, name, value)
    if params is None:
        with pytest.raises(ValueError, match=name):
            BatchAugmenter(**{name: value})
        return
    augment = BatchAugmenter(**{key: params[key] for key in AUGMENTATION_DEFAULTS})
    images = torch.rand(16, 1, 28, 28, generator=generator())
    out = augment(images, generator())
    assert out.shape == images.shape and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_the_generators_device() -> None:
    images = torch.rand(16, 1, 28, 28, device="cuda")
    cuda_generator = torch.Generator(device="cuda")
    out = [BatchAugmenter()(images, cuda_generator.manual_seed(0)) for _ in range(2)]
    assert out[0].device == images.device and torch.equal(out[0], out[1])
