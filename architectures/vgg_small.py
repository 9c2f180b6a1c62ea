"""A small VGG-style baseline: stacks of two 3x3 conv + BN + ReLU layers between max-pools."""

import torch
from torch import nn

from architectures import register


def vgg_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    """Two 3x3 conv + BN + ReLU layers, then a 2x2 max-pool."""
    layers: list[nn.Module] = []
    for n_in in (in_channels, out_channels):
        layers += [
            nn.Conv2d(n_in, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
    return [*layers, nn.MaxPool2d(2)]


class VGGSmall(nn.Module):
    """Three VGG blocks (``channels``, 2x, 4x; 28 -> 14 -> 7 -> 3 on MNIST; any image of at least 8x8 pixels) and a
    two-layer classifier."""

    def __init__(
        self,
        channels: int = 16,
        hidden: int = 128,
        dropout: float = 0.5,
        image_shape: tuple = (1, 28, 28),
        classes: int = 10,
    ):
        super().__init__()
        if channels < 1 or hidden < 1:
            raise ValueError(f"channels and hidden must be at least 1, got {channels}, {hidden}")
        depth, height, width = image_shape
        if min(height, width) < 8:
            raise ValueError(f"images of {height}x{width} pixels are too small for three 2x2 poolings")
        self.features = nn.Sequential(
            *vgg_block(depth, channels),
            *vgg_block(channels, 2 * channels),
            *vgg_block(2 * channels, 4 * channels),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(4 * channels * (height // 8) * (width // 8), hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


register("vgg_small", VGGSmall, "Small VGG-style CNN: three blocks of two 3x3 convs")
