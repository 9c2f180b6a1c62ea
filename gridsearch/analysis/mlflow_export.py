"""A sweep exported to MLflow (``gridsearch export SWEEP --to mlflow``): one MLflow run per trial.

Each trial becomes a run of the experiment (default: the sweep's name) named ``<key> <gridded params>``, with
the trial's resolved config as params, its epochs as metrics (step = epoch: ``train_loss``,
``train_accuracy``, ``val_loss``, ``val_accuracy``, ``lr``, ``epoch_seconds``), its best epoch's scores
(``best_val_accuracy``, ``best_val_loss``, ``best_epoch``, ``epochs_run``, ``train_seconds``), its status
(done and stopped: FINISHED; failed and timeout: FAILED; interrupted: KILLED; running: RUNNING; pending:
SCHEDULED; gridsearch's own in the tag ``gridsearch.status``) and, for the sweep's selected trial, its test
evaluation (``test_accuracy``, ``test_loss``, ``test_errors``, ``test_samples``, and the confusion matrix as
the artifact ``test_evaluation.json``).

Exporting again is safe: each run carries the tags ``gridsearch.sweep``, ``gridsearch.trial_key`` and
``gridsearch.digest`` (a hash of everything logged). A trial whose run is already there with the same digest
is left as it is; one that changed since (more epochs, a new status, selected) has its old run deleted (MLflow
keeps deleted runs until ``mlflow gc``) and logged again. The database is only read. ``mlflow`` is an
optional extra, imported only here.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gridsearch.errors import UserError
from gridsearch.spec.config import config_value
from gridsearch.spec.params import applicable
from gridsearch.store import views
from gridsearch.store.models import TrialRow
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import TrialStatus, format_params, format_value

if TYPE_CHECKING:
    from mlflow import MlflowClient

MISSING_PACKAGE = "export --to mlflow needs the mlflow package: pip install 'gridsearch[mlflow]'"
RUN_STATUS = {
    TrialStatus.PENDING: "SCHEDULED",
    TrialStatus.RUNNING: "RUNNING",
    TrialStatus.DONE: "FINISHED",
    TrialStatus.STOPPED: "FINISHED",
    TrialStatus.FAILED: "FAILED",
    TrialStatus.TIMEOUT: "FAILED",
    TrialStatus.INTERRUPTED: "KILLED",
}
"""gridsearch trial status -> MLflow run status."""
EPOCH_METRICS = {
    "train_loss": "train_loss",
    "train_accuracy": "train_accuracy",
    "val_loss": "val_loss",
    "val_accuracy": "val_accuracy",
    "lr": "lr",
    "epoch_seconds": "seconds",
}
"""MLflow metric -> column of ``epochs`` (logged per epoch, step = epoch)."""
TAG_SWEEP, TAG_KEY, TAG_DIGEST = "gridsearch.sweep", "gridsearch.trial_key", "gridsearch.digest"
MAX_ERROR = 5000
"""Characters of a trial's error kept in its tag (MLflow limits tag values)."""


@dataclass
class Export:
    """What one export did: the experiment, and the trials logged for the first time, replaced or unchanged."""

    tracking_uri: str
    experiment: str
    experiment_id: str
    logged: list[str]
    replaced: list[str]
    unchanged: list[str]


@dataclass
class TrialRun:
    """Everything one trial's MLflow run holds, before it is logged."""

    key: str
    name: str
    start_ms: int | None
    end_ms: int | None
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: list[tuple[str, float, int, int]]
    """(name, value, timestamp in ms, step)."""
    artifact: dict[str, Any] | None

    def digest(self) -> str:
        fields = [self.name, self.start_ms, self.end_ms, self.status, self.params, self.tags, self.metrics]
        text = json.dumps([*fields, self.artifact], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def export_to_mlflow(
    storage: Storage, sweep: str, tracking_uri: str | None = None, experiment: str | None = None
) -> Export:
    """Log every trial of ``sweep`` as a run of MLflow ``experiment`` (default: the sweep's name) at
    ``tracking_uri`` (default: MLflow's own, e.g. ``$MLFLOW_TRACKING_URI``); unchanged runs are kept."""
    runs = list(trial_runs(storage, sweep))  # read everything (and fail on a bad sweep) before MLflow starts
    try:
        import mlflow
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise UserError(MISSING_PACKAGE) from None
    name = experiment or sweep
    try:
        client = MlflowClient(tracking_uri)
        uri = tracking_uri or mlflow.get_tracking_uri()
        found = client.get_experiment_by_name(name)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(name)
        existing: dict[str, list[Any]] = {}
        for run in _active_runs(client, experiment_id):
            if run.data.tags.get(TAG_SWEEP) == sweep and TAG_KEY in run.data.tags:
                existing.setdefault(run.data.tags[TAG_KEY], []).append(run)
        outcome = Export(uri, name, experiment_id, [], [], [])
        for trial_run in runs:
            digest = trial_run.digest()
            previous = existing.get(trial_run.key, [])
            if len(previous) == 1 and previous[0].data.tags.get(TAG_DIGEST) == digest:
                outcome.unchanged.append(trial_run.key)
                continue
            for old in previous:
                client.delete_run(old.info.run_id)
            _log(client, experiment_id, trial_run, digest)
            (outcome.replaced if previous else outcome.logged).append(trial_run.key)
    except MlflowException as exc:
        raise UserError(f"mlflow: {exc.message}") from None
    return outcome


def trial_runs(storage: Storage, sweep: str) -> Iterator[TrialRun]:
    """The MLflow run of each trial of ``sweep``, from the database alone, in grid order."""
    row = storage.sweep(sweep)
    trials = storage.trials(sweep)
    epochs = views.epochs(storage, [trial.key for trial in trials])
    test = storage.evaluation(row.selected_trial, "test") if row.selected_trial else None
    show_seed = len({trial.seed for trial in trials}) > 1
    for trial in trials:
        label = format_params(
            [(name, config_value(trial.config, name)) for name in row.gridded_params]
            + ([("seed", trial.seed)] if show_seed else [])
        )
        start_ms = _ms(trial.started_at)
        rows = epochs[epochs["trial_key"] == trial.key].to_dict("records")
        metrics: list[tuple[str, float, int, int]] = []
        elapsed = 0.0
        for epoch in rows:
            elapsed += epoch["seconds"] or 0.0
            stamp = (start_ms or 0) + round(elapsed * 1000)
            metrics += [
                (name, float(epoch[column]), stamp, int(epoch["epoch"])) for name, column in EPOCH_METRICS.items()
            ]
        end_ms = _ms(trial.finished_at)
        stamp = end_ms or start_ms or 0
        summary = {
            "best_epoch": trial.best_epoch,
            "best_val_accuracy": trial.val_accuracy,
            "best_val_loss": trial.val_loss,
            "epochs_run": trial.epochs_run,
            "train_seconds": trial.train_seconds,
            "parameter_count": trial.parameter_count,
        }
        selected = trial.key == row.selected_trial
        artifact = None
        if selected and test is not None:
            summary |= {
                "test_accuracy": test.accuracy,
                "test_loss": test.loss,
                "test_errors": test.errors,
                "test_samples": test.samples,
            }
            artifact = {
                "trial": trial.key,
                "samples": test.samples,
                "accuracy": test.accuracy,
                "loss": test.loss,
                "errors": test.errors,
                "confusion": test.confusion,
            }
        metrics += [(name, float(value), stamp, 0) for name, value in summary.items() if value is not None]
        tags = {
            TAG_SWEEP: row.name,
            TAG_KEY: trial.key,
            "gridsearch.status": trial.status.value,
            "gridsearch.architecture": trial.architecture,
            "gridsearch.selected": str(selected).lower(),
            "gridsearch.select": row.select_metric,
            **({"gridsearch.error": trial.error[:MAX_ERROR]} if trial.error else {}),
            **({"gridsearch.device": trial.device} if trial.device else {}),
            **({"gridsearch.code_version": trial.code_version} if trial.code_version else {}),
        }
        yield TrialRun(
            key=trial.key,
            name=f"{trial.key} {label}".strip(),
            start_ms=start_ms,
            end_ms=end_ms,
            status=RUN_STATUS[trial.status],
            params=_params(trial),
            tags=tags,
            metrics=metrics,
            artifact=artifact,
        )


def _params(trial: TrialRow) -> dict[str, str]:
    """The trial's resolved config as MLflow params (strings): architecture, params (those its optimizer
    uses), seed, threads, split."""
    config = trial.config
    values: dict[str, Any] = {
        "architecture": config["architecture"],
        **applicable(config["params"]),
        "seed": config["seed"],
        "threads": config["threads"],
        **{f"dataset.{name}": value for name, value in config["dataset"].items()},
    }
    return {name: "null" if value is None else format_value(value) for name, value in values.items()}


def _log(client: MlflowClient, experiment_id: str, run: TrialRun, digest: str) -> None:
    from mlflow.entities import Metric, Param

    created = client.create_run(
        experiment_id, start_time=run.start_ms, tags={**run.tags, TAG_DIGEST: digest}, run_name=run.name
    )
    run_id = created.info.run_id
    params = [Param(name, value) for name, value in run.params.items()]
    metrics = [Metric(name, value, stamp, step) for name, value, stamp, step in run.metrics]
    for chunk in _chunks(params, 100):  # MLflow's limits on one batch
        client.log_batch(run_id, params=chunk)
    for chunk in _chunks(metrics, 1000):
        client.log_batch(run_id, metrics=chunk)
    if run.artifact is not None:
        client.log_dict(run_id, run.artifact, "test_evaluation.json")
    if run.status in ("FINISHED", "FAILED", "KILLED"):
        client.set_terminated(run_id, run.status, end_time=run.end_ms)
    elif run.status != "RUNNING":
        client.update_run(run_id, status=run.status)


def _active_runs(client: MlflowClient, experiment_id: str) -> Iterator[Any]:
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _ms(moment: datetime | None) -> int | None:
    """A stored time (UTC, without a zone) in milliseconds since the epoch."""
    if moment is None:
        return None
    return math.floor(moment.replace(tzinfo=UTC).timestamp() * 1000)
