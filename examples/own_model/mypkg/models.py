"""A small CNN of one's own: a plain ``nn.Module`` whose keyword parameters are the sweep's params."""

import torch
from torch import nn


class SmallNet(nn.Module):
    """Two 3x3 convolutions (``width`` and ``2 * width`` channels, each then 2x2 max-pooled), dropout, a linear
    classifier; for 28x28 single-channel images and 10 classes."""

    def __init__(self, width: int = 8, dropout: float = 0.1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width * 7 * 7, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
