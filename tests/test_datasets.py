"""Fashion-MNIST beside MNIST: its raw files parsed as torchvision parses them, a sweep on it trained and tested on
its images end to end, refused in one line without them, and reported, served and evaluated as what it is."""

from __future__ import annotations

import gzip
import html
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gridsearch.errors import UserError
from gridsearch.spec import datasets
from gridsearch.spec.datasets import DATASETS
from gridsearch.training import data
from tests.conftest import cli, needs, rows, write_sweep

TINY = {
    "architecture": "lenet53",
    "dataset": {"train_size": 300, "val_size": 200, "test_size": 200},
    "params": {"epochs": 1, "batch_size": 50, "hidden": 8},
    "grid": {"lr": [0.02, 0.08]},
}
"""Two trials of a narrow LeNet-5-3, one epoch on 300 images each."""


def fashion_source(data_dir: Path) -> Path:
    """The folder holding Fashion-MNIST's four raw files, as ``prepare`` looks for them; skipped (failed under CI)
    without one."""
    found = next(
        (f for f in datasets.fashion_folders(data_dir) if all((f / n).is_file() for n in datasets.IDX_FILES)),
        None,
    )
    if found is None:
        needs("Fashion-MNIST", "apt-get install dataset-fashion-mnist, or set GRIDSEARCH_FASHION_MNIST")
    return found


@pytest.fixture(scope="module")
def fashion(data_dir: Path) -> Path:
    """The session's data folder, with Fashion-MNIST parsed into it too."""
    fashion_source(data_dir)
    data.prepare(data_dir, "fashion_mnist")
    return data_dir


def test_every_dataset_has_a_folder_of_its_own_and_the_mnists_ten_classes():
    assert len({known.folder for known in DATASETS.values()}) == len(DATASETS)
    for known in (DATASETS["mnist"], DATASETS["fashion_mnist"]):
        assert len(known.classes) == 10 and known.training_size == 60000 and known.shape == (1, 28, 28)
    assert DATASETS["fashion_mnist"].classes[0] == "T-shirt/top" and not DATASETS["fashion_mnist"].digits


def test_fashion_arrays_are_what_torchvisions_parser_reads(fashion, tmp_path):
    """torchvision's ``FashionMNIST`` reads the unpacked files: the arrays ``prepare`` parsed are the same."""
    from torchvision.datasets import FashionMNIST

    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    source = fashion_source(fashion)
    for name in datasets.IDX_FILES:
        with gzip.open(source / name) as packed, open(raw / name.removesuffix(".gz"), "wb") as unpacked:
            shutil.copyfileobj(packed, unpacked)
    train, val = data.training_images(fashion, 60000 - 500, 500, "fashion_mnist")
    test = data.test_images(fashion, 10000, "fashion_mnist")
    for split, official in ((test, FashionMNIST(str(tmp_path), train=False)), (train, FashionMNIST(str(tmp_path)))):
        assert np.array_equal(split.images[:, 0], official.data.numpy()[: len(split)])
        assert np.array_equal(split.labels, official.targets.numpy()[: len(split)])
    assert np.array_equal(val.labels, FashionMNIST(str(tmp_path)).targets.numpy()[-500:])
    mnist = data.test_images(fashion, 100)
    assert not np.array_equal(mnist.images, test.images[:100])  # the default is still MNIST


def idx(path: Path, array: np.ndarray) -> None:
    """``array`` written as a gzipped idx file of unsigned bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(size.to_bytes(4, "big") for size in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_raw_files_that_are_not_fashion_mnists_are_refused_in_one_line(tmp_path, monkeypatch):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    monkeypatch.setenv(datasets.FASHION_MNIST_VARIABLE, str(tmp_path / "nowhere"))
    images, labels = np.zeros((5, 28, 28)), np.arange(5)
    for name, array in zip(datasets.IDX_FILES, (images, labels, images, labels)):
        idx(raw / name, array)
    with pytest.raises(
        UserError, match=re.escape("Fashion-MNIST: 5 training images of shape (1, 28, 28), not Fashion-MNIST's 60,000")
    ):
        data.prepare(tmp_path, "fashion_mnist")
    idx(raw / datasets.IDX_FILES[3], np.arange(4))
    with pytest.raises(UserError, match=re.escape("Fashion-MNIST: test_labels must be 5 integer labels")):
        data.prepare(tmp_path, "fashion_mnist")
    (raw / datasets.IDX_FILES[1]).write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09abc"))
    with pytest.raises(UserError, match=r"the idx file is cut short or has extra bytes$"):
        data.prepare(tmp_path, "fashion_mnist")
    (raw / datasets.IDX_FILES[0]).write_bytes(b"not gzip")
    with pytest.raises(UserError, match=re.escape("not a readable .gz file")):
        data.prepare(tmp_path, "fashion_mnist")
    assert not data.arrays_dir(tmp_path, "fashion_mnist").exists()


@dataclass(frozen=True)
class Both:
    """The same tiny sweep run on MNIST (sweep ``digits``) and on Fashion-MNIST (sweep ``fashion``), one database."""

    folder: Path
    db: Path


@pytest.fixture(scope="module")
def both(tmp_path_factory, fashion) -> Both:
    folder = tmp_path_factory.mktemp("datasets")
    digits = write_sweep(folder, "digits.yaml", name="digits", **TINY)
    clothes = write_sweep(
        folder, "fashion.yaml", name="fashion", **{**TINY, "dataset": {**TINY["dataset"], "name": "fashion_mnist"}}
    )
    cli("run", str(digits), str(clothes), cwd=folder, data_dir=fashion, check=True)
    return Both(folder, folder / "results.db")


def selected(db: Path, sweep: str) -> tuple[str, dict, list[int], list[list[int]], float]:
    """The selected trial of ``sweep``: key, config, and its test evaluation's predictions, confusion and accuracy."""
    [(key, config, predictions, confusion, accuracy)] = rows(
        db,
        "SELECT t.key, t.config, e.predictions, e.confusion, e.accuracy FROM sweeps s JOIN trials t "
        "ON t.key = s.selected_trial JOIN evaluations e ON e.trial_key = t.key AND e.name = 'test' WHERE s.name = ?",
        sweep,
    )
    return key, json.loads(config), json.loads(predictions), json.loads(confusion), accuracy


def test_a_fashion_sweep_trains_and_tests_on_fashion_images(both, fashion):
    """Same sweep, two datasets: different trial keys and numbers, and each test evaluation scored against the test
    labels of its own dataset (the confusion matrix's rows count them)."""
    keys = {
        sweep: {
            key
            for (key,) in rows(
                both.db,
                "SELECT trial_key FROM sweep_trials st JOIN sweeps s ON s.id = st.sweep_id WHERE s.name = ?",
                sweep,
            )
        }
        for sweep in ("digits", "fashion")
    }
    assert len(keys["digits"]) == len(keys["fashion"]) == 2 and not keys["digits"] & keys["fashion"]
    epochs = {
        sweep: sorted(
            rows(
                both.db,
                "SELECT e.train_loss, e.val_loss, e.val_accuracy FROM epochs e JOIN sweep_trials st ON "
                "st.trial_key = e.trial_key JOIN sweeps s ON s.id = st.sweep_id WHERE s.name = ?",
                sweep,
            )
        )
        for sweep in ("digits", "fashion")
    }
    assert len(epochs["fashion"]) == 2 and all(a != b for a, b in zip(epochs["digits"], epochs["fashion"]))
    for sweep, dataset in (("digits", "mnist"), ("fashion", "fashion_mnist")):
        _, config, predictions, confusion, accuracy = selected(both.db, sweep)
        assert config["dataset"] == {"name": dataset, "train_size": 300, "val_size": 200}
        labels = data.test_images(fashion, 200, dataset).labels
        assert np.array(confusion).sum(axis=1).tolist() == np.bincount(labels, minlength=10).tolist()
        assert accuracy == pytest.approx(np.mean(np.array(predictions) == labels))


def test_status_and_best_name_the_dataset_that_is_not_mnist(both):
    status = cli("status", cwd=both.folder, check=True).stdout
    assert "dataset" in status and "fashion_mnist" in status
    key = selected(both.db, "fashion")[0]
    best = cli("best", "fashion", cwd=both.folder, check=True).stdout
    assert f"selected trial {key} (lr=" in best and ") on Fashion-MNIST: val " in best
    assert "rows: true class" in best
    assert json.loads(cli("best", "fashion", "--format", "json", cwd=both.folder, check=True).stdout)["dataset"] == (
        "fashion_mnist"
    )
    assert " on " not in cli("best", "digits", cwd=both.folder, check=True).stdout.splitlines()[0]


def test_a_sweep_without_its_fashion_files_is_refused_in_one_line_before_anything_is_stored(
    data_dir, tmp_path, monkeypatch
):
    """MNIST is there (linked), Fashion-MNIST nowhere: GRIDSEARCH_FASHION_MNIST, an empty folder, replaces Debian's."""
    empty, folder, work = tmp_path / "empty", tmp_path / "data", tmp_path / "work"
    for made in (empty, folder, work):
        made.mkdir()
    (folder / "MNIST").symlink_to(data_dir / "MNIST", target_is_directory=True)
    monkeypatch.setenv(datasets.FASHION_MNIST_VARIABLE, str(empty))
    write_sweep(work, "digits.yaml", name="digits", **TINY)
    write_sweep(work, "fashion.yaml", name="fashion", **{**TINY, "dataset": {"name": "fashion_mnist"}})
    result = cli("run", "digits.yaml", "fashion.yaml", cwd=work, data_dir=folder)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: Fashion-MNIST is not in {folder / 'FashionMNIST' / 'raw'} nor {empty}: ")
    for needed in (*datasets.IDX_FILES, "apt-get install dataset-fashion-mnist", "GRIDSEARCH_FASHION_MNIST"):
        assert needed in line
    assert sorted(p.name for p in work.iterdir()) == ["digits.yaml", "fashion.yaml"]  # no database, no runs/
    assert not (folder / "FashionMNIST").exists()


def test_report_on_a_fashion_sweep_skips_the_other_handwriting_and_says_so(both, fashion):
    """The robustness suite and a committee on the fashion sweep, then a report of both sweeps."""
    db = str(both.db)
    evaluated = cli(
        "evaluate",
        "fashion",
        "--suite",
        "robustness",
        "--test-size",
        "100",
        "--db",
        db,
        "--data-dir",
        str(fashion),
        cwd=both.folder,
        check=True,
    ).stdout
    key, *_ = selected(both.db, "fashion")
    assert f"usps and sklearn_digits skipped: trial {key} trained on Fashion-MNIST, not handwritten digits" in evaluated
    stored = {name for (name,) in rows(both.db, "SELECT name FROM evaluations WHERE trial_key = ?", key)}
    assert "robustness/rotate30" in stored and not stored & {"usps", "sklearn_digits"}
    cli("evaluate", "fashion", "--ensemble", "2", "--db", db, "--data-dir", str(fashion), cwd=both.folder, check=True)
    [(predictions, accuracy)] = rows(
        both.db, "SELECT predictions, accuracy FROM evaluations WHERE trial_key = ? AND name = 'ensemble/top2'", key
    )
    labels = data.test_images(fashion, 200, "fashion_mnist").labels
    assert accuracy == pytest.approx(np.mean(np.array(json.loads(predictions)) == labels))

    result = cli("report", "--out", "report", "--db", db, "--data-dir", str(fashion), cwd=both.folder, check=True)
    report = both.folder / "report"
    assert result.stdout == "report written to report/index.html\n"
    page = html.unescape((report / "index.html").read_text())
    assert (
        "USPS and scikit-learn's digits skipped for fashion: trained on Fashion-MNIST, not handwritten digits" in page
    )
    assert "only models of the same dataset are compared" in page
    results = pd.read_csv(report / "results.csv").set_index("sweep")
    assert results["dataset"].to_dict() == {"digits": "MNIST", "fashion": "Fashion-MNIST"}
    assert pd.read_csv(report / "sweeps.csv").set_index("sweep")["dataset"]["fashion"] == "Fashion-MNIST"
    robustness = pd.read_csv(report / "robustness.csv")
    assert "fashion" in robustness and not {"usps", "sklearn_digits"} & set(robustness["condition"])
    classes = pd.read_csv(report / "inspect_fashion_mnist_label_distribution.csv")
    assert classes["class"].tolist() == list(DATASETS["fashion_mnist"].classes)
    assert classes["test"].tolist() == np.bincount(labels, minlength=10).tolist()
    for name in (
        "inspect_label_distribution.csv",
        "inspect_fashion_mnist_samples.png",
        "robustness_examples_fashion_mnist.png",
    ):
        assert (report / name).is_file(), name
    assert not (report / "robustness_examples.png").exists()  # no MNIST model was evaluated for robustness


def test_the_recognizer_offers_only_models_trained_on_digits(both, fashion):
    from gridsearch.store.storage import Storage
    from gridsearch.web.app import create_app

    client = create_app(Storage(str(both.db), readonly=True), both.folder / "runs", fashion).test_client()
    digits, clothes = (selected(both.db, sweep)[0] for sweep in ("digits", "fashion"))
    models = client.get("/api/models").get_json()
    assert [m["trial"] for m in models["models"]] == [digits] and models["default"] == digits
    refused = client.get(f"/api/models/{clothes}")
    assert (
        refused.status_code == 409 and "trained on Fashion-MNIST, not one-channel digits" in refused.get_json()["error"]
    )
    sweeps = {s["name"]: s for s in client.get("/api/sweeps").get_json()["sweeps"]}
    assert (sweeps["fashion"]["dataset"], sweeps["fashion"]["digits"]) == ("Fashion-MNIST", False)
    assert (sweeps["digits"]["dataset"], sweeps["digits"]["digits"]) == (None, True)
    learned = client.get(f"/trials/{clothes}/learned?digit=3")
    label = DATASETS["fashion_mnist"].classes[int(data.test_images(fashion, 4, "fashion_mnist").labels[3])]
    page = learned.get_data(as_text=True)
    assert learned.status_code == 200 and f"Feature maps of test image 3 (a {label})" in page
    assert "/recognizer?trial=" not in page and "no digits to draw" in page
    maps = client.get(f"/trials/{clothes}/maps.png?digit=3&layer=1")
    assert maps.status_code == 200 and maps.content_type == "image/png"
