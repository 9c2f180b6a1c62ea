"""A small CNN of one's own: a plain ``nn.Module`` whose keyword parameters are the sweep's params."""

import torch
from torch import nn


class SmallNet(nn.Module):
    """Two 3x3 convolutions (``width`` and ``2 * width`` channels, each then 2x2 max-pooled), dropout, a linear
    classifier. gridsearch passes the dataset's ``image_shape`` (channels, height, width) and ``classes`` to a
    model that names them, so the same model fits MNIST, USPS's 16x16 or scikit-learn's 8x8 digits."""

    def __init__(self, width: int = 8, dropout: float = 0.1, image_shape: tuple = (1, 28, 28), classes: int = 10):
        super().__init__()
        channels, rows, columns = image_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        features = 2 * width * (rows // 4) * (columns // 4)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(features, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
