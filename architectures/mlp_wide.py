"""A wider multilayer perceptron baseline (784-512-256-128-10 on MNIST; its input and output fit any dataset) with
dropout."""

import itertools
import math

import torch
from torch import nn

from architectures import register


class WideMLP(nn.Module):
    """Three ReLU hidden layers of 512, 256 and 128 units, each followed by dropout."""

    def __init__(self, dropout: float = 0.2, image_shape: tuple = (1, 28, 28), classes: int = 10):
        super().__init__()
        widths = [math.prod(image_shape), 512, 256, 128]
        hidden = [
            module
            for n_in, n_out in itertools.pairwise(widths)
            for module in (nn.Linear(n_in, n_out), nn.ReLU(inplace=True), nn.Dropout(dropout))
        ]
        self.layers = nn.Sequential(nn.Flatten(), *hidden, nn.Linear(128, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


register("mlp_wide", WideMLP, "Multilayer perceptron 784-512-256-128-10 (ReLU, dropout)")
