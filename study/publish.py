"""``docs/study/`` from a finished study (the state file of ``study/run_study.py``), written by this one
command and never by hand, so that a larger run (the GPU's full profile) regenerates it the same way.

It writes ``results.db`` (the study's database), ``runs/<key>/best.pt`` with its SHA-256 for every tested
trial (so ``gridsearch serve --db docs/study/results.db`` and ``evaluate`` need no training),
``results.csv`` (one row per model), ``report/`` (``gridsearch report`` run on that folder), two figures
and ``README.md`` (``study/README.md.j2``), which answers the seed study's three questions with the
database's numbers.

    python study/publish.py --state study-cpu.tar.gz --out docs/study [--data-dir data]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gridsearch import api  # noqa: E402
from gridsearch.analysis.best_models import confused_pairs  # noqa: E402
from gridsearch.analysis.robustness import DIGITS_NAME, PREFIX, USPS_NAME  # noqa: E402
from gridsearch.analysis.significance import compare  # noqa: E402
from gridsearch.analysis.trained_models import BestModel, best_model  # noqa: E402
from gridsearch.analysis.uncertainty import wilson_interval  # noqa: E402
from gridsearch.spec.config import config_value  # noqa: E402
from gridsearch.store.storage import Storage  # noqa: E402
from gridsearch.training import data  # noqa: E402
from gridsearch.vocabulary import format_value  # noqa: E402
from study import evidence, figures  # noqa: E402
from study.evidence import Spread  # noqa: E402
from study.run_study import COMMITTEE, LEDGER, STUDY_MODELS, snapshot  # noqa: E402

STUDY_ROLES = [name.removesuffix(".yaml") for name in STUDY_MODELS]
"""The study's four models, by sweep name without the profile's suffix (``_cpu``), in the seed's order."""
TITLES = {
    "lenet53": "LeNet-5-3",
    "lenet53_augmented": "LeNet-5-3 augmented",
    "stn": "STN",
    "tps_stn": "TPS-STN",
    "mlp": "MLP",
    "convnet": "ConvNet",
    "vgg_small": "VGG (small)",
    "resnet_small": "ResNet (small)",
}
"""How the README names each architecture."""
SUFFIXES = {"cpu": "_cpu", "full": ""}
"""The profile's sweep-name suffix."""
CONFIDENCE = 0.95
BEST_PUBLISHED_COMMITTEE = 99.77
"""Test accuracy (%) of the best published MNIST committee the seed study cites (35 convnets, Ciresan et al. 2012)."""
SEED_EPOCHS = 100
HARD_SHOWN = 32
"""Test images every model gets wrong shown in ``hard.png`` at most (4 rows: under 2,000 pixels tall)."""


@dataclass(frozen=True)
class SeedResult:
    """A row of the seed study's results table (``seed-study.md``): 100 epochs, one seed, one GPU."""

    lr: float
    k: float
    best_epoch: int
    val_accuracy: float
    test_accuracy: float
    test_errors: int


SEED = {
    "lenet53": SeedResult(0.08, 4, 93, 99.722, 99.61, 39),
    "lenet53_augmented": SeedResult(0.05, 5, 74, 99.752, 99.65, 35),
    "stn": SeedResult(0.005, 7, 31, 99.771, 99.69, 31),
    "tps": SeedResult(0.0055, 6.5, 59, 99.742, 99.71, 29),
}


@dataclass(frozen=True)
class Model:
    """One sweep of the study: its selected trial (tested) and what the README reads from it."""

    best: BestModel
    role: str
    """The sweep's name without the profile's suffix (``lenet53``, ``mlp``, ``fashion_lenet53``, ...)."""
    trials: int
    train_seconds: float
    """Training seconds summed over the sweep's trials."""
    seeds: list[float]
    """Test accuracy (%) of each seed of the selected configuration (its ``_seeds`` sweep), if replicated."""
    warm_epochs: int = 0
    """Epochs the trial it was warm-started from had trained (0: trained from scratch)."""

    @property
    def title(self) -> str:
        return TITLES.get(self.best.trial.architecture, self.best.trial.architecture)

    @property
    def label(self) -> str:
        """The title, with the dataset when it is not MNIST."""
        return self.title if self.best.dataset.name == "mnist" else f"{self.title} ({self.dataset})"

    @property
    def dataset(self) -> str:
        return self.best.dataset.title

    @property
    def accuracy(self) -> float:
        return 100 * self.best.test.accuracy

    @property
    def errors(self) -> int:
        return self.best.test.errors

    @property
    def selected(self) -> str:
        """The selected gridded params, ``lr_step`` with the seed's ``k`` it compresses (``k = lr_step x 100 /
        epochs``)."""
        config = self.best.trial.config
        epochs = config["params"]["epochs"]
        parts = []
        for name in self.best.gridded:
            value = config_value(config, name)
            k = f" (k {float(value) * SEED_EPOCHS / epochs:g})" if name == "lr_step" else ""
            parts.append(f"{name} {value}{k}")
        return ", ".join(parts) or "-"

    @property
    def epochs(self) -> str:
        """Epochs of training behind the weights: a fine-tuned model's own after those of the trial it started
        from (``18 + 8``)."""
        return f"{self.warm_epochs} + {self.own_epochs}" if self.warm_epochs else str(self.own_epochs)

    @property
    def own_epochs(self) -> int:
        return int(self.best.trial.epochs_run or self.best.trial.config["params"]["epochs"])

    @property
    def spread(self) -> Spread | None:
        return Spread.of(self.seeds) if len(self.seeds) > 1 else None


@dataclass(frozen=True)
class Committee:
    """The study committee's test result: K members chosen on validation, with the Wilson 95% interval (%)."""

    k: int
    candidates: int
    accuracy: float
    errors: int
    samples: int
    low: float
    high: float


@dataclass(frozen=True)
class Versus:
    """Model A against model B on the same test images: McNemar's exact p and the bootstrap interval (%)."""

    a: str
    b: str
    dataset: str
    only_a: int
    only_b: int
    difference: float
    low: float
    high: float
    p: float


def wilson(correct: int, samples: int) -> tuple[float, float]:
    """The Wilson 95% interval (%) of an accuracy of ``correct`` out of ``samples``."""
    low, high = wilson_interval(correct, samples, CONFIDENCE)
    return 100 * low, 100 * high


def warm_epochs(storage: Storage, trial: Any) -> int:
    """Epochs trained by the trial ``trial`` was warm-started from (``init_from: trial:<key>``), else 0."""
    source = str(trial.config["params"].get("init_from") or "")
    row = storage.trial(source.removeprefix("trial:")) if source.startswith("trial:") else None
    return int(row.epochs_run or 0) if row else 0


def load_models(storage: Storage, suffix: str) -> dict[str, Model]:
    """Every grid sweep of the study (not its replicates nor the committee), by role, in database order."""
    names = storage.sweep_names()
    models = {}
    for name in names:
        if name.endswith(("_seeds", "_fp32")) or name == COMMITTEE:
            continue
        trials = storage.trials(name)
        best = best_model(storage, name)
        models[name.removesuffix(suffix)] = Model(
            best,
            name.removesuffix(suffix),
            len(trials),
            sum(t.train_seconds or 0.0 for t in trials),
            evidence.seed_accuracies(storage, f"{name}_seeds"),
            warm_epochs(storage, best.trial),
        )
    return models


def committee(storage: Storage) -> Committee | None:
    """The study committee's stored evaluation (``ensemble/topK`` of ``study_committee``'s selected trial)."""
    if COMMITTEE not in storage.sweep_names() or not (key := storage.selected_trial(COMMITTEE)):
        return None
    candidates = len(storage.trials(COMMITTEE))
    for k in range(1, candidates + 1):
        if found := storage.evaluation(key, f"ensemble/top{k}"):
            low, high = wilson(found.samples - found.errors, found.samples)
            return Committee(k, candidates, 100 * found.accuracy, found.errors, found.samples, low, high)
    return None


def budget_curve(storage: Storage, suffix: str) -> list[tuple[int, float]]:
    """(epochs, best validation accuracy %) of each trial of the epoch-budget sweep."""
    name = f"lenet53_budget{suffix}"
    if name not in storage.sweep_names():
        return []
    trials = storage.trials(name)
    return sorted((t.config["params"]["epochs"], 100 * t.val_accuracy) for t in trials if t.val_accuracy is not None)


def robustness(db: Path, models: list[Model]) -> pd.DataFrame:
    """Test accuracy (%) of each model (columns) under each stored robustness condition and other set (rows)."""
    columns = {}
    for model in models:
        found = api.evaluations(db, model.best.name)
        found = found[(found["key"] == model.best.trial.key) & (found["name"] != "test")]
        found = found[~found["name"].str.startswith("ensemble/")]
        columns[model.label] = dict(zip(found["name"].str.removeprefix("robustness/"), 100 * found["accuracy"]))
    return pd.DataFrame(columns)


def versus(a: Model, b: Model, data_dir: Path) -> Versus:
    """McNemar's exact test and the bootstrap interval of ``a`` against ``b`` on their common test images."""
    n = min(a.best.test.samples, b.best.test.samples)
    labels = data.test_images(data_dir, n, a.best.dataset.name).labels
    found = compare(a.best.predictions[:n], b.best.predictions[:n], labels)
    return Versus(
        a.label,
        b.label,
        a.dataset,
        found.only_a_right,
        found.only_b_right,
        100 * found.difference,
        100 * found.low,
        100 * found.high,
        found.p_value,
    )


def confusions(model: Model, top: int = 5) -> list[tuple[str, str, int]]:
    """The ``top`` (true, predicted, count) confusions of ``model`` on its test images, by class name."""
    classes = model.best.dataset.classes
    frame = confused_pairs(np.array(model.best.test.confusion), top)
    return [(classes[t], classes[p], n) for t, p, n in zip(frame["true"], frame["predicted"], frame["errors"])]


def results_table(models: dict[str, Model]) -> pd.DataFrame:
    """``results.csv``: one row per model."""
    return pd.DataFrame(
        [
            {
                "dataset": m.dataset,
                "sweep": m.best.name,
                "architecture": m.best.trial.architecture,
                "trials": m.trials,
                "selected_params": m.selected,
                "parameters": m.best.trial.parameter_count,
                "epochs": m.epochs,
                "best_epoch": m.best.trial.best_epoch,
                "val_accuracy": round(100 * (m.best.trial.val_accuracy or 0.0), 3),
                "test_accuracy": round(m.accuracy, 3),
                "test_errors": m.errors,
                "seeds": len(m.seeds) or 1,
                "seed_mean_test_accuracy": round(m.spread.mean, 3) if m.spread else None,
                "seed_sd_test_accuracy": round(m.spread.sd, 3) if m.spread else None,
                "train_seconds": round(m.train_seconds, 1),
                "device": m.best.trial.device,
            }
            for m in models.values()
        ]
    )


def copy_weights(db: Path, runs: Path, out: Path) -> dict[str, str]:
    """``best.pt`` (and its checksum file) of every tested trial into ``out``; SHA-256 by trial key."""
    with closing(sqlite3.connect(db)) as connection:
        keys = [key for (key,) in connection.execute("SELECT DISTINCT trial_key FROM evaluations ORDER BY trial_key")]
    checksums = {}
    for key in keys:
        (out / key).mkdir(parents=True, exist_ok=True)
        for name in ("best.pt", "best.pt.sha256"):
            shutil.copyfile(runs / key / name, out / key / name)
        checksums[key] = hashlib.sha256((out / key / "best.pt").read_bytes()).hexdigest()
    return checksums


def slim(db: Path) -> None:
    """Drop the per-image predictions of the robustness suite's evaluations from ``db`` (the state file keeps them).

    They are most of the database (about 4.4 of 5.5 MB in the CPU study) and nothing reads them: the report, the
    committees and the significance tests read the test set's predictions, the robustness table its accuracies.
    """
    with closing(sqlite3.connect(db)) as connection:
        with connection:
            connection.execute(
                "UPDATE evaluations SET predictions = '[]' WHERE name LIKE ? OR name IN (?, ?)",
                (PREFIX + "%", USPS_NAME, DIGITS_NAME),
            )
        connection.execute("VACUUM")


def save_labels(db: Path, models: dict[str, Model], data_dir: Path) -> None:
    """Keep in ``db`` the test labels of each dataset the study tested on, so that its report can be rebuilt where
    the dataset files are absent (``gridsearch.analysis.test_sets``)."""
    sizes: dict[str, int] = {}
    for m in models.values():
        sizes[m.best.dataset.name] = max(sizes.get(m.best.dataset.name, 0), m.best.test.samples)
    with Storage(str(db)) as storage:
        for name, size in sizes.items():
            storage.save_test_labels(name, data.test_images(data_dir, size, name).labels.tolist())


def mnist_solved(models: dict[str, Model], runs: Path, data_dir: Path, out: Path) -> list[evidence.Hard]:
    """For MNIST's models and for Fashion-MNIST's: the test images every one gets wrong (a figure of MNIST's) and
    what a committee of all of them still misses."""
    found = []
    for dataset in ("mnist", "fashion_mnist"):
        alike = [m for m in models.values() if m.best.dataset.name == dataset and "budget" not in m.role]
        if len(alike) < 2:
            continue
        n = min(m.best.test.samples for m in alike)
        labels = data.test_images(data_dir, n, dataset).labels
        indices, answers = evidence.hard_images([m.best for m in alike], labels)
        named = {m.label: answers[m.best.name] for m in alike}
        errors = evidence.committee_errors([m.best for m in alike], runs, data_dir)
        found.append(
            evidence.Hard(dataset, [m.label for m in alike], indices, labels[indices].tolist(), named, errors, n)
        )
        if dataset == "mnist" and indices:
            shown = indices[:HARD_SHOWN]
            images = data.test_images(data_dir, n, dataset).images[shown, 0]
            first = f"the first {len(shown)} of " if len(shown) < len(indices) else ""
            title = f"{first}the {len(indices)} MNIST test images every one of the {len(alike)} models gets wrong"
            answers = {name: given[: len(shown)] for name, given in named.items()}
            figures.hard_figure(images, labels[shown].tolist(), answers, title[0].upper() + title[1:], out / "hard.png")
    return found


def study_figures(storage: Storage, models: dict[str, Model], suffix: str, out: Path) -> None:
    """``budget.png`` and ``datasets.png``."""
    lenet = models["lenet53"]
    curve = budget_curve(storage, suffix)
    vals = evidence.seed_val_accuracies(storage, f"{lenet.best.name}_seeds")
    epochs = lenet.best.trial.config["params"]["epochs"]
    seeds = (epochs, (s := Spread.of(vals)).mean, s.low, s.high) if len(vals) > 1 else None
    val_size = lenet.best.trial.config["dataset"]["val_size"]
    figures.budget_figure(curve, val_size, seeds, (SEED_EPOCHS, SEED["lenet53"].val_accuracy), out / "budget.png")
    pairs = [
        (m.title, m.errors, m.best.test.samples, f.errors, f.best.test.samples)
        for r, m in models.items()
        if (f := models.get(f"fashion_{r}"))
    ]
    figures.datasets_figure(pairs, out / "datasets.png")


def evidence_context(
    storage: Storage, models: dict[str, Model], suffix: str, work: Path, data_dir: Path
) -> dict[str, Any]:
    """What the README reads beyond each model's results: the fp32 check, the transformers' displacement, the
    seed study's ranking against ours."""
    lenet = models["lenet53"]
    study = [models[r] for r in STUDY_ROLES if r in models]
    ranked = [
        evidence.Ranked(m.role, m.title, SEED[m.role].test_accuracy, m.spread) for m in study if m.spread is not None
    ]
    moved = {
        m.title: pixels
        for m in study
        if (pixels := evidence.transformer_displacement(m.best, work / "runs", data_dir)) is not None
    }
    return {
        "precision": evidence.precision_check(storage, f"{lenet.best.name}_seeds", f"{lenet.best.name}_fp32"),
        "displacement": moved,
        "steps": evidence.ranking_steps(ranked) if len(ranked) == len(study) else [],
        "ranked": sorted(ranked, key=lambda r: -r.ours.mean),
    }


def publish(work: Path, out: Path, data_dir: Path) -> None:
    """Write ``out`` from the unpacked study ``work`` (``results.db``, ``runs/``, ``study.json``). Everything is
    written in a folder beside the repository first and moved into ``out`` at the end, so that the report's code
    version is the commit's (no ``dirty`` from a half-written ``docs/study``)."""
    ledger = json.loads((work / LEDGER).read_text())
    suffix = SUFFIXES[ledger["profile"]]
    with Storage(str(work / "results.db"), readonly=True) as storage:
        names = storage.sweep_names()
        budget = [f"lenet53_budget{suffix}"] if f"lenet53_budget{suffix}" in names else []
        evidence.check_selection(storage, f"lenet53{suffix}", budget)
    with tempfile.TemporaryDirectory() as folder:
        stage = Path(folder) / "study"
        stage.mkdir()
        db = stage / "results.db"
        slim(snapshot(work / "results.db", db))
        checksums = copy_weights(db, work / "runs", stage / "runs")
        with Storage(str(db), readonly=True) as storage:
            models = load_models(storage, suffix)
        save_labels(db, models, data_dir)
        report = subprocess.run(
            [sys.executable, "-m", "gridsearch", "report", "--db", str(db), "--out", str(stage / "report")]
            + ["--data-dir", str(data_dir)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if report.returncode != 0:
            raise SystemExit(f"gridsearch report failed:\n{report.stderr}")
        with Storage(str(db), readonly=True) as storage:
            context = readme_context(storage, models, suffix, ledger, data_dir, db)
            context |= evidence_context(storage, models, suffix, work, data_dir)
            study_figures(storage, models, suffix, stage)
        context |= {"checksums": checksums, "hard": mnist_solved(models, work / "runs", data_dir, stage)}
        results_table(models).to_csv(stage / "results.csv", index=False)
        template = jinja2.Environment(
            loader=jinja2.FileSystemLoader(Path(__file__).parent),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        ).get_template("README.md.j2")
        (stage / "README.md").write_text(template.render(context))
        if out.exists():
            shutil.rmtree(out)
        shutil.move(stage, out)


def readme_context(
    storage: Storage, models: dict[str, Model], suffix: str, ledger: dict[str, Any], data_dir: Path, db: Path
) -> dict[str, Any]:
    """The README's numbers that come from the stored evaluations."""
    study = [models[r] for r in STUDY_ROLES if r in models]
    mnist = [m for m in models.values() if m.best.dataset.name == "mnist" and not m.role.startswith("lenet53_budget")]
    fashion = [m for m in models.values() if m.best.dataset.name != "mnist"]
    lenet = models["lenet53"]
    pairs = [(models[r.removeprefix("fashion_")], m) for r, m in models.items() if r.startswith("fashion_")]
    frame = robustness(db, study + fashion)
    samples = {m.label: m.best.test.samples for m in study + fashion}
    plain = lenet.label
    families = []
    if not frame.empty and plain in frame:
        groups = {
            "augmentation (LeNet-5-3 augmented)": [m.label for m in study if m.role == "lenet53_augmented"],
            "the spatial transformers (STN, TPS-STN)": [m.label for m in study if m.role in ("stn", "tps")],
        }
        families = [evidence.family(n, frame, plain, g) for n, g in groups.items() if g and all(x in frame for x in g)]
    return {
        "ledger": ledger,
        "study": study,
        "seed": SEED,
        "seed_epochs": SEED_EPOCHS,
        "lenet": lenet,
        "committee": committee(storage),
        "best_committee": BEST_PUBLISHED_COMMITTEE,
        "curve": budget_curve(storage, suffix),
        "selection": selection_table(storage, lenet, suffix),
        "edges": grid_edges(storage, lenet),
        "mnist": sorted(mnist, key=lambda m: -m.accuracy),
        "against_lenet": [versus(m, lenet, data_dir) for m in mnist if m is not lenet],
        "fashion": fashion,
        "fashion_pairs": pairs,
        "ratios": [f.errors / max(m.errors, 1) for m, f in pairs],
        "fashion_versus": [versus(a, b, data_dir) for i, a in enumerate(fashion) for b in fashion[i + 1 :]],
        "confused": confusions(lenet),
        "robustness": evidence.robustness_intervals(frame.round(2), {}, samples) if not frame.empty else frame,
        "families": families,
        "weakest": evidence.weakest(frame, plain) if not frame.empty and plain in frame else [],
        "devices": sorted({m.best.trial.device or "?" for m in models.values()}),
    }


def grid_edges(storage: Storage, model: Model) -> list[tuple[str, str, str]]:
    """The gridded params (2+ values) whose selected value is the highest or lowest of ``model``'s sweep: (name,
    value, "highest" or "lowest"); a selection on the edge of its grid may have a better point outside it."""
    trials = storage.trials(model.best.name)
    edges = []
    for name in model.best.gridded:
        values = sorted({config_value(t.config, name) for t in trials})
        chosen = config_value(model.best.trial.config, name)
        if len(values) > 1 and chosen in (values[0], values[-1]):
            edges.append((name, format_value(chosen), "highest" if chosen == values[-1] else "lowest"))
    return edges


def selection_table(storage: Storage, lenet: Model, suffix: str) -> list[tuple[str, float, float, bool]]:
    """Every LeNet-5-3 trial trained to the final budget in its sweep and the budget sweep: (config, val %, val
    loss, selected), best first."""
    epochs = lenet.best.trial.config["params"]["epochs"]
    trials = evidence.final_budget_trials(storage, [lenet.best.name, f"lenet53_budget{suffix}"], epochs)
    rows = [
        (
            f"lr {t.config['params']['lr']:g}, lr_step {t.config['params']['lr_step']:g} "
            f"(k {t.config['params']['lr_step'] * SEED_EPOCHS / epochs:g})",
            100 * (t.val_accuracy or 0),
            t.val_loss or 0.0,
            t.key == lenet.best.trial.key,
        )
        for t in trials
    ]
    return sorted(rows, key=lambda r: (-r[1], r[2]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, required=True, help="the state file study/run_study.py finished")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "study")
    parser.add_argument("--data-dir", type=Path, default=data.default_data_dir())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        with tarfile.open(args.state) as archive:
            archive.extractall(folder, filter="data")
        publish(Path(folder), args.out.resolve(), args.data_dir)
    print(f"study published in {args.out}")


if __name__ == "__main__":
    main()
