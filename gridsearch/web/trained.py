"""What a trained trial's network learned (``/trials/KEY/learned``): its first-layer filters, the feature maps
of a chosen test image of its dataset, and for the spatial transformers what the transformer does to a few digits. The
figures are drawn by the report's own functions (``analysis.learned``, ``analysis.plots``) on the inference
pool, which keeps the models loaded."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from flask import Blueprint, Response, render_template, request
from torch import nn

from gridsearch.analysis import learned, plots
from gridsearch.spec.datasets import Dataset, described
from gridsearch.store.models import TrialRow
from gridsearch.training.data import Split
from gridsearch.web.catalog import Catalog, RequestError
from gridsearch.web.digits import Digits
from gridsearch.web.figures import png
from gridsearch.web.inference import Inference

TRANSFORMED = 16
"""Digits shown before and after a spatial transformer: the chosen one and the next ones."""


@dataclass(frozen=True)
class Network:
    """What the learned page shows of a trained network."""

    trial: TrialRow
    filters: tuple[int, int, int] | None
    """Count, height and width of the first-layer filters; None without convolutions."""
    layers: list[tuple[int, int, int]]
    """Per feature-map layer shown: its number, channels and side in pixels."""
    transformer: bool


def describe(trial: TrialRow, model: nn.Module, digit: torch.Tensor | None) -> Network:
    filters = learned.first_layer_filters(model)
    maps = learned.feature_maps(model, digit) if filters is not None and digit is not None else []
    return Network(
        trial,
        None if filters is None else (len(filters), filters.shape[1], filters.shape[2]),
        [(m.layer, m.maps.shape[0], m.maps.shape[1]) for m in maps],
        learned.transformer(model) is not None,
    )


def blueprint(catalog: Catalog, inference: Inference, digits: Digits) -> Blueprint:
    """The learned page of a trained trial and its figures, on ``catalog``'s trials and the test images of each
    trial's dataset in ``digits``."""
    trained = Blueprint("trained", __name__, url_prefix="/trials/<key>")

    def shown(trial: TrialRow, text: str | None) -> tuple[Split, int, Dataset]:
        """The test set of the trial's dataset, the index of the test image ``text`` names in it, and the dataset."""
        dataset = described(trial.config["dataset"])
        return digits.test(dataset), digits.index(text, dataset=dataset), dataset

    @trained.get("/learned")
    def page(key: str) -> str:
        text = request.args.get("digit")

        def look(trial: TrialRow, model: nn.Module) -> tuple[Network, Split | None, int, Dataset]:
            dataset = described(trial.config["dataset"])
            try:
                test, index, dataset = shown(trial, text)
            except RequestError as exc:
                if exc.status != 503:  # the dataset's files are absent: the filters alone
                    raise
                return describe(trial, model, None), None, 0, dataset
            return describe(trial, model, test.images[index]), test, index, dataset

        network, test, index, dataset = inference.with_model(key, look)
        return render_template(
            "learned.html",
            title=f"What trial {key} learned",
            network=network,
            digit=index,
            label=dataset.classes[int(test.labels[index])] if test is not None else "",
            digits=len(test) if test is not None else 0,
            dataset=dataset,
            transformed=TRANSFORMED,
            absent=None if test is not None else digits.absent(dataset),
        )

    def without_convolutions(trial: TrialRow) -> RequestError:
        return RequestError(404, f"trial {trial.key} ({trial.architecture}) has no convolutions: no filters or maps")

    @trained.get("/filters.png")
    def filters(key: str) -> Response:
        def draw(trial: TrialRow, model: nn.Module) -> Response:
            weights = learned.first_layer_filters(model)
            if weights is None:
                raise without_convolutions(trial)
            return png(lambda: plots.tiles(weights, f"{trial.key}: first-layer filters", signed=True))

        return inference.with_model(key, draw)

    @trained.get("/maps.png")
    def maps(key: str) -> Response:
        text, layer = request.args.get("digit"), request.args.get("layer", "1")
        if layer not in ("1", "2"):
            raise RequestError(400, f"layer must be 1 or 2, got {layer[:20]!r}")

        def draw(trial: TrialRow, model: nn.Module) -> Response:
            test, index, dataset = shown(trial, text)
            found = [m for m in learned.feature_maps(model, test.images[index]) if m.layer == int(layer)]
            if not found:
                if learned.first_layer_filters(model) is None:
                    raise without_convolutions(trial)
                raise RequestError(404, f"trial {trial.key} ({trial.architecture}) has no convolution {layer} to show")
            label = dataset.classes[int(test.labels[index])]
            title = f"feature maps after convolution {layer}, test image {index} (a {label})"
            return png(lambda: plots.tiles(found[0].maps, title))

        return inference.with_model(key, draw)

    @trained.get("/transformer.png")
    def transformer(key: str) -> Response:
        text = request.args.get("digit")

        def draw(trial: TrialRow, model: nn.Module) -> Response:
            test, index, _ = shown(trial, text)
            found = learned.transformed(model, test.images[index : index + TRANSFORMED])
            if found is None:
                raise RequestError(404, f"trial {trial.key} ({trial.architecture}) has no spatial transformer")
            title = f"{trial.key}: what the spatial transformer does (test images {index} on)"
            return png(lambda: plots.before_after(found.before, found.after, title))

        return inference.with_model(key, draw)

    return trained
