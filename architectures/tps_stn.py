"""Thin-plate-spline spatial transformer in front of LeNet-5-3 (the seed study's TPS-STN).

The localisation net regresses ``tps_grid**2`` control points (x, y in [-1, 1] image coordinates).
A thin-plate spline maps the fixed target points (a regular grid spanning [-tps_span, tps_span]^2)
onto them; evaluated at the output pixel centres it gives the sampling grid. The spline's system
depends only on the targets, so it is solved once: the grid is then a fixed linear map of the
control points. 281,656 parameters at the study's 3x3 grid.
"""

import math
from collections.abc import Iterator
from itertools import chain

import torch
from torch import nn

from architectures import AUGMENTATION, TRANSFORMER, register
from architectures._init import study_init
from architectures.lenet53 import LeNet53
from architectures.sampling import bilinear_sample
from architectures.stn import localisation_net


def _radial_basis(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """The TPS kernel U(r) = r^2 log r^2 between (P, 2) points and (K, 2) centres -> (P, K)."""
    squared = torch.cdist(points, centres) ** 2
    return torch.xlogy(squared, squared)  # 0 at r = 0


def tps_weights(targets: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """(P, K) matrix taking K control points (K, 2) to where the spline sends ``points`` (P, 2).

    The spline maps ``targets`` (K, 2) exactly onto the control points, with minimal bending.
    """
    k = len(targets)
    affine = torch.cat([torch.ones(k, 1, dtype=targets.dtype), targets], dim=1)
    system = torch.zeros(k + 3, k + 3, dtype=targets.dtype)
    system[:k, :k] = _radial_basis(targets, targets)
    system[:k, k:] = affine
    system[k:, :k] = affine.T
    # Spline coefficients per unit control point: the first k columns of the system's inverse.
    coefficients = torch.linalg.solve(system, torch.eye(k + 3, k, dtype=targets.dtype))
    ones = torch.ones(len(points), 1, dtype=points.dtype)
    basis = torch.cat([_radial_basis(points, targets), ones, points], dim=1)
    return basis @ coefficients


def pixel_centres(pixels: int) -> torch.Tensor:
    """The centres of ``pixels`` pixels in [-1, 1] image coordinates."""
    return (2 * torch.arange(pixels, dtype=torch.float64) + 1) / pixels - 1


class TPSSTN(nn.Module):
    """Regresses TPS control points, resamples the input along the spline, classifies with LeNet53.

    ``tps_bounded=False`` (the study's variant): the regression output is the control points.
    ``tps_bounded=True``: the control points are ``tanh`` of the output, so they stay inside the
    image; the bias starts at ``atanh`` of the targets (needs ``tps_span < 1``).
    """

    def __init__(
        self,
        hidden: int = 128,
        dropout: float = 0.25,
        tps_grid: int = 3,
        tps_span: float = 0.9,
        tps_bounded: bool = False,
        image_shape: tuple = (1, 28, 28),
        classes: int = 10,
    ):
        super().__init__()
        if tps_grid < 2:
            raise ValueError(f"tps_grid must be at least 2, got {tps_grid}")
        limit = 1.0 if tps_bounded else math.inf
        if not 0 < tps_span < limit:
            raise ValueError(f"tps_span must be in (0, {limit}), got {tps_span}")
        self.bounded = tps_bounded
        self.localisation = localisation_net(256, image_shape)
        self.control = nn.Linear(256, 2 * tps_grid**2)
        self.classifier = LeNet53(hidden, dropout, image_shape, classes)
        self.apply(study_init)

        coords = torch.linspace(-tps_span, tps_span, tps_grid, dtype=torch.float64)
        ys, xs = torch.meshgrid(coords, coords, indexing="ij")
        targets = torch.stack([xs, ys], dim=-1).view(-1, 2)
        _, height, width = image_shape
        ys, xs = torch.meshgrid(pixel_centres(height), pixel_centres(width), indexing="ij")
        pixels = torch.stack([xs, ys], dim=-1).view(-1, 2)
        self.register_buffer("grid_weights", tps_weights(targets, pixels).float(), persistent=False)

        nn.init.zeros_(self.control.weight)
        with torch.no_grad():
            self.control.bias.copy_((targets.atanh() if tps_bounded else targets).view(-1))

    def transformer_parameters(self) -> Iterator[nn.Parameter]:
        """The localisation net's parameters (trained at a reduced learning rate)."""
        return chain(self.localisation.parameters(), self.control.parameters())

    def sampling_grid(self, x: torch.Tensor) -> torch.Tensor:
        """Where each output pixel of ``x`` (N, C, H, W) samples its input: (N, H, W, 2) in [-1, 1]."""
        control = self.control(self.localisation(x))
        if self.bounded:
            control = torch.tanh(control)
        with torch.autocast(x.device.type, enabled=False):  # see sampling.bilinear_sample: float32 coordinates
            grid = self.grid_weights @ control.to(x.dtype).view(len(x), -1, 2)
            return grid.view(len(x), *x.shape[2:], 2)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, C, H, W) resampled along its regressed thin-plate spline."""
        grid = self.sampling_grid(x)
        with torch.autocast(x.device.type, enabled=False):
            return bilinear_sample(x, grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.transform(x))


register(
    "tps_stn",
    TPSSTN,
    "Thin-plate-spline spatial transformer + LeNet-5-3 (study's TPS-STN), "
    "trained with the study's augmentation (aug_p: 0 turns it off)",
    training_params={AUGMENTATION, TRANSFORMER},
)
