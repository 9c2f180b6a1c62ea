"""The study, shipped: ``study/run_study.py`` then ``study/publish.py`` at a tiny size on the CPU (the full
profile's path, with tiny sweep files), and the committed ``docs/study/`` served and reported with no training."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gridsearch.store.storage import Storage
from gridsearch.training import data
from gridsearch.web.app import create_app
from tests.conftest import ROOT, cli, rows, write_sweep
from tests.test_datasets import fashion_source
from tests.test_web_api import answer, data_url

DOCS = ROOT / "docs" / "study"
TINY = {"dataset": {"train_size": 300, "val_size": 200, "test_size": 300}}
PARAMS = {"epochs": 2, "batch_size": 50, "hidden": 8, "lr_step": 0.5}
SWEEPS = {
    "lenet53": {"architecture": "lenet53", "grid": {"lr": [0.05, 0.1]}},
    "stn": {
        "architecture": "stn",
        "params": {**PARAMS, "epochs": 1, "init_from": "best:lenet53"},
        "grid": {"lr": [0.005]},
    },
    "lenet53_budget": {
        "architecture": "lenet53",
        "grid": [{"epochs": [1], "lr_step": [0.25]}, {"epochs": [2], "lr_step": [0.5]}],
        "params": {"batch_size": 50, "hidden": 8, "lr": 0.1},
    },
    "mlp": {"architecture": "mlp", "params": {"epochs": 2, "batch_size": 50}, "grid": {"lr": [0.1]}},
    "fashion_lenet53": {
        "architecture": "lenet53",
        "dataset": {**TINY["dataset"], "name": "fashion_mnist"},
        "grid": {"lr": [0.1]},
    },
    "fashion_mlp": {
        "architecture": "mlp",
        "params": {"epochs": 2, "batch_size": 50},
        "dataset": {**TINY["dataset"], "name": "fashion_mnist"},
        "grid": {"lr": [0.1]},
    },
}


def assert_same_tables(folder: Path, expected: Path) -> None:
    """The CSV tables of two report folders hold the same rows; numbers that come from re-running the weights
    (confidences, ROC AUC) to float rounding, which another CPU's kernels may change."""
    found = sorted(p.relative_to(folder) for p in folder.rglob("*.csv"))
    assert found and found == sorted(p.relative_to(expected) for p in expected.rglob("*.csv"))
    for path in found:
        again, published = pd.read_csv(folder / path), pd.read_csv(expected / path)
        pd.testing.assert_frame_equal(again, published, rtol=1e-4, obj=str(path))


def check_reproduced(out: Path, data_dir: Path, tmp_path: Path) -> None:
    """``out``'s report is rebuilt from its database, with no training, to the same tables."""
    again = tmp_path / "report-again"
    cli("report", "--db", str(out / "results.db"), "--out", str(again), cwd=tmp_path, data_dir=data_dir, check=True)
    assert_same_tables(again, out / "report")


def check_served(out: Path, data_dir: Path, good: bool) -> None:
    """``out``'s weights are the ones its README names, and it serves the recognizer (``good``: a trained model)."""
    db = out / "results.db"
    for (key,) in rows(db, "SELECT DISTINCT trial_key FROM evaluations"):
        weights = out / "runs" / key / "best.pt"
        assert hashlib.sha256(weights.read_bytes()).hexdigest() == (out / "runs" / key / "best.pt.sha256").read_text()
        assert weights.stat().st_size < 2_000_000
        assert hashlib.sha256(weights.read_bytes()).hexdigest() in (out / "README.md").read_text()
    client = create_app(Storage(str(db), readonly=True), out / "runs", data_dir).test_client()
    test = data.test_split(data_dir, 20)
    right = 0
    for image, label in zip(test.images[:, 0].numpy(), test.labels.tolist()):
        drawing = Image.fromarray(255 - image).resize((280, 280), Image.Resampling.BILINEAR)
        status, body = answer(client.post("/api/predict", json={"image": data_url(drawing)}))
        assert status == 200, body
        right += body["digit"] == label
    assert right >= (18 if good else 0)


@pytest.mark.slow
@pytest.mark.timeout(2700)  # 19 minutes on the 2-core machine under load
def test_the_full_profile_path_runs_and_publishes_at_a_tiny_size(tmp_path, data_dir):
    fashion_source(data_dir)  # two of its sweeps train on Fashion-MNIST
    files = []
    for name, changes in SWEEPS.items():
        sweep = {**TINY, "params": PARAMS, **changes, "name": name}
        files.append(str(write_sweep(tmp_path, f"{name}.yaml", **sweep)))
    state = tmp_path / "state.tar.gz"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "study/run_study.py", "--state", str(state), "--lanes", "2", "--allow-dirty"]
    command += ["--grids", *files]
    result = subprocess.run(
        command + ["--", "--data-dir", str(data_dir)], cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["finished"] and summary["profile"] == "full" and summary["stage"] == "evaluations"
    out = tmp_path / "docs"
    publish = [
        sys.executable,
        "study/publish.py",
        "--state",
        str(state),
        "--out",
        str(out),
        "--data-dir",
        str(data_dir),
    ]
    result = subprocess.run(publish, cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    db = out / "results.db"
    with open(out / "results.csv") as file:
        published = {row["sweep"]: row for row in csv.DictReader(file)}
    assert set(published) == set(SWEEPS)  # one row per model: no replicate nor committee rows
    for name, row in published.items():
        [(accuracy, errors, dataset)] = rows(
            db,
            "SELECT e.accuracy, e.errors, json_extract(t.config, '$.dataset.name') FROM sweeps s "
            "JOIN evaluations e ON e.trial_key = s.selected_trial AND e.name = 'test' "
            "JOIN trials t ON t.key = s.selected_trial WHERE s.name = ?",
            name,
        )
        assert float(row["test_accuracy"]) == round(100 * accuracy, 3) and int(row["test_errors"]) == errors
        assert row["dataset"] == ("Fashion-MNIST" if dataset == "fashion_mnist" else "MNIST")
    seeds = [
        100 * a
        for (a,) in rows(
            db,
            "SELECT e.accuracy FROM sweeps s JOIN sweep_trials m ON m.sweep_id = s.id "
            "JOIN evaluations e ON e.trial_key = m.trial_key AND e.name = 'test' "
            "WHERE s.name = 'lenet53_seeds'",
        )
    ]
    assert len(seeds) == 5 and float(published["lenet53"]["seed_mean_test_accuracy"]) == round(np.mean(seeds), 3)
    readme = (out / "README.md").read_text()
    for heading in ("## 1. What do DNNs achieve", "## 2. Which properties matter", "## 3. Is MNIST"):
        assert heading in readme
    assert f"{np.mean(seeds):.2f}" in readme  # LeNet-5-3's mean over seeds, from the database
    [(committee,)] = rows(
        db,
        "SELECT e.accuracy FROM sweeps s JOIN evaluations e ON e.trial_key = s.selected_trial "
        "WHERE s.name = 'study_committee' AND e.name LIKE 'ensemble/top%'",
    )
    assert f"**{100 * committee:.2f}%**" in readme
    for png in ("budget.png", "datasets.png"):
        assert (out / png).stat().st_size > 1000
    assert published["stn"]["epochs"] == f"{published['lenet53']['epochs']} + 1"  # fine-tuned on top of lenet53
    assert "| selected |" in readme and "**The seed study's ranking.**" in readme and "**Verdict.**" in readme
    assert "**The selection is on the edge of its grid:** lr " in readme  # two values of lr: either is an edge
    check_reproduced(out, data_dir, tmp_path)
    check_served(out, data_dir, good=False)
    beaten = beat_the_selection(state, tmp_path)
    refused = subprocess.run(
        publish[:3] + [str(beaten)] + publish[4:5] + [str(tmp_path / "refused")] + publish[6:],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert refused.returncode != 0 and refused.stderr.startswith("error: lenet53 selected trial ")
    assert "the selection is beaten within its sweeps" in refused.stderr and not (tmp_path / "refused").exists()


def beat_the_selection(state: Path, tmp_path: Path) -> Path:
    """A copy of the study's state where a trial of lenet53 other than the selected one, trained as long, has a
    better validation accuracy than the selected one (as halving once left one beside the selection)."""
    folder = tmp_path / "beaten"
    with tarfile.open(state) as archive:
        archive.extractall(folder, filter="data")
    db = folder / "results.db"
    [(selected,)] = rows(db, "SELECT selected_trial FROM sweeps WHERE name = 'lenet53'")
    [(other,)] = rows(
        db,
        "SELECT t.key FROM trials t JOIN sweep_trials m ON m.trial_key = t.key JOIN sweeps s ON s.id = m.sweep_id "
        "WHERE s.name = 'lenet53' AND t.key != ? AND t.status = 'done' LIMIT 1",
        selected,
    )
    rows(db, "UPDATE trials SET val_accuracy = 1.0 WHERE key = ?", other)
    beaten = tmp_path / "beaten.tar.gz"
    with tarfile.open(beaten, "w:gz") as archive:
        for path in sorted(folder.rglob("*")):
            archive.add(path, str(path.relative_to(folder)), recursive=False)
    return beaten


@pytest.mark.skipif(not DOCS.exists(), reason="docs/study is published by study/publish.py")
def test_the_published_study_serves_a_good_model(data_dir):
    check_served(DOCS, data_dir, good=True)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 15 minutes on the 2-core machine under load
@pytest.mark.skipif(not DOCS.exists(), reason="docs/study is published by study/publish.py")
def test_the_published_study_reproduces_its_report(tmp_path, data_dir):
    """Every table of the report, its scores re-run from the weights: a long check, ``-m slow``."""
    check_reproduced(DOCS, data_dir, tmp_path)


@pytest.mark.skipif(not DOCS.exists(), reason="docs/study is published by study/publish.py")
def test_the_published_report_rebuilds_every_table_without_dataset_files(tmp_path, monkeypatch):
    """A fresh clone: docs/study and no dataset file. The report exits 0, names what it left out in one warning
    line, and writes every table of the published report but the data section's (which describe the images)."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    monkeypatch.setenv("GRIDSEARCH_FASHION_MNIST", str(empty))  # not Debian's copy either
    again = tmp_path / "report"
    result = cli(
        "report", "--db", str(DOCS / "results.db"), "--out", str(again), "--data-dir", str(empty), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("warning: no MNIST, Fashion-MNIST files")
    published = {p.name for p in (DOCS / "report").glob("*.csv") if not p.name.startswith("inspect_")}
    assert {p.name for p in again.glob("*.csv")} == published
