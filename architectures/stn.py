"""Affine spatial transformer in front of LeNet-5-3, as in the seed study (276,268 parameters)."""

from collections.abc import Iterator
from itertools import chain

import torch
from torch import nn

from architectures import AUGMENTATION, TRANSFORMER, register
from architectures._init import study_init
from architectures.lenet53 import LeNet53
from architectures.sampling import affine_grid, bilinear_sample


def localisation_net(channels: int) -> nn.Sequential:
    """The study's localisation features: 28x28 digit -> ``channels`` features (N, channels)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 7, bias=False),
        nn.BatchNorm2d(8),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 10, 5, bias=False),
        nn.BatchNorm2d(10),
        nn.MaxPool2d(2),
        nn.ReLU(inplace=True),
        nn.Conv2d(10, channels, 1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(3),
        nn.Flatten(),
    )


class STN(nn.Module):
    """Regresses an affine transform of the input, resamples it, and classifies with LeNet-5-3."""

    def __init__(self, hidden: int = 128, dropout: float = 0.25):
        super().__init__()
        self.localisation = localisation_net(128)
        self.theta = nn.Linear(128, 6)
        self.classifier = LeNet53(hidden, dropout)
        self.apply(study_init)
        nn.init.zeros_(self.theta.weight)
        with torch.no_grad():
            self.theta.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def transformer_parameters(self) -> Iterator[nn.Parameter]:
        """The localisation net's parameters (trained at a reduced learning rate)."""
        return chain(self.localisation.parameters(), self.theta.parameters())

    def sampling_grid(self, x: torch.Tensor) -> torch.Tensor:
        """Where each output pixel of ``x`` (N, 1, 28, 28) samples its input: (N, 28, 28, 2) in [-1, 1]."""
        theta = self.theta(self.localisation(x)).view(-1, 2, 3)
        with torch.autocast(x.device.type, enabled=False):  # see sampling.bilinear_sample: float32 coordinates
            return affine_grid(theta.to(x.dtype), list(x.shape))

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (N, 1, 28, 28) resampled by its regressed affine transform."""
        grid = self.sampling_grid(x)
        with torch.autocast(x.device.type, enabled=False):
            return bilinear_sample(x, grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.transform(x))


register(
    "stn",
    STN,
    "Affine spatial transformer + LeNet-5-3 (the seed study's STN), trained with "
    "the study's augmentation (aug_p: 0 turns it off)",
    training_params={AUGMENTATION, TRANSFORMER},
)
