"""The trainer's sweep parameters: type, default, allowed range and units of each.

Architecture parameters come from the builders' signatures (see ``architectures``); this module
declares everything the trainer itself reads, so that sweep files are validated before anything
runs, and so that the trainer checks its own arguments by the same table (``BatchAugmenter`` does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gridsearch.vocabulary import as_written, format_value


class FloatRange:
    """Marker type for a ``[low, high]`` pair of floats (e.g. a zoom range)."""


RANGE_NAME = "a [low, high] pair of numbers"


@dataclass(frozen=True)
class Param:
    """One sweep parameter: its type, default and allowed values.

    Numbers (both ends of a ``FloatRange``) must lie between ``low`` and ``high`` where given.
    """

    type: type
    default: Any
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """Whether ``low`` itself is excluded."""
    high_open: bool = False
    """Whether ``high`` itself is excluded."""
    choices: tuple[str, ...] = ()
    units: str = ""
    """What the numbers measure, shown with the rule (e.g. "degrees")."""

    @property
    def rule(self) -> str:
        """The allowed numbers in words, as errors show them: "> 0", "in [0, 1) (fraction of the size)"."""
        low, high = self.low, self.high
        if low is not None and high is not None:
            rule = f"in {'(' if self.low_open else '['}{format_value(low)}, {format_value(high)}"
            rule += ")" if self.high_open else "]"
        elif low is not None:
            rule = f"{'>' if self.low_open else '>='} {format_value(low)}"
        elif high is not None:
            rule = f"{'<' if self.high_open else '<='} {format_value(high)}"
        else:
            rule = "any number"
        if self.type is FloatRange:
            rule = f"a [low, high] pair {rule}"
        return f"{rule} ({self.units})" if self.units else rule

    def admits(self, number: float) -> bool:
        """Whether ``number`` lies within the bounds."""
        if self.low is not None and (number <= self.low if self.low_open else number < self.low):
            return False
        return self.high is None or (number < self.high if self.high_open else number <= self.high)

    def coerce(self, value: Any) -> Any:
        """``value`` converted to this param's canonical type; ``ValueError`` with a reason if invalid."""
        value = coerce_type(value, self.type)
        if self.choices and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}, got {value!r}")
        numbers = value if self.type is FloatRange else [value] if self.type in (int, float) else []
        if not all(self.admits(number) for number in numbers):
            raise ValueError(f"must be {self.rule}, got {value!r}")
        return value


def coerce_type(value: Any, expected: type) -> Any:
    """``value`` as ``expected`` (int, float, bool, str or a (low, high) float range); ``ValueError`` if not."""
    name = RANGE_NAME if expected is FloatRange else expected.__name__
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError(f"must be a finite number, got {value!r}")
            return float(value)
    elif expected is str:
        if isinstance(value, str):
            return value
    elif expected is FloatRange and isinstance(value, (list, tuple)) and len(value) == 2:
        low, high = (coerce_type(v, float) for v in value)
        if low <= high:
            return [low, high]
    raise ValueError(f"must be {name}, got {type(value).__name__} {value!r}")


def coerce_all(table: Mapping[str, Param], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` coerced by their definitions in ``table``; ``ValueError`` naming the first bad one."""
    coerced = {}
    for name, value in values.items():
        try:
            coerced[name] = table[name].coerce(value)
        except ValueError as exc:
            raise ValueError(f"{name} {exc}") from None
    return coerced


TRAINER_PARAMS: dict[str, Param] = {
    "epochs": Param(int, 10, low=0, low_open=True),
    "batch_size": Param(int, 86, low=0, low_open=True),
    "optimizer": Param(str, "sgd", choices=("sgd", "adam")),
    "lr": Param(float, 0.01, low=0, low_open=True),
    "momentum": Param(float, 0.9, low=0, high=1, high_open=True),
    "nesterov": Param(bool, True),
    "weight_decay": Param(float, 0.0005, low=0),
    "patience": Param(int, 40, low=0),
    "lr_gamma": Param(float, 0.78, low=0, high=1, low_open=True),
    "lr_step": Param(float, 5.0, low=0, low_open=True),
    "lr_min": Param(float, 0.01, low=0, high=1),
    "init_from": Param(str, ""),
}
"""Parameters every architecture accepts; the study's recipe is the default.

``init_from`` warm-starts a trial: a checkpoint path, or ``best:<sweep>`` for the selected trial
of another sweep in the same database; empty for a fresh start.
"""

OPTIMIZER_ONLY: dict[str, str] = {"momentum": "sgd", "nesterov": "sgd"}
"""Trainer params that one optimizer alone uses (Adam has neither momentum nor a Nesterov switch): a trial of
another optimizer still has them in its config (and its key), but they are not shown."""


def applicable(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` of a resolved trial as people read them: those its optimizer uses (an Adam trial lists no
    ``momentum`` nor ``nesterov``), each as written (``vocabulary.as_written``)."""
    optimizer = params.get("optimizer")
    return {
        name: as_written(value)
        for name, value in params.items()
        if name not in OPTIMIZER_ONLY or optimizer is None or OPTIMIZER_ONLY[name] == optimizer
    }


AUGMENTATION_PARAMS: dict[str, Param] = {
    "aug_p": Param(float, 0.5, low=0, high=1, units="probability per sample"),
    "rotate": Param(float, 7.5, low=0, high=180, units="degrees"),
    "shift": Param(float, 0.1, low=0, high=1, high_open=True, units="fraction of the size"),
    "shear": Param(float, 0.1, low=0, high=1.5, high_open=True, units="radians"),
    "zoom": Param(FloatRange, [0.95, 1.05], low=0.1, high=10, units="magnification factors"),
    "elastic_alpha": Param(float, 5.5, low=0, high=1000, units="pixels"),
    "elastic_sigma": Param(float, 35.0, low=0, high=1000, low_open=True, units="pixels"),
}
"""The keyword arguments of ``gridsearch.training.augmentation.BatchAugmenter`` (see its module for what
each does), with the study's values as defaults. The augmenter checks its arguments by this table, so a
sweep file accepts exactly what it accepts. The bounds keep every float32 sampling grid finite."""

TRANSFORMER_PARAMS: dict[str, Param] = {
    "transformer_lr_scale": Param(float, 0.01, low=0, high=1),
}
"""Spatial transformers: their localisation net learns at ``lr * transformer_lr_scale``. At the
study's learning rates with a full-rate transformer, the regressed transform runs off the image
within an epoch (localisation features have norm ~5); a scale of 0.01 keeps it stable."""

SPEED_PARAMS: dict[str, Param] = {
    "amp": Param(str, "off", choices=("off", "bf16")),
    "channels_last": Param(bool, False),
}
"""Accepted by every architecture, mostly for GPUs: ``amp: bf16`` runs forward passes under bfloat16
autocast, ``channels_last`` stores conv weights and activations NHWC. They change the numbers, so
they belong to the trial key, but only when set: at their defaults they are left out of the
resolved config, so the keys of trials that never used them stay as they were."""
