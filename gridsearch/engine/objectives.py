"""Several objectives in a run: each trial's value of every objective, the points a front is made of, and the
selection of one trial of the front (``gridsearch.spec.pareto`` decides; this module reads what it decides from).

A trial's values are those of its best epoch (within a rung's budget, for a rung of successive halving): its
validation accuracy and loss there, its network's parameter count, its mean training seconds per epoch, and its
inference milliseconds per image, measured once per trial by a worker (``gridsearch.training.inference``). A point
is a configuration: with several seeds, the mean of its seeds' values, once every seed is scored. The front is over
every scored trial of the sweep (done, or stopped at a rung: a network of the accuracy it reached).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from statistics import fmean
from typing import Any

from gridsearch.engine.selection import Selection, configurations, evaluate_once, select_best
from gridsearch.spec import halving, pareto
from gridsearch.spec.pareto import Objective
from gridsearch.spec.sweep import Sweep
from gridsearch.store import views
from gridsearch.store.models import TrialRow
from gridsearch.store.records import Evaluation
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import SCORED

INFERENCE = "inference_ms"
"""The objective measured apart from training, and the name of its measurement."""
Measure = Callable[[list[str]], None]
"""Has the inference time of each of these trials measured and stored (a worker job)."""


@dataclass(frozen=True)
class Point:
    """One point a front is made of: a configuration's first trial ``key``, all its trials, and its values."""

    key: str
    keys: tuple[str, ...]
    values: dict[str, float]

    def vector(self, objectives: Sequence[Objective]) -> list[float]:
        return [self.values[objective.metric] for objective in objectives]


def trial_values(
    row: TrialRow,
    objectives: Sequence[Objective],
    inference: Mapping[str, float],
    epochs: Sequence[Mapping[str, Any]] | None = None,
    budget: int | None = None,
) -> dict[str, float] | None:
    """Trial ``row``'s value of each objective: at its best epoch (by its ``select``), of those numbered below
    ``budget`` when given (from its ``epochs``); None when one is missing (not scored, not measured)."""
    if budget is None:
        if row.status not in SCORED or row.val_accuracy is None or not row.epochs_run:
            return None
        best: Mapping[str, Any] = {"val_accuracy": row.val_accuracy, "val_loss": row.val_loss}
        seconds = (row.train_seconds or 0.0) / row.epochs_run
    else:
        within = [epoch for epoch in epochs or [] if epoch["epoch"] < budget]
        found = halving.best_epoch(within, row.config["select"])
        if found is None:
            return None
        best, seconds = found, fmean(epoch["seconds"] for epoch in within)
    known = {**best, "parameters": row.parameter_count, "epoch_seconds": seconds, INFERENCE: inference.get(row.key)}
    values = {objective.metric: known[objective.metric] for objective in objectives}
    return None if any(value is None for value in values.values()) else values


def needs_inference(objectives: Iterable[Objective]) -> bool:
    return any(objective.metric == INFERENCE for objective in objectives)


def measured(storage: Storage, keys: list[str], objectives: Sequence[Objective], measure: Measure) -> dict[str, float]:
    """The inference times of ``keys`` when an objective needs them, the missing ones measured first (``measure``)."""
    if not needs_inference(objectives):
        return {}
    found = storage.measurements(keys, INFERENCE)
    missing = [key for key in keys if key not in found]
    if missing:
        measure(missing)
        found = storage.measurements(keys, INFERENCE)
    return found


def with_values(
    storage: Storage, sweep: Sweep, standings: list[halving.Standing], budget: int | None, measure: Measure
) -> list[halving.Standing]:
    """``standings`` with each scored one's values of ``sweep``'s objectives (within ``budget``, if given)."""
    keys = [standing.key for standing in standings if standing.score is not None]
    rows = storage.trial_rows(keys)
    epochs = storage.faults.call(lambda: views.epochs_by_trial(storage, keys)) if budget is not None else {}
    inference = measured(storage, keys, sweep.objectives, measure)
    result = []
    for standing in standings:
        values = None
        if standing.key in rows:
            values = trial_values(rows[standing.key], sweep.objectives, inference, epochs.get(standing.key), budget)
        vector = None if values is None else tuple(values[objective.metric] for objective in sweep.objectives)
        result.append(replace(standing, values=vector))
    return result


def points(rows: Sequence[TrialRow], objectives: Sequence[Objective], inference: Mapping[str, float]) -> list[Point]:
    """The configurations of ``rows`` whose every trial has a value of each objective, with their mean values."""
    found = []
    for group in configurations(rows):
        values = [trial_values(row, objectives, inference) for row in group]
        if all(value is not None for value in values):
            mean = {o.metric: fmean(value[o.metric] for value in values if value) for o in objectives}
            found.append(Point(group[0].key, tuple(row.key for row in group), mean))
    return found


def front(found: Sequence[Point], objectives: Sequence[Objective]) -> list[Point]:
    """The non-dominated points of ``found``, best first by the first objective."""
    by_key = {point.key: point for point in found}
    keys = pareto.front(list(by_key), [point.vector(objectives) for point in by_key.values()], objectives)
    return [by_key[key] for key in keys]


def sweep_front(storage: Storage, sweep: str, objectives: Sequence[Objective]) -> tuple[list[Point], list[Point]]:
    """Every point of ``sweep`` and its front, from its trials as they are now (what the report and web page draw)."""
    rows = [row for row in storage.trials(sweep) if row.status in SCORED]
    inference = storage.measurements([row.key for row in rows], INFERENCE) if needs_inference(objectives) else {}
    found = points(rows, objectives, inference)
    return found, front(found, objectives)


def select_on_front(
    storage: Storage, sweep: Sweep, test_size: int, evaluate: Callable[[str], Evaluation | None]
) -> Selection:
    """Store ``sweep``'s front, pick one point of it by the sweep's rule and have its trials tested once (as
    ``select_and_test`` does a configuration's); its best seed by ``select`` is the selected trial."""
    assert sweep.rule is not None
    _, on_front = sweep_front(storage, sweep.name, sweep.objectives)
    storage.save_front(sweep.name, [(point.key, point.values) for point in on_front])
    if not on_front:
        storage.set_selected(sweep.name, None)
        return Selection(None, tested=False)
    vectors = [point.vector(sweep.objectives) for point in on_front]
    chosen = pareto.choose(sweep.rule, [point.key for point in on_front], vectors, sweep.objectives)
    trials = storage.trials(sweep.name, next(point.keys for point in on_front if point.key == chosen))
    best = select_best(trials, sweep.select, statuses=SCORED)
    assert best is not None
    if not evaluate_once(storage, trials, test_size, evaluate):
        return Selection(best.key, tested=False)
    storage.set_selected(sweep.name, best.key)
    return Selection(best.key, tested=True)
