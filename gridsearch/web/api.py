"""The JSON endpoints under ``/api/``: the sweeps with their trial counts, one sweep's trials, the tested
models and a drawing classified. The pages poll them; their shapes are in README ("Web app")."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any, TypedDict, cast

import numpy as np
from flask import Blueprint, request

from gridsearch.analysis.effects import grid_effects
from gridsearch.store import views
from gridsearch.vocabulary import FINISHED, STATUS_ORDER
from gridsearch.web.catalog import Catalog, RequestError, TestedModel
from gridsearch.web.inference import Inference


class StatusCounts(TypedDict):
    """Trials of a sweep by status, one key per ``TrialStatus``."""

    done: int
    stopped: int
    running: int
    failed: int
    timeout: int
    interrupted: int
    pending: int


class SweepSummary(StatusCounts):
    name: str
    architecture: str
    trials: int
    finished: int
    progress: float
    select: str | None
    best: float | None
    selected_trial: str | None


class SweepsAnswer(TypedDict):
    database: str
    sweeps: list[SweepSummary]


class TrialEntry(TypedDict):
    key: str
    params: dict[str, object]
    seed: int
    status: str
    epochs_run: int
    epochs: int
    best_epoch: int | None
    val_accuracy: float | None
    val_loss: float | None
    train_seconds: float | None
    error: str | None


class SweepDetail(StatusCounts):
    name: str
    architecture: str
    select: str
    gridded: list[str]
    trials: int
    finished: int
    heatmap: list[str] | None
    selected_trial: str | None
    version: str
    """Changes whenever anything the page shows does: the figures' URLs carry it, so they reload only then."""


class TestResult(TypedDict):
    trial: str
    accuracy: float
    loss: float
    errors: int
    samples: int
    confusion: list[list[int]]


class TrialsAnswer(TypedDict):
    sweep: SweepDetail
    test: TestResult | None
    trials: list[TrialEntry]


class ModelsAnswer(TypedDict):
    default: str | None
    models: list[TestedModel]


class PredictAnswer(TypedDict):
    trial: str
    architecture: str
    digit: int
    probabilities: list[float]
    input: list[list[int]]
    saliency: list[list[float]]


def tally(counts: Counter[str]) -> tuple[StatusCounts, int]:
    """The counts of every status (0 where none), and how many of them are finished."""
    return (
        cast(StatusCounts, {status.value: counts[status] for status in STATUS_ORDER}),
        sum(counts[status] for status in FINISHED),
    )


def blueprint(catalog: Catalog, inference: Inference) -> Blueprint:
    """The JSON endpoints on ``catalog``, classifying drawings with ``inference``."""
    api = Blueprint("api", __name__, url_prefix="/api")
    storage = catalog.storage

    @api.get("/sweeps")
    def sweeps() -> SweepsAnswer:
        best = views.best_scores(storage)
        summaries = []
        for row in views.status_table(storage).to_dict("records"):
            counts, finished = tally(Counter({status.value: int(row[status.value]) for status in STATUS_ORDER}))
            select, score = best.get(row["sweep"], (None, None))
            trials = int(row["trials"])
            summaries.append(
                SweepSummary(
                    name=row["sweep"],
                    architecture=row["architecture"],
                    **counts,
                    trials=trials,
                    finished=finished,
                    progress=finished / trials if trials else 0.0,
                    select=select,
                    best=score,
                    selected_trial=row["selected"] if isinstance(row["selected"], str) else None,  # NaN: none
                )
            )
        return SweepsAnswer(database=catalog.database, sweeps=summaries)

    @api.get("/sweeps/<name>/trials")
    def sweep_trials(name: str) -> TrialsAnswer:
        row = catalog.sweep(name)
        table = views.trials_table(storage, name)
        planned = {trial.key: trial.config["params"]["epochs"] for trial in storage.trials(name)}
        records = json.loads(table.to_json(orient="records"))  # NaN -> null
        trials = [trial_entry(record, row.gridded_params, planned[record["key"]]) for record in records]
        counts, finished = tally(Counter(trial["status"] for trial in trials))
        varying = grid_effects(storage, row).params
        test = storage.evaluation(row.selected_trial, "test") if row.selected_trial else None
        epochs = sum(trial["epochs_run"] for trial in trials)
        return TrialsAnswer(
            sweep=SweepDetail(
                name=row.name,
                architecture=row.architecture,
                select=row.select_metric,
                gridded=row.gridded_params,
                **counts,
                trials=len(trials),
                finished=finished,
                heatmap=varying[:2] if len(varying) >= 2 else None,
                selected_trial=row.selected_trial,
                version=f"{finished}.{epochs}.{row.selected_trial or ''}",
            ),
            test=None
            if test is None
            else TestResult(
                trial=test.trial_key,
                accuracy=test.accuracy,
                loss=test.loss,
                errors=test.errors,
                samples=test.samples,
                confusion=test.confusion,
            ),
            trials=trials,
        )

    @api.get("/models")
    def models() -> ModelsAnswer:
        found = catalog.tested_models()
        return ModelsAnswer(default=found[0]["trial"] if found else None, models=found)

    @api.post("/predict")
    def predict() -> PredictAnswer:
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            raise RequestError(
                400,
                'the body must be a JSON object: {"image": "data:image/png;base64,...", '
                '"trial": "<optional trial key>"}',
            )
        unknown = sorted(set(body) - {"image", "trial"})
        if unknown:
            raise RequestError(400, f"unknown field {unknown[0]!r}; expected image and optionally trial")
        prediction = inference.predict(body.get("image"), body.get("trial"))
        result = prediction.recognition
        return PredictAnswer(
            trial=prediction.trial.key,
            architecture=prediction.trial.architecture,
            digit=result.digit,
            probabilities=[round(float(p), 6) for p in result.probabilities],
            input=prediction.digit.tolist(),
            saliency=np.round(result.saliency, 3).tolist(),
        )

    return api


def trial_entry(record: dict[str, Any], gridded: Iterable[str], epochs: int) -> TrialEntry:
    """One row of a sweep's trials table (read back from JSON) as the trials endpoint lists it."""
    return TrialEntry(
        key=record["key"],
        params={param: record[param] for param in gridded},
        seed=record["seed"],
        status=record["status"],
        epochs_run=record["epochs_run"],
        epochs=epochs,
        best_epoch=record["best_epoch"],
        val_accuracy=record["val_accuracy"],
        val_loss=record["val_loss"],
        train_seconds=record["train_seconds"],
        error=record["error"],
    )
