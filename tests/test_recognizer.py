"""The recognizer's occlusion map: it points at the pixels a model uses, for every registered architecture."""

import numpy as np
import pytest
import torch
from torch import nn

import architectures
from gridsearch.web.recognizer import recognize


def two_bars() -> np.ndarray:
    """A uint8 28x28 image with one bar in the left half and one in the right half."""
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[6:22, 6:9] = 255
    digit[6:22, 19:22] = 255
    return digit


class LeftHalfReader(nn.Module):
    """Logit of class 3 = the ink of the image's left half; every other logit 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 10)
        logits[:, 3] = x[:, 0, :, :14].sum(dim=(1, 2))
        return logits


def test_the_map_shows_the_ink_the_model_reads_and_only_that():
    result = recognize(LeftHalfReader(), two_bars())
    assert result.digit == 3 and result.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert result.saliency.max() == 1.0
    assert result.saliency[6:22, 6:9].mean() > 0.5  # erasing the left bar lowers class 3
    assert result.saliency[:, 16:].max() == 0.0  # the right bar does not matter to this model
    assert result.saliency[0:2].max() == 0.0  # nor the empty rows far from the ink


@pytest.mark.parametrize("name", sorted(architectures.REGISTRY))
def test_every_architecture_gets_a_map(name):
    torch.manual_seed(0)
    model = architectures.get(name).build().eval()
    result = recognize(model, two_bars())
    assert result.probabilities.shape == (10,) and result.saliency.shape == (28, 28)
    assert np.isfinite(result.saliency).all() and result.saliency.min() >= 0 and result.saliency.max() <= 1
    assert result.saliency.max() > 0  # erasing ink changes the answer of every architecture
