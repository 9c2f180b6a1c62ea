"""One drawn digit classified by a trained trial, and where the model looks to classify it.

"Where it looks" is an occlusion map (Zeiler and Fergus, 2014): how much erasing each small patch of
the digit lowers the model's confidence in its answer. It needs only forward passes, so it works for
every registered architecture. Input gradients do not: the spatial transformers sample the input with
a detached gather (``architectures/sampling.py``, for deterministic CUDA training), so their input
gradient misses the classifier entirely; a class activation map needs a last convolution followed by
global pooling, which the MLPs lack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gridsearch.training import predict

PATCH = 4
"""Side in pixels of the square erased at each position of the occlusion map."""
STRIDE = 2
"""Pixels between neighbouring positions of the erased square."""
MIN_INK_EXTENT = 0.15
"""A drawing whose ink spans less than this fraction of the pad (the longer side of the ink's bounding box
over the pad's shorter side) is too small to read well: "draw bigger"."""
UNSURE_BELOW = 0.5
"""The model is unsure, "that does not look like a digit", when its top probability is below this."""


def ink_extent(ink: np.ndarray) -> float:
    """The longer side of the bounding box of the ink (pixels above a quarter of the darkest) over the
    drawing's shorter side; 0 without ink."""
    rows = np.flatnonzero(ink.max(1) > ink.max() / 4) if ink.max() > 0 else np.array([])
    columns = np.flatnonzero(ink.max(0) > ink.max() / 4) if ink.max() > 0 else np.array([])
    if len(rows) == 0:
        return 0.0
    return max(rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1) / min(ink.shape)


def feedback(extent: float, top_probability: float) -> str | None:
    """What to tell the person drawing: draw bigger (tiny ink), or the model is unsure; None when neither."""
    if extent < MIN_INK_EXTENT:
        return (
            f"Draw bigger: the ink spans {extent:.0%} of the pad (under {MIN_INK_EXTENT:.0%}), "
            "too little to read as a digit."
        )
    if top_probability < UNSURE_BELOW:
        return (
            f"That does not look like a digit to this model: its best guess has probability {top_probability:.0%} "
            f"(under {UNSURE_BELOW:.0%})."
        )
    return None


@dataclass(frozen=True)
class Recognition:
    """Class probabilities ``(classes,)`` of one digit and its occlusion map ``(H, W)`` in [0, 1] for the top
    class."""

    probabilities: np.ndarray
    saliency: np.ndarray

    @property
    def digit(self) -> int:
        return int(self.probabilities.argmax())


def recognize(model: nn.Module, digit: np.ndarray, bf16: bool = False) -> Recognition:
    """Classify a uint8 ``(H, W)`` MNIST-style digit (``preprocessing.at_size`` of its model's images) with
    ``model`` as the test evaluation would (``training.predict``: scaled to [0, 1], under the trial's precision
    ``bf16``), and map where the model looks for its predicted class (in float32: the map needs the logits'
    resolution, not the answer's)."""
    pixels = torch.from_numpy(np.ascontiguousarray(digit)).view(1, 1, *digit.shape)
    with torch.inference_mode():
        probabilities = predict.logits(model, pixels, bf16).softmax(1)[0].numpy()
    image = pixels.float().div(255)
    return Recognition(probabilities, occlusion(model, image, int(probabilities.argmax())))


@torch.inference_mode()
def occlusion(model: nn.Module, image: torch.Tensor, target: int) -> np.ndarray:
    """For each pixel of ``image`` ``(1, 1, H, W)``: the mean drop of the log-odds of ``target`` when a
    ``PATCH`` x ``PATCH`` square covering it (one every ``STRIDE`` pixels) is erased (set to background),
    scaled to a maximum of 1.

    Only squares holding ink are tried: erasing background changes nothing. Log-odds (the target's
    logit against the log-sum-exp of the others) keep their resolution when the model is certain,
    where probabilities and even log-probabilities round to 1 and 0."""
    height, width = image.shape[-2:]
    corners = [
        (row, column)
        for row in range(0, height - PATCH + 1, STRIDE)
        for column in range(0, width - PATCH + 1, STRIDE)
        if image[0, 0, row : row + PATCH, column : column + PATCH].any()
    ]
    heat, cover = torch.zeros(height, width), torch.zeros(height, width)
    if not corners:
        return heat.numpy()
    erased = image.repeat(len(corners), 1, 1, 1)
    for index, (row, column) in enumerate(corners):
        erased[index, :, row : row + PATCH, column : column + PATCH] = 0
    logits = model(torch.cat([image, erased]))
    others = logits.clone()
    others[:, target] = -torch.inf
    log_odds = logits[:, target] - others.logsumexp(1)
    drops = (log_odds[0] - log_odds[1:]).clamp(min=0)
    for (row, column), drop in zip(corners, drops):
        heat[row : row + PATCH, column : column + PATCH] += drop
        cover[row : row + PATCH, column : column + PATCH] += 1
    heat /= cover.clamp(min=1)
    peak = heat.max()
    return (heat / peak if peak > 0 else heat).numpy()
