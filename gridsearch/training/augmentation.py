"""Batched, on-device data augmentation: the seed study's random distortions, one pass per batch.

Each sample of a batch is distorted with probability ``aug_p``; the others pass unchanged. A
distorted sample gets its own random parameters, all drawn uniformly (the allowed ranges, shared with
sweep files, are in ``gridsearch.spec.params.AUGMENTATION_PARAMS``):

- ``rotate``: rotation angle in degrees, in [-rotate, rotate]; positive turns the content
  counter-clockwise as displayed (torchvision's ``rotate`` convention).
- ``shift``: translation as a fraction of the width (x) and height (y), each in [-shift, shift];
  continuous, not rounded to whole pixels.
- ``shear``: shear angle in radians, in [-shear, shear] (our reading of the study's "shear
  intensity 0.1": Keras took its ``shear_range`` in radians before switching to degrees). A point
  y pixels below the centre moves left by tan(angle) * y, as in torchvision's
  ``affine(shear=degrees(angle))``.
- ``zoom``: isotropic magnification factor in [low, high]; above 1 enlarges the content.
- ``elastic_alpha``, ``elastic_sigma``: elastic distortion in pixels. A field of uniform [-1, 1]
  noise per axis is smoothed by a Gaussian of standard deviation ``elastic_sigma`` pixels (with
  scipy's default "reflect" boundary, truncated at 4 sigma) and scaled by ``elastic_alpha``
  pixels. With sigma 35 on 28x28 images the field is nearly uniform: a random shift of about a
  tenth of a pixel.

The content is zoomed, sheared, rotated (about the image centre), shifted, then elastically
displaced: torchvision ``RandomAffine``'s composition order rather than the order the study lists
(rotation, shift, shear, zoom); at these magnitudes the difference is a fraction of a pixel. The
affine part equals torchvision's ``affine(angle=-rotate, translate=shift, scale=zoom,
shear=degrees(shear))`` (its angle is clockwise) up to float rounding. Everything is one sampling
grid and one bilinear ``F.grid_sample`` (zero fill) per batch. Images need no gradient, so
``grid_sample``'s nondeterministic CUDA backward is never used; its forward is deterministic, and
so is the whole augmentation for a given generator state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F

from gridsearch.spec.params import AUGMENTATION_PARAMS, coerce_all

AUGMENTATION_DEFAULTS: dict[str, Any] = {name: param.default for name, param in AUGMENTATION_PARAMS.items()}
"""The study's augmentation settings; the keyword arguments of :class:`BatchAugmenter`."""


@dataclass(frozen=True)
class Distortion:
    """Per-sample parameters of one batch's distortion (N samples of H x W images)."""

    selected: torch.Tensor
    """(N,) bool: which samples are distorted; the others pass unchanged."""
    angle: torch.Tensor
    """(N,) rotation in radians, counter-clockwise as displayed."""
    shift: torch.Tensor
    """(N, 2) translation (x, y) in pixels; y points down."""
    shear: torch.Tensor
    """(N,) shear angle in radians."""
    zoom: torch.Tensor
    """(N,) magnification factor."""
    displacement: torch.Tensor | None
    """(N, 2, H, W) elastic displacement (x, y) in pixels, or None for none."""


def distort(images: torch.Tensor, distortion: Distortion) -> torch.Tensor:
    """``images`` (N, C, H, W) with each selected sample distorted, in a single grid sampling."""
    n, _, h, w = images.shape
    device, dtype = images.device, images.dtype
    cos, sin = torch.cos(distortion.angle), torch.sin(distortion.angle)
    tan = torch.tan(distortion.shear)
    # Inverse map (output pixel -> source pixel) of content transform zoom, shear, rotate:
    # (1 / zoom) * shear^-1 * rotation^-1, in centred pixel coordinates with y down.
    linear = torch.stack([cos + tan * sin, -sin + tan * cos, sin, cos], dim=1).view(n, 2, 2) / distortion.zoom.view(
        n, 1, 1
    )

    xs = torch.arange(w, device=device, dtype=dtype) - (w - 1) / 2
    ys = torch.arange(h, device=device, dtype=dtype) - (h - 1) / 2
    points = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).expand(n, h, w, 2)
    points = points - distortion.shift.view(n, 1, 1, 2)
    if distortion.displacement is not None:
        points = points + distortion.displacement.permute(0, 2, 3, 1)
    source = torch.einsum("nij,nhwj->nhwi", linear, points)
    half_size = torch.tensor([w / 2, h / 2], device=device, dtype=dtype)  # pixels -> [-1, 1]
    warped = F.grid_sample(images, source / half_size, mode="bilinear", padding_mode="zeros", align_corners=False)
    return torch.where(distortion.selected.view(n, 1, 1, 1), warped, images)


@lru_cache(maxsize=16)
def _blur_matrix(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(size, size) matrix of a 1D Gaussian blur with scipy's "reflect" boundary.

    Hand-written because torch and torchvision blurs pad by reflection only up to the image size,
    while sigma 35 needs a 281-tap kernel on 28 pixels. Folding the kernel into a size x size matrix
    handles any sigma and makes the blur two small matmuls per batch.
    """
    radius = int(4 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1)
    kernel = torch.exp(-0.5 * (offsets.double() / sigma) ** 2)
    kernel = kernel / kernel.sum()
    # "reflect" mirrors about the outer pixel edges: ... b a | a b ... y z | z y ...
    positions = (torch.arange(size)[:, None] + offsets) % (2 * size)
    sources = torch.where(positions < size, positions, 2 * size - 1 - positions)
    matrix = torch.zeros(size, size, dtype=torch.float64)
    matrix.scatter_add_(1, sources, kernel.expand(size, -1).contiguous())
    return matrix.to(device=device, dtype=dtype)


class BatchAugmenter:
    """Random distortions of whole batches on their device; the module docstring gives the units."""

    def __init__(
        self,
        aug_p: float = AUGMENTATION_DEFAULTS["aug_p"],
        rotate: float = AUGMENTATION_DEFAULTS["rotate"],
        shift: float = AUGMENTATION_DEFAULTS["shift"],
        shear: float = AUGMENTATION_DEFAULTS["shear"],
        zoom: Sequence[float] = AUGMENTATION_DEFAULTS["zoom"],
        elastic_alpha: float = AUGMENTATION_DEFAULTS["elastic_alpha"],
        elastic_sigma: float = AUGMENTATION_DEFAULTS["elastic_sigma"],
    ):
        """``ValueError`` for a value outside its range in ``AUGMENTATION_PARAMS`` (the sweep file's rules)."""
        values = {"aug_p": aug_p, "rotate": rotate, "shift": shift, "shear": shear, "zoom": zoom}
        values |= {"elastic_alpha": elastic_alpha, "elastic_sigma": elastic_sigma}
        checked = coerce_all(AUGMENTATION_PARAMS, values)
        self.aug_p: float = checked["aug_p"]
        self.rotate = math.radians(checked["rotate"])
        self.shift: float = checked["shift"]
        self.shear: float = checked["shear"]
        low, high = checked["zoom"]
        self.zoom = (low, high)
        self.elastic_alpha: float = checked["elastic_alpha"]
        self.elastic_sigma: float = checked["elastic_sigma"]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> BatchAugmenter:
        """The augmenter a trial's resolved ``params`` describe (they hold every augmentation param)."""
        return cls(**{name: params[name] for name in AUGMENTATION_PARAMS})

    def draw(self, n: int, height: int, width: int, generator: torch.Generator, dtype: torch.dtype) -> Distortion:
        """Random parameters for a batch of ``n`` images, drawn from ``generator`` on its device."""
        device = generator.device
        u = torch.rand((n, 6), generator=generator, device=device, dtype=dtype)
        signed = 2 * u[:, 1:5] - 1
        low, high = self.zoom
        size = torch.tensor([width, height], device=device, dtype=dtype)
        displacement = None
        if self.elastic_alpha > 0:
            shape = (n, 2, height, width)
            noise = torch.rand(shape, generator=generator, device=device, dtype=dtype)
            blur_y = _blur_matrix(height, self.elastic_sigma, device, dtype)
            blur_x = _blur_matrix(width, self.elastic_sigma, device, dtype)
            displacement = blur_y @ (2 * noise - 1) @ blur_x.T * self.elastic_alpha
        return Distortion(
            selected=u[:, 0] < self.aug_p,
            angle=signed[:, 0] * self.rotate,
            shift=signed[:, 1:3] * size * self.shift,
            shear=signed[:, 3] * self.shear,
            zoom=low + (high - low) * u[:, 5],
            displacement=displacement,
        )

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``images`` (N, C, H, W), float, with each sample distorted with probability ``aug_p``."""
        n, _, h, w = images.shape
        return distort(images, self.draw(n, h, w, generator, images.dtype))
