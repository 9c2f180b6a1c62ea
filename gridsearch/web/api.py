"""The JSON endpoints under ``/api/``: the sweeps with their trial counts, one sweep's trials, the tested
models and a drawing classified. The pages poll them; their shapes are in docs/webapp.md."""

from __future__ import annotations

import math
from collections import Counter
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, TypedDict, cast

import numpy as np
from flask import Blueprint, Response, request

from gridsearch.analysis.committee import stored_committee
from gridsearch.analysis.effects import grid_effects
from gridsearch.analysis.importance import MIN_TRIALS, sweep_importance
from gridsearch.analysis.report import ReadOnce
from gridsearch.analysis.uncertainty import margin_text, sweep_uncertainty
from gridsearch.spec.datasets import DATASETS
from gridsearch.store import views
from gridsearch.vocabulary import FINISHED, STATUS_ORDER
from gridsearch.web.catalog import Catalog, RequestError, TestedModel
from gridsearch.web.digits import Digits
from gridsearch.web.inference import Inference
from gridsearch.web.live import LiveSweeps, computing
from gridsearch.web.recognizer import feedback


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
    dataset: str | None
    """The title of its dataset when that is not MNIST (``shown_dataset``)."""
    digits: bool
    """Whether it trains on digits, so that the recognizer can use its selected trial."""
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
    position: int
    """Its place in the grid: the order among equals."""
    params: dict[str, object]
    seed: int
    status: str
    rung: int | None
    """Successive halving: the highest rung it reached (None in other sweeps)."""
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
    dataset: str | None
    """The title of its dataset when that is not MNIST (``shown_dataset``)."""
    select: str
    gridded: list[str]
    trials: int
    finished: int
    heatmap: list[str] | None
    selected_trial: str | None
    version: str
    """Changes whenever anything the trials table shows does; ``?since=`` it gets only what changed after it."""
    results_version: str
    """Changes only when what the analysis is computed from does (a trial finished, promoted or tested, the
    selection): the analysis and the figures but the curves carry it, so they are fetched again only then."""


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
    since: str | None
    """The version ``trials`` and ``removed`` are changes since; None: ``trials`` is every trial, best first."""
    trials: list[TrialEntry]
    removed: list[str]
    """Keys of the trials the sweep no longer has since ``since``."""


class ModelsAnswer(TypedDict):
    default: str | None
    models: list[TestedModel]


class ModelAnswer(TypedDict):
    trial: str
    architecture: str
    status: str
    val_accuracy: float | None


class PredictAnswer(TypedDict):
    trial: str
    architecture: str
    digit: int
    probabilities: list[float]
    input: list[list[int]]
    saliency: list[list[float]]
    ink_extent: float
    feedback: str | None


class ImportanceTerm(TypedDict):
    term: str
    kind: str
    share: float | None


class ImportanceSummary(TypedDict):
    exact: bool
    metric: str
    basis: str
    params: list[str]
    shares: list[ImportanceTerm]


class MarginSummary(TypedDict):
    winner: str
    runner_up: str
    val_size: int
    winner_correct: int
    runner_up_correct: int
    text: str


class CommitteeMember(TypedDict):
    key: str
    architecture: str
    params: str
    """What sets it apart from the other members (``lr=0.008``), empty params left out; '' when nothing does."""
    seed: int
    sweeps: list[str]
    val_accuracy: float | None
    test_accuracy: float | None
    """Its own test accuracy, when a sweep selected and tested it."""


class CommitteeSummary(TypedDict):
    name: str
    """The evaluation it is stored as on the selected trial, ``ensemble/top<K>``."""
    candidates: int
    accuracy: float
    errors: int
    samples: int
    members: list[CommitteeMember]
    others: list[str]
    """Sweeps that select the same trial but whose K best differ: it may have been built for one of them."""


class AnalysisAnswer(TypedDict):
    importance: ImportanceSummary | None
    margin: MarginSummary | None
    committee: CommitteeSummary | None
    """The latest committee of the sweep ``evaluate --ensemble`` stored, with its members; None: none yet."""
    notes: dict[str, str]
    """One line for each of importance and margin that is null, saying why."""
    results_version: str
    """The sweep's ``results_version`` it was computed for: it is computed once per such version."""
    computed_at: str
    """When it was computed (UTC, ISO 8601)."""


MAX_JSON_NESTING = 8
"""The deepest lists and objects a request body may nest (a prediction's is one object of strings)."""


def tally(counts: Counter[str]) -> tuple[StatusCounts, int]:
    """The counts of every status (0 where none), and how many of them are finished."""
    return (
        cast(StatusCounts, {status.value: counts[status] for status in STATUS_ORDER}),
        sum(counts[status] for status in FINISHED),
    )


def shown_dataset(name: str | None) -> str | None:
    """What the pages show of a sweep's dataset (``name``; None before it has a trial): its title, none for MNIST."""
    return None if name is None or name == "mnist" else DATASETS[name].title


def blueprint(catalog: Catalog, live: LiveSweeps, inference: Inference, digits: Digits) -> Blueprint:
    """The JSON endpoints on ``catalog`` (the sweeps' trials as ``live`` reads them), classifying drawings with
    ``inference`` (``digits``: the test labels for the margin's paired test)."""
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
                    dataset=shown_dataset(row["dataset"]),
                    digits=DATASETS[row["dataset"]].digits,
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
        """The sweep and its trials; with ``?since=VERSION``, only the trials that changed after that version."""
        row = catalog.sweep(name)
        state = live.state(row)
        since = request.args.get("since")
        delta = live.changed(name, state, since) if since else None
        changed, removed = delta if delta is not None else (live.best_first(row, state), [])
        counts, finished = tally(Counter(trial.status for trial in state.states))
        varying = live.varying(row, state, lambda: grid_effects(storage, row).params)
        test = storage.evaluation(row.selected_trial, "test") if row.selected_trial else None
        return TrialsAnswer(
            sweep=SweepDetail(
                name=row.name,
                architecture=row.architecture,
                dataset=shown_dataset(views.sweep_datasets(storage, [name]).get(name)),
                select=row.select_metric,
                gridded=row.gridded_params,
                **counts,
                trials=len(state.states),
                finished=finished,
                heatmap=varying[:2] if len(varying) >= 2 else None,
                selected_trial=row.selected_trial,
                version=state.version,
                results_version=state.results_version,
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
            since=since if delta is not None else None,
            trials=cast(list[TrialEntry], [clean(entry) for entry in changed]),
            removed=removed,
        )

    @api.get("/sweeps/<name>/analysis")
    def sweep_analysis(name: str) -> AnalysisAnswer | Response:
        """Which gridded param mattered (variance decomposition) and the winner's margin over the runner-up;
        computed once per ``results_version`` of the sweep, in the background: until then, a 202 saying so."""
        version = live.results_version(catalog.sweep(name))
        found = live.ready((name, "analysis", version), lambda: analysis(name, version))
        return computing(version) if found is None else found

    def analysis(name: str, version: str) -> AnalysisAnswer:
        reading = ReadOnce(storage)  # the sweep's trials read once for all that follows
        notes: dict[str, str] = {}
        found = sweep_importance(reading, name)
        importance = None
        if found is None:
            notes["importance"] = (
                f"Nothing to split: fewer than {MIN_TRIALS} scored trials, or no gridded param varies among them."
            )
        else:
            importance = ImportanceSummary(
                exact=found.exact,
                metric=found.metric,
                basis=found.basis,
                params=found.params,
                shares=[
                    ImportanceTerm(term=str(r["term"]), kind=str(r["kind"]), share=finite(r["share"]))
                    for r in found.shares.to_dict("records")
                ],
            )
        uncertainty = sweep_uncertainty(reading, name)
        margin = uncertainty.margin
        if margin is not None and storage.evaluation(margin.runner_up, "test") is not None:
            dataset = reading.trials(name, [margin.winner])[0].config["dataset"]
            with suppress(RequestError):  # both tested: a paired test needs the labels (without the data: unpaired)
                margin = sweep_uncertainty(reading, name, digits.test(dataset).labels.numpy()).margin
        if margin is None:
            notes["margin"] = "No margin yet: it needs a selected trial and a runner-up, two done trials."
        committee = stored_committee(storage, name)
        return AnalysisAnswer(
            importance=importance,
            margin=None
            if margin is None
            else MarginSummary(
                winner=margin.winner,
                runner_up=margin.runner_up,
                val_size=margin.val_size,
                winner_correct=margin.winner_correct,
                runner_up_correct=margin.runner_up_correct,
                text=margin_text(margin),
            ),
            committee=None
            if committee is None
            else CommitteeSummary(
                name=committee.name,
                candidates=committee.candidates,
                accuracy=committee.accuracy,
                errors=committee.errors,
                samples=committee.samples,
                members=[
                    CommitteeMember(
                        key=m.key,
                        architecture=m.architecture,
                        params=m.params,
                        seed=m.seed,
                        sweeps=m.sweeps,
                        val_accuracy=m.val_accuracy,
                        test_accuracy=m.test_accuracy,
                    )
                    for m in committee.members
                ],
                others=committee.others,
            ),
            notes=notes,
            results_version=version,
            computed_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        )

    @api.get("/models/<key>")
    def model(key: str) -> ModelAnswer:
        """A trial the recognizer can use (done, with its weights, trained on digits), or a 4xx saying why it cannot."""
        trial = catalog.recognizer_trial(key)
        return ModelAnswer(
            trial=trial.key, architecture=trial.architecture, status=trial.status, val_accuracy=trial.val_accuracy
        )

    @api.get("/models")
    def models() -> ModelsAnswer:
        found = catalog.tested_models()
        return ModelsAnswer(default=found[0]["trial"] if found else None, models=found)

    @api.post("/predict")
    def predict() -> PredictAnswer:
        try:
            body = request.get_json(force=True, silent=True)
        except RecursionError:  # silent covers malformed JSON only, not JSON nested past Python's stack
            body = None
            too_deep = True
        else:  # whether it parses depends on the recursion limit; the depth itself does not
            too_deep = nesting(body) > MAX_JSON_NESTING
        if too_deep:
            raise RequestError(400, "the body is JSON nested too deeply; expected a flat object")
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
            ink_extent=round(prediction.ink_extent, 4),
            feedback=feedback(prediction.ink_extent, float(result.probabilities.max())),
        )

    return api


def nesting(value: object) -> int:
    """How deeply JSON ``value`` nests lists and objects (a scalar: 0), counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def finite(value: object) -> float | None:
    """A float for JSON: None for NaN or a missing value."""
    number = float(cast(float, value)) if value is not None else float("nan")
    return number if math.isfinite(number) else None


def clean(entry: dict[str, Any]) -> dict[str, Any]:
    """A trial entry for JSON: NaN scores (a diverged trial) as null."""
    return {
        name: None if isinstance(value, float) and not math.isfinite(value) else value for name, value in entry.items()
    }
