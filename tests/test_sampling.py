"""bilinear_sample against F.grid_sample: values and gradient with respect to the grid."""

import pytest
import torch
import torch.nn.functional as F

from architectures.sampling import bilinear_sample


def reference(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_case(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (3, 2, 7, 9) and a (3, 5, 6) grid reaching well outside [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(3, 2, 7, 9, generator=generator, dtype=torch.float64)
    grid = (torch.rand(3, 5, 6, 2, generator=generator, dtype=torch.float64) * 2 - 1) * 1.5
    return images, grid


@pytest.mark.parametrize("seed", range(5))
def test_forward_matches_grid_sample(seed: int) -> None:
    images, grid = random_case(seed)
    assert (grid.abs() > 1).any()
    expected = reference(images, grid)
    torch.testing.assert_close(bilinear_sample(images, grid), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_grid_gradient_matches_grid_sample(seed: int) -> None:
    images, grid = random_case(seed)
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(3, 2, 5, 6, generator=generator, dtype=torch.float64)
    grads = []
    for sample in (bilinear_sample, reference):
        leaf = grid.clone().requires_grad_()
        (sample(images, leaf) * weights).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-12)


def test_identity_grid_returns_the_images() -> None:
    images = torch.rand(2, 1, 28, 28)
    theta = torch.eye(2, 3).expand(2, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    torch.testing.assert_close(bilinear_sample(images, grid), images, rtol=0, atol=1e-5)


def test_images_are_treated_as_constants() -> None:
    images, grid = random_case(0)
    images.requires_grad_()
    grid.requires_grad_()
    bilinear_sample(images, grid).sum().backward()
    assert images.grad is None
    assert grid.grad is not None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_backward_is_deterministic() -> None:
    images, grid = (t.float().cuda() for t in random_case(0))
    torch.use_deterministic_algorithms(True)
    try:
        grads = []
        for _ in range(2):
            leaf = grid.clone().requires_grad_()
            bilinear_sample(images, leaf).square().sum().backward()
            grads.append(leaf.grad)
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("architecture", ["stn", "tps_stn"])
def test_the_transformers_sample_in_float32_under_bf16_autocast(architecture: str) -> None:
    """Under ``amp: bf16`` the sampling grid stays float32: in bfloat16 the index of the image's last pixel
    (27 * 28 + 27 = 783) rounds to 784, past its end, and the pixel positions lose their fractions."""
    import architectures

    torch.manual_seed(0)
    model = architectures.get(architecture).build().eval()
    images = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        plain = model.transform(images)
        with torch.autocast("cpu", torch.bfloat16):
            mixed = model.transform(images)
    assert mixed.dtype == torch.float32
    # the localisation net runs in bfloat16 (its control points rounded to 1/256 of their size), so the
    # resampled noise images differ a little; at start both are the identity, up to that rounding
    torch.testing.assert_close(plain, images, rtol=0, atol=1e-5)
    assert (mixed - plain).abs().max() < 0.1 and (mixed - plain).abs().mean() < 2e-2
