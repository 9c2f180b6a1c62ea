"""The study report: ``results.db`` turned into one offline folder of HTML, PNG figures and CSV tables.

Every number comes from the database, except what needs the model itself: the best trials' weights
are re-run on the test images they were evaluated on for class probabilities (confidence, ROC AUC).
Without a trial's run folder those are left out, and the rest of the report is written all the same, without
importing torch (only the sections that run weights, or draw stored robustness conditions, load it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from gridsearch.analysis import plots
from gridsearch.analysis.best_models import evaluation_section, rerun
from gridsearch.analysis.committee import committee_section
from gridsearch.analysis.effects import effects_section
from gridsearch.analysis.fronts import front_part
from gridsearch.analysis.importance import importance_section
from gridsearch.analysis.inspection import inspection_section
from gridsearch.analysis.learned import learned_section
from gridsearch.analysis.provenance import provenance_section, union_split
from gridsearch.analysis.robustness import robustness_section
from gridsearch.analysis.significance import significance_section
from gridsearch.analysis.trained_models import BestModel, WeightsUnavailable, best_model, by_dataset, dataset_shown
from gridsearch.analysis.uncertainty import uncertainty_section
from gridsearch.analysis.webpage import Block, Download, Figure, Folder, Format, Note, Section, seconds, table
from gridsearch.errors import UserError
from gridsearch.store import views
from gridsearch.store.models import TrialRow
from gridsearch.store.storage import Storage
from gridsearch.training import data
from gridsearch.vocabulary import FINISHED, format_percent

RESULT_FORMATS: dict[str, Format] = {
    "val_accuracy": format_percent,
    "test_accuracy": format_percent,
    "compute_seconds": seconds,
    "parameter_count": "{:,}".format,
}


class ReadOnce(Storage):
    """``storage`` as a report reads it: each sweep's trials read from the database once, however many sections
    ask (at ten thousand trials each reading costs seconds); the rest as ``storage`` reads it."""

    def __init__(self, storage: Storage):  # not super().__init__(), which would open the database again
        self.__dict__.update(storage.__dict__)
        self._trials: dict[str, list[TrialRow]] = {}

    def trials(self, sweep: str, keys: Iterable[str] | None = None) -> list[TrialRow]:
        if sweep not in self._trials:
            self._trials[sweep] = super().trials(sweep)
        if keys is None:
            return self._trials[sweep]
        wanted = set(keys)
        return [trial for trial in self._trials[sweep] if trial.key in wanted]


@dataclass(frozen=True)
class Report:
    """A written report: its page, one line for each best model whose weights it went without, and one for
    each sweep it could not report (with no sweep named: those without a tested selected trial)."""

    index: Path
    left_out: list[str]
    unreported: list[str] = field(default_factory=list)


def results_table(storage: Storage, models: list[BestModel]) -> pd.DataFrame:
    """The headline table: one row per sweep's best model, with its sweep's trial count and compute."""
    records = []
    shown = dataset_shown(models)
    for model in models:
        trials = storage.trials(model.name)
        records.append(
            {
                "sweep": model.name,
                **({"dataset": model.dataset.title} if shown else {}),
                "model": model.trial.architecture,
                "best_config": model.config_text,
                "parameter_count": model.trial.parameter_count,
                "best_epoch": model.trial.best_epoch,
                "val_accuracy": model.trial.val_accuracy,
                "test_accuracy": model.test.accuracy,
                "test_errors": model.test.errors,
                "test_samples": model.test.samples,
                "trials_run": sum(t.status in FINISHED for t in trials),
                "compute_seconds": views.epoch_seconds(storage, model.name),
            }
        )
    return pd.DataFrame.from_records(records)


def results_section(folder: Folder, results: pd.DataFrame) -> list[Block]:
    return [
        table(results, folder.csv(results, "results"), RESULT_FORMATS),
        Note(
            "val and test accuracy of each sweep's selected trial; test errors out of test_samples; "
            "trials_run counts finished trials (done, stopped by successive halving, failed, timed out); "
            "compute_seconds sums the training epochs of every trial of the sweep."
        ),
    ]


def curves_section(folder: Folder, storage: Storage, models: list[BestModel]) -> list[Block]:
    epochs = views.epochs(storage, [m.trial.key for m in models])
    curves = {m.name: epochs[epochs["trial_key"] == m.trial.key] for m in models}
    return [
        Figure(
            folder.png(plots.learning_curves(curves), "learning_curves"),
            "Loss and accuracy per epoch of each sweep's best trial "
            "(train dashed, val solid; train metrics are measured during the epoch).",
        ),
        Download("Per-epoch numbers", folder.csv(epochs, "learning_curves")),
    ]


def cost_section(folder: Folder, results: pd.DataFrame, models: list[BestModel]) -> list[Block]:
    cost = results[["sweep", "model", "parameter_count", "test_accuracy"]].assign(
        train_seconds=[m.trial.train_seconds for m in models]
    )
    if len(models) > 1:
        figure: Block = Figure(
            folder.png(plots.scatter_cost(cost), "accuracy_vs_cost"),
            "Test accuracy of each best model against its size and its own training time.",
        )
    else:
        figure = Note("One model in this report: no accuracy-against-cost plot to draw.")
    return [
        figure,
        table(
            cost,
            folder.csv(cost, "accuracy_vs_cost"),
            {"test_accuracy": format_percent, "train_seconds": seconds, "parameter_count": "{:,}".format},
        ),
    ]


def data_section(folder: Folder, storage: Storage, models: list[BestModel], data_dir: Path) -> list[Block]:
    """The data the sweeps of the report used, dataset by dataset: the union of their splits (each sweep's own:
    section 1)."""
    groups = by_dataset(models)
    blocks: list[Block] = []
    for dataset, alike in groups.items():
        whose = f"sweep {alike[0].name}" if len(alike) == 1 else "the sweeps of this report"
        if len(alike) > 1 and len(groups) > 1:
            whose = f"the {alike[0].dataset.title} sweeps of this report"
        blocks += inspection_section(folder, data_dir, dataset, union_split(storage, alike), whose)
    return blocks


def test_labels(models: list[BestModel], data_dir: Path) -> dict[str, np.ndarray]:
    """Per dataset of the ``models``: the labels of as many of its official test images as any of them was
    tested on."""
    return {
        dataset: data.test_images(data_dir, max(m.test.samples for m in alike), dataset).labels
        for dataset, alike in by_dataset(models).items()
    }


def build_report(storage: Storage, sweeps: list[str], out: Path, artifacts: Path, data_dir: Path) -> Report:
    """Write the report on ``sweeps`` (all when empty) into ``out``, the best weights read from the run
    folders in ``artifacts``; a best model whose weights are not there is reported without them."""
    storage = ReadOnce(storage)
    names = sweeps or storage.sweep_names()
    if not names:
        raise UserError("the database has no sweeps yet: nothing to report")
    models, unreported = reportable(storage, list(dict.fromkeys(names)), every=not sweeps)
    for dataset in by_dataset(models):
        data.prepare(data_dir, dataset)
    folder = Folder(out)
    results = results_table(storage, models)
    tests = {m.name: data.test_images(data_dir, m.test.samples, m.dataset.name) for m in models}
    reruns = {m.name: rerun(m, artifacts, tests[m.name]) for m in models}
    labels = test_labels(models, data_dir)
    parts: list[tuple[str, str, Sequence[Block]]] = [
        ("about", "About this report", provenance_section(folder, storage, models, datetime.now(UTC))),
        ("results", "Results", results_section(folder, results)),
        *front_part(folder, storage, models),
        ("effects", "Hyperparameter effects", [effects_section(folder, storage, m) for m in models]),
        ("importance", "Which knob mattered?", [importance_section(folder, storage, m.name) for m in models]),
        (
            "uncertainty",
            "How sure is the winner?",
            [uncertainty_section(folder, storage, m.name, labels[m.dataset.name]) for m in models],
        ),
        ("curves", "Learning curves", curves_section(folder, storage, models)),
        ("evaluation", "Best models", [evaluation_section(folder, m, tests[m.name], reruns[m.name]) for m in models]),
        ("learned", "What the network learned", [learned_section(folder, m, artifacts, tests[m.name]) for m in models]),
        ("committees", "Single best vs committee", committee_section(folder, storage, models, labels)),
        ("significance", "Is the difference real?", significance_section(folder, models, labels)),
        ("cost", "Accuracy vs cost", cost_section(folder, results, models)),
        ("robustness", "Robustness", robustness_section(folder, storage, models, data_dir)),
        ("data", "Data", data_section(folder, storage, models, data_dir)),
    ]
    sections = [
        Section(anchor, f"{number}. {title}", blocks) for number, (anchor, title, blocks) in enumerate(parts, 1)
    ]
    index = folder.page(f"gridsearch report: {', '.join(m.name for m in models)}", sections)
    return Report(index, [str(r) for r in reruns.values() if isinstance(r, WeightsUnavailable)], unreported)


def reportable(storage: Storage, names: list[str], every: bool) -> tuple[list[BestModel], list[str]]:
    """The best models of the sweeps ``names``, and why each sweep without one (no selected trial, or no test
    of it) cannot be reported. Named sweeps (``every`` False) must all be reportable, and so must one of
    ``every`` sweep; else :class:`UserError`."""
    models, unreported = [], []
    for name in names:
        try:
            models.append(best_model(storage, name))
        except UserError as exc:
            if not every:
                raise
            unreported.append(str(exc))
    if not models:
        raise UserError(f"no sweep can be reported: {'; '.join(unreported)}")
    return models, unreported
