"""A small plain convolutional baseline: three conv + max-pool stages and a linear classifier."""

import itertools

import torch
from torch import nn

from architectures import register


class ConvNet(nn.Module):
    """3x3 conv + ReLU + 2x2 max-pool at ``channels``, 2x and 4x that width (28 -> 14 -> 7 -> 3 on MNIST; any
    image of at least 8x8 pixels)."""

    def __init__(self, channels: int = 16, image_shape: tuple = (1, 28, 28), classes: int = 10):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be at least 1, got {channels}")
        depth, height, width = image_shape
        if min(height, width) < 8:
            raise ValueError(f"images of {height}x{width} pixels are too small for three 2x2 poolings")
        widths = [depth, channels, 2 * channels, 4 * channels]
        stages = [
            module
            for n_in, n_out in itertools.pairwise(widths)
            for module in (nn.Conv2d(n_in, n_out, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        ]
        self.layers = nn.Sequential(
            *stages, nn.Flatten(), nn.Linear(4 * channels * (height // 8) * (width // 8), classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


register("convnet", ConvNet, "Three conv + max-pool stages and a linear classifier")
