"""The augmentation explorer (``/augment``): real MNIST test digits distorted live by the engine's own
:class:`~gridsearch.training.augmentation.BatchAugmenter`, for params checked against the sweep files' table
(``AUGMENTATION_PARAMS``), and the YAML to paste into a sweep file."""

from __future__ import annotations

import math
import threading
from typing import Any, TypedDict

import torch
from flask import Blueprint, Response, render_template, request
from werkzeug.datastructures import MultiDict

from gridsearch.analysis import plots
from gridsearch.spec.params import AUGMENTATION_PARAMS, FloatRange
from gridsearch.training.augmentation import AUGMENTATION_DEFAULTS, BatchAugmenter
from gridsearch.vocabulary import format_value
from gridsearch.web.catalog import RequestError
from gridsearch.web.digits import Digits
from gridsearch.web.figures import png

COLUMNS = 8
"""Digits side by side: the first test images, one per column."""
MAX_ROWS = 8
"""Most rows of independent draws under the originals."""
MAX_SEED = 2**31 - 1
_augmenting = threading.Lock()
"""One augmentation at a time: each is one bounded batch of ``COLUMNS * (MAX_ROWS + 1)`` digits."""


class Slider(TypedDict):
    name: str
    low: float
    high: float
    step: float
    value: Any
    units: str
    rule: str


class AugmentAnswer(TypedDict):
    params: dict[str, Any]
    yaml: str


def sliders() -> list[Slider]:
    """One slider per augmentation param (a zoom range gets two on the page), spanning its allowed range;
    an open end is kept one step inside."""
    found = []
    for name, param in AUGMENTATION_PARAMS.items():
        low, high = float(param.low or 0), float(param.high or 1)
        step = 0.01 if high <= 10 else 0.5
        found.append(
            Slider(
                name=name,
                low=low + step if param.low_open else low,
                high=high - step if param.high_open else high,
                step=step,
                value=AUGMENTATION_DEFAULTS[name],
                units=param.units,
                rule=param.rule,
            )
        )
    return found


def params(query: MultiDict[str, str]) -> dict[str, Any]:
    """The augmentation params of a query (defaults for those left out; ``zoom`` as ``low,high``), each checked
    against the table; 400 for an unknown, malformed or out-of-range one."""
    values: dict[str, Any] = dict(AUGMENTATION_DEFAULTS)
    for name, text in query.items():
        if name in ("seed", "rows", "v"):
            continue
        if name not in AUGMENTATION_PARAMS:
            raise RequestError(
                400, f"unknown augmentation param {name[:40]!r}; known: {', '.join(AUGMENTATION_PARAMS)}"
            )
        try:
            parts = [float(part) for part in text.split(",")]
        except ValueError:
            raise RequestError(400, f"{name} must be a number, got {text[:40]!r}") from None
        if AUGMENTATION_PARAMS[name].type is FloatRange:
            values[name] = parts
        elif len(parts) == 1:
            values[name] = parts[0]
        else:
            raise RequestError(400, f"{name} must be one number, got {text[:40]!r}")
    try:
        BatchAugmenter.from_params(values)  # the engine's own check, by the table
    except ValueError as exc:
        raise RequestError(400, str(exc)) from None
    return {
        name: ([float(v) for v in value] if isinstance(value, list) else float(value)) for name, value in values.items()
    }


def bounded(name: str, low: int, high: int, default: int) -> int:
    text = request.args.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise RequestError(400, f"{name} must be a whole number from {low} to {high}, got {text[:20]!r}")
    return int(text)


def yaml_snippet(values: dict[str, Any]) -> str:
    """The params as lines of a sweep file's ``params:`` section, units as comments."""
    lines = ["params:"]
    for name, value in values.items():
        shown = f"[{', '.join(format_value(v) for v in value)}]" if isinstance(value, list) else format_value(value)
        lines.append(f"  {name}: {shown}".ljust(28) + f"# {AUGMENTATION_PARAMS[name].units}")
    return "\n".join(lines) + "\n"


def blueprint(digits: Digits) -> Blueprint:
    """The explorer's page, its figure and its JSON, on the test ``digits``."""
    augment = Blueprint("augment", __name__)

    @augment.get("/augment")
    def page() -> str:
        try:
            digits.test()
            absent = None
        except RequestError as exc:  # the sliders and the YAML work without the images; the figure does not
            absent = str(exc)
        return render_template(
            "augment.html", title="Augmentation explorer", sliders=sliders(), max_rows=MAX_ROWS, absent=absent
        )

    @augment.get("/api/augment")
    def described() -> AugmentAnswer:
        values = params(request.args)
        return AugmentAnswer(params=values, yaml=yaml_snippet(values))

    @augment.get("/augment.png")
    def figure() -> Response:
        values = params(request.args)
        seed = bounded("seed", 0, MAX_SEED, 0)
        rows = bounded("rows", 1, MAX_ROWS, 3)
        originals = digits.test().images[:COLUMNS].float().div(255)  # (COLUMNS, 1, 28, 28)
        with _augmenting:
            generator = torch.Generator().manual_seed(seed)
            drawn = BatchAugmenter.from_params(values)(originals.repeat(rows, 1, 1, 1), generator)
        images = torch.cat([originals, drawn])[:, 0].clamp(0, 1).numpy()
        chance = f"{values['aug_p']:.0%}" if math.isfinite(values["aug_p"]) else "?"
        title = (
            f"top row: test images 0-{COLUMNS - 1}; below: {rows} draws (seed {seed}), each distorted with p {chance}"
        )
        return png(lambda: plots.tiles(images, title, columns=COLUMNS))

    return augment
