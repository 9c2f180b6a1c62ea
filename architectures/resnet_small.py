"""A small residual baseline built from torchvision's ResNet basic block."""

import torch
from torch import nn

from architectures import register


def stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> list[nn.Module]:
    """``blocks`` basic blocks; the first changes width and stride through a 1x1 projection."""
    # Imported here, not at the top: importing torchvision takes ~3 s, which every worker would pay.
    from torchvision.models.resnet import BasicBlock, conv1x1

    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    first = BasicBlock(in_channels, out_channels, stride, downsample)
    return [first, *(BasicBlock(out_channels, out_channels) for _ in range(blocks - 1))]


class GlobalAveragePool(nn.Module):
    """``AdaptiveAvgPool2d(1)`` as a mean, (N, C, H, W) -> (N, C, 1, 1): its backward has a deterministic CUDA
    kernel, where ``AdaptiveAvgPool2d``'s raises under ``torch.use_deterministic_algorithms``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


class ResNetSmall(nn.Module):
    """3x3 stem, three stages (``channels``, 2x, 4x at 28, 14, 7 pixels on MNIST), global pool, linear."""

    def __init__(self, channels: int = 16, blocks: int = 1, image_shape: tuple = (1, 28, 28), classes: int = 10):
        super().__init__()
        if channels < 1 or blocks < 1:
            raise ValueError(f"channels and blocks must be at least 1, got {channels}, {blocks}")
        self.layers = nn.Sequential(
            nn.Conv2d(image_shape[0], channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            *stage(channels, channels, blocks, 1),
            *stage(channels, 2 * channels, blocks, 2),
            *stage(2 * channels, 4 * channels, blocks, 2),
            GlobalAveragePool(),
            nn.Flatten(),
            nn.Linear(4 * channels, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


register("resnet_small", ResNetSmall, "Small ResNet: stem and three stages of basic blocks")
