"""The trainer's sweep parameters: type, default and allowed values of each.

Architecture parameters come from the builders' signatures (see ``architectures``); this module
declares everything the training loop itself reads, so that sweep files can be validated before
anything runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gridsearch.training.augmentation import AUGMENTATION_DEFAULTS


@dataclass(frozen=True)
class Param:
    """One sweep parameter: its type, default and the rule its values must follow."""

    type: type
    default: Any
    rule: str = ""
    """Human-readable rule, shown in errors (e.g. "> 0")."""
    check: Callable[[Any], bool] | None = None
    choices: tuple[str, ...] = ()

    def coerce(self, value: Any) -> Any:
        """``value`` converted to this param's canonical type; ``ValueError`` with a reason if invalid."""
        value = coerce_type(value, self.type)
        if self.choices and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)}, got {value!r}")
        if self.check is not None and not self.check(value):
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


class FloatRange:
    """Marker type for a ``[low, high]`` pair of floats (e.g. a zoom range)."""


RANGE_NAME = "a [low, high] pair of numbers"


def positive(value: float) -> bool:
    return value > 0


def non_negative(value: float) -> bool:
    return value >= 0


TRAINER_PARAMS: dict[str, Param] = {
    "epochs": Param(int, 10, "> 0", positive),
    "batch_size": Param(int, 86, "> 0", positive),
    "optimizer": Param(str, "sgd", choices=("sgd", "adam")),
    "lr": Param(float, 0.01, "> 0", positive),
    "momentum": Param(float, 0.9, "in [0, 1)", lambda v: 0 <= v < 1),
    "nesterov": Param(bool, True),
    "weight_decay": Param(float, 0.0005, ">= 0", non_negative),
    "patience": Param(int, 40, ">= 0", non_negative),
    "lr_gamma": Param(float, 0.78, "in (0, 1]", lambda v: 0 < v <= 1),
    "lr_step": Param(float, 5.0, "> 0", positive),
    "lr_min": Param(float, 0.01, "in [0, 1]", lambda v: 0 <= v <= 1),
    "init_from": Param(str, ""),
}
"""Parameters every architecture accepts; the study's recipe is the default.

``init_from`` warm-starts a trial: a checkpoint path, or ``best:<sweep>`` for the selected trial
of another sweep in the same database; empty for a fresh start.
"""

AUGMENTATION_PARAMS: dict[str, Param] = {
    "aug_p": Param(float, AUGMENTATION_DEFAULTS["aug_p"], "in [0, 1]", lambda v: 0 <= v <= 1),
    "rotate": Param(float, AUGMENTATION_DEFAULTS["rotate"], ">= 0 (degrees)", non_negative),
    "shift": Param(float, AUGMENTATION_DEFAULTS["shift"], "in [0, 1) (fraction of the size)", lambda v: 0 <= v < 1),
    "shear": Param(float, AUGMENTATION_DEFAULTS["shear"], "in [0, 1.5) (radians)", lambda v: 0 <= v < 1.5),
    "zoom": Param(FloatRange, AUGMENTATION_DEFAULTS["zoom"], "a range of positive factors", lambda v: v[0] > 0),
    "elastic_alpha": Param(float, AUGMENTATION_DEFAULTS["elastic_alpha"], ">= 0 (pixels)", non_negative),
    "elastic_sigma": Param(float, AUGMENTATION_DEFAULTS["elastic_sigma"], "> 0 (pixels)", positive),
}
"""Augmentation parameters, accepted by architectures that list them in ``training_params``."""

TRANSFORMER_PARAMS: dict[str, Param] = {
    "transformer_lr_scale": Param(float, 0.01, "in [0, 1]", lambda v: 0 <= v <= 1),
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

OPTIONAL_PARAMS: dict[str, Param] = {**AUGMENTATION_PARAMS, **TRANSFORMER_PARAMS}
"""Trainer parameters an architecture switches on by naming them in ``training_params``."""
