"""Several objectives: a sweep's objectives and select rule, non-dominated sorting, crowding distance, and the
promotion and selection they decide, as pure functions.

Every function orients the values first, so that lower is better in each objective (``losses``). Non-dominated
sorting peels the fronts as NSGA-II (Deb et al. 2002) defines them; the crowding distance is NSGA-II's, as
Optuna computes it (``optuna.samplers.nsgaii``): per objective, the gap between a point's two neighbours over
the objective's range, infinite at either end. A multi-objective rung of successive halving promotes by front,
then by crowding distance within the front, then by trial key (MO-ASHA, Schmucker et al. 2021): a function of
the recorded values alone, so a resumed sweep makes the same promotions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

RULES = ("best", "smallest_within", "weighted")
"""How ``select:`` picks one trial of the front (see :func:`choose`)."""
TOLERANCE_SCALE = {"val_accuracy": 100.0}
"""A rule's ``tolerance`` is in the units tables show: val accuracy in percentage points, the rest as they are."""
CHUNK = 64
"""Points compared with all the others in one numpy step of the non-dominated sort."""


@dataclass(frozen=True)
class Objective:
    """One of a sweep's ``objectives``: a metric of ``vocabulary.OBJECTIVES`` and which way is better."""

    metric: str
    direction: str

    def record(self) -> dict[str, str]:
        return {"metric": self.metric, "direction": self.direction}


@dataclass(frozen=True)
class Rule:
    """How a sweep with several objectives selects one trial of its front.

    ``best``: the best by ``metric``, ties by the other objectives in order, then by key. ``smallest_within``: of
    the points within ``tolerance`` of the best ``metric``, the best by ``then`` (ties as ``best``).
    ``weighted``: the highest sum of ``weights`` times each objective scaled over the front to [0, 1], 1 best.
    """

    name: str
    metric: str | None = None
    tolerance: float = 0.0
    then: str | None = None
    weights: tuple[tuple[str, float], ...] = ()

    def record(self) -> dict[str, object]:
        record: dict[str, object] = {"rule": self.name}
        if self.name == "weighted":
            record["weights"] = dict(self.weights)
        else:
            record["metric"] = self.metric
        if self.name == "smallest_within":
            record.update(tolerance=self.tolerance, then=self.then)
        return record

    def describe(self) -> str:
        """The rule in words, as the report and the web page say it."""
        if self.name == "best":
            return f"the best {self.metric}"
        if self.name == "smallest_within":
            unit = " points" if self.metric in TOLERANCE_SCALE else ""
            return f"the best {self.then} within {self.tolerance:g}{unit} of the best {self.metric}"
        return "the highest weighted sum of " + ", ".join(f"{w:g} x {name}" for name, w in self.weights)


def objectives_from(record: Mapping[str, Any]) -> tuple[tuple[Objective, ...], Rule | None]:
    """The objectives and rule a sweep's database ``search`` record holds (none for one objective)."""
    objectives = tuple(Objective(item["metric"], item["direction"]) for item in record.get("objectives", []))
    rule = record.get("rule")
    if rule is None:
        return objectives, None
    weights = tuple(rule.get("weights", {}).items())
    return objectives, Rule(rule["rule"], rule.get("metric"), rule.get("tolerance", 0.0), rule.get("then"), weights)


def losses(values: Sequence[Sequence[float]], objectives: Sequence[Objective]) -> np.ndarray:
    """``values`` (a row per point, a column per objective) oriented so that lower is better in every column."""
    signs = np.array([1.0 if objective.direction == "min" else -1.0 for objective in objectives])
    return np.asarray(values, dtype=float).reshape(len(values), len(objectives)) * signs


def dominated(points: np.ndarray, by: np.ndarray) -> np.ndarray:
    """For each row of ``points``, whether some row of ``by`` dominates it: no worse anywhere, better somewhere."""
    result = np.zeros(len(points), dtype=bool)
    for start in range(0, len(points), CHUNK):
        part = points[start : start + CHUNK, None, :]
        beaten = np.all(by <= part, axis=2) & np.any(by < part, axis=2)
        result[start : start + CHUNK] = np.any(beaten, axis=1)
    return result


def ranks(points: np.ndarray, enough: int | None = None) -> np.ndarray:
    """The non-dominated rank of each row of ``points`` (losses): 0 for the front, 1 for the front of the rest,
    and so on; equal rows share a rank. With ``enough``, peeling stops once that many points are ranked, the
    rest sharing the next rank."""
    result = np.full(len(points), -1)
    remaining = np.arange(len(points))
    rank = 0
    while remaining.size:
        if enough is not None and len(points) - remaining.size >= enough:
            result[remaining] = rank
            break
        beaten = dominated(points[remaining], points[remaining])
        result[remaining[~beaten]] = rank
        remaining = remaining[beaten]
        rank += 1
    return result


def crowding(points: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each row of ``points`` among them: per column, the gap between the row's
    neighbours in the column's order (equal values in row order) over the column's range, summed; a row at
    either end gets infinity, a column whose values are all equal adds nothing."""
    distances = np.zeros(len(points))
    for column in points.T:
        order = np.argsort(column, kind="stable")
        ordered = column[order]
        width = ordered[-1] - ordered[0] if len(ordered) else 0.0
        if width == 0:
            continue
        padded = np.concatenate([[-math.inf], ordered, [math.inf]])
        distances[order] += (padded[2:] - padded[:-2]) / width
    return distances


def promotion_order(keys: Sequence[str], points: np.ndarray, enough: int | None = None) -> list[str]:
    """``keys`` best first by their ``points`` (losses): by non-dominated rank, then by crowding distance within
    the rank (larger first, computed with the rank's points in key order), then by key."""
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    keys, points = [keys[i] for i in order], points[order]
    rank = ranks(points, enough)
    distance = np.zeros(len(keys))
    for value in np.unique(rank):
        members = np.flatnonzero(rank == value)
        distance[members] = crowding(points[members])
    return [keys[i] for i in sorted(range(len(keys)), key=lambda i: (rank[i], -distance[i], keys[i]))]


def front(keys: Sequence[str], values: Sequence[Sequence[float]], objectives: Sequence[Objective]) -> list[str]:
    """The keys of the non-dominated points, best first by the first objective (ties: the others, then key)."""
    points = losses(values, objectives)
    on_front = ~dominated(points, points)
    members = [i for i in range(len(keys)) if on_front[i]]
    return [keys[i] for i in sorted(members, key=lambda i: (*points[i], keys[i]))]


def choose(rule: Rule, keys: Sequence[str], values: Sequence[Sequence[float]], objectives: Sequence[Objective]) -> str:
    """The key of the point of ``keys`` (with ``values`` per objective, usually the front) that ``rule`` selects."""
    names = [objective.metric for objective in objectives]
    points = losses(values, objectives)
    first = names.index(rule.metric) if rule.metric else 0
    candidates = list(range(len(keys)))
    if rule.name == "smallest_within":
        assert rule.then is not None
        slack = rule.tolerance / TOLERANCE_SCALE.get(names[first], 1.0)
        candidates = [i for i in candidates if points[i, first] <= points[:, first].min() + slack + 1e-12]
        first = names.index(rule.then)
    order = [first, *(i for i in range(len(names)) if i != first)]
    if rule.name == "weighted":
        low, high = points.min(axis=0), points.max(axis=0)
        span = np.where(high > low, high - low, 1.0)
        scaled = np.where(high > low, (high - points) / span, 1.0)
        weights = np.array([dict(rule.weights).get(name, 0.0) for name in names])
        score = scaled @ weights
        return keys[min(candidates, key=lambda i: (-score[i], *points[i, order], keys[i]))]
    return keys[min(candidates, key=lambda i: (*points[i, order], keys[i]))]
