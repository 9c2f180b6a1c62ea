"""A small multilayer perceptron baseline (784-128-64-10)."""

import torch
from torch import nn

from architectures import register


class MLP(nn.Module):
    """Two ReLU hidden layers of 128 and 64 units on the flattened 28x28 image."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


register("mlp", MLP, "Multilayer perceptron 784-128-64-10 (ReLU)")
