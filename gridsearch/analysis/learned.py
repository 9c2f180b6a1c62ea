"""What a trained network learned: its first-layer filters, the feature maps of one digit, and what a spatial
transformer does to a batch of digits; and the report section that shows them.

The pure functions take a loaded model (:func:`gridsearch.analysis.trained_models.load_model`) and uint8 images
as the data splits hold them; they return numpy arrays, which ``plots.tiles`` and ``plots.before_after`` draw.
A spatial transformer (a model with a ``transform`` method: stn, tps_stn) classifies the transformed digit with
its ``classifier``: its filters and feature maps are that classifier's, on the digit as the classifier sees it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from gridsearch.analysis import plots
from gridsearch.analysis.test_sets import HeldOutImages
from gridsearch.analysis.trained_models import BestModel, WeightsUnavailable, bf16, inference, load_model
from gridsearch.analysis.webpage import Block, Figure, Folder, Group, Note
from gridsearch.spec.datasets import DATASETS, Dataset
from gridsearch.training.data import Split

if TYPE_CHECKING:
    import torch
    from torch import nn

FEATURE_LAYERS = 2
"""Feature maps are shown after the first this many convolutions of the feature path."""
DIGIT = 0
"""The test image whose feature maps the report shows (the first)."""
TRANSFORMED = 16
"""Test digits the report shows before and after a spatial transformer."""
Transform = Callable[["torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class FeatureMaps:
    """One digit's activations after a convolution of the feature path, with the batch norm and ReLU that follow."""

    layer: int
    """1 for the first convolution, 2 for the second."""
    maps: np.ndarray
    """(channels, height, width) floats."""


@dataclass(frozen=True)
class Transformed:
    """A batch of images before and after a spatial transformer: (N, H, W) floats in [0, 1] (the first channel)."""

    before: np.ndarray
    after: np.ndarray


def transformer(model: nn.Module) -> Transform | None:
    """The model's spatial transformer (its ``transform`` method), or None for a network without one."""
    transform = getattr(model, "transform", None)
    return cast("Transform", transform) if callable(transform) else None


def feature_path(model: nn.Module) -> nn.Sequential | None:
    """The layer sequence holding the classifying network's first convolution (behind the transformer, if
    any), or None for a network without convolutions."""
    from torch import nn

    network = cast(nn.Module, model.classifier) if transformer(model) else model
    return next(
        (
            m
            for m in network.modules()
            if isinstance(m, nn.Sequential) and any(isinstance(c, nn.Conv2d) for c in m.children())
        ),
        None,
    )


def pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, C, H, W), or one (C, H, W), as the float (N, C, H, W) batch in [0, 1] the model trained on."""
    return (images if images.ndim == 4 else images[None]).float().div(255)


def first_layer_filters(model: nn.Module) -> np.ndarray | None:
    """The first convolution's filters as (filters, height, width) weights, or None without convolutions."""
    from torch import nn

    path = feature_path(model)
    if path is None:
        return None
    conv = next(c for c in path.children() if isinstance(c, nn.Conv2d))
    return conv.weight.detach()[:, 0].numpy().copy()


def _layer_ends(path: nn.Sequential) -> list[int]:
    """For each convolution that is a direct child of ``path``: the index just past it and its norm and ReLU."""
    from torch import nn

    children, ends = list(path.children()), []
    for index, child in enumerate(children):
        if isinstance(child, nn.Conv2d):
            end = index + 1
            while end < len(children) and isinstance(children[end], (nn.BatchNorm2d, nn.ReLU)):
                end += 1
            ends.append(end)
    return ends


@inference
def feature_maps(model: nn.Module, digit: torch.Tensor, layers: int = FEATURE_LAYERS) -> list[FeatureMaps]:
    """The feature maps of the uint8 image ``digit`` (C, H, W) after each of the first ``layers`` convolutions
    that sit directly in the feature path (a residual block's inner ones do not: fewer maps then); empty
    without convolutions. A spatial transformer's model is run on its transformed digit."""
    path = feature_path(model)
    if path is None:
        return []
    x = pixels(digit)
    if transform := transformer(model):
        x = transform(x)
    ends, children, maps = _layer_ends(path)[:layers], list(path.children()), []
    start = 0
    for layer, end in enumerate(ends, 1):
        for child in children[start:end]:
            x = child(x)
        maps.append(FeatureMaps(layer, x[0].numpy().copy()))
        start = end
    return maps


@inference
def transformed(model: nn.Module, images: torch.Tensor) -> Transformed | None:
    """uint8 ``images`` (N, C, H, W) before and after the model's spatial transformer; None without one."""
    transform = transformer(model)
    if transform is None:
        return None
    before = pixels(images)
    return Transformed(before[:, 0].numpy().copy(), transform(before)[:, 0].numpy().copy())


@inference
def displacement(model: nn.Module, images: torch.Tensor, bf16: bool) -> float | None:
    """How far the model's spatial transformer moves the pixels of uint8 ``images``: the mean length, in pixels,
    of the difference between its sampling grid and the identity's, over every output pixel of every image (its
    own precision ``bf16``, in batches as ``training.predict`` runs them); None without a transformer."""
    import torch

    from gridsearch.training.predict import BATCH_SIZE

    grid_of = getattr(model, "sampling_grid", None)
    if not callable(grid_of):
        return None
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(images), BATCH_SIZE):
        batch = images[start : start + BATCH_SIZE].float().div_(255)
        with torch.autocast(batch.device.type, torch.bfloat16, enabled=bf16):
            grid = grid_of(batch).float()
        height, width = grid.shape[1:3]
        ys = (2 * torch.arange(height) + 1) / height - 1  # pixel centres, in [-1, 1] (align_corners False)
        xs = (2 * torch.arange(width) + 1) / width - 1
        identity = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
        moved = (grid - identity) * torch.tensor([width / 2, height / 2])  # [-1, 1] -> pixels
        total += float(moved.norm(dim=-1).sum())
        count += moved.shape[0] * height * width
    return total / count


def learned_blocks(
    folder: Folder,
    name: str,
    model: nn.Module,
    test: Split | None,
    dataset: Dataset = DATASETS["mnist"],
    bf16: bool = False,
) -> list[Block]:
    """Filters, feature maps of test image ``DIGIT`` and the transformer's output of sweep ``name``'s ``model``, on
    the ``test`` images of its ``dataset`` (the filters alone without them); ``bf16``: the trial's precision."""
    filters = first_layer_filters(model)
    if filters is None:
        return [Note("No convolutions in this network: no filters or feature maps to show.")]
    blocks: list[Block] = [
        Figure(
            folder.png(plots.tiles(filters, f"{name}: first-layer filters", signed=True), f"filters_{name}"),
            f"The {len(filters)} first-layer convolution filters ({filters.shape[1]}x{filters.shape[2]} weights), "
            "each on its own scale: red positive, blue negative, white zero.",
        )
    ]
    if test is None:
        return blocks
    digit, label = test.images[DIGIT], dataset.classes[int(test.labels[DIGIT])]
    seen = ", transformed as the classifier sees it" if transformer(model) else ""
    for maps in feature_maps(model, digit):
        title = f"{name}: feature maps after convolution {maps.layer}"
        blocks.append(
            Figure(
                folder.png(plots.tiles(maps.maps, title), f"feature_maps_{name}_{maps.layer}"),
                f"The {len(maps.maps)} feature maps after convolution {maps.layer} (with its batch norm and ReLU; "
                f"{maps.maps.shape[1]}x{maps.maps.shape[2]} each) of test image {DIGIT} (a {label}){seen}, "
                "each on its own scale: dark is strong.",
            )
        )
    if (batch := transformed(model, test.images[:TRANSFORMED])) is not None:
        moved = displacement(model, test.images, bf16)
        figure = plots.before_after(batch.before, batch.after, f"{name}: what the spatial transformer does")
        blocks.append(
            Figure(
                folder.png(figure, f"transformer_{name}"),
                f"The first {len(batch.before)} test images (left) and the same images after the model's "
                "spatial transformer (right), which the classifier then reads. Over all "
                f"{len(test):,} test images the transformer moves a pixel by {moved:.2f} pixels on average "
                "(the mean distance between its sampling grid and the identity's).",
            )
        )
    return blocks


def learned_section(folder: Folder, model: BestModel, artifacts: Path, tests: HeldOutImages) -> Group:
    """What the selected trial of one sweep learned, from its best weights in ``artifacts``, on its test images
    (from ``tests``; the filters alone without them); a network without convolutions, or without its weights,
    gets one line saying so (without weights on disk, without importing torch)."""
    try:
        network = load_model(model.trial, artifacts)
    except WeightsUnavailable:
        note = Note(
            f"No best weights for trial {model.trial.key}: its filters and feature maps are left out "
            "(Best model says where they were looked for)."
        )
        return Group(model.name, [note])
    test = tests.for_model(model)
    if test is None:
        tests.leave_out("feature maps and what the transformers do")
    blocks = learned_blocks(
        folder, model.name, network, None if test is None else test.split(), model.dataset, bf16(model.trial)
    )
    return Group(model.name, blocks)
