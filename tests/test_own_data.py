"""Data from anywhere (issue 30): USPS 16x16 and scikit-learn's 8x8 digits built in, and a sweep's own loader
(a synthetic 3x32x32 dataset of four classes, ``tests/synthetic_data.py``), each through ``run``, ``report``,
``evaluate --ensemble`` and the web app, with built-in models adapted to the data's shape and (on the digits) the
user's own model of ``examples/own_model``; a loader that returns the wrong shapes is refused in one line."""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from gridsearch.spec.datasets import DATASETS
from gridsearch.store.storage import Storage
from gridsearch.training import data
from gridsearch.web.app import create_app
from tests.conftest import ROOT, cli, gridsearch, needs, rows

SWEEPS = {
    "usps": {"name": "usps", "train_size": 600, "val_size": 200, "test_size": 300},
    "sklearn": {"name": "sklearn_digits", "train_size": 1000, "val_size": 300, "test_size": 360},
    "synthetic": {
        "loader": "tests.synthetic_data:load",
        "classes": ["top-left", "top-right", "bottom-left", "bottom-right"],
        "train_size": 400,
        "val_size": 100,
        "test_size": 200,
    },
}
EXAMPLE = ROOT / "examples" / "own_model"
OWN_MODEL = "mypkg.models:SmallNet"
"""The user's own model of ``examples/own_model``, copied beside the sweep files."""


def sweep_file(
    folder: Path, name: str, architecture: str, dataset: dict, grid: object = None, **params: object
) -> Path:
    path = folder / f"{name}.yaml"
    document = {
        "name": name,
        "architecture": architecture,
        "dataset": dataset,
        "params": {"epochs": 3, "batch_size": 50, **params},
        "grid": grid or {"lr": [0.05, 0.1]},
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """The three sweeps run into one database (the synthetic one stacked, ``--fuse 2``): on each digit dataset a
    built-in model at two learning rates and the user's own model at one, on the synthetic data LeNet-5-3."""
    if not (Path(os.environ.get("GRIDSEARCH_USPS", "")) / "usps.h5").is_file():
        needs("USPS", "set GRIDSEARCH_USPS to the folder holding usps.h5")
    folder = tmp_path_factory.mktemp("own_data")
    data_dir = folder / "data"
    shutil.copytree(EXAMPLE / "mypkg", folder / "mypkg", ignore=shutil.ignore_patterns("__pycache__"))
    own = {"architecture": [OWN_MODEL], "width": [4], "lr": [0.1]}
    sweep_file(folder, "usps", "lenet53", SWEEPS["usps"], [{"hidden": [32], "lr": [0.05, 0.1]}, own])
    sweep_file(folder, "sklearn", "convnet", SWEEPS["sklearn"], [{"channels": [8], "lr": [0.05, 0.1]}, own])
    sweep_file(folder, "synthetic", "lenet53", SWEEPS["synthetic"], hidden=16)
    for name in ("usps", "sklearn"):
        gridsearch("run", f"{name}.yaml", cwd=folder, data_dir=data_dir, check=True)
    stacked = gridsearch("run", "synthetic.yaml", "--fuse", "2", cwd=folder, data_dir=data_dir, check=True)
    said = stacked.stdout + stacked.stderr  # LeNet-5-3 at 3x32x32: its two trials one stack
    assert "2 trials in 1 cohorts (1 of 2)" in said and "no stacked form" not in said, said
    return folder


def test_each_dataset_is_trained_and_tested_on_its_own_shape(study):
    db = study / "results.db"
    for sweep, dataset in (("usps", "usps"), ("sklearn", "sklearn_digits")):
        done = rows(
            db,
            "SELECT t.config FROM trials t JOIN sweep_trials m ON m.trial_key = t.key JOIN sweeps s "
            "ON s.id = m.sweep_id WHERE s.name = ? AND t.status = 'done'",
            sweep,
        )
        assert len(done) == 3 and all(f'"name": "{dataset}"' in config for (config,) in done)
        assert {yaml.safe_load(config)["architecture"] for (config,) in done} >= {OWN_MODEL}
    confusions = rows(db, "SELECT confusion, accuracy FROM evaluations WHERE name = 'test'")
    sizes = sorted(len(yaml.safe_load(confusion)) for confusion, _ in confusions)
    assert sizes == [4, 10, 10]  # N x N: four synthetic classes, ten digits
    assert all(accuracy > 0.5 for _, accuracy in confusions)


def test_a_built_in_sweeps_keys_do_not_depend_on_a_description_and_a_loaders_include_its_digest(study):
    from gridsearch.spec.usercode import CodeRef

    configs = [yaml.safe_load(c) for (c,) in rows(study / "results.db", "SELECT config FROM trials")]
    builtin = [c["dataset"] for c in configs if c["dataset"]["name"] == "usps"]
    assert builtin and all(set(part) == {"name", "train_size", "val_size"} for part in builtin)
    loaded = [c["dataset"] for c in configs if "loader" in c["dataset"]]
    assert loaded and all(part["digest"] == CodeRef.parse("tests.synthetic_data:load").digest() for part in loaded)
    assert all(part["shape"] == [3, 32, 32] and len(part["classes"]) == 4 for part in loaded)


def test_report_and_ensembles_read_each_dataset(study):
    db = str(study / "results.db")
    data_dir = str(study / "data")
    for sweep in ("usps", "sklearn", "synthetic"):
        cli("evaluate", sweep, "--ensemble", "2", "--db", db, "--data-dir", data_dir, cwd=study, check=True)
    ensembles = rows(study / "results.db", "SELECT confusion FROM evaluations WHERE name = 'ensemble/top2'")
    assert sorted(len(yaml.safe_load(c)) for (c,) in ensembles) == [4, 10, 10]
    result = cli("report", "--out", "report", "--db", db, "--data-dir", data_dir, cwd=study, check=True)
    assert "report written to report/index.html" in result.stdout
    page = (study / "report" / "index.html").read_text()
    for title in ("USPS", "scikit-learn digits"):
        assert title in page


def drawn(digit: np.ndarray) -> str:
    """A test digit drawn large, dark on white, as the recognizer's pad sends it."""
    image = Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_the_recognizer_reads_a_drawing_with_the_16x16_model_and_refuses_the_synthetic_one(study):
    storage = Storage(str(study / "results.db"), readonly=True)
    client = create_app(storage, study / "runs", study / "data").test_client()
    usps = storage.selected_trial("usps")
    test = data.test_images(study / "data", 20, DATASETS["usps"])
    right = 0
    for image, label in zip(test.images[:, 0], test.labels.tolist()):
        reply = client.post("/api/predict", json={"image": drawn(image), "trial": usps})
        body = reply.get_json()
        assert reply.status_code == 200, body
        assert len(body["probabilities"]) == 10 and np.array(body["input"]).shape == (16, 16)
        right += body["digit"] == label
    assert right >= 8
    synthetic = storage.selected_trial("synthetic")
    image = np.zeros((16, 16), np.uint8)
    image[4:12, 6:10] = 255
    refused = client.post("/api/predict", json={"image": drawn(image), "trial": synthetic})
    assert refused.status_code == 409 and "not one-channel digits" in refused.get_json()["error"]
    for sweep in ("usps", "synthetic"):
        assert client.get(f"/sweeps/{sweep}").status_code == 200
        for page in ("learned?digit=3", "filters.png", "maps.png"):  # the learned page reads the loader's data too
            assert client.get(f"/trials/{storage.selected_trial(sweep)}/{page}").status_code == 200, (sweep, page)


def test_a_loader_returning_the_wrong_shapes_is_one_error_line_and_stores_nothing(tmp_path):
    bad = {**SWEEPS["synthetic"], "loader": "tests.synthetic_data:wrong_shapes"}
    sweep_file(tmp_path, "bad", "convnet", bad)
    result = cli("run", "bad.yaml", cwd=tmp_path, data_dir=tmp_path / "data")
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: bad.yaml:") and "dataset.loader: loader tests.synthetic_data:wrong_shapes" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_split_sizes_are_checked_against_the_datasets_real_sizes(tmp_path):
    sweep_file(tmp_path, "big", "mlp", {"name": "sklearn_digits", "train_size": 1400, "val_size": 100})
    result = cli("plan", "big.yaml", cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("error: big.yaml:") and "1437 images of the scikit-learn digits training set" in line
