"""A small multilayer perceptron baseline (784-128-64-10 on MNIST; its input and output fit any dataset)."""

import math

import torch
from torch import nn

from architectures import register


class MLP(nn.Module):
    """Two ReLU hidden layers of 128 and 64 units on the flattened image."""

    def __init__(self, image_shape: tuple = (1, 28, 28), classes: int = 10):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(image_shape), 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


register("mlp", MLP, "Multilayer perceptron 784-128-64-10 (ReLU)")
