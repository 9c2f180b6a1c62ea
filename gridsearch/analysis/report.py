"""The study report: ``results.db`` turned into one offline folder of HTML, PNG figures and CSV tables.

Every number comes from the database, except what needs the model itself: the best trials' weights
are re-run on the test images they were evaluated on for class probabilities (confidence, ROC AUC).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from gridsearch.analysis import plots, robustness
from gridsearch.analysis.inspection import inspection_section
from gridsearch.analysis.significance import BOOTSTRAP_ROUNDS, BOOTSTRAP_SEED, compare
from gridsearch.analysis.trained_models import load_model, score, selected_trial
from gridsearch.analysis.webpage import (
    Folder,
    download,
    figure,
    navigation,
    note,
    paragraph,
    percent,
    seconds,
    section,
    subsection,
    table,
)
from gridsearch.errors import UserError
from gridsearch.store.models import EvaluationRow, SweepRow, TrialRow
from gridsearch.store.storage import Storage, config_value
from gridsearch.training import data

GRID_SIZE = 30
"""Images in each grid of misclassified and of random test predictions."""
SAMPLE_SEED = 0
CONFUSED_PAIRS = 5
FINISHED = ("done", "stopped", "failed", "timeout")
SECTIONS = {
    "results": "1. Results",
    "effects": "2. Hyperparameter effects",
    "curves": "3. Learning curves",
    "evaluation": "4. Best models",
    "significance": "5. Is the difference real?",
    "cost": "6. Accuracy vs cost",
    "robustness": "7. Robustness",
    "data": "8. Data",
}


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
    def predictions(self) -> np.ndarray:
        return np.array(self.test.predictions)


def best_model(storage: Storage, sweep: str) -> BestModel:
    """The selected trial of ``sweep`` with its test evaluation; :class:`UserError` if either is missing."""
    trial = selected_trial(storage, sweep)
    test = storage.evaluation(trial.key, "test")
    if test is None:
        raise UserError(
            f"sweep {sweep!r}: selected trial {trial.key} has no test evaluation (run the sweep again to evaluate it)"
        )
    return BestModel(storage.sweep(sweep), trial, test)


def config_text(model: BestModel) -> str:
    """The gridded params of the best trial, e.g. "lr=0.05, lr_step=3, seed=0"."""
    config = model.trial.config
    return ", ".join([f"{name}={config_value(config, name)}" for name in model.gridded] + [f"seed={model.trial.seed}"])


def results_table(storage: Storage, models: list[BestModel]) -> pd.DataFrame:
    """The headline table: one row per sweep's best model, with its sweep's trial count and compute."""
    records = []
    for model in models:
        trials = storage.trials(model.name)
        epochs = storage.epochs([t.key for t in trials])
        records.append(
            {
                "sweep": model.name,
                "model": model.trial.architecture,
                "best_config": config_text(model),
                "parameter_count": model.trial.parameter_count,
                "best_epoch": model.trial.best_epoch,
                "val_accuracy": model.trial.val_accuracy,
                "test_accuracy": model.test.accuracy,
                "test_errors": model.test.errors,
                "test_samples": model.test.samples,
                "trials_run": sum(t.status in FINISHED for t in trials),
                "compute_seconds": float(epochs["seconds"].sum()),
            }
        )
    return pd.DataFrame.from_records(records)


RESULT_FORMATS = {
    "val_accuracy": percent,
    "test_accuracy": percent,
    "compute_seconds": seconds,
    "parameter_count": "{:,}".format,
}


def hashable(value: object) -> object:
    """Grid values usable as group keys (lists such as zoom ranges become their JSON text)."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def grid_effects(trials: pd.DataFrame, gridded: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """The done trials of a sweep's trials table (list values made hashable) and the gridded params
    that take several values among them."""
    done = trials[trials["status"] == "done"].copy()
    params = [name for name in gridded if done[name].map(hashable).nunique() > 1] if len(done) else []
    for name in params:
        done[name] = done[name].map(hashable)
    return done, params


def heatmap_cells(done: pd.DataFrame, params: list[str]) -> str:
    """What one cell of the heatmap over the first two ``params`` holds."""
    single = done.groupby(params[:2]).size().max() == 1
    return "one trial per cell" if single else f"mean over {', '.join([*params[2:], 'seeds'])}"


def grid_heatmap(done: pd.DataFrame, params: list[str], sweep: str) -> Figure:
    """Val accuracy of the ``done`` trials over the first two of ``params`` (at least two)."""
    grid = done.pivot_table(index=params[0], columns=params[1], values="val_accuracy", aggfunc="mean")
    return plots.heatmap(grid, f"{sweep}: val accuracy ({heatmap_cells(done, params)})", "val accuracy")


def effects_section(folder: Folder, storage: Storage, model: BestModel) -> str:
    """Val accuracy over the grid of one sweep: table, heatmap of the first two params, marginals."""
    trials = storage.trials_table(model.name)
    done, params = grid_effects(trials, model.gridded)
    parts = [
        table(
            trials.drop(columns=["error"]),
            folder.csv(trials, f"grid_{model.name}"),
            {"val_accuracy": percent, "val_loss": "{:.4f}".format, "train_seconds": seconds},
        )
    ]
    if len(params) >= 2:
        parts.append(
            figure(
                folder.png(grid_heatmap(done, params, model.name), f"heatmap_{model.name}"),
                f"Val accuracy of {model.name} over {params[0]} x {params[1]} ({heatmap_cells(done, params)}).",
            )
        )
    if params:
        parts.append(
            figure(
                folder.png(plots.marginals(done, params, "val_accuracy", model.name), f"marginals_{model.name}"),
                "Val accuracy against each gridded param: max and mean over all other params.",
            )
        )
    else:
        parts.append(note("No gridded param takes two values among finished trials: nothing to plot."))
    if model.sweep.search["strategy"] == "halving":
        parts.append(rungs_section(folder, storage, model))
    return subsection(f"{model.name} ({model.sweep.architecture}, {len(done)} of {len(trials)} trials done)", *parts)


def rungs_table(storage: Storage, sweep: SweepRow) -> pd.DataFrame:
    """Successive halving: each rung's epoch budget, its trials, how many went on, and the epochs it trained."""
    budgets = sweep.search["rung_epochs"]
    reached = {key: rung for key, rung in storage.rungs(sweep.name).items() if rung is not None}
    epochs = storage.epochs(reached)
    records = []
    for rung, (budget, previous) in enumerate(zip(budgets, [0, *budgets])):
        keys = [key for key, top in reached.items() if top >= rung]
        trained = epochs[epochs["trial_key"].isin(keys) & (epochs["epoch"] >= previous) & (epochs["epoch"] < budget)]
        records.append(
            {
                "rung": rung,
                "epochs": budget,
                "trials": len(keys),
                "promoted": sum(top > rung for top in reached.values()),
                "epochs_trained": len(trained),
            }
        )
    return pd.DataFrame.from_records(records)


def rungs_section(folder: Folder, storage: Storage, model: BestModel) -> str:
    """The rungs of a successive-halving sweep: a table, and every trial's curve coloured by its rung."""
    name = model.name
    rungs = rungs_table(storage, model.sweep)
    reached = storage.rungs(name)
    epochs = storage.epochs(reached)
    full = len(reached) * int(rungs["epochs"].iloc[-1])
    curves = [(rung, epochs[epochs["trial_key"] == key]) for key, rung in reached.items() if rung is not None]
    metric = model.sweep.select_metric
    return subsection(
        "Successive halving",
        table(rungs, folder.csv(rungs, f"rungs_{name}")),
        note(
            f"Each rung trains its trials to its epochs, continuing from their checkpoints; the best "
            f"promoted ones go on to the next. {int(rungs['epochs_trained'].sum()):,} epochs trained in all, "
            f"{rungs['epochs_trained'].sum() / full:.0%} of the {full:,} a full grid would train."
        ),
        figure(
            folder.png(
                plots.rung_curves(curves, rungs["epochs"].tolist(), metric, f"{name}: {metric} per epoch"),
                f"rung_curves_{name}",
            ),
            "Every trial's validation curve, coloured by the highest rung it reached; dotted lines mark "
            "the rungs' epoch budgets.",
        ),
    )


def curves_section(folder: Folder, storage: Storage, models: list[BestModel]) -> str:
    epochs = storage.epochs([m.trial.key for m in models])
    curves = {m.name: epochs[epochs["trial_key"] == m.trial.key] for m in models}
    table_name = folder.csv(epochs, "learning_curves")
    return "\n".join(
        [
            figure(
                folder.png(plots.learning_curves(curves), "learning_curves"),
                "Loss and accuracy per epoch of each sweep's best trial "
                "(train dashed, val solid; train metrics are measured during the epoch).",
            ),
            download("Per-epoch numbers", table_name),
        ]
    )


def per_class_table(labels: np.ndarray, predicted: np.ndarray, probabilities: np.ndarray) -> pd.DataFrame:
    """Per digit: support, precision, recall, F1 (of the stored predictions) and one-vs-rest ROC AUC."""
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=range(10), zero_division=0
    )
    auc = [
        roc_auc_score(labels == digit, probabilities[:, digit]) if 0 < support[digit] < len(labels) else np.nan
        for digit in range(10)
    ]
    return pd.DataFrame(
        {"digit": range(10), "support": support, "precision": precision, "recall": recall, "f1": f1, "roc_auc": auc}
    )


def confused_pairs(confusion: np.ndarray, top: int = CONFUSED_PAIRS) -> pd.DataFrame:
    """The ``top`` most frequent (true, predicted) mistakes, with their share of the true digit's images."""
    records = [
        {
            "true": t,
            "predicted": p,
            "errors": int(confusion[t, p]),
            "share_of_true_digit": confusion[t, p] / confusion[t].sum(),
        }
        for t in range(10)
        for p in range(10)
        if t != p and confusion[t, p] > 0
    ]
    frame = pd.DataFrame.from_records(records, columns=["true", "predicted", "errors", "share_of_true_digit"])
    return frame.sort_values(["errors", "true", "predicted"], ascending=[False, True, True]).head(top)


def evaluation_section(folder: Folder, model: BestModel, artifacts: Path, data_dir: Path) -> str:
    """Confusion matrix, per-class metrics, confused pairs and image grids of one best model."""
    test = data.test_split(data_dir, model.test.samples)
    labels, images = test.labels.numpy(), test.images.numpy()[:, 0]
    predicted = model.predictions
    scores = score(load_model(model.trial, artifacts), test.images, test.labels)
    probabilities = scores.probabilities.numpy()
    confidence = probabilities[np.arange(len(labels)), predicted]
    rerun_differs = int((scores.predicted.numpy() != predicted).sum())
    confusion = np.array(model.test.confusion)
    per_class = per_class_table(labels, predicted, probabilities)
    pairs = confused_pairs(confusion)
    wrong = np.flatnonzero(predicted != labels)
    shown = wrong[np.argsort(-confidence[wrong], kind="stable")][:GRID_SIZE]
    random = np.random.default_rng(SAMPLE_SEED).choice(len(labels), min(GRID_SIZE, len(labels)), replace=False)
    name = model.name
    parts = [
        paragraph(
            f"Trial {model.trial.key} ({config_text(model)}), best epoch {model.trial.best_epoch}: "
            f"test accuracy {model.test.accuracy:.2%}, {model.test.errors} errors in "
            f"{model.test.samples:,} test images, test loss {model.test.loss:.4f}."
        ),
        figure(
            folder.png(plots.confusion_matrix(confusion, f"{name}: test confusion matrix"), f"confusion_{name}"),
            "Rows: true digit; columns: predicted. Diagonal in green.",
        ),
        table(
            per_class,
            folder.csv(per_class, f"per_class_{name}"),
            {c: "{:.4f}".format for c in ("precision", "recall", "f1", "roc_auc")},
        ),
        note(
            "Precision, recall and F1 of the stored test predictions; ROC AUC one-vs-rest from the "
            "re-run model's softmax probabilities."
        ),
        subsection(
            "Most confused pairs",
            table(pairs, folder.csv(pairs, f"confused_pairs_{name}"), {"share_of_true_digit": percent}),
        ),
        figure(
            folder.png(
                plots.image_grid(
                    images[shown],
                    [f"{labels[i]}→{predicted[i]} {confidence[i]:.0%}" for i in shown],
                    [True] * len(shown),
                    f"{name}: misclassified test images, most confident first ({len(shown)} of {len(wrong)})",
                ),
                f"misclassified_{name}",
            ),
            "Caption: true→predicted digit and the model's confidence in its prediction.",
        ),
        figure(
            folder.png(
                plots.image_grid(
                    images[random],
                    [f"{predicted[i]} {confidence[i]:.0%}" for i in random],
                    [predicted[i] != labels[i] for i in random],
                    f"{name}: random test images (seed {SAMPLE_SEED})",
                ),
                f"random_{name}",
            ),
            "Caption: predicted digit and confidence; red when wrong.",
        ),
    ]
    if rerun_differs:
        parts.append(
            note(
                f"Warning: re-running best.pt gives {rerun_differs} predictions that differ from "
                "the stored ones (another torch version or device?); the tables use the stored ones."
            )
        )
    return subsection(f"{name}", *parts)


def significance_table(models: list[BestModel], labels: np.ndarray) -> pd.DataFrame:
    """McNemar's exact test and a bootstrap interval for each pair of best models, on their common images."""
    records = []
    for a, b in combinations(models, 2):
        n = min(a.test.samples, b.test.samples)
        result = compare(a.predictions[:n], b.predictions[:n], labels[:n])
        records.append(
            {
                "model_a": a.name,
                "model_b": b.name,
                "samples": n,
                "accuracy_a": float(np.mean(a.predictions[:n] == labels[:n])),
                "accuracy_b": float(np.mean(b.predictions[:n] == labels[:n])),
                "difference": result.difference,
                "only_a_right": result.only_a_right,
                "only_b_right": result.only_b_right,
                "mcnemar_p": result.p_value,
                "ci95_low": result.low,
                "ci95_high": result.high,
            }
        )
    return pd.DataFrame.from_records(records)


def seed_spread(storage: Storage, model: BestModel) -> pd.DataFrame:
    """Val accuracy across seeds for each grid point of a sweep that ran several seeds (done trials)."""
    trials = storage.trials_table(model.name)
    trials = trials[trials["status"] == "done"]
    keys = [name for name in model.gridded if name in trials]
    grouped = trials.assign(**{k: trials[k].map(hashable) for k in keys}).groupby(keys, dropna=False)
    spread = grouped["val_accuracy"].agg(seeds="count", mean="mean", std="std", min="min", max="max")
    return spread.reset_index().assign(sweep=model.name)[["sweep", *keys, "seeds", "mean", "std", "min", "max"]]


def significance_section(folder: Folder, storage: Storage, models: list[BestModel], data_dir: Path) -> str:
    labels = data.test_split(data_dir, max(m.test.samples for m in models)).labels.numpy()
    parts = [
        paragraph(
            "McNemar's exact test asks whether two models' errors differ more than chance would "
            "make them: of the test images exactly one model gets right (only_a_right + "
            "only_b_right), a fair coin would give each model half; p is the two-sided binomial "
            f"probability. The 95% interval of the accuracy difference comes from {BOOTSTRAP_ROUNDS:,} "
            f"bootstrap resamples of the test images (seed {BOOTSTRAP_SEED})."
        )
    ]
    if len({m.test.samples for m in models}) > 1:
        parts.append(
            note(
                "The sweeps were tested on different numbers of images; each pair is compared on "
                "the first `samples` test images, which both models saw, so these accuracies can "
                "differ from the results table."
            )
        )
    if len(models) > 1:
        pairs = significance_table(models, labels)
        parts.append(
            table(
                pairs,
                folder.csv(pairs, "significance"),
                {
                    "accuracy_a": percent,
                    "accuracy_b": percent,
                    "difference": "{:+.2%}".format,
                    "ci95_low": "{:+.2%}".format,
                    "ci95_high": "{:+.2%}".format,
                    "mcnemar_p": "{:.3g}".format,
                },
            )
        )
    else:
        parts.append(note("Only one sweep in this report: no pair of models to compare."))
    several = [m for m in models if len({t.seed for t in storage.trials(m.name)}) > 1]
    if several:
        spread = pd.concat([seed_spread(storage, m) for m in several], ignore_index=True)
        parts.append(
            subsection(
                "Spread across seeds (val accuracy of each grid point)",
                table(spread, folder.csv(spread, "seed_spread"), {c: percent for c in ("mean", "std", "min", "max")}),
            )
        )
    else:
        parts.append(
            note(
                "No sweep in this report ran several seeds, so the spread across seeds is unknown; "
                "list several under seeds: in a sweep file to measure it."
            )
        )
    return "\n".join(parts)


def cost_section(folder: Folder, results: pd.DataFrame, models: list[BestModel]) -> str:
    cost = results[["sweep", "model", "parameter_count", "test_accuracy"]].assign(
        train_seconds=[m.trial.train_seconds for m in models]
    )
    return "\n".join(
        [
            figure(
                folder.png(plots.scatter_cost(cost), "accuracy_vs_cost"),
                "Test accuracy of each best model against its size and its own training time.",
            ),
            table(
                cost,
                folder.csv(cost, "accuracy_vs_cost"),
                {"test_accuracy": percent, "train_seconds": seconds, "parameter_count": "{:,}".format},
            ),
        ]
    )


def robustness_table(storage: Storage, models: list[BestModel]) -> pd.DataFrame:
    """Robustness accuracies of the best models: one row per condition, one column per sweep."""
    evaluations = storage.evaluations([m.trial.key for m in models])
    known = robustness.descriptions()
    evaluations = evaluations[evaluations["name"].isin(known)]
    by_key = {m.trial.key: m.name for m in models}
    frame = pd.DataFrame({"condition": list(known), "description": list(known.values())})
    for key, group in evaluations.groupby("trial_key"):
        column = group.set_index("name")
        frame[by_key[key]] = frame["condition"].map(column["accuracy"])
        frame[f"{by_key[key]}_samples"] = frame["condition"].map(column["samples"])
    present = [m.name for m in models if m.name in frame]
    return frame.dropna(subset=present, how="all").reset_index(drop=True) if present else frame.iloc[:0]


def condition_examples(data_dir: Path, count: int = 10) -> Figure:
    """The first ``count`` test images under each transformed-MNIST condition, one row per condition."""
    images = data.test_split(data_dir, count).images
    rows = [robustness.transformed(name, images)[:, 0].numpy() for name in robustness.CONDITIONS]
    captions = [name if index == 0 else "" for name in robustness.CONDITIONS for index in range(count)]
    return plots.image_grid(
        np.concatenate(rows),
        captions,
        [False] * len(captions),
        "The conditions on the first test images (one row each)",
        columns=count,
    )


def robustness_section(folder: Folder, storage: Storage, models: list[BestModel], data_dir: Path) -> str:
    frame = robustness_table(storage, models)
    if frame.empty:
        return note("No robustness evaluations yet: run `python -m gridsearch evaluate SWEEP --suite robustness`.")
    present = [m.name for m in models if m.name in frame]
    chart = frame.assign(condition=frame["condition"].str.removeprefix(robustness.PREFIX)).set_index("condition")[
        present
    ]
    return "\n".join(
        [
            figure(
                folder.png(plots.grouped_bars(chart, "Accuracy under shifted conditions"), "robustness"),
                "Accuracy of each best model on transformed MNIST test images and on other handwriting.",
            ),
            table(frame, folder.csv(frame, "robustness"), {name: percent for name in present}),
            note(robustness.PREPROCESSING),
            figure(
                folder.png(condition_examples(data_dir), "robustness_examples"),
                "What each transformed-MNIST condition looks like (random conditions as seeded in the suite). Like "
                "every figure here, ink is drawn dark on light, so inverted digits show light on dark.",
            ),
        ]
    )


def build_report(storage: Storage, sweeps: list[str], out: Path, artifacts: Path, data_dir: Path) -> Path:
    """Write the report on ``sweeps`` (all when empty) into ``out``; returns the path of index.html."""
    names = sweeps or storage.sweep_names()
    if not names:
        raise UserError("the database has no sweeps yet: nothing to report")
    models = [best_model(storage, name) for name in dict.fromkeys(names)]
    data.prepare(data_dir)
    folder = Folder(out)
    results = results_table(storage, models)
    body = {
        "results": table(results, folder.csv(results, "results"), RESULT_FORMATS)
        + note(
            "val and test accuracy of each sweep's selected trial; test errors out of test_samples; "
            "trials_run counts finished trials (done, stopped by successive halving, failed, timed out); "
            "compute_seconds sums the training epochs of every trial of the sweep."
        ),
        "effects": "\n".join(effects_section(folder, storage, m) for m in models),
        "curves": curves_section(folder, storage, models),
        "evaluation": "\n".join(evaluation_section(folder, m, artifacts, data_dir) for m in models),
        "significance": significance_section(folder, storage, models, data_dir),
        "cost": cost_section(folder, results, models),
        "robustness": robustness_section(folder, storage, models, data_dir),
        "data": inspection_section(folder, data_dir),
    }
    html = navigation(SECTIONS) + "".join(section(a, SECTIONS[a], part) for a, part in body.items())
    return folder.page(f"gridsearch report: {', '.join(m.name for m in models)}", html)
