"""Bilinear image sampling whose backward pass is deterministic on CUDA.

``F.grid_sample``'s CUDA backward accumulates with atomic adds: it is nondeterministic
(pytorch#68959) and raises under ``torch.use_deterministic_algorithms(True)``. The sampler here is
built from index arithmetic, ``torch.gather`` and elementwise ops instead, so the gradient with
respect to the grid flows through the bilinear weights only.

The images are treated as constants (detached): the gradient with respect to them would be
``gather``'s backward, a ``scatter_add`` that is nondeterministic on CUDA too. A spatial transformer
samples the network's input, which needs no gradient.
"""

import torch


def bilinear_sample(images: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Sample ``images`` (N, C, H, W) at ``grid`` (N, Ho, Wo, 2) of normalised (x, y) points.

    Equivalent to ``F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
    align_corners=False)``; returns (N, C, Ho, Wo). Gradients reach ``grid`` but not ``images``.
    ``grid`` must be float32 (callers under bf16 autocast switch it off around the grid and the
    sampling): bfloat16 holds integers exactly only up to 256, so a pixel index ``y * w + x`` would
    round past the image's end.
    """
    n, c, h, w = images.shape
    _, ho, wo, _ = grid.shape
    # Unnormalise as align_corners=False does: -1 and 1 are the outer edges of the border pixels.
    x = ((grid[..., 0] + 1) * w - 1) / 2
    y = ((grid[..., 1] + 1) * h - 1) / 2
    x0, y0 = x.detach().floor(), y.detach().floor()
    wx1, wy1 = x - x0, y - y0
    wx0, wy0 = 1 - wx1, 1 - wy1

    corners = [
        (x0, y0, wx0 * wy0),
        (x0 + 1, y0, wx1 * wy0),
        (x0, y0 + 1, wx0 * wy1),
        (x0 + 1, y0 + 1, wx1 * wy1),
    ]
    indices, weights = [], []
    for cx, cy, weight in corners:
        inside = (cx >= 0) & (cx <= w - 1) & (cy >= 0) & (cy <= h - 1)
        # Outside points read pixel 0 with weight 0: zero padding.
        indices.append(torch.where(inside, cy * w + cx, 0).long().view(n, 1, -1))
        weights.append(weight * inside)
    index = torch.cat(indices, dim=2).expand(n, c, -1)
    values = torch.gather(images.detach().reshape(n, c, h * w), 2, index).view(n, c, 4, ho * wo)
    weight = torch.stack(weights, dim=1).view(n, 1, 4, ho * wo)
    return (values * weight).sum(dim=2).view(n, c, ho, wo)


def affine_grid(theta: torch.Tensor, size: list[int]) -> torch.Tensor:
    """``F.affine_grid(theta, size, align_corners=False)`` for ``theta`` (N, 2, 3) and ``size`` (N, C, H, W),
    bit for bit (ATen's own steps: a base grid of normalised pixel centres times ``theta``), but traceable by
    ``torch.vmap``, which has no batching rule for ``affine_grid_generator`` and would loop over a stack."""
    n, _, h, w = size

    def centres(steps: int) -> torch.Tensor:
        return torch.linspace(-1, 1, steps, dtype=theta.dtype, device=theta.device) * (steps - 1) / steps

    base = torch.empty(n, h, w, 3, dtype=theta.dtype, device=theta.device)
    base[..., 0] = centres(w)
    base[..., 1] = centres(h).unsqueeze(-1)
    base[..., 2] = 1
    return base.view(n, h * w, 3).bmm(theta.transpose(1, 2)).view(n, h, w, 2)
