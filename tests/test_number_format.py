"""One number format on a real run's output (issue 33): accuracies with two decimals and a %, counts with thousands
separators, epochs counted from 1, no empty fields, and ``status`` and ``trials`` within 100 columns."""

from __future__ import annotations

import re

import pytest

from gridsearch.vocabulary import TERMINAL_COLUMNS, format_count, format_epoch, format_percent
from tests.conftest import cli, write_sweep

PERCENT = re.compile(r"\d+\.\d+%")
TWO_DECIMALS = re.compile(r"^\d{1,3}\.\d\d%$")


def test_the_vocabulary_formats_each_kind_of_number_one_way():
    assert format_percent(0.984) == "98.40%" and format_percent(None) == ""
    assert format_count(10000) == "10,000" and format_count(None) == ""
    assert format_epoch(0) == "1" and format_epoch(None) == ""


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, data_dir):
    """A real sweep (4 trials of 2 epochs on 500 MNIST images, tested on 1,200 and selected), its folder."""
    folder = tmp_path_factory.mktemp("formats")
    long_names = {"lr": [0.02, 0.08], "lr_step": [3], "weight_decay": [0.0, 0.0001], "momentum": [0.9]}
    write_sweep(
        folder,
        name="a_sweep_with_a_rather_long_name_for_the_width_test",
        dataset={"train_size": 500, "val_size": 300, "test_size": 1200},
        grid=long_names,
    )
    run = cli("run", "sweep.yaml", cwd=folder, data_dir=data_dir, check=True)
    return folder, run


def test_a_runs_progress_lines_use_the_vocabularys_formats(small_run):
    _, run = small_run
    shown = PERCENT.findall(run.stderr)
    assert shown and all(TWO_DECIMALS.match(text) for text in shown), run.stderr
    assert re.search(r"\b1/2 epochs · val accuracy \d+\.\d\d%", run.stderr), run.stderr
    assert re.search(r"val \d+\.\d\d% at epoch [12]\b", run.stderr), run.stderr  # a finished trial's best epoch
    assert "at epoch 0" not in run.stderr


def test_best_prints_two_decimals_counts_with_commas_epochs_from_one_and_no_empty_field(small_run):
    folder, _ = small_run
    best = cli("best", "a_sweep_with_a_rather_long_name_for_the_width_test", cwd=folder, check=True).stdout
    first = best.splitlines()[0]
    assert re.search(r": val \d+\.\d\d% at epoch [12]; test \d+\.\d\d% \(\d+ errors in 1,200\)$", first), best
    assert not [line for line in best.splitlines() if line.rstrip().endswith(":") and line.startswith("  ")], best
    assert "init_from" not in best  # it was printed empty


def test_status_and_trials_fit_100_columns_and_show_everything_with_wide(small_run):
    folder, _ = small_run
    name = "a_sweep_with_a_rather_long_name_for_the_width_test"
    status = cli("status", cwd=folder, check=True).stdout.splitlines()
    trials = cli("trials", name, cwd=folder, check=True).stdout.splitlines()
    for table in (status, trials):
        assert max(len(line) for line in table) <= TERMINAL_COLUMNS, "\n".join(table)
    header = trials[0].split()
    assert {"key", "val_accuracy", "best_epoch"} <= set(header)
    rows = [dict(zip(header, line.split(), strict=False)) for line in trials[1:]]
    assert all(TWO_DECIMALS.match(row["val_accuracy"]) and row["best_epoch"] in {"1", "2"} for row in rows), trials
    assert all(len(row["key"]) == 8 for row in rows)

    wide = cli("trials", name, "--wide", cwd=folder, check=True).stdout.splitlines()
    assert {"val_loss", "train_seconds", "epochs_run", "seed"} <= set(wide[0].split())
    assert all(len(line.split()[0]) > 8 for line in wide[1:])  # the whole key
    csv = cli("trials", name, "--format", "csv", cwd=folder, check=True).stdout.splitlines()
    assert "key" in csv[0] and all("%" not in line for line in csv)  # machines read fractions


def test_narrow_fits_a_committees_pool_in_100_columns():
    """A committee's pool (study_committee): every param gridded, most empty for most models, and four
    architectures in one status cell. The params with one value go first, then the last params; text is cut
    with '…'; the key, status and scores stay."""
    import pandas as pd

    from gridsearch.cli.output import format_table, narrow

    params = [f"param_{i}" for i in range(20)]
    trials = pd.DataFrame(
        [
            {
                "key": f"{i:016x}",
                "architecture": ["lenet53", "stn", "tps_stn"][i % 3],
                **{p: (0.5 if j % 2 else None if i % 3 else "trial:403a2573ab24fb8b") for j, p in enumerate(params)},
                "status": "done",
                "val_accuracy": "99.50%",
            }
            for i in range(6)
        ]
    )
    shown = format_table(narrow(trials, params=["architecture", *params]), "table").splitlines()
    assert max(len(line) for line in shown) <= TERMINAL_COLUMNS, "\n".join(shown)
    assert {"key", "architecture", "status", "val_accuracy"} <= set(shown[0].split())
    assert "param_1" not in shown[0]  # 0.5 in every trial: dropped before the params that vary
    status = pd.DataFrame(
        [{"sweep": "study_committee", "architecture": "lenet53, lenet53_augmented, stn, tps_stn, " * 3, "done": 12}]
    )
    shown = format_table(narrow(status), "table").splitlines()
    assert max(len(line) for line in shown) <= TERMINAL_COLUMNS and "…" in shown[1] and "study_committee" in shown[1]
