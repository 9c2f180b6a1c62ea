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
from gridsearch.spec.config import config_value
from gridsearch.store import views
from gridsearch.store.models import TrialRow
from gridsearch.store.records import Evaluation
from gridsearch.store.storage import Storage
from gridsearch.training import data
from gridsearch.vocabulary import TrialStatus, format_params, format_percent, metric

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


@dataclass(frozen=True)
class Member:
    """One trial of a stored committee, as its sweep's page lists it."""

    key: str
    architecture: str
    params: str
    """The params that set it apart from the other members (``lr=0.008``; '' when none does), empty ones left out."""
    seed: int
    sweeps: list[str]
    """Every sweep the trial belongs to (the committee's own among them)."""
    val_accuracy: float | None
    test_accuracy: float | None
    """Its own ``test`` evaluation, when a sweep selected and tested it (None: not tested alone)."""


@dataclass(frozen=True)
class StoredCommittee:
    """The latest committee evaluation stored on a sweep's selected trial, with its members: the first K of the
    sweep's done trials as selection ranks them, as ``build_committee`` chose them (the members themselves are not
    stored). ``others``: the sweeps that select the same trial but whose K best differ, for one of which it may
    have been built instead."""

    name: str
    candidates: int
    accuracy: float
    errors: int
    samples: int
    members: list[Member]
    others: list[str]


def stored_committee(storage: Storage, sweep: str) -> StoredCommittee | None:
    """The committee of ``sweep`` stored by ``evaluate --ensemble`` (the latest, if several), None if none is."""
    row = storage.sweep(sweep)
    if row.selected_trial is None:
        return None
    stored = views.evaluation_scores(storage, [row.selected_trial], PREFIX)
    ranked = ranked_trials(storage, sweep)
    found = stored[-1] if stored else None
    size = int(found.name.removeprefix(PREFIX)) if found and found.name.removeprefix(PREFIX).isdigit() else 0
    if found is None or not 0 < size <= len(ranked):
        return None
    chosen = ranked[:size]
    keys = [trial.key for trial in chosen]
    sweeps = views.trial_sweeps(storage, keys)
    tested = {
        score.trial_key: score.accuracy
        for score in views.evaluation_scores(storage, keys, "test")
        if score.name == "test"
    }
    values = {t.key: {p: config_value(t.config, p) for p in row.gridded_params if p != "architecture"} for t in chosen}
    apart = [p for p in row.gridded_params if p != "architecture" and len({repr(v[p]) for v in values.values()}) > 1]
    others = [
        name
        for name in sweeps[row.selected_trial]
        if name != sweep
        and storage.selected_trial(name) == row.selected_trial
        and [t.key for t in ranked_trials(storage, name)[:size]] != keys
    ]
    return StoredCommittee(
        name=found.name,
        candidates=len(ranked),
        accuracy=found.accuracy,
        errors=found.errors,
        samples=found.samples,
        members=[
            Member(
                key=t.key,
                architecture=t.architecture,
                params=format_params((p, values[t.key][p]) for p in apart),
                seed=t.seed,
                sweeps=sweeps.get(t.key, []),
                val_accuracy=t.val_accuracy,
                test_accuracy=tested.get(t.key),
            )
            for t in chosen
        ],
        others=others,
    )


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
    """Single best against each stored committee, with McNemar's exact test (for the models whose dataset's test
    labels are in ``labels``), and each committee's members (for all ``models``: they need no labels)."""
    frame = committee_table(storage, [m for m in models if m.dataset.name in labels], labels)
    members = members_table(storage, list(dict.fromkeys(m.name for m in models)))
    if frame.empty and members.empty:
        return [Note("No committee evaluated yet: run `python -m gridsearch evaluate SWEEP --ensemble auto`.")]
    formats: dict[str, Format] = {"single_best": format_percent, "committee_accuracy": format_percent}
    formats["mcnemar_p"] = "{:.3g}".format
    shares = {"val_accuracy": format_percent, "test_accuracy": format_percent}
    blocks: list[Block] = []
    if not frame.empty:
        blocks.append(
            Paragraph(
                "A committee of the K best done trials by validation averages their softmax probabilities "
                f"(evaluation {PREFIX}K of the selected trial; K chosen on the validation images when `--ensemble "
                "auto`). It is compared with the single best on the same test images by McNemar's exact test."
            )
        )
        blocks.append(table(frame, folder.csv(frame, "committees"), formats))
    if not members.empty:
        blocks.append(
            Paragraph(
                "The members of each sweep's latest committee: its K best done trials as selection ranks them, "
                "with what sets each apart from the others, the sweeps it belongs to, and its own test accuracy "
                "when a sweep selected and tested it."
            )
        )
        blocks.append(table(members, folder.csv(members, "committee_members"), shares))
    return blocks


def members_table(storage: Storage, sweeps: list[str]) -> pd.DataFrame:
    """One row per member of each of ``sweeps``' stored committee (``stored_committee``)."""
    records = [
        {
            "sweep": sweep,
            "committee": found.name,
            "member": member.key,
            "architecture": member.architecture,
            "params": member.params,
            "seed": member.seed,
            "sweeps": ", ".join(member.sweeps),
            "val_accuracy": member.val_accuracy,
            "test_accuracy": member.test_accuracy,
        }
        for sweep in sweeps
        if (found := stored_committee(storage, sweep)) is not None
        for member in found.members
    ]
    return pd.DataFrame.from_records(records)
