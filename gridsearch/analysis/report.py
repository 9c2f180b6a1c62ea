"""The study report: ``results.db`` turned into one offline folder of HTML, PNG figures and CSV tables: an index
page with one section per question asked across the sweeps, and a page per sweep with its detail.

Every number comes from the database, except what needs the model itself: the best trials' weights
are re-run on the test images they were evaluated on for class probabilities (confidence, ROC AUC).
Without a trial's run folder those are left out, and the rest of the report is written all the same, without
importing torch (only the sections that run weights, or draw stored robustness conditions, load it). Without a
dataset's files, what shows its images is left out, and every table is written from the database (the test
labels from the database when it keeps them: ``analysis.test_sets``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from gridsearch.analysis import plots
from gridsearch.analysis.axes import MAX_COLOURS
from gridsearch.analysis.best_models import Rerun, evaluation_section, rerun
from gridsearch.analysis.committee import committee_section
from gridsearch.analysis.curves import learning_curves
from gridsearch.analysis.effects import effects_section
from gridsearch.analysis.fronts import front_part
from gridsearch.analysis.importance import importance_section
from gridsearch.analysis.inspection import inspection_section
from gridsearch.analysis.learned import learned_section
from gridsearch.analysis.provenance import provenance_section, union_split
from gridsearch.analysis.robustness import robustness_section
from gridsearch.analysis.significance import significance_section
from gridsearch.analysis.test_sets import HeldOutImages
from gridsearch.analysis.trained_models import BestModel, WeightsUnavailable, best_model, by_dataset, dataset_shown
from gridsearch.analysis.uncertainty import uncertainty_section
from gridsearch.analysis.webpage import (
    Block,
    Download,
    Figure,
    Folder,
    Format,
    Link,
    Links,
    Note,
    Section,
    seconds,
    table,
)
from gridsearch.errors import UserError
from gridsearch.store import views
from gridsearch.store.models import TrialRow
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import FINISHED, format_count, format_percent

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
    without_images: str | None = None
    """What was left out for want of dataset files (``HeldOutImages.warning``), or None."""


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
    per_model = {m.name: epochs[epochs["trial_key"] == m.trial.key] for m in models}
    shown = (
        "Loss and accuracy per epoch of each sweep's best trial"
        if len(per_model) <= MAX_COLOURS
        else "Accuracy per epoch of each sweep's best trial, one panel each (the losses are in the CSV)"
    )
    return [
        Figure(
            folder.png(learning_curves(per_model), "learning_curves"),
            f"{shown} (train dashed, val solid; train metrics are measured during the epoch).",
        ),
        Download("Per-epoch numbers", folder.csv(epochs, "learning_curves")),
    ]


def cost_section(folder: Folder, results: pd.DataFrame, models: list[BestModel]) -> list[Block]:
    columns = ["sweep", *(["dataset"] if "dataset" in results else []), "model", "parameter_count", "test_accuracy"]
    cost = results[columns].assign(train_seconds=[m.trial.train_seconds for m in models])
    if len(models) > 1:
        figure: Block = Figure(
            folder.png(plots.scatter_cost(cost), "accuracy_vs_cost"),
            "Test accuracy of each best model against its size and its own training time"
            + (", one row of panels per dataset." if "dataset" in cost else "."),
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


def data_section(
    folder: Folder, storage: Storage, models: list[BestModel], tests: HeldOutImages, data_dir: Path
) -> list[Block]:
    """The data the sweeps of the report used, dataset by dataset: the union of their splits (each sweep's own:
    section 1); a dataset whose files are absent is left out (the report's warning names it)."""
    groups = by_dataset(models)
    blocks: list[Block] = []
    for dataset, alike in groups.items():
        if tests.images(dataset) is None:
            tests.leave_out(f"the data section of {alike[0].dataset.title}")
            continue
        whose = f"sweep {alike[0].name}" if len(alike) == 1 else "the sweeps of this report"
        if len(alike) > 1 and len(groups) > 1:
            whose = f"the {alike[0].dataset.title} sweeps of this report"
        blocks += inspection_section(folder, data_dir, alike[0].dataset, union_split(storage, alike), whose)
    return blocks or [Note("No dataset files to inspect.")]


def sweep_page(
    folder: Folder, storage: Storage, model: BestModel, artifacts: Path, tests: HeldOutImages, rerun: Rerun
) -> Link:
    """The page of one sweep (its grid, which knob mattered, how sure its winner is, its best model up close and
    what that network learned); the link to it."""
    filename = f"sweep_{model.name}.html"
    labels = tests.labels(model.dataset.name)
    parts: list[tuple[str, str, Sequence[Block]]] = [
        ("effects", "Hyperparameter effects", [effects_section(folder, storage, model)]),
        ("importance", "Which knob mattered?", [importance_section(folder, storage, model.name)]),
        ("uncertainty", "How sure is the winner?", [uncertainty_section(folder, storage, model.name, labels)]),
        ("evaluation", "Best model", [evaluation_section(folder, model, tests, rerun)]),
        ("learned", "What the network learned", [learned_section(folder, model, artifacts, tests)]),
    ]
    sections = [Section(anchor, f"{n}. {title}", blocks) for n, (anchor, title, blocks) in enumerate(parts, 1)]
    folder.page(f"gridsearch report: sweep {model.name}", sections, filename, up="index.html")
    summary = (
        f"{model.trial.architecture}, {model.config_text}: test accuracy {format_percent(model.test.accuracy)} "
        f"({format_count(model.test.errors)} errors in {format_count(model.test.samples)})"
    )
    return Link(filename, model.name, summary)


def build_report(storage: Storage, sweeps: list[str], out: Path, artifacts: Path, data_dir: Path) -> Report:
    """Write the report on ``sweeps`` (all when empty) into ``out``: one page of the questions across sweeps and
    a page per sweep, the best weights read from the run folders in ``artifacts``; a best model whose weights are
    not there, or a dataset whose files are not, is reported without what needs them."""
    storage = ReadOnce(storage)
    names = sweeps or storage.sweep_names()
    if not names:
        raise UserError("the database has no sweeps yet: nothing to report")
    models, unreported = reportable(storage, list(dict.fromkeys(names)), every=not sweeps)
    folder = Folder(out)
    tests = HeldOutImages.load(storage, data_dir, models)
    results = results_table(storage, models)
    reruns = {m.name: rerun(m, artifacts, tests) for m in models}
    labels = tests.all_labels()
    labelled = [m for m in models if m.dataset.name in labels]
    pages = [sweep_page(folder, storage, m, artifacts, tests, reruns[m.name]) for m in models]
    parts: list[tuple[str, str, Sequence[Block]]] = [
        ("about", "What was run", provenance_section(folder, storage, models, datetime.now(UTC))),
        (
            "results",
            "Which model is best?",
            [*results_section(folder, results), *cost_section(folder, results, models)],
        ),
        *front_part(folder, storage, models),
        ("curves", "How did they train?", curves_section(folder, storage, models)),
        ("significance", "Is the difference real?", significance_section(folder, labelled, labels)),
        ("committees", "Does a committee beat the single best?", committee_section(folder, storage, models, labels)),
        ("robustness", "How robust are they?", robustness_section(folder, storage, models, tests)),
        ("sweeps", "Each sweep in detail", [Links(pages)]),
        ("data", "What data?", data_section(folder, storage, models, tests, data_dir)),
    ]
    sections = [
        Section(anchor, f"{number}. {title}", blocks) for number, (anchor, title, blocks) in enumerate(parts, 1)
    ]
    named = ", ".join(m.name for m in models) if len(models) <= 3 else f"{len(models)} sweeps"
    index = folder.page(f"gridsearch report: {named}", sections)
    weights = [str(r) for r in reruns.values() if isinstance(r, WeightsUnavailable)]
    return Report(index, weights, unreported, tests.warning())


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
