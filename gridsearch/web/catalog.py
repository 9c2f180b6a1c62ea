"""What the web app finds in the results database for a request: a sweep by name, a trained trial by key,
the tested models. Requests name sweeps and trials, never files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from gridsearch.errors import UserError
from gridsearch.spec.config import config_value
from gridsearch.spec.datasets import described
from gridsearch.store.connection import describe
from gridsearch.store.models import SweepRow, TrialRow
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import TrialStatus

TRIAL_KEY = re.compile(r"[0-9a-f]{16}")


class RequestError(Exception):
    """A request the app refuses: an HTTP status and one line saying why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class TestedModel(TypedDict):
    """A sweep's selected trial that was trained on digits, was tested and has its best weights: one model of the
    recognizer."""

    trial: str
    sweep: str
    architecture: str
    params: dict[str, object]
    val_accuracy: float | None
    test_accuracy: float
    test_samples: int


@dataclass(frozen=True)
class Catalog:
    """The results database (opened read-only) and the run folders its trials' weights are in."""

    storage: Storage
    artifacts: Path

    @property
    def database(self) -> str:
        """The database as pages show it."""
        return describe(self.storage.url)

    def sweep(self, name: str) -> SweepRow:
        """The sweep ``name``; 404 if there is none."""
        try:
            return self.storage.sweep(name)
        except UserError as exc:
            raise RequestError(404, str(exc)) from None

    def has_weights(self, key: str) -> bool:
        return (self.artifacts / key / "best.pt").exists()

    def model_trial(self, key: object) -> TrialRow:
        """The done trial ``key`` whose best weights are in its run folder; 400, 404 or 409 if not."""
        if not isinstance(key, str) or not TRIAL_KEY.fullmatch(key):
            raise RequestError(400, f"trial must be a trial key of 16 hexadecimal digits, got {key!r}")
        trial = self.storage.trial(key)
        if trial is None:
            raise RequestError(404, f"no trial {key} in {self.database}")
        if trial.status != TrialStatus.DONE:
            raise RequestError(409, f"trial {key} is {trial.status}, not done: it has no final weights yet")
        if not self.has_weights(key):
            raise RequestError(
                404,
                f"trial {key}: no best weights in its run folder under {self.artifacts} "
                "(start serve with --artifacts where the run folders are)",
            )
        return trial

    def recognizer_trial(self, key: object) -> TrialRow:
        """The trial ``key`` as :meth:`model_trial` finds it, trained on a digit dataset (the recognizer reads drawn
        digits); 409 if it was trained on another dataset."""
        trial = self.model_trial(key)
        dataset = described(trial.config["dataset"])
        if not dataset.digits or dataset.channels != 1:
            raise RequestError(
                409,
                f"trial {trial.key} was trained on {dataset.title}, not one-channel digits: the recognizer reads "
                "drawn digits",
            )
        return trial

    def tested_models(self, weights: bool = True) -> list[TestedModel]:
        """Every sweep's selected trial that was trained on digits, was tested and has its weights (``weights``;
        else those whose weights are missing), each once (named by the first sweep that selected it), best test
        accuracy first."""
        found: list[TestedModel] = []
        for name in self.storage.sweep_names():
            key = self.storage.selected_trial(name)
            if key in {model["trial"] for model in found}:  # a trial several sweeps selected is one model
                continue
            test = self.storage.evaluation(key, "test") if key else None
            trial = self.storage.trial(key) if key else None
            if test is None or trial is None or self.has_weights(trial.key) != weights:
                continue
            if not described(trial.config["dataset"]).digits or described(trial.config["dataset"]).channels != 1:
                continue
            gridded = self.storage.sweep(name).gridded_params
            found.append(
                TestedModel(
                    trial=trial.key,
                    sweep=name,
                    architecture=trial.architecture,
                    params={param: config_value(trial.config, param) for param in gridded},
                    val_accuracy=trial.val_accuracy,
                    test_accuracy=test.accuracy,
                    test_samples=test.samples,
                )
            )
        return sorted(found, key=lambda model: -model["test_accuracy"])

    def default_trial(self) -> str:
        """The recognizer's default model: the tested model with the best test accuracy; 404 if none."""
        found = self.tested_models()
        if not found and (missing := self.tested_models(weights=False)):
            raise RequestError(
                404,
                f"the tested model of sweep {missing[0]['sweep']}, trial {missing[0]['trial']}, has no best weights in "
                f"its run folder under {self.artifacts} (removed? start serve with --artifacts where the run folders "
                "are)",
            )
        if not found:
            raise RequestError(404, "no tested model in the database yet: run a sweep to the end first")
        return found[0]["trial"]
