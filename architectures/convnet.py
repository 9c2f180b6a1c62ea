"""A small plain convolutional baseline: three conv + max-pool stages and a linear classifier."""

import itertools

import torch
from torch import nn

from architectures import register


class ConvNet(nn.Module):
    """3x3 conv + ReLU + 2x2 max-pool at ``channels``, 2x and 4x that width (28 -> 14 -> 7 -> 3)."""

    def __init__(self, channels: int = 16):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be at least 1, got {channels}")
        widths = [1, channels, 2 * channels, 4 * channels]
        stages = [
            module
            for n_in, n_out in itertools.pairwise(widths)
            for module in (nn.Conv2d(n_in, n_out, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        ]
        self.layers = nn.Sequential(*stages, nn.Flatten(), nn.Linear(4 * channels * 3 * 3, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


register("convnet", ConvNet, "Three conv + max-pool stages and a linear classifier")
