"""Committees: the K best done trials of a sweep by validation, their softmax probabilities averaged.

The members are ranked as selection ranks them (the select metric, ties to the lower val loss), so the first is
the selected trial. With ``auto``, K is the committee size from 1 to ``min(10, n)`` with the best accuracy on
the sweep's validation images (the smallest such K); the test set is used once, for the chosen K. The result is
stored as the evaluation ``ensemble/top<K>`` of the selected trial, beside its ``test`` evaluation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from gridsearch.analysis.significance import mcnemar_exact
from gridsearch.analysis.trained_models import BestModel, bf16, load_model, score
from gridsearch.analysis.webpage import Block, Folder, Format, Note, Paragraph, table
from gridsearch.errors import UserError
from gridsearch.store import views
from gridsearch.store.models import TrialRow
from gridsearch.store.records import Evaluation
from gridsearch.store.storage import Storage
from gridsearch.training import data
from gridsearch.vocabulary import TrialStatus, format_percent, metric

if TYPE_CHECKING:
    import torch

PREFIX = "ensemble/top"
"""Committee evaluations are stored as ``ensemble/top<K>`` on the sweep's selected trial."""
MAX_AUTO = 10


def evaluation_name(size: int) -> str:
    return f"{PREFIX}{size}"


def ranked_trials(storage: Storage, sweep: str) -> list[TrialRow]:
    """The done trials of ``sweep``, best first as selection ranks them."""
    select = metric(storage.sweep(sweep).select_metric)
    done = [t for t in storage.trials(sweep) if t.status == TrialStatus.DONE and getattr(t, select.name) is not None]
    return sorted(done, key=lambda t: (select.rank(getattr(t, select.name)), t.val_loss))


def committee_accuracies(probabilities: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Accuracy of the committee of the first k members for each k, from (members, N, classes) probabilities."""
    running = probabilities.cumsum(0)
    return [float((running[k].argmax(1) == labels).double().mean()) for k in range(len(probabilities))]


def evaluation(probabilities: torch.Tensor, labels: torch.Tensor, seconds: float) -> Evaluation:
    """An evaluation row of averaged ``probabilities`` (N, classes): the loss is their mean negative
    log-likelihood."""
    import torch

    predicted = probabilities.argmax(1)
    classes = probabilities.shape[1]
    confusion = torch.zeros(classes, classes, dtype=torch.long)
    confusion.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    errors = int((predicted != labels).sum())
    likelihood = probabilities[torch.arange(len(labels)), labels].clamp_min(1e-12)
    return Evaluation(
        samples=len(labels),
        accuracy=1 - errors / len(labels),
        loss=float(-likelihood.log().mean()),
        errors=errors,
        confusion=confusion.tolist(),
        predictions=predicted.tolist(),
        seconds=seconds,
    )


@dataclass(frozen=True)
class Committee:
    """The members (best first), the val accuracy of each committee size tried (``{k: accuracy}``; only K when
    it was given) and the committee's test evaluation."""

    members: list[str]
    val_accuracies: dict[int, float]
    test: Evaluation

    @property
    def name(self) -> str:
        return evaluation_name(len(self.members))


def build_committee(storage: Storage, sweep: str, size: int | None, artifacts: Path, data_dir: Path) -> Committee:
    """The committee of the ``size`` best done trials of ``sweep`` (``None``: chosen on validation), tested on
    the sweep's test images; :class:`UserError` when there are not enough done trials or weights."""
    import torch

    started = time.perf_counter()
    ranked = ranked_trials(storage, sweep)
    row = storage.sweep(sweep)
    if not ranked or row.selected_trial != ranked[0].key:
        raise UserError(f"sweep {sweep!r} has no selected trial yet (run it to the end first)")
    if size is not None and size > len(ranked):
        raise UserError(f"--ensemble {size}: sweep {sweep!r} has only {len(ranked)} done trials")
    candidates = ranked[: size or min(MAX_AUTO, len(ranked))]
    models = [(load_model(trial, artifacts), bf16(trial)) for trial in candidates]
    dataset = candidates[0].config["dataset"]
    data.prepare(data_dir, dataset)
    _, val = data.training_splits(data_dir, dataset["train_size"], dataset["val_size"], dataset)
    val_probabilities = torch.stack([score(m, val.images, val.labels, b).probabilities for m, b in models])
    accuracies = committee_accuracies(val_probabilities, val.labels)
    chosen = size or int(np.argmax(accuracies)) + 1  # the first of equals: the smallest committee
    test = data.test_split(data_dir, row.test_size, dataset)
    averaged = torch.stack([score(m, test.images, test.labels, b).probabilities for m, b in models[:chosen]]).mean(0)
    tried = {chosen: accuracies[chosen - 1]} if size else {k + 1: a for k, a in enumerate(accuracies)}
    result = evaluation(averaged, test.labels, time.perf_counter() - started)
    return Committee([t.key for t in candidates[:chosen]], tried, result)


def committee_table(storage: Storage, models: list[BestModel], labels: dict[str, np.ndarray]) -> pd.DataFrame:
    """Each stored committee of the ``models``' sweeps against the single best, with McNemar's exact test on
    the test images both predicted (``labels``: the official test labels of each model's dataset, by name)."""
    evaluations = views.evaluations(storage, [m.trial.key for m in models])
    committees = evaluations[evaluations["name"].str.startswith(PREFIX)]
    records = []
    for model in models:
        truth = labels[model.dataset.name]
        for entry in committees[committees["trial_key"] == model.trial.key].itertuples():
            n = min(model.test.samples, entry.samples)
            single, together = model.predictions[:n] == truth[:n], np.array(entry.predictions[:n]) == truth[:n]
            only_single, only_committee, p_value = mcnemar_exact(single, together)
            records.append(
                {
                    "sweep": model.name,
                    "committee": entry.name,
                    "members": int(entry.name.removeprefix(PREFIX)),
                    "samples": n,
                    "single_best": float(single.mean()),
                    "committee_accuracy": float(together.mean()),
                    "only_single_right": only_single,
                    "only_committee_right": only_committee,
                    "mcnemar_p": p_value,
                }
            )
    return pd.DataFrame.from_records(records)


def committee_section(
    folder: Folder, storage: Storage, models: list[BestModel], labels: dict[str, np.ndarray]
) -> list[Block]:
    """Single best against each stored committee, with McNemar's exact test."""
    frame = committee_table(storage, models, labels)
    if frame.empty:
        return [Note("No committee evaluated yet: run `python -m gridsearch evaluate SWEEP --ensemble auto`.")]
    formats: dict[str, Format] = {"single_best": format_percent, "committee_accuracy": format_percent}
    formats["mcnemar_p"] = "{:.3g}".format
    return [
        Paragraph(
            "A committee of the K best done trials by validation averages their softmax probabilities "
            f"(evaluation {PREFIX}K of the selected trial; K chosen on the validation images when `--ensemble "
            "auto`). It is compared with the single best on the same test images by McNemar's exact test."
        ),
        table(frame, folder.csv(frame, "committees"), formats),
    ]
