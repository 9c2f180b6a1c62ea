"""Reading a sweep file's ``objectives`` and the ``select`` rule that goes with them; errors name the file's line.

One objective is today's ``select``: a sweep that lists one is the sweep that selects by that metric (with several
seeds: by their mean), with the same trial keys. Several make a front: each point is scored by every objective,
the front is stored and ``select`` names the rule that picks one trial of it (``gridsearch.spec.pareto``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from gridsearch.spec.document import Document, Location, suggest
from gridsearch.spec.pareto import RULES, Objective, Rule
from gridsearch.spec.search import Search
from gridsearch.vocabulary import METRICS, OBJECTIVES

OBJECTIVE_KEYS = ("metric", "direction")
RULE_KEYS = {"best": ("metric",), "smallest_within": ("metric", "tolerance", "then"), "weighted": ("weights",)}
"""The keys each ``select: {rule: ...}`` takes besides ``rule``."""


@dataclass(frozen=True)
class Selecting:
    """What ``objectives`` and ``select`` say: the metric each trial keeps its best epoch by (part of its key),
    whether configurations are scored by the mean over their seeds, and with several objectives those and the rule."""

    select: str
    over_seeds: str | None
    objectives: tuple[Objective, ...] = ()
    rule: Rule | None = None

    def sweep_fields(self) -> dict[str, Any]:
        """As :class:`~gridsearch.spec.sweep.Sweep` takes them."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


def read_objectives(document: Document, search: Search, seeds: int) -> Selecting:
    """The sweep's ``objectives`` (a non-empty list of ``{metric, direction}``) and its ``select`` rule."""
    at: Location = ("objectives",)
    items = document.data["objectives"]
    if not isinstance(items, list) or not items:
        raise document.fail(at, "must be a list of {metric, direction}, e.g. [{metric: val_accuracy, direction: max}]")
    objectives = [_objective(document, (*at, index), item) for index, item in enumerate(items)]
    names = [objective.metric for objective in objectives]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise document.fail((*at, index, "metric"), f"{name} is listed twice")
    trained = [name for name in names if name in METRICS]
    if not trained:
        raise document.fail(
            at, f"needs a validation metric ({' or '.join(METRICS)}): the others do not depend on training"
        )
    if search.describes_rungs and seeds > 1:
        raise document.fail(
            ("seeds",),
            f"objectives score a configuration by the mean over its seeds, but {search.strategy} promotes single "
            "trials: give one seed",
        )
    over_seeds = "mean" if seeds > 1 else None
    if len(objectives) == 1:
        if "select" in document.data:
            _rule(document, objectives)  # checked, though one objective needs no rule
        return Selecting(trained[0], over_seeds)
    if search.strategy == "gp":
        raise document.fail(("search", "strategy"), "gp searches one objective; use tpe or nsga2 for several")
    rule = _rule(document, objectives) if "select" in document.data else Rule("best", names[0])
    return Selecting(trained[0], over_seeds, tuple(objectives), rule)


def _objective(document: Document, at: Location, item: Any) -> Objective:
    if not isinstance(item, dict):
        raise document.fail(at, "must be a mapping {metric, direction}, e.g. {metric: parameters, direction: min}")
    for key in item:
        if key not in OBJECTIVE_KEYS:
            raise document.fail((*at, key), "unknown key" + suggest(key, OBJECTIVE_KEYS))
    if "metric" not in item:
        raise document.fail(at, f"missing 'metric' (one of {', '.join(OBJECTIVES)})")
    name = document.scalar(item, "metric", str, at=at)
    if name not in OBJECTIVES:
        raise document.fail(
            (*at, "metric"), f"unknown metric {name!r}{suggest(name, OBJECTIVES)} (known: {', '.join(OBJECTIVES)})"
        )
    better = OBJECTIVES[name].direction
    if "direction" not in item:
        raise document.fail(at, f"missing 'direction' (max or min; {name} is better {better})")
    direction = document.scalar(item, "direction", str, at=at)
    if direction not in ("max", "min"):
        raise document.fail((*at, "direction"), f"must be max or min, got {direction!r}")
    if direction != better:
        raise document.fail((*at, "direction"), f"{name} is better {better}: direction must be {better}")
    return Objective(name, direction)


def _rule(document: Document, objectives: list[Objective]) -> Rule:
    """``select: {rule: ..., ...}``: a rule of ``RULES`` naming only objectives of the sweep."""
    at: Location = ("select",)
    value = document.data["select"]
    names = [objective.metric for objective in objectives]
    if not isinstance(value, dict):
        raise document.fail(
            at,
            f"with objectives, select names a rule: {{rule: {' | '.join(RULES)}, ...}}, e.g. {{rule: smallest_within, "
            f"metric: {names[0]}, tolerance: 0.1, then: {names[-1]}}}",
        )
    name = document.scalar(value, "rule", str, None, at)
    if name is None:
        raise document.fail(at, f"missing 'rule' ({', '.join(RULES)})")
    if name not in RULES:
        raise document.fail((*at, "rule"), f"unknown rule {name!r}{suggest(name, RULES)} (known: {', '.join(RULES)})")
    for key in value:
        if key != "rule" and key not in RULE_KEYS[name]:
            users = [rule for rule, keys in RULE_KEYS.items() if key in keys]
            why = f"only used by rule {', '.join(users)}" if users else "unknown key" + suggest(key, RULE_KEYS[name])
            raise document.fail((*at, key), why)

    def objective(key: str, default: str | None = None) -> str:
        chosen = document.scalar(value, key, str, default, at)
        if chosen is None:
            raise document.fail(at, f"rule {name} needs '{key}': one of the objectives ({', '.join(names)})")
        if chosen not in names:
            raise document.fail((*at, key), f"{chosen!r} is not one of the objectives ({', '.join(names)})")
        return chosen

    if name == "weighted":
        return Rule(name, weights=_weights(document, value.get("weights"), names))
    metric = objective("metric", names[0])
    if name == "best":
        return Rule(name, metric)
    if "tolerance" not in value:
        raise document.fail(at, f"rule smallest_within needs 'tolerance': how far from the best {metric} to look")
    tolerance = document.scalar(value, "tolerance", float, at=at)
    if not tolerance >= 0:
        raise document.fail((*at, "tolerance"), f"must be >= 0, got {tolerance}")
    then = objective("then")
    if then == metric:
        raise document.fail((*at, "then"), f"must be another objective than metric ({metric})")
    return Rule(name, metric, tolerance, then)


def _weights(document: Document, weights: Any, names: list[str]) -> tuple[tuple[str, float], ...]:
    at: Location = ("select", "weights")
    if not isinstance(weights, dict) or not weights:
        where = at if weights is not None else ("select",)
        raise document.fail(where, "rule weighted needs 'weights': {objective: weight}, e.g. {val_accuracy: 1}")
    chosen = []
    for key in weights:
        if key not in names:
            raise document.fail((*at, key), f"{key!r} is not one of the objectives ({', '.join(names)})")
        weight = document.scalar(weights, key, float, at=at)
        if not weight >= 0:
            raise document.fail((*at, key), f"must be >= 0, got {weight}")
        chosen.append((str(key), weight))
    if not any(weight > 0 for _, weight in chosen):
        raise document.fail(at, "at least one weight must be above 0")
    return tuple(chosen)
