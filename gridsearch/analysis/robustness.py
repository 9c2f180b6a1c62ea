"""The robustness suite: "is MNIST solved?" — a trained model on shifted test conditions.

Each condition is stored as an evaluation row of the trial (``robustness/<condition>``, ``usps``,
``sklearn_digits``), with the same columns as the official ``test`` evaluation.

Transformed test images, of any dataset: the first ``test_size`` official test images of the trial's dataset,
scaled to [0, 1], transformed as a whole batch (one ``grid_sample`` for the geometric ones), clipped to [0, 1] and
rounded back to 8 bits like the originals. Random conditions (rotation direction, noise, elastic) draw from a
generator seeded by the condition's name, so the same model and suite always give the same numbers.

Other handwriting, for a model of a digit dataset only: USPS (the 2,007 test digits of ``usps.h5``) and
scikit-learn's bundled ``digits`` (1,797), brought to MNIST's convention as ``PREPROCESSING`` states.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np
import pandas as pd
from matplotlib.figure import Figure as PlotFigure
from sklearn.datasets import load_digits

from gridsearch.analysis import plots, preprocessing
from gridsearch.analysis.test_sets import HeldOutImages
from gridsearch.analysis.trained_models import BestModel, by_dataset, score
from gridsearch.analysis.uncertainty import wilson_intervals
from gridsearch.analysis.webpage import Block, Figure, Folder, Note, table
from gridsearch.spec.datasets import Dataset
from gridsearch.store import views
from gridsearch.store.records import Evaluation
from gridsearch.store.storage import Storage
from gridsearch.training import data
from gridsearch.vocabulary import format_percent

if TYPE_CHECKING:
    import torch
    from torch import nn

SUITE_SEED = 20240
"""Base seed of the random conditions; each condition adds the CRC-32 of its name."""
USPS_NAME = "usps"
DIGITS_NAME = "sklearn_digits"
PREFIX = "robustness/"

Transform = Callable[["torch.Tensor", "torch.Generator"], "torch.Tensor"]
"""A condition's batched transform; torch is imported when a transform runs, not with this module (the report
reads stored robustness evaluations without it)."""


@dataclass(frozen=True)
class Condition:
    """One transformed test set: what a reader sees, and the batched transform of float images."""

    description: str
    transform: Transform


def warp(
    images: torch.Tensor, angle: torch.Tensor, shift: tuple[float, float] = (0.0, 0.0), zoom: float = 1.0
) -> torch.Tensor:
    """Rotate each image by its ``angle`` (radians, counter-clockwise), scale by ``zoom``, move by ``shift`` px."""
    import torch

    from gridsearch.training.augmentation import Distortion, distort

    n = len(images)
    return distort(
        images,
        Distortion(
            selected=torch.ones(n, dtype=torch.bool),
            angle=angle.to(images.dtype),
            shift=torch.tensor(shift, dtype=images.dtype).expand(n, 2),
            shear=torch.zeros(n, dtype=images.dtype),
            zoom=torch.full((n,), zoom, dtype=images.dtype),
            displacement=None,
        ),
    )


def rotation(degrees: float) -> Transform:
    """Rotate each image by ``degrees``, clockwise or counter-clockwise at random (seeded)."""

    def transform(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        import torch

        sign = torch.randint(0, 2, (len(images),), generator=generator) * 2 - 1
        return warp(images, sign * np.radians(degrees))

    return transform


def affine(shift: tuple[float, float] = (0.0, 0.0), zoom: float = 1.0) -> Transform:
    """Scale every image by ``zoom`` about its centre, then move it ``shift`` (x right, y down) pixels."""
    return lambda images, _generator: warp(images, images.new_zeros(len(images)), shift, zoom)


def gaussian_noise(sigma: float) -> Transform:
    """Add independent Gaussian noise of standard deviation ``sigma`` (pixel scale [0, 1])."""

    def transform(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        import torch

        return images + sigma * torch.randn(images.shape, generator=generator, dtype=images.dtype)

    return transform


def dilate(images: torch.Tensor, _generator: torch.Generator) -> torch.Tensor:
    """Grey-level dilation by a 3x3 cross (a 3-tall and a 3-wide max): strokes about two pixels thicker."""
    import torch
    import torch.nn.functional as F

    return torch.maximum(
        F.max_pool2d(images, (3, 1), stride=1, padding=(1, 0)), F.max_pool2d(images, (1, 3), stride=1, padding=(0, 1))
    )


def erode(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Grey-level erosion by a 3x3 cross: strokes about two pixels thinner."""
    return -dilate(-images, generator)


def elastic(alpha: float, sigma: float) -> Transform:
    """Simard et al.'s elastic distortion: uniform [-1, 1] fields smoothed by a Gaussian, times ``alpha`` px."""

    def transform(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        from gridsearch.training.augmentation import BatchAugmenter

        augmenter = BatchAugmenter(
            aug_p=1.0, rotate=0.0, shift=0.0, shear=0.0, zoom=(1.0, 1.0), elastic_alpha=alpha, elastic_sigma=sigma
        )
        return augmenter(images, generator)

    return transform


def invert(images: torch.Tensor, _generator: torch.Generator) -> torch.Tensor:
    """Black digit on white: 1 - pixel."""
    return 1 - images


CONDITIONS: dict[str, Condition] = {
    "clean": Condition("unchanged (the reference)", lambda images, _g: images),
    **{
        f"rotate{angle}": Condition(f"rotated ±{angle}° (direction at random, seeded)", rotation(angle))
        for angle in (15, 30, 45)
    },
    "shift+3+3": Condition("moved 3 px right and 3 px down", affine(shift=(3.0, 3.0))),
    "scale0.75": Condition("shrunk to 75% about the centre", affine(zoom=0.75)),
    "scale1.25": Condition("enlarged to 125% about the centre", affine(zoom=1.25)),
    "noise0.3": Condition("Gaussian noise, σ = 0.3 of the pixel range", gaussian_noise(0.3)),
    "thicker": Condition("thicker strokes (dilation, 3x3 cross)", dilate),
    "thinner": Condition("thinner strokes (erosion, 3x3 cross)", erode),
    "elastic": Condition("elastic distortion, α = 34 px, σ = 4 px", elastic(34.0, 4.0)),
    "inverted": Condition("inverted contrast (black on white)", invert),
}
"""The transformed test-image conditions, stored as ``robustness/<name>``, in report order."""
EXTERNAL = {
    USPS_NAME: "USPS test set (2,007 digits, 16x16), MNIST-style centring",
    DIGITS_NAME: "scikit-learn digits (1,797 digits, 8x8), MNIST-style centring",
}


PREPROCESSING = (
    "USPS (usps.h5 test set, 2,007 digits of 16x16) and scikit-learn's digits (1,797 of 8x8, "
    "grey levels 0-16) are brought to MNIST's convention: each digit is cropped to its pixels "
    "above 10% of its maximum, resized (bilinear, antialiased) so that its longer side is 20 "
    "pixels keeping its aspect ratio, scaled to a brightest pixel of 255, and moved by whole "
    "pixels so that its centre of mass is at pixel (14, 14) of a black 28x28 frame, as MNIST's "
    "are."
)
"""The other handwriting's preprocessing, as the report states it."""
TRANSFORMING = (
    "Transformed test images are clipped to [0, 1] and rounded to 8 bits; noise and elastic fields are seeded by "
    "condition."
)
"""How the conditions transform the test images, as the report states it."""


def descriptions() -> dict[str, str]:
    """Evaluation name -> what the condition is, for every evaluation the suite stores."""
    return {**{PREFIX + name: c.description for name, c in CONDITIONS.items()}, **EXTERNAL}


def condition_seed(name: str) -> int:
    return SUITE_SEED + zlib.crc32(name.encode())


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images clipped to [0, 1] and rounded to 8 bits."""
    import torch

    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


def transformed(name: str, images: torch.Tensor) -> torch.Tensor:
    """The uint8 ``images`` (N, C, H, W) under condition ``name``; the same every call."""
    import torch

    generator = torch.Generator().manual_seed(condition_seed(name))
    return to_uint8(CONDITIONS[name].transform(images.float().div(255), generator))


def mnist_style(images: np.ndarray) -> torch.Tensor:
    """Float digits (N, H, W), ink high, in MNIST's convention as ``PREPROCESSING`` states: uint8 (N, 1, 28, 28)."""
    import torch

    return torch.from_numpy(np.stack([preprocessing.mnist_style(image, threshold=0.1) for image in images]))[:, None]


def usps_folder(explicit: Path | None = None) -> Path:
    """``explicit``, else ``$GRIDSEARCH_USPS``, else ``usps/`` in the data folder (``$GRIDSEARCH_DATA``, else
    ``./data``): never a path that depends on where the package is installed."""
    return Path(explicit or os.environ.get("GRIDSEARCH_USPS") or data.default_data_dir() / "usps")


def load_usps(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """USPS test digits in MNIST's convention and their labels, from ``folder/usps.h5``."""
    import torch

    with h5py.File(folder / "usps.h5", "r") as file:
        data = file["test/data"][:].reshape(-1, 16, 16)
        labels = file["test/target"][:]
    return mnist_style(data), torch.from_numpy(labels.astype(np.int64))


def load_sklearn_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits in MNIST's convention and their labels."""
    import torch

    digits = load_digits()
    return mnist_style(digits.images / 16.0), torch.from_numpy(digits.target.astype(np.int64))


def suite_digest(images: torch.Tensor) -> str:
    """What the conditions' images depend on, as a short digest: the transforms' code (this module and the
    augmentation's), the suite's seeds and the images themselves."""
    from gridsearch.training import augmentation

    digest = hashlib.sha256()
    for module in (sys.modules[__name__], augmentation):
        digest.update(inspect.getsource(module).encode())
    digest.update(f"{SUITE_SEED} {tuple(images.shape)}".encode())
    digest.update(images.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def condition_images(images: torch.Tensor, cache: Path | None = None) -> dict[str, torch.Tensor]:
    """Every condition's uint8 images of ``images`` (N, C, H, W), computed once for all the models that are
    run on them: read from the folder ``cache`` where an earlier run left them (for the same images and
    transforms: ``suite_digest``), else computed and left there (when ``cache`` is writable)."""
    import torch

    path = cache / f"robustness-{suite_digest(images)}.npy" if cache is not None else None
    if path is not None and path.exists():
        stacked = torch.from_numpy(np.load(path, mmap_mode="c"))
    else:
        stacked = torch.stack([transformed(name, images) for name in CONDITIONS])
        if path is not None:
            partial = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
            with contextlib.suppress(OSError):  # a read-only data folder: computed again next time
                path.parent.mkdir(parents=True, exist_ok=True)
                np.save(partial, stacked.numpy())
                os.replace(partial, path)  # atomic: a concurrent run never reads half a file
    return dict(zip(CONDITIONS, stacked))


def result(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, bf16: bool) -> Evaluation:
    """An evaluation row's values for ``model`` on one labelled set, computed as the test evaluation is
    (``trained_models.score``: the trial's precision ``bf16``)."""
    import torch

    started = time.perf_counter()
    scores = score(model, images, labels, bf16)
    predicted = scores.predicted
    classes = scores.probabilities.shape[1]
    confusion = torch.zeros(classes, classes, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    errors = int((predicted != labels).sum())
    return Evaluation(
        samples=len(labels),
        accuracy=1 - errors / len(labels),
        loss=scores.loss,
        errors=errors,
        confusion=confusion.tolist(),
        predictions=predicted.tolist(),
        seconds=time.perf_counter() - started,
    )


def run_suite(
    model: nn.Module,
    bf16: bool,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    usps: Path | None,
    digits: bool = True,
    cache: Path | None = None,
    dataset: str = "mnist",
) -> dict[str, Evaluation]:
    """Evaluation name -> row values for every condition (its images from ``condition_images``, ``cache`` its
    folder); the other handwriting only for a model of a digit dataset (``digits``; not the set it trained on),
    USPS only if ``usps/usps.h5`` exists, each digit made into the model's image size. ``bf16``: the trial's
    precision."""
    results = {
        PREFIX + name: result(model, images, test_labels, bf16)
        for name, images in condition_images(test_images, cache).items()
    }
    sets: dict[str, Callable[[], tuple[torch.Tensor, torch.Tensor]]] = {}
    if digits and usps is not None and (usps / "usps.h5").exists():
        sets[USPS_NAME] = lambda: load_usps(usps)
    if digits:
        sets[DIGITS_NAME] = load_sklearn_digits
    size = (int(test_images.shape[-2]), int(test_images.shape[-1]))
    for name, load in sets.items():
        if name == dataset:
            continue
        started = time.perf_counter()
        images, labels = load()
        if tuple(images.shape[-2:]) != size:
            import torch

            images = torch.from_numpy(np.stack([preprocessing.at_size(i, size) for i in images[:, 0].numpy()]))[:, None]
        results[name] = result(model, images, labels, bf16)
        results[name]["seconds"] = time.perf_counter() - started  # the loading included
    return results


# -- in the report -------------------------------------------------------------------------------------


def robustness_table(storage: Storage, models: list[BestModel]) -> pd.DataFrame:
    """Robustness accuracies of the best models: one row per condition; per sweep its accuracy, samples and the
    Wilson 95% interval of the accuracy (``<sweep>_ci95_low``, ``<sweep>_ci95_high``)."""
    evaluations = views.evaluations(storage, [m.trial.key for m in models])
    known = descriptions()
    evaluations = evaluations[evaluations["name"].isin(known)]
    by_key = {m.trial.key: m.name for m in models}
    frame = pd.DataFrame({"condition": list(known), "description": list(known.values())})
    for key, group in evaluations.groupby("trial_key"):
        column, name = group.set_index("name"), by_key[key]
        frame[name] = frame["condition"].map(column["accuracy"])
        frame[f"{name}_samples"] = frame["condition"].map(column["samples"])
        errors = frame["condition"].map(column["errors"])
        scored = frame[name].notna()
        low, high = wilson_intervals(
            (frame[f"{name}_samples"] - errors)[scored].to_numpy(dtype=int),
            frame[f"{name}_samples"][scored].to_numpy(dtype=int),
        )
        frame.loc[scored, f"{name}_ci95_low"], frame.loc[scored, f"{name}_ci95_high"] = low, high
    present = [m.name for m in models if m.name in frame]
    return frame.dropna(subset=present, how="all").reset_index(drop=True) if present else frame.iloc[:0]


def condition_examples(dataset: Dataset, images: torch.Tensor, count: int = 10) -> PlotFigure:
    """The first ``count`` of ``dataset``'s test ``images`` under each condition, one row per condition."""
    rows = [transformed(name, images[:count]).numpy() for name in CONDITIONS]
    captions = [name if index == 0 else "" for name in CONDITIONS for index in range(count)]
    return plots.image_grid(
        np.concatenate(rows),
        captions,
        [False] * len(captions),
        f"The conditions on the first {dataset.title} test images (one row each)",
        columns=count,
    )


def with_interval(frame: pd.DataFrame, name: str) -> pd.Series:
    """Sweep ``name``'s accuracies with their Wilson intervals, as the page shows them: ``99.56% [99.41, 99.68]``."""
    return pd.Series(
        [
            "" if pd.isna(a) else f"{format_percent(a)} [{100 * low:.2f}, {100 * high:.2f}]"
            for a, low, high in zip(frame[name], frame[f"{name}_ci95_low"], frame[f"{name}_ci95_high"])
        ],
        index=frame.index,
    )


def robustness_section(folder: Folder, storage: Storage, models: list[BestModel], tests: HeldOutImages) -> list[Block]:
    """The stored robustness evaluations of the best models: a heatmap, a table with Wilson intervals and the
    conditions drawn on the test images of each dataset ``tests`` has."""
    frame = robustness_table(storage, models)
    if frame.empty:
        return [Note("No robustness evaluations yet: run `python -m gridsearch evaluate SWEEP --suite robustness`.")]
    evaluated = [m for m in models if m.name in frame]
    present = [m.name for m in evaluated]
    chart = frame.assign(condition=frame["condition"].str.removeprefix(PREFIX)).set_index("condition")[present]
    chart.columns.name = "sweep"
    others = [m for m in evaluated if not m.dataset.digits]
    shown = frame[["condition"]].assign(**{name: with_interval(frame, name) for name in present})
    blocks: list[Block] = [
        Figure(
            folder.png(plots.heatmap(chart, "Accuracy under shifted conditions", "test accuracy"), "robustness"),
            "Accuracy of each best model on its dataset's transformed test images"
            + (" and on other handwriting" if len(others) < len(evaluated) else "")
            + " (blank: not run for that model).",
        ),
        table(shown, folder.csv(frame, "robustness")),
        Note("Each accuracy with its Wilson score 95% interval, in percent (the CSV has the samples and bounds)."),
    ]
    if others:
        trained = ", ".join(sorted({m.dataset.title for m in others}))
        blocks.append(
            Note(
                f"USPS and scikit-learn's digits skipped for {', '.join(m.name for m in others)}: trained on "
                f"{trained}, not handwritten digits, which other handwriting does not test."
            )
        )
    if len(others) < len(evaluated):
        blocks.append(Note(PREPROCESSING))
    blocks.append(Note(TRANSFORMING))
    for alike in by_dataset(evaluated).values():
        known = alike[0].dataset
        if (images := tests.images(known.name)) is None:
            tests.leave_out("the robustness conditions drawn")
            continue
        stem = "robustness_examples" if known.name == "mnist" else f"robustness_examples_{known.name}"
        blocks.append(
            Figure(
                folder.png(condition_examples(known, images.split().images), stem),
                f"What each condition does to {known.title} test images (random conditions as seeded in the "
                "suite). Like every figure here, ink is drawn dark on light, so inverted images show light on dark.",
            )
        )
    return blocks
