"""Affine spatial transformer in front of LeNet-5-3, as in the seed study (276,268 parameters)."""

from collections.abc import Iterator
from itertools import chain

import torch
from torch import nn

from architectures import AUGMENTATION, TRANSFORMER, register
from architectures._init import study_init
from architectures.lenet53 import LeNet53
from architectures.sampling import affine_grid, bilinear_sample


def localisation_net(channels: int, image_shape: tuple) -> nn.Sequential:
    """The study's localisation features: an image -> ``channels`` features (N, channels), its last map averaged
    (3x3 on a 28x28 digit). Images under 18 pixels a side are padded through the convolutions, to keep a map."""
    depth, height, width = image_shape
    pad = min(height, width) < 18

    def side(pixels: int) -> int:
        return pixels // 4 if pad else ((pixels - 6) // 2 - 4) // 2

    if min(side(height), side(width)) < 1:
        raise ValueError(f"images of {height}x{width} pixels are too small for the localisation net (at least 4x4)")
    return nn.Sequential(
        nn.Conv2d(depth, 8, 7, padding=3 * pad, bias=False),
        nn.BatchNorm2d(8),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 10, 5, padding=2 * pad, bias=False),
        nn.BatchNorm2d(10),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        nn.Conv2d(10, channels, 1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.AvgPool2d((side(height), side(width))),
        nn.Flatten(),
    )


class STN(nn.Module):
    """Regresses an affine transform of the input, resamples it, and classifies with LeNet-5-3."""

    def __init__(self, hidden: int = 128, dropout: float = 0.25, image_shape: tuple = (1, 28, 28), classes: int = 10):
        super().__init__()
        self.localisation = localisation_net(128, image_shape)
        self.theta = nn.Linear(128, 6)
        self.classifier = LeNet53(hidden, dropout, image_shape, classes)
        self.apply(study_init)
        nn.init.zeros_(self.theta.weight)
        with torch.no_grad():
            self.theta.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def transformer_parameters(self) -> Iterator[nn.Parameter]:
        """The localisation net's parameters (trained at a reduced learning rate)."""
        return chain(self.localisation.parameters(), self.theta.parameters())

    def sampling_grid(self, x: torch.Tensor) -> torch.Tensor:
        """Where each output pixel of ``x`` (N, C, H, W) samples its input: (N, H, W, 2) in [-1, 1]."""
        theta = self.theta(self.localisation(x)).view(-1, 2, 3)
        with torch.autocast(x.device.type, enabled=False):  # see sampling.bilinear_sample: float32 coordinates
            return affine_grid(theta.to(x.dtype), list(x.shape))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, C, H, W) resampled by its regressed affine transform."""
        grid = self.sampling_grid(x)
        with torch.autocast(x.device.type, enabled=False):
            return bilinear_sample(x, grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.transform(x))


register(
    "stn",
    STN,
    "Affine spatial transformer + LeNet-5-3 (the seed study's STN), trained with "
    "the study's augmentation (aug_p: 0 turns it off)",
    training_params={AUGMENTATION, TRANSFORMER},
)
