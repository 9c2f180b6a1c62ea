"""A sweep's selected trial as a model again: its best weights loaded, and class probabilities on images.

Reports and the robustness suite need more than the stored predicted labels (confidence, ROC AUC,
transformed inputs), so they re-run the selected trial's ``best.pt`` on CPU, deterministically. torch is imported
only when weights are loaded or run: a report whose best models have no weights on disk never imports it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar, cast

import numpy as np

from gridsearch.errors import UserError
from gridsearch.spec.config import TrialConfig, config_value
from gridsearch.spec.datasets import Dataset, described
from gridsearch.store.models import EvaluationRow, SweepRow, TrialRow
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import format_params

if TYPE_CHECKING:
    import torch
    from torch import nn

BATCH_SIZE = 1000
Params = ParamSpec("Params")
Result = TypeVar("Result")


def inference(function: Callable[Params, Result]) -> Callable[Params, Result]:
    """``function`` run under ``torch.inference_mode()``, torch imported when it runs (not on import)."""

    @functools.wraps(function)
    def run(*args: Params.args, **kwargs: Params.kwargs) -> Result:
        import torch

        with torch.inference_mode():
            return function(*args, **kwargs)

    return run


@dataclass(frozen=True)
class Scores:
    """A model's output on a labelled set: class probabilities (N, classes), labels (N,) and the mean loss."""

    probabilities: torch.Tensor
    labels: torch.Tensor
    loss: float

    @property
    def predicted(self) -> torch.Tensor:
        return self.probabilities.argmax(1)

    @property
    def confidence(self) -> torch.Tensor:
        return self.probabilities.max(1).values


class WeightsUnavailable(UserError):
    """A trial's best weights are missing or damaged; the message says where they were looked for."""


@dataclass(frozen=True)
class BestModel:
    """A sweep's selected trial and its stored test evaluation."""

    sweep: SweepRow
    trial: TrialRow
    test: EvaluationRow

    @property
    def name(self) -> str:
        return self.sweep.name

    @property
    def gridded(self) -> list[str]:
        return self.sweep.gridded_params

    @property
    def dataset(self) -> Dataset:
        """The dataset the trial trained and was tested on."""
        return described(self.trial.config["dataset"])

    @property
    def predictions(self) -> np.ndarray:
        return np.array(self.test.predictions)

    @property
    def config_text(self) -> str:
        """The gridded params of the trial and its seed, e.g. ``lr=0.05 lr_step=3 seed=0``."""
        config = self.trial.config
        params = [(name, config_value(config, name)) for name in self.gridded]
        return format_params([*params, ("seed", self.trial.seed)])


def by_dataset(models: list[BestModel]) -> dict[str, list[BestModel]]:
    """The ``models`` grouped by the dataset they trained on, in the order they come."""
    groups: dict[str, list[BestModel]] = {}
    for model in models:
        groups.setdefault(model.dataset.name, []).append(model)
    return groups


def dataset_shown(models: list[BestModel]) -> bool:
    """Whether tables of ``models`` show each one's dataset: when one of them is not MNIST."""
    return any(model.dataset.name != "mnist" for model in models)


def selected_trial(storage: Storage, sweep: str) -> TrialRow:
    """The trial ``sweep`` selected; :class:`UserError` if it has none yet."""
    row = storage.sweep(sweep)
    if row.selected_trial is None:
        raise UserError(f"sweep {sweep!r} has no selected trial yet (run it to the end first)")
    trial = storage.trial(row.selected_trial)
    assert trial is not None  # sweep_trials and selected_trial refer to stored trials
    return trial


def best_model(storage: Storage, sweep: str) -> BestModel:
    """The selected trial of ``sweep`` with its test evaluation; :class:`UserError` if either is missing."""
    trial = selected_trial(storage, sweep)
    test = storage.evaluation(trial.key, "test")
    if test is None:
        raise UserError(
            f"sweep {sweep!r}: selected trial {trial.key} has no test evaluation (run the sweep again to evaluate it)"
        )
    return BestModel(storage.sweep(sweep), trial, test)


def load_model(trial: TrialRow, artifacts: Path) -> nn.Module:
    """The network of ``trial`` with its best weights, in eval mode on CPU, built as the trial trained it (its
    memory format); :class:`WeightsUnavailable` if ``artifacts/<key>/best.pt`` is missing (said without importing
    torch) or damaged."""
    path = artifacts / trial.key / "best.pt"
    if not path.exists():
        raise WeightsUnavailable(
            f"trial {trial.key}: no best weights at {path} (pass --artifacts DIR, the folder that holds its run "
            f"folder {trial.key}/)"
        )
    import torch

    from gridsearch.training.checkpoints import CorruptCheckpoint, load_verified
    from gridsearch.training.models import build_model, make_deterministic

    make_deterministic(torch.get_num_threads())
    model = build_model(cast(TrialConfig, trial.config))
    try:
        model.load_state_dict(load_verified(path, "cpu")["model"])
    except CorruptCheckpoint as exc:
        raise WeightsUnavailable(f"trial {trial.key}: {exc}") from None
    return model.eval()


def bf16(trial: TrialRow) -> bool:
    """Whether ``trial`` runs its forward passes under bfloat16 autocast: every evaluation of it does too."""
    from gridsearch.training.models import uses_bf16

    return uses_bf16(cast(TrialConfig, trial.config))


@inference
def score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, bf16: bool) -> Scores:
    """Probabilities of ``model`` on uint8 ``images`` (N, C, H, W), computed as the test evaluation computes them
    (``training.predict``: the trial's precision ``bf16``, the same batches and scaling)."""
    from gridsearch.training import predict

    logits = predict.logits(model, images, bf16)
    return Scores(logits.softmax(1), labels, predict.mean_loss(logits, labels))
