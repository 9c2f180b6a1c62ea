"""``report``: a study of three small finished sweeps (a 2x2 LeNet grid, an MLP over two seeds, a successive-
halving sweep), every number checked against the database. The sweeps run once through the real engine; the
report is built in this process."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib import image as mpimg
from scipy.stats import binomtest

from gridsearch.analysis import robustness
from gridsearch.analysis.effects import grid_effects, grid_heatmap
from gridsearch.analysis.learned import learned_section
from gridsearch.analysis.report import Report, build_report
from gridsearch.analysis.significance import bootstrap_interval, mcnemar_exact
from gridsearch.analysis.test_sets import HeldOutImages
from gridsearch.analysis.trained_models import best_model, bf16, load_model, score
from gridsearch.analysis.webpage import Folder, Note
from gridsearch.cli import main
from gridsearch.engine.devices import code_version
from gridsearch.store.storage import Storage
from gridsearch.training import data
from tests.conftest import cli as conftest_cli
from tests.conftest import rows, write_sweep
from tests.test_robustness import USPS

SECTIONS = (
    "What was run",
    "Which model is best?",
    "How did they train?",
    "Is the difference real?",
    "Does a committee beat the single best?",
    "How robust are they?",
    "Each sweep in detail",
    "What data?",
)
"""The index page's sections: one per question asked across the sweeps."""
SWEEP_SECTIONS = (
    "Hyperparameter effects",
    "Which knob mattered?",
    "How sure is the winner?",
    "Best model",
    "What the network learned",
)
"""The sections of each sweep's own page."""
HALVED = {
    "name": "halved",
    "params": {"epochs": 3, "batch_size": 50, "hidden": 32, "patience": 5},
    "search": {"strategy": "halving", "factor": 3, "min_epochs": 1},
}
"""The small sweep's 4 trials by successive halving: all 4 train 1 epoch, the best 2 go on to 3."""
FLOAT32 = 1e-7
"""CSVs write a single-precision value as its shortest decimal (0.987, not 0.9869999885559082)."""


@dataclass(frozen=True)
class Study:
    folder: Path
    report: Path
    written: Report
    evaluated: str
    """What ``evaluate --suite robustness`` and ``evaluate --ensemble auto`` printed."""


@contextlib.contextmanager
def torch_settings_kept() -> Iterator[None]:
    """Restore the torch settings that loading a model changes (threads, deterministic algorithms)."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_dir) -> Study:
    """The three sweeps run by one real ``run`` (inline, in this process), one robustness run, one report of them
    all."""
    folder = tmp_path_factory.mktemp("study")
    lenet = write_sweep(
        folder,
        "lenet.yaml",
        name="lenet",
        dataset={"train_size": 500, "val_size": 300, "test_size": 300},
        params={"epochs": 1, "batch_size": 50, "hidden": 16},
    )
    mlp = write_sweep(
        folder,
        "mlp.yaml",
        name="mlp",
        architecture="mlp",
        grid={"lr": [0.1]},
        seeds=[0, 1],
        dataset={"train_size": 500, "val_size": 300, "test_size": 250},
        params={"epochs": 2, "batch_size": 50},
    )
    halved = write_sweep(folder, "halved.yaml", **HALVED)
    conftest_cli("run", str(lenet), str(mlp), str(halved), cwd=folder, data_dir=data_dir, check=True)
    db = str(folder / "results.db")
    evaluate = ["evaluate", "lenet", "--suite", "robustness", "--test-size", "200", "--db", db]
    printed = io.StringIO()
    with torch_settings_kept(), contextlib.redirect_stdout(printed):
        assert main([*evaluate, "--data-dir", str(data_dir), "--usps", str(USPS)]) == 0
        assert main(["evaluate", "lenet", "--ensemble", "auto", "--db", db, "--data-dir", str(data_dir)]) == 0
        written = build_report(Storage(db, readonly=True), [], folder / "study", folder / "runs", data_dir)
    return Study(folder, folder / "study", written, printed.getvalue())


def csv(report: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(report / f"{name}.csv")


def pages(report: Path) -> str:
    """The text of every page of a report folder: its index and its sweeps' pages."""
    return "\n".join(path.read_text() for path in sorted(report.glob("*.html")))


def test_report_has_every_section_and_only_existing_relative_links(study):
    assert study.written == Report(study.report / "index.html", [])
    page = study.written.index.read_text()
    for title in SECTIONS:
        assert title in page
    assert '<nav><h2>Contents</h2><ul><li><a href="#about">1. What was run</a></li>' in page
    for sweep in ("lenet", "mlp", "halved"):
        assert f'<a href="sweep_{sweep}.html">{sweep}</a>' in page
        own = (study.report / f"sweep_{sweep}.html").read_text()
        assert all(title in own for title in SWEEP_SECTIONS) and '<a href="index.html">Back to the report</a>' in own
    assert sorted(path.name for path in study.report.glob("*.html")) == [
        "index.html",
        "sweep_halved.html",
        "sweep_lenet.html",
        "sweep_mlp.html",
    ]
    links = re.findall(r'(?:src|href)="([^"]+)"', pages(study.report))
    files = [link for link in links if not link.startswith("#")]
    assert {
        "results.csv",
        "heatmap_lenet.png",
        "heatmap_halved.png",
        "rung_curves_halved.png",
        "learning_curves.png",
        "confusion_mlp.png",
        "robustness.png",
        "significance.csv",
        "committees.csv",
        "committee_members.csv",
        "seed_spread_mlp.csv",
        "intervals_lenet.csv",
        "importance_lenet.png",
        "parallel_halved.png",
        "accuracy_vs_cost.png",
        "inspect_samples.png",
    } <= set(files)
    for link in files:
        assert "://" not in link and not link.startswith("/") and ".." not in link
        assert (study.report / link).is_file(), link
    assert "<script" not in page and "<link" not in page  # nothing loaded from elsewhere


def test_every_png_is_a_real_non_blank_image(study):
    pngs = sorted(study.report.glob("*.png"))
    assert len(pngs) >= 15
    for path in pngs:
        pixels = mpimg.imread(path)
        assert pixels.shape[0] > 50 and pixels.shape[1] > 50, path.name
        assert pixels[..., :3].std() > 0.02, f"{path.name} is blank"


def test_results_table_matches_the_database(study):
    db = study.folder / "results.db"
    table = csv(study.report, "results").set_index("sweep")
    expected = rows(
        db,
        """
        SELECT s.name, t.architecture, t.parameter_count, t.best_epoch, t.val_accuracy, e.accuracy, e.errors,
               e.samples,
               (SELECT COUNT(*) FROM sweep_trials m JOIN trials x ON x.key = m.trial_key
                WHERE m.sweep_id = s.id AND x.status IN ('done', 'stopped', 'failed', 'timeout')),
               (SELECT SUM(p.seconds) FROM sweep_trials m JOIN epochs p ON p.trial_key = m.trial_key
                WHERE m.sweep_id = s.id)
        FROM sweeps s JOIN trials t ON t.key = s.selected_trial
        JOIN evaluations e ON e.trial_key = t.key AND e.name = 'test' ORDER BY s.id""",
    )
    assert list(table.index) == [r[0] for r in expected] == ["lenet", "mlp", "halved"]
    columns = [
        "model",
        "parameter_count",
        "best_epoch",
        "val_accuracy",
        "test_accuracy",
        "test_errors",
        "test_samples",
        "trials_run",
        "compute_seconds",
    ]
    for name, *values in expected:
        got = table.loc[name, columns].tolist()
        assert got[0] == values[0] and got[1:3] == values[1:3] and got[5:8] == values[5:8]
        assert got[3:5] == pytest.approx(values[3:5], rel=FLOAT32)
        assert got[8] == pytest.approx(values[8], rel=1e-9)
    assert table.loc["halved", "trials_run"] == 4  # 2 done, 2 stopped by successive halving
    params = dict(
        rows(
            db,
            "SELECT p.name, p.number FROM sweeps s JOIN trial_params p ON p.trial_key = s.selected_trial "
            "WHERE s.name = 'lenet'",
        )
    )
    assert table.loc["lenet", "best_config"] == f"lr={params['lr']:g} lr_step={params['lr_step']:g} seed=0"
    page = study.written.index.read_text()
    for _name, *values in expected:
        assert f"{values[3]:.2%}" in page and f"{values[4]:.2%}" in page


def test_grid_curves_and_seed_tables_match_the_database(study):
    db = study.folder / "results.db"
    grid = csv(study.report, "grid_lenet")
    stored = rows(
        db,
        "SELECT t.key, t.val_accuracy FROM trials t JOIN sweep_trials m ON m.trial_key = t.key "
        "JOIN sweeps s ON s.id = m.sweep_id WHERE s.name = 'lenet'",
    )
    assert dict(zip(grid["key"], grid["val_accuracy"])) == pytest.approx(dict(stored), rel=FLOAT32)
    curves = csv(study.report, "learning_curves")
    stored = rows(
        db,
        "SELECT e.trial_key, e.epoch, e.train_loss, e.val_accuracy FROM epochs e "
        "JOIN sweeps s ON s.selected_trial = e.trial_key ORDER BY e.trial_key, e.epoch",
    )
    got = [tuple(r) for r in curves[["trial_key", "epoch", "train_loss", "val_accuracy"]].itertuples(index=False)]
    assert [r[:2] for r in got] == [r[:2] for r in stored]
    assert [v for r in got for v in r[2:]] == pytest.approx([v for r in stored for v in r[2:]], rel=FLOAT32)
    spread = csv(study.report, "seed_spread_mlp")
    expected = rows(
        db,
        "SELECT COUNT(*), AVG(t.val_accuracy) FROM trials t JOIN sweep_trials m ON m.trial_key = t.key "
        "JOIN sweeps s ON s.id = m.sweep_id WHERE s.name = 'mlp' AND t.status = 'done'",
    )[0]
    assert list(spread["sweep"]) == ["mlp"] and spread.loc[0, "seeds"] == expected[0] == 2
    assert spread.loc[0, "mean"] == pytest.approx(expected[1], rel=FLOAT32)


def test_every_trials_val_interval_and_the_winners_margin_match_the_database(study):
    from gridsearch.analysis.uncertainty import wilson_interval

    db = study.folder / "results.db"
    page = pages(study.report)
    for sweep in ("lenet", "mlp", "halved"):
        stored = rows(
            db,
            "SELECT t.key, t.val_accuracy, json_extract(t.config, '$.dataset.val_size'), t.status, "
            "t.key = s.selected_trial FROM trials t JOIN sweep_trials m ON m.trial_key = t.key "
            "JOIN sweeps s ON s.id = m.sweep_id WHERE s.name = ? AND t.status IN ('done', 'stopped')",
            sweep,
        )
        table = csv(study.report, f"intervals_{sweep}").set_index("key")
        assert set(table.index) == {key for key, *_ in stored}
        for key, accuracy, size, _, _ in stored:
            right = round(accuracy * size)
            assert (table.loc[key, "val_correct"], table.loc[key, "val_size"]) == (right, size)
            assert table.loc[key, ["ci95_low", "ci95_high"]].tolist() == pytest.approx(wilson_interval(right, size))
        (winner,) = [key for key, *_, selected in stored if selected]
        others = {key: accuracy for key, accuracy, _, status, _ in stored if status == "done" and key != winner}
        second = max(others.values())  # the runner-up, or one of those tied with it
        lead = table.loc[winner, "val_correct"] - round(second * size)
        assert f"The winner {winner} gets" in page
        assert any(f"the runner-up {key} " in page for key, accuracy in others.items() if accuracy == second)
        assert f"a margin of {lead:,} images, {100 * lead / size:.2f} percentage points" in page
    assert page.count("A paired test needs both on the same images") == 3  # only the winners are tested


def test_the_header_and_the_data_section_state_what_the_sweeps_used(study):
    db = study.folder / "results.db"
    page = study.written.index.read_text()
    (version,) = {v for (v,) in rows(db, "SELECT DISTINCT code_version FROM trials")}
    writer = code_version()
    assert f"UTC by gridsearch 0.1.0 (code version {writer}) from the database ../results.db; its trials were " in page
    assert f"trained by code version {version}." in page
    sweeps = csv(study.report, "sweeps").set_index("sweep")
    for name, train, val, test, epochs, search in rows(
        db,
        "SELECT s.name, json_extract(t.config, '$.dataset.train_size'), json_extract(t.config, '$.dataset.val_size'), "
        "s.test_size, json_extract(t.config, '$.params.epochs'), s.search FROM sweeps s "
        "JOIN trials t ON t.key = s.selected_trial",
    ):
        assert sweeps.loc[name, ["train_size", "val_size", "test_size", "epochs"]].tolist() == [
            train,
            val,
            test,
            epochs,
        ]
        assert (sweeps.loc[name, "search"] == "full grid") == (json.loads(search)["strategy"] == "grid")
    assert sweeps.loc["halved", "search"] == "successive halving (factor 3; rungs of 1, 3 epochs)"
    assert sweeps.loc["mlp", "seeds"] == 2 and sweeps.loc["mlp", "seed_values"] == "0, 1"
    assert sweeps.loc["lenet", "seeds"] == 1 and sweeps.loc["lenet", "trials"] == 4
    # the data section covers the union of the sweeps' splits: 500 / 300 / the largest test size, 400
    assert "as the sweeps of this report split it: train = the first 500 official training images, val = the " in page
    assert "last 300, test = the first 400 official test images." in page
    assert csv(study.report, "inspect_label_distribution")[["train", "val", "test"]].sum().tolist() == [500, 300, 400]


def test_csvs_write_single_precision_scores_as_their_shortest_decimal(study):
    stored = dict(rows(study.folder / "results.db", "SELECT key, val_accuracy FROM trials"))
    raw = pd.read_csv(study.report / "grid_lenet.csv", dtype=str)
    assert len(raw) == 4
    for key, written in zip(raw["key"], raw["val_accuracy"]):
        assert written == str(np.float32(stored[key]))  # e.g. 0.6533333, not 0.653333306312561


def test_the_variance_split_of_a_complete_grid_matches_two_way_sums_of_squares(study):
    values = rows(
        study.folder / "results.db",
        "SELECT lr.number, step.number, t.val_accuracy FROM sweeps s JOIN sweep_trials m ON m.sweep_id = s.id "
        "JOIN trials t ON t.key = m.trial_key "
        "JOIN trial_params lr ON lr.trial_key = t.key AND lr.name = 'lr' "
        "JOIN trial_params step ON step.trial_key = t.key AND step.name = 'lr_step' WHERE s.name = 'lenet'",
    )
    y = pd.DataFrame(values, columns=["lr", "lr_step", "y"]).pivot(index="lr", columns="lr_step", values="y")
    y = y.to_numpy()  # a 2x2 grid, one trial per cell
    grand = y.mean()
    total = ((y - grand) ** 2).sum()
    expected = {
        "lr": 2 * ((y.mean(axis=1) - grand) ** 2).sum() / total,
        "lr_step": 2 * ((y.mean(axis=0) - grand) ** 2).sum() / total,
        "lr x lr_step": ((y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + grand) ** 2).sum()
        / total,
    }
    shares = csv(study.report, "importance_lenet")
    assert dict(zip(shares["term"], shares["share"])) == pytest.approx(expected, abs=1e-6)
    assert list(shares["share"]) == sorted(shares["share"], reverse=True)
    page = pages(study.report)
    assert page.count("<figcaption>Exact functional ANOVA over the complete grid") == 2  # lenet; halved at rung 0
    assert "nothing to split" in page  # mlp grids one lr


def rung_zero_expected(db: Path) -> dict[tuple[float, float], float]:
    """(lr, lr_step) -> the best val accuracy of that trial of the halving sweep within rung 0's budget."""
    ((search,),) = rows(db, "SELECT search FROM sweeps WHERE name = 'halved'")
    budget = json.loads(search)["rung_epochs"][0]
    return {
        (lr, lr_step): best
        for lr, lr_step, best in rows(
            db,
            "SELECT lr.number, step.number, MAX(e.val_accuracy) FROM sweeps s "
            "JOIN sweep_trials m ON m.sweep_id = s.id JOIN epochs e ON e.trial_key = m.trial_key "
            "JOIN trial_params lr ON lr.trial_key = m.trial_key AND lr.name = 'lr' "
            "JOIN trial_params step ON step.trial_key = m.trial_key AND step.name = 'lr_step' "
            "WHERE s.name = 'halved' AND e.epoch < ? GROUP BY m.trial_key",
            budget,
        )
    }


def test_a_halving_sweeps_heatmap_places_every_trial_by_its_rung_0_budget(study):
    db = study.folder / "results.db"
    expected = rung_zero_expected(db)
    assert len(expected) == 4 and rows(db, "SELECT COUNT(*) FROM trials WHERE status = 'stopped'") == [(2,)]
    cells = csv(study.report, "heatmap_halved").set_index("lr")
    assert sorted(cells.columns) == ["lr_step=1", "lr_step=3"] and len(cells) == 2  # every cell filled
    for (lr, lr_step), best in expected.items():
        assert cells.loc[lr, f"lr_step={lr_step:g}"] == pytest.approx(best, rel=FLOAT32)
    grid = csv(study.report, "grid_halved")
    placed = {(lr, step): value for lr, step, value in grid[["lr", "lr_step", "rung0_val_accuracy"]].to_numpy()}
    assert placed == pytest.approx(expected, rel=FLOAT32)
    page = pages(study.report)
    assert "within its first epoch: rung 0, which all trained" in page

    storage = Storage(str(db), readonly=True)  # what the web app's heatmap draws
    effects = grid_effects(storage, storage.sweep("halved"))
    assert effects.params == ["lr", "lr_step"] and len(effects.scores) == 4
    drawn = {(r.lr, r.lr_step): r.val_accuracy for r in effects.scores.itertuples()}
    assert drawn == pytest.approx(expected, abs=1e-12)
    title = "halved: val accuracy at rung 0, 1 epoch (one trial per cell)"
    assert grid_heatmap(effects, "halved").axes[0].get_title() == title


def test_what_the_network_learned_shows_each_conv_nets_filters_and_maps_and_says_what_is_missing(
    study, data_dir, tmp_path
):
    for sweep in ("lenet", "halved"):
        page = (study.report / f"sweep_{sweep}.html").read_text()
        for png in (f"filters_{sweep}", f"feature_maps_{sweep}_1", f"feature_maps_{sweep}_2"):
            assert f'src="{png}.png"' in page, png
    assert pages(study.report).count("No convolutions in this network") == 1  # the mlp
    assert not list(study.report.glob("*_mlp_*.png")) and not list(study.report.glob("transformer_*.png"))
    storage = Storage(str(study.folder / "results.db"), readonly=True)
    lenet = best_model(storage, "lenet")
    with torch_settings_kept():
        tests = HeldOutImages.load(storage, data_dir, [lenet])
        missing = learned_section(Folder(tmp_path), lenet, tmp_path / "nowhere", tests)
    assert missing.blocks == [
        Note(
            f"No best weights for trial {lenet.trial.key}: its filters and feature maps are left out "
            "(Best model says where they were looked for)."
        )
    ]


def test_best_model_tables_match_the_stored_test_evaluation(study, data_dir):
    from gridsearch.training.data import test_split

    db = study.folder / "results.db"
    for sweep in ("lenet", "mlp", "halved"):
        confusion, predictions, samples = rows(
            db,
            "SELECT e.confusion, e.predictions, e.samples FROM sweeps s JOIN evaluations e "
            "ON e.trial_key = s.selected_trial AND e.name = 'test' WHERE s.name = ?",
            sweep,
        )[0]
        confusion = np.array(json.loads(confusion))
        pairs = csv(study.report, f"confused_pairs_{sweep}")
        assert len(pairs) == min(5, int((confusion - np.diag(np.diag(confusion)) > 0).sum()))
        for true, predicted, errors in pairs[["true", "predicted", "errors"]].itertuples(index=False):
            assert confusion[true, predicted] == errors
        assert list(pairs["errors"]) == sorted(pairs["errors"], reverse=True)
        per_class = csv(study.report, f"per_class_{sweep}")
        labels = test_split(data_dir, samples).labels.numpy()
        predicted = np.array(json.loads(predictions))
        support = np.bincount(labels, minlength=10).tolist()
        assert list(per_class["support"]) == confusion.sum(axis=1).tolist() == support
        recall = np.diag(confusion) / confusion.sum(axis=1)
        assert per_class["recall"].to_numpy() == pytest.approx(recall)
        assert per_class["precision"].to_numpy() == pytest.approx(
            [np.mean(labels[predicted == d] == d) if (predicted == d).any() else 0 for d in range(10)]
        )
        assert per_class["roc_auc"].between(0.5, 1).all()


def test_significance_counts_discordant_pairs_from_stored_predictions(study, data_dir):
    from gridsearch.training.data import test_split

    stored = {
        name: json.loads(p)
        for name, p in rows(
            study.folder / "results.db",
            "SELECT s.name, e.predictions FROM sweeps s JOIN evaluations e "
            "ON e.trial_key = s.selected_trial AND e.name = 'test'",
        )
    }
    pairs = csv(study.report, "significance")
    assert [tuple(p) for p in pairs[["model_a", "model_b", "samples"]].to_numpy()] == [
        ("lenet", "mlp", 250),
        ("lenet", "halved", 300),
        ("mlp", "halved", 250),
    ]
    pair = pairs.iloc[0]
    labels = test_split(data_dir, 250).labels.numpy()
    a, b = (np.array(stored[name][:250]) == labels for name in ("lenet", "mlp"))
    assert (pair["only_a_right"], pair["only_b_right"]) == (int((a & ~b).sum()), int((~a & b).sum()))
    assert pair["difference"] == pytest.approx(a.mean() - b.mean())
    assert pair["ci95_low"] <= pair["difference"] <= pair["ci95_high"]
    assert 0 < pair["mcnemar_p"] <= 1


def test_mcnemar_and_the_bootstrap_on_a_known_table():
    # 10 discordant images, 1 where only A is right, 9 where only B is: exact p = 2 * (1 + 10) / 2**10
    a_right = np.array([True] * 50 + [True] + [False] * 9)
    b_right = np.array([True] * 50 + [False] + [True] * 9)
    assert mcnemar_exact(a_right, b_right) == (1, 9, pytest.approx(22 / 1024))
    assert mcnemar_exact(a_right, a_right) == (0, 0, 1.0)
    low, high = bootstrap_interval(a_right, b_right)
    assert low < -8 / 60 < high < 0  # the difference is -8/60; the interval excludes 0 here
    assert bootstrap_interval(a_right, b_right) == (low, high)  # seeded


def test_robustness_table_matches_the_database(study):
    table = csv(study.report, "robustness").set_index("condition")
    stored = dict(
        rows(
            study.folder / "results.db",
            "SELECT e.name, e.accuracy FROM evaluations e JOIN sweeps s ON s.selected_trial = e.trial_key "
            "WHERE s.name = 'lenet' AND e.name != 'test' AND e.name NOT LIKE 'ensemble/%'",
        )
    )
    assert set(table.index) == set(stored) and "robustness/rotate30" in stored
    assert table["lenet"].to_dict() == pytest.approx(stored, rel=FLOAT32)
    assert "mlp" not in table and "halved" not in table  # no robustness run for those


def cli(*args, cwd, capsys, monkeypatch):
    """Run the command line in this process (faster than a subprocess); returns (exit code, out, err)."""
    monkeypatch.chdir(cwd)
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_database_without_its_run_folders_still_gets_every_database_section(
    study, data_dir, tmp_path, capsys, monkeypatch, in_process_training
):
    shutil.copy(study.folder / "results.db", tmp_path / "results.db")  # a laptop: no runs/ beside the copy
    code, out, err = cli(
        "report", "mlp", "--data-dir", str(data_dir), cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch
    )
    assert code == 0 and out == "report written to reports/mlp/index.html\n"
    assert err.startswith("warning: ") and len(err.splitlines()) == 1
    assert "no best weights at" in err and "pass --artifacts DIR" in err
    report = tmp_path / "reports" / "mlp"
    page = pages(report)
    for title in SECTIONS + SWEEP_SECTIONS:
        assert title in page
    assert "no pair of models to compare" in page and "No robustness evaluations yet" in page
    assert "One model in this report: no accuracy-against-cost plot to draw." in page
    assert page.count("pass --artifacts DIR") == 1  # the one section that needs the weights says so
    for name in ("grid_mlp", "confused_pairs_mlp"):
        assert csv(report, name).equals(csv(study.report, name)), name
    assert csv(report, "results").iloc[0].equals(csv(study.report, "results").iloc[1])
    for png in ("confusion_mlp", "misclassified_mlp", "random_mlp", "learning_curves", "inspect_samples"):
        assert (report / f"{png}.png").is_file()
    without = csv(report, "per_class_mlp")
    assert without["roc_auc"].isna().all()  # the one thing that needs the model's probabilities
    assert without.drop(columns="roc_auc").equals(csv(study.report, "per_class_mlp").drop(columns="roc_auc"))

    runs = study.folder / "runs"  # the run folders, wherever they are, named by --artifacts
    args = ("report", "mlp", "--data-dir", str(data_dir), "--artifacts", str(runs), "--out", "full")
    code, out, err = cli(*args, cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and out == "report written to full/index.html\n" and err == ""
    assert csv(tmp_path / "full", "per_class_mlp").equals(csv(study.report, "per_class_mlp"))
    assert "--artifacts" not in pages(tmp_path / "full")


def test_report_refuses_unknown_sweeps_and_named_sweeps_without_a_selected_trial(study, tmp_path, capsys, monkeypatch):
    code, _, err = cli("report", "nosuch", cwd=study.folder, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2 and err.startswith("error: no sweep named 'nosuch'") and len(err.splitlines()) == 1
    shutil.copy(study.folder / "results.db", tmp_path / "results.db")
    with contextlib.closing(sqlite3.connect(tmp_path / "results.db")) as connection, connection:
        connection.execute("UPDATE sweeps SET selected_trial = NULL")
    code, _, err = cli("report", "lenet", "mlp", cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2 and err == "error: sweep 'lenet' has no selected trial yet (run it to the end first)\n"
    code, _, err = cli("report", cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2 and err.startswith("error: no sweep can be reported: sweep 'lenet' has no selected trial yet")
    assert "sweep 'halved' has no selected" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "reports").exists()  # refused before anything is written


def test_report_of_every_sweep_leaves_out_those_without_a_result_in_one_line(
    study, data_dir, tmp_path, capsys, monkeypatch, in_process_training
):
    """A sweep whose every trial failed is named in one warning; the others are reported; the database file
    is left byte for byte as it was, with no -wal or -shm file beside it."""
    db = tmp_path / "results.db"
    shutil.copy(study.folder / "results.db", db)
    broken = write_sweep(  # lr 1e9 diverges in the first epoch
        tmp_path, "broken.yaml", name="broken", grid={"lr": [1e9]}, params={"epochs": 1, "batch_size": 50, "hidden": 8}
    )
    assert conftest_cli("run", str(broken), cwd=tmp_path, data_dir=data_dir).returncode == 1  # nothing finished
    assert sorted(p.name for p in tmp_path.glob("results.db*")) == ["results.db"]  # run folded its log in
    before = db.read_bytes()
    runs = str(study.folder / "runs")
    args = ("report", "--data-dir", str(data_dir), "--artifacts", runs)
    code, out, err = cli(*args, cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 0 and out == "report written to reports/all/index.html\n"
    assert err == "warning: not in the report: sweep 'broken' has no selected trial yet (run it to the end first)\n"
    assert list(csv(tmp_path / "reports" / "all", "results")["sweep"]) == ["lenet", "mlp", "halved"]
    assert db.read_bytes() == before and sorted(p.name for p in tmp_path.glob("results.db*")) == ["results.db"]


def committee_probabilities(db, runs, keys, split):
    storage = Storage(str(db), readonly=True)
    with torch_settings_kept():
        return torch.stack(
            [
                score(load_model(trial, runs), split.images, split.labels, bf16(trial)).probabilities
                for trial in (storage.trial(k) for k in keys)
                if trial is not None
            ]
        )


def ranked_lenet(db) -> list[str]:
    return [
        key
        for (key,) in rows(
            db,
            "SELECT t.key FROM trials t JOIN sweep_trials m ON m.trial_key = t.key JOIN sweeps s ON s.id = m.sweep_id "
            "WHERE s.name = 'lenet' AND t.status = 'done' ORDER BY t.val_accuracy DESC, t.val_loss ASC",
        )
    ]


def test_auto_committee_is_chosen_on_validation_and_stored_with_its_test_predictions(study, data_dir):
    db, runs = study.folder / "results.db", study.folder / "runs"
    keys = ranked_lenet(db)
    ((selected,),) = rows(db, "SELECT selected_trial FROM sweeps WHERE name = 'lenet'")
    assert keys[0] == selected and len(keys) == 4
    _, val = data.training_splits(data_dir, 500, 300)
    val_probabilities = committee_probabilities(db, runs, keys, val)
    accuracies = [float((val_probabilities[:k].mean(0).argmax(1) == val.labels).double().mean()) for k in range(1, 5)]
    k = int(np.argmax(accuracies)) + 1
    assert f"chosen k={k}" in study.evaluated
    stored = rows(
        db, "SELECT name, samples, accuracy, errors, predictions FROM evaluations WHERE name LIKE 'ensemble/%'"
    )
    ((name, samples, accuracy, errors, predictions),) = stored
    assert name == f"ensemble/top{k}" and samples == 300
    (trial,) = rows(db, "SELECT trial_key FROM evaluations WHERE name = ?", name)[0]
    assert trial == selected
    test = data.test_split(data_dir, 300)
    expected = committee_probabilities(db, runs, keys[:k], test).mean(0).argmax(1)
    assert json.loads(predictions) == expected.tolist()
    assert errors == int((expected != test.labels).sum()) and accuracy == pytest.approx(1 - errors / 300)

    table = csv(study.report, "committees")
    assert table[["sweep", "committee", "members", "samples"]].values.tolist() == [["lenet", name, k, 300]]
    members = csv(study.report, "committee_members")  # the page lists them: the first k by validation
    assert members["member"].tolist() == keys[:k] and set(members["sweep"]) == {"lenet"}
    single = np.array(
        eval(rows(db, "SELECT predictions FROM evaluations WHERE trial_key = ? AND name = 'test'", selected)[0][0])
    )
    labels = test.labels.numpy()
    a, b = single == labels, expected.numpy() == labels
    row = table.iloc[0]
    assert (row["only_single_right"], row["only_committee_right"]) == (int((a & ~b).sum()), int((~a & b).sum()))
    discordant = int((a != b).sum())
    p_value = binomtest(int((a & ~b).sum()), discordant, 0.5).pvalue if discordant else 1.0
    assert row["mcnemar_p"] == pytest.approx(p_value, rel=1e-6)
    assert row["single_best"] == pytest.approx(a.mean(), rel=1e-6)


def test_a_given_committee_size_and_the_refusals(study, data_dir, tmp_path):
    shutil.copy(study.folder / "results.db", tmp_path / "results.db")
    runs = str(study.folder / "runs")
    done = conftest_cli(
        "evaluate", "lenet", "--ensemble", "2", "--artifacts", runs, "--data-dir", str(data_dir), cwd=tmp_path
    )
    keys = ranked_lenet(tmp_path / "results.db")
    assert done.returncode == 0 and f"ensemble/top2 of lenet ({keys[0]}, {keys[1]})" in done.stdout
    assert "chosen" not in done.stdout
    assert rows(tmp_path / "results.db", "SELECT trial_key FROM evaluations WHERE name = 'ensemble/top2'") == [
        (keys[0],)
    ]
    too_many = conftest_cli("evaluate", "lenet", "--ensemble", "5", "--artifacts", runs, cwd=tmp_path)
    assert too_many.returncode == 2 and too_many.stderr == "error: --ensemble 5: sweep 'lenet' has only 4 done trials\n"
    trial = conftest_cli("evaluate", "--trial", keys[0], "--ensemble", "2", cwd=tmp_path)
    assert trial.returncode == 2 and "--ensemble needs a SWEEP" in trial.stderr
    both = conftest_cli("evaluate", "lenet", "--ensemble", "2", "--suite", "robustness", cwd=tmp_path)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


ROBUSTNESS_ROWS = (
    "SELECT e.name, e.samples, e.accuracy, e.loss, e.errors, e.confusion, e.predictions "
    "FROM evaluations e JOIN sweeps s ON s.selected_trial = e.trial_key "
    "WHERE s.name = 'lenet' AND e.name != 'test' AND e.name NOT LIKE 'ensemble/%' ORDER BY e.name"
)


def test_robustness_results_are_stored_consistent_and_repeatable(
    study, data_dir, capsys, monkeypatch, in_process_training
):
    db = study.folder / "results.db"
    stored = rows(db, ROBUSTNESS_ROWS)
    expected = {robustness.PREFIX + name for name in robustness.CONDITIONS} | {"sklearn_digits"}
    if (USPS / "usps.h5").exists():
        expected.add("usps")
    assert {r[0] for r in stored} == expected
    for name, samples, accuracy, _, errors, confusion, predictions in stored:
        confusion = json.loads(confusion)
        assert samples == len(json.loads(predictions)) == sum(map(sum, confusion))
        assert errors == samples - np.trace(confusion) and accuracy == pytest.approx(1 - errors / samples)
        assert samples == {"usps": 2007, "sklearn_digits": 1797}.get(name, 200)
    (key,) = rows(db, "SELECT selected_trial FROM sweeps WHERE name = 'lenet'")[0]
    assert f"trial {key}: {len(expected)} evaluations stored" in study.evaluated
    code, out, _ = cli(
        "evaluate",
        "--trial",
        key,
        "--suite",
        "robustness",
        "--test-size",
        "200",
        "--data-dir",
        str(data_dir),
        "--usps",
        str(USPS),
        cwd=study.folder,
        capsys=capsys,
        monkeypatch=monkeypatch,
    )
    assert code == 0 and "evaluations stored" in out
    assert rows(db, ROBUSTNESS_ROWS) == stored  # the same numbers, replaced rather than added

    code, _, err = cli(
        "evaluate",
        "--trial",
        "nosuchkey",
        "--suite",
        "robustness",
        cwd=study.folder,
        capsys=capsys,
        monkeypatch=monkeypatch,
    )
    assert code == 2 and err.startswith("error: no trial with key 'nosuchkey' in ") and len(err.splitlines()) == 1
    assert err.endswith("results.db\n")


def test_without_dataset_files_every_table_is_written_and_one_warning_names_what_was_left_out(
    study, data_dir, tmp_path, capsys, monkeypatch, in_process_training
):
    """A fresh clone: the database and the run folders, no dataset file. With the test labels the database keeps
    (as study/publish.py keeps them) every table is written as with the data; without them, those that test
    predictions against labels are left out too. One warning line names what was left out; exit 0."""
    db = tmp_path / "results.db"
    shutil.copy(study.folder / "results.db", db)
    empty = tmp_path / "no-data"
    empty.mkdir()
    runs = str(study.folder / "runs")
    code, _, err = cli(
        "report",
        "--data-dir",
        str(empty),
        "--artifacts",
        runs,
        "--out",
        "bare",
        cwd=tmp_path,
        capsys=capsys,
        monkeypatch=monkeypatch,
    )
    assert code == 0 and len(err.splitlines()) == 1 and err.startswith(f"warning: no MNIST files in {empty}")
    assert "left out: ROC AUC and confidences, misclassified and random test images" in err
    assert "tables that test predictions against the labels of MNIST left out too" in err
    bare = {p.name for p in (tmp_path / "bare").glob("*.csv")}
    label_tables = {"significance.csv", "committees.csv"}
    image_tables = {p.name for p in study.report.glob("inspect_*.csv")}
    assert bare == {p.name for p in study.report.glob("*.csv")} - label_tables - image_tables

    with Storage(str(db)) as storage:
        storage.save_test_labels("mnist", data.test_images(data_dir, 400).labels.tolist())
    code, _, err = cli(
        "report",
        "--data-dir",
        str(empty),
        "--artifacts",
        runs,
        "--out",
        "labelled",
        cwd=tmp_path,
        capsys=capsys,
        monkeypatch=monkeypatch,
    )
    assert code == 0 and len(err.splitlines()) == 1 and "tables that test" not in err
    labelled = {p.name for p in (tmp_path / "labelled").glob("*.csv")}
    assert labelled == {p.name for p in study.report.glob("*.csv")} - image_tables
    for name in sorted(labelled):
        again, full = pd.read_csv(tmp_path / "labelled" / name), pd.read_csv(study.report / name)
        if name.startswith("per_class_"):  # ROC AUC needs the images the weights are re-run on
            assert again["roc_auc"].isna().all()
            again, full = again.drop(columns="roc_auc"), full.drop(columns="roc_auc")
        pd.testing.assert_frame_equal(again, full, obj=name)
    assert not list((tmp_path / "labelled").glob("misclassified_*.png"))


def test_robustness_rows_carry_wilson_intervals_as_statsmodels_computes_them(study):
    from statsmodels.stats.proportion import proportion_confint

    table = csv(study.report, "robustness")
    assert len(table) >= 13
    for row in table.itertuples():
        samples = int(row.lenet_samples)
        correct = round(row.lenet * samples)
        low, high = proportion_confint(correct, samples, alpha=0.05, method="wilson")
        assert (row.lenet_ci95_low, row.lenet_ci95_high) == pytest.approx((low, high), abs=1e-12)
        assert row.lenet_ci95_low <= row.lenet <= row.lenet_ci95_high
    page = study.written.index.read_text()
    first = table.iloc[0]
    shown = f"{first['lenet']:.2%} [{100 * first['lenet_ci95_low']:.2f}, {100 * first['lenet_ci95_high']:.2f}]"
    assert shown in page


def test_params_that_vary_together_count_as_one_factor():
    from gridsearch.analysis.effects import aliases

    pool = pd.DataFrame(  # a committee's pool: each model its own lr and lr_step, three seeds each
        {
            "architecture": ["lenet53", "stn", "tps_stn", "lenet53_augmented"] * 3,
            "lr": [0.08, 0.005, 0.0055, 0.08] * 3,
            "lr_step": [0.72, 0.56, 0.52, 0.4] * 3,
        }
    )
    assert aliases(pool, ["architecture", "lr", "lr_step"]) == [["architecture", "lr_step", "lr"]]
    grid = pd.DataFrame({"lr": [0.1, 0.1, 0.2, 0.2], "lr_step": [1, 3, 1, 3]})  # crossed: two factors
    assert aliases(grid, ["lr", "lr_step"]) == [["lr"], ["lr_step"]]
    budget = pd.DataFrame({"epochs": [4, 9, 18], "lr_step": [0.16, 0.36, 0.72]})
    assert aliases(budget, ["epochs", "lr_step"]) == [["epochs", "lr_step"]]


def test_params_that_vary_together_get_one_marginals_panel_and_no_heatmap_axis_of_their_own():
    from gridsearch.analysis.effects import GridEffects
    from gridsearch.analysis.plots import marginals

    pool = pd.DataFrame(  # a committee's pool crossed with a batch size: two factors, not three
        {
            "architecture": ["lenet53", "stn", "tps_stn"] * 2,
            "lr": [0.08, 0.005, 0.0055] * 2,
            "batch_size": [64] * 3 + [128] * 3,
            "val_accuracy": [0.991, 0.992, 0.993, 0.994, 0.995, 0.996],
        }
    )
    effects = GridEffects(pool, ["architecture", "lr", "batch_size"], "every done trial")
    assert effects.factors == [["architecture", "lr"], ["batch_size"]]
    assert effects.axes == ["architecture", "batch_size"]
    assert effects.heatmap_grid().loc["stn", 128] == 0.995 and effects.cells == "one trial per cell"
    figure = marginals(pool, effects.factors, "val_accuracy", "pool")
    panels = [axis for axis in figure.axes if axis.get_xlabel()]
    assert [axis.get_xlabel() for axis in panels] == ["architecture\n(with lr)", "batch_size"]
    assert [label.get_text() for label in panels[0].get_xticklabels()] == ["lenet53", "stn", "tps_stn"]
