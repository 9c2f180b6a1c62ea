"""``report``: a study of two small finished sweeps, every number checked against the database."""

import json
import re
import shutil
import sqlite3

import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mpimg

from gridsearch.analysis import robustness
from gridsearch.cli import main
from tests.conftest import gridsearch, rows, write_sweep
from tests.test_robustness import USPS

SECTIONS = (
    "Results",
    "Hyperparameter effects",
    "Learning curves",
    "Best models",
    "Is the difference real?",
    "Accuracy vs cost",
    "Robustness",
    "Data",
)


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_dir):
    """Two finished sweeps (a 2x2 LeNet grid, an MLP over two seeds), one robustness run, one report."""
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
    for sweep in (lenet, mlp):
        gridsearch("run", str(sweep), "--workers", "2", cwd=folder, data_dir=data_dir, check=True)
    evaluated = gridsearch(
        "evaluate",
        "lenet",
        "--suite",
        "robustness",
        "--test-size",
        "200",
        "--data-dir",
        str(data_dir),
        "--usps",
        str(USPS),
        cwd=folder,
        check=True,
    )
    result = gridsearch("report", "--out", "reports/study", "--data-dir", str(data_dir), cwd=folder, check=True)
    return folder, folder / "reports" / "study", result, evaluated


def csv(report, name):
    return pd.read_csv(report / f"{name}.csv")


def test_report_has_every_section_and_only_existing_relative_links(study):
    folder, report, result, _ = study
    index = report / "index.html"
    assert f"report written to {index.relative_to(folder)}" in result.stdout
    page = index.read_text()
    for title in SECTIONS:
        assert title in page
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    files = [link for link in links if not link.startswith("#")]
    assert {
        "results.csv",
        "heatmap_lenet.png",
        "learning_curves.png",
        "confusion_mlp.png",
        "robustness.png",
        "significance.csv",
        "seed_spread.csv",
        "accuracy_vs_cost.png",
        "inspect_samples.png",
    } <= set(files)
    for link in files:
        assert "://" not in link and not link.startswith("/") and ".." not in link
        assert (report / link).is_file(), link


def test_every_png_is_a_real_non_blank_image(study):
    _, report, _, _ = study
    pngs = sorted(report.glob("*.png"))
    assert len(pngs) >= 15
    for path in pngs:
        pixels = mpimg.imread(path)
        assert pixels.shape[0] > 50 and pixels.shape[1] > 50, path.name
        assert pixels[..., :3].std() > 0.02, f"{path.name} is blank"


def test_results_table_matches_the_database(study):
    folder, report, _, _ = study
    db = folder / "results.db"
    table = csv(report, "results").set_index("sweep")
    expected = rows(
        db,
        """
        SELECT s.name, t.architecture, t.parameter_count, t.best_epoch, t.val_accuracy, e.accuracy, e.errors,
               e.samples,
               (SELECT COUNT(*) FROM sweep_trials m JOIN trials x ON x.key = m.trial_key
                WHERE m.sweep_id = s.id AND x.status IN ('done', 'failed', 'timeout')),
               (SELECT SUM(p.seconds) FROM sweep_trials m JOIN epochs p ON p.trial_key = m.trial_key
                WHERE m.sweep_id = s.id)
        FROM sweeps s JOIN trials t ON t.key = s.selected_trial
        JOIN evaluations e ON e.trial_key = t.key AND e.name = 'test' ORDER BY s.id""",
    )
    assert list(table.index) == [r[0] for r in expected] == ["lenet", "mlp"]
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
        assert got[3] == pytest.approx(values[3], abs=1e-12) and got[4] == pytest.approx(values[4], abs=1e-12)
        assert got[8] == pytest.approx(values[8], rel=1e-9)
    lr = rows(
        db,
        "SELECT p.value FROM sweeps s JOIN trial_params p ON p.trial_key = s.selected_trial "
        "WHERE s.name = 'lenet' AND p.name = 'lr'",
    )[0][0]
    assert table.loc["lenet", "best_config"].startswith(f"lr={json.loads(lr)}, ")
    page = (report / "index.html").read_text()
    for _name, *values in expected:
        assert f"{values[3]:.2%}" in page and f"{values[4]:.2%}" in page


def test_grid_curves_and_seed_tables_match_the_database(study):
    folder, report, _, _ = study
    db = folder / "results.db"
    grid = csv(report, "grid_lenet")
    assert dict(zip(grid["key"], grid["val_accuracy"])) == dict(
        rows(
            db,
            "SELECT t.key, t.val_accuracy FROM trials t JOIN sweep_trials m ON m.trial_key = t.key "
            "JOIN sweeps s ON s.id = m.sweep_id WHERE s.name = 'lenet'",
        )
    )
    curves = csv(report, "learning_curves")
    stored = rows(
        db,
        "SELECT e.trial_key, e.epoch, e.train_loss, e.val_accuracy FROM epochs e "
        "JOIN sweeps s ON s.selected_trial = e.trial_key ORDER BY e.trial_key, e.epoch",
    )
    assert [
        tuple(r) for r in curves[["trial_key", "epoch", "train_loss", "val_accuracy"]].itertuples(index=False)
    ] == stored
    spread = csv(report, "seed_spread")
    expected = rows(
        db,
        "SELECT COUNT(*), AVG(t.val_accuracy), MIN(t.val_accuracy), MAX(t.val_accuracy) "
        "FROM trials t JOIN sweep_trials m ON m.trial_key = t.key JOIN sweeps s "
        "ON s.id = m.sweep_id WHERE s.name = 'mlp' AND t.status = 'done'",
    )[0]
    assert list(spread["sweep"]) == ["mlp"] and spread.loc[0, "seeds"] == expected[0] == 2
    assert spread.loc[0, ["mean", "min", "max"]].tolist() == pytest.approx(expected[1:], abs=1e-12)


def test_best_model_tables_match_the_stored_test_evaluation(study, data_dir):
    from gridsearch.training.data import test_split

    folder, report, _, _ = study
    db = folder / "results.db"
    for sweep in ("lenet", "mlp"):
        confusion, predictions, samples = rows(
            db,
            "SELECT e.confusion, e.predictions, e.samples FROM sweeps s JOIN evaluations e "
            "ON e.trial_key = s.selected_trial AND e.name = 'test' WHERE s.name = ?",
            sweep,
        )[0]
        confusion = np.array(json.loads(confusion))
        pairs = csv(report, f"confused_pairs_{sweep}")
        assert len(pairs) == min(5, int((confusion - np.diag(np.diag(confusion)) > 0).sum()))
        for true, predicted, errors in pairs[["true", "predicted", "errors"]].itertuples(index=False):
            assert confusion[true, predicted] == errors
        assert list(pairs["errors"]) == sorted(pairs["errors"], reverse=True)
        per_class = csv(report, f"per_class_{sweep}")
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

    folder, report, _, _ = study
    stored = dict(
        (name, json.loads(p))
        for name, p in rows(
            folder / "results.db",
            "SELECT s.name, e.predictions FROM sweeps s JOIN evaluations e "
            "ON e.trial_key = s.selected_trial AND e.name = 'test'",
        )
    )
    (pair,) = csv(report, "significance").to_dict("records")
    assert (pair["model_a"], pair["model_b"], pair["samples"]) == ("lenet", "mlp", 250)
    labels = test_split(data_dir, 250).labels.numpy()
    a, b = (np.array(stored[name][:250]) == labels for name in ("lenet", "mlp"))
    assert (pair["only_a_right"], pair["only_b_right"]) == (int((a & ~b).sum()), int((~a & b).sum()))
    assert pair["difference"] == pytest.approx(a.mean() - b.mean())
    assert pair["ci95_low"] <= pair["difference"] <= pair["ci95_high"]
    assert 0 < pair["mcnemar_p"] <= 1


def test_robustness_table_matches_the_database(study):
    folder, report, _, _ = study
    table = csv(report, "robustness").set_index("condition")
    stored = dict(
        rows(
            folder / "results.db",
            "SELECT e.name, e.accuracy FROM evaluations e JOIN sweeps s ON s.selected_trial = e.trial_key "
            "WHERE s.name = 'lenet' AND e.name != 'test'",
        )
    )
    assert set(table.index) == set(stored) and "robustness/rotate30" in stored
    assert table["lenet"].to_dict() == pytest.approx(stored, abs=1e-12)
    assert "mlp" not in table  # no robustness run for the mlp


def cli(*args, cwd, capsys, monkeypatch):
    """Run the command line in this process (faster than a subprocess); returns (exit code, out, err)."""
    monkeypatch.chdir(cwd)
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_report_on_named_sweeps_and_bad_input(study, data_dir, tmp_path, capsys, monkeypatch):
    folder, _, _, _ = study
    code, out, _ = cli("report", "mlp", "--data-dir", str(data_dir), cwd=folder, capsys=capsys, monkeypatch=monkeypatch)
    page = (folder / "reports" / "mlp" / "index.html").read_text()
    assert code == 0 and "report written to reports/mlp/index.html" in out
    assert "no pair of models to compare" in page and "No robustness evaluations yet" in page

    code, _, err = cli("report", "nosuch", cwd=folder, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2 and err.startswith("error: no sweep named 'nosuch'") and len(err.splitlines()) == 1

    shutil.copy(folder / "results.db", tmp_path / "results.db")  # no runs/ folder beside the copy
    code, _, err = cli(
        "report", "lenet", "--data-dir", str(data_dir), cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch
    )
    assert code == 2 and "no best weights at" in err and len(err.splitlines()) == 1
    with sqlite3.connect(tmp_path / "results.db") as connection:
        connection.execute("UPDATE sweeps SET selected_trial = NULL WHERE name = 'mlp'")
    code, _, err = cli("report", cwd=tmp_path, capsys=capsys, monkeypatch=monkeypatch)
    assert code == 2 and err == "error: sweep 'mlp' has no selected trial yet (run it to the end first)\n"


ROBUSTNESS_ROWS = (
    "SELECT e.name, e.samples, e.accuracy, e.loss, e.errors, e.confusion, e.predictions "
    "FROM evaluations e JOIN sweeps s ON s.selected_trial = e.trial_key "
    "WHERE s.name = 'lenet' AND e.name != 'test' ORDER BY e.name"
)


def test_robustness_results_are_stored_consistent_and_repeatable(study, data_dir, capsys, monkeypatch):
    folder, _, _, evaluated = study
    db = folder / "results.db"
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
    assert f"trial {key}: {len(expected)} evaluations stored" in evaluated.stdout
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
        cwd=folder,
        capsys=capsys,
        monkeypatch=monkeypatch,
    )
    assert code == 0 and "evaluations stored" in out
    assert rows(db, ROBUSTNESS_ROWS) == stored  # the same numbers, replaced rather than added

    code, _, err = cli(
        "evaluate", "--trial", "nosuchkey", "--suite", "robustness", cwd=folder, capsys=capsys, monkeypatch=monkeypatch
    )
    assert code == 2 and err == "error: no trial with key 'nosuchkey' in results.db\n"
