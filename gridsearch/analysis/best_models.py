"""The best models up close: confusion matrix, per-class metrics, the most confused pairs and image grids.

Everything but the class probabilities comes from the stored test evaluation. The probabilities (ROC AUC,
the confidence of each prediction) come from re-running the trial's ``best.pt`` on the same test images;
without its run folder they are left out and the section says how to supply it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from gridsearch.analysis import plots
from gridsearch.analysis.test_sets import HeldOutImages
from gridsearch.analysis.trained_models import BestModel, Scores, WeightsUnavailable, bf16, load_model, score
from gridsearch.analysis.webpage import Block, Figure, Folder, Group, Note, Paragraph, table
from gridsearch.training.data import Images
from gridsearch.vocabulary import format_count, format_epoch, format_percent

GRID_SIZE = 30
"""Images in each grid of misclassified and of random test predictions."""
SAMPLE_SEED = 0
CONFUSED_PAIRS = 5


Rerun = Scores | WeightsUnavailable | None
"""The class probabilities of a best model re-run on its test images; why not (its weights are missing); or None
(the test images are)."""


def rerun(model: BestModel, artifacts: Path, tests: HeldOutImages) -> Rerun:
    """The model's best weights re-run on its test images, or why they cannot be (without torch when there are
    no weights), or None without the images."""
    test = tests.for_model(model)
    if test is None:
        tests.leave_out("ROC AUC and confidences")
        return None
    try:
        network = load_model(model.trial, artifacts)
        split = test.split()
        return score(network, split.images, split.labels, bf16(model.trial))
    except WeightsUnavailable as missing:
        return missing


def per_class_table(
    confusion: np.ndarray, labels: np.ndarray | None = None, probabilities: np.ndarray | None = None
) -> pd.DataFrame:
    """Per class: support, precision, recall and F1 of the stored predictions (from their confusion matrix, as
    scikit-learn computes them, 0 where undefined) and one-vs-rest ROC AUC (empty without ``labels`` and
    ``probabilities``)."""
    confusion = np.asarray(confusion)
    right, support, predicted = np.diag(confusion), confusion.sum(1), confusion.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, right / predicted, 0.0)
        recall = np.where(support > 0, right / support, 0.0)
        f1 = np.where(support + predicted > 0, 2 * right / (support + predicted), 0.0)
    classes = range(len(confusion))
    auc = [
        roc_auc_score(labels == c, probabilities[:, c])
        if labels is not None and probabilities is not None and 0 < support[c] < len(labels)
        else np.nan
        for c in classes
    ]
    return pd.DataFrame(
        {"digit": classes, "support": support, "precision": precision, "recall": recall, "f1": f1, "roc_auc": auc}
    )


def confused_pairs(confusion: np.ndarray, top: int = CONFUSED_PAIRS) -> pd.DataFrame:
    """The ``top`` most frequent (true, predicted) mistakes, with their share of the true class's images."""
    records = [
        {
            "true": t,
            "predicted": p,
            "errors": int(confusion[t, p]),
            "share_of_true_digit": confusion[t, p] / confusion[t].sum(),
        }
        for t in range(len(confusion))
        for p in range(len(confusion))
        if t != p and confusion[t, p] > 0
    ]
    frame = pd.DataFrame.from_records(records, columns=["true", "predicted", "errors", "share_of_true_digit"])
    return frame.sort_values(["errors", "true", "predicted"], ascending=[False, True, True]).head(top)


def image_grids(folder: Folder, model: BestModel, test: Images, confidence: np.ndarray | None) -> list[Block]:
    """The misclassified test images (most confident first when ``confidence`` is known) and a seeded random
    sample, captioned with the predictions (and the confidence in them)."""
    labels, images, predicted = test.labels, test.images, model.predictions
    wrong = np.flatnonzero(predicted != labels)
    shown = wrong if confidence is None else wrong[np.argsort(-confidence[wrong], kind="stable")]
    shown = shown[:GRID_SIZE]
    random = np.random.default_rng(SAMPLE_SEED).choice(len(labels), min(GRID_SIZE, len(labels)), replace=False)

    def sure(i: int) -> str:
        return "" if confidence is None else f" {format_percent(confidence[i], 0)}"

    order = "test order" if confidence is None else "most confident first"
    name, noun = model.name, model.dataset.noun
    mistakes = plots.image_grid(
        images[shown],
        [f"{labels[i]}→{predicted[i]}{sure(i)}" for i in shown],
        [True] * len(shown),
        f"{name}: misclassified test images, {order} ({len(shown)} of {len(wrong)})",
    )
    sample = plots.image_grid(
        images[random],
        [f"{predicted[i]}{sure(i)}" for i in random],
        [predicted[i] != labels[i] for i in random],
        f"{name}: random test images (seed {SAMPLE_SEED})",
    )
    confident = "" if confidence is None else " and the model's confidence in its prediction"
    return [
        Figure(folder.png(mistakes, f"misclassified_{name}"), f"Caption: true→predicted {noun}{confident}."),
        Figure(folder.png(sample, f"random_{name}"), f"Caption: predicted {noun}{confident}; red when wrong."),
    ]


def evaluation_section(folder: Folder, model: BestModel, tests: HeldOutImages, rerun: Rerun) -> Group:
    """Confusion matrix, per-class metrics, confused pairs and image grids of one best model, on its test images
    (the grids only where ``tests`` has them); ``rerun`` holds the re-run model's probabilities, or why there are
    none."""
    test, predicted = tests.for_model(model), model.predictions
    probabilities = rerun.probabilities.numpy() if isinstance(rerun, Scores) else None
    labels = None if test is None else test.labels
    confidence = None if probabilities is None else probabilities[np.arange(len(predicted)), predicted]
    confusion = np.array(model.test.confusion)
    per_class = per_class_table(confusion, labels, probabilities)
    pairs = confused_pairs(confusion)
    name = model.name
    blocks: list[Block] = [
        Paragraph(
            f"Trial {model.trial.key} ({model.config_text}), best epoch {format_epoch(model.trial.best_epoch)}: "
            f"test accuracy {format_percent(model.test.accuracy)}, {format_count(model.test.errors)} errors in "
            f"{format_count(model.test.samples)} test images, test loss {model.test.loss:.4f}."
        ),
    ]
    if isinstance(rerun, WeightsUnavailable):
        blocks.append(Note(f"Without the best weights, ROC AUC and the confidences are left out: {rerun}."))
    blocks += [
        Figure(
            folder.png(
                plots.confusion_matrix(confusion, f"{name}: test confusion matrix", model.dataset), f"confusion_{name}"
            ),
            f"Rows: true {model.dataset.noun}; columns: predicted. Diagonal in green.",
        ),
        table(
            per_class,
            folder.csv(per_class, f"per_class_{name}"),
            {c: "{:.4f}".format for c in ("precision", "recall", "f1", "roc_auc")},
        ),
        Note(
            "Precision, recall and F1 of the stored test predictions; ROC AUC one-vs-rest from the "
            "re-run model's softmax probabilities."
        ),
        Group(
            "Most confused pairs",
            [table(pairs, folder.csv(pairs, f"confused_pairs_{name}"), {"share_of_true_digit": format_percent})],
        ),
        *(image_grids(folder, model, test, confidence) if test is not None else []),
    ]
    if test is None:
        tests.leave_out("misclassified and random test images")
    if isinstance(rerun, Scores) and (differ := int((rerun.predicted.numpy() != predicted).sum())):
        blocks.append(
            Note(
                f"Warning: re-running best.pt gives {differ} predictions that differ from "
                "the stored ones (another torch version or device?); the tables use the stored ones."
            )
        )
    return Group(name, blocks)
