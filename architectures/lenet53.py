"""LeNet-5-3: the seed study's baseline convolutional network (271,530 parameters at hidden 128 on MNIST)."""

import torch
from torch import nn

from architectures import register
from architectures._init import study_init


def conv_bn_relu(in_channels: int, out_channels: int, padding: int = 0) -> list[nn.Module]:
    """A bias-free 3x3 convolution followed by batch norm and ReLU."""
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def feature_side(side: int) -> int:
    """The side of LeNet-5-3's feature maps for images of ``side`` pixels (5 for MNIST's 28)."""
    return (side // 2 - 4) // 2


class LeNet53(nn.Module):
    """Two conv-conv-pool blocks (32 and 64 channels) and a two-layer classifier (on 28x28 digits as in the study;
    any image of at least 12x12 pixels)."""

    def __init__(self, hidden: int = 128, dropout: float = 0.25, image_shape: tuple = (1, 28, 28), classes: int = 10):
        super().__init__()
        if hidden < 1:
            raise ValueError(f"hidden must be at least 1, got {hidden}")
        depth, height, width = image_shape
        if min(height, width) < 12:
            raise ValueError(f"images of {height}x{width} pixels are too small for LeNet-5-3 (at least 12x12)")
        self.features = nn.Sequential(
            *conv_bn_relu(depth, 32, padding=2),
            *conv_bn_relu(32, 32),
            nn.MaxPool2d(2),
            *conv_bn_relu(32, 64),
            *conv_bn_relu(64, 64),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(64 * feature_side(height) * feature_side(width), hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden, classes),
        )
        self.apply(study_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


register("lenet53", LeNet53, "LeNet-5-3, the seed study's baseline CNN")
