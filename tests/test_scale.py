"""Reports and figures at scale: a 100 x 100 heatmap and parallel coordinates of thousands of trials stay bounded
and say what they show; report tables show their first rows; ``benchmarks/scale.py`` at a small size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from gridsearch.analysis import plots
from gridsearch.analysis.webpage import MAX_TABLE_ROWS, Folder, Section, table

ROOT = Path(__file__).resolve().parent.parent


def grid_of(rows: int, columns: int) -> pd.DataFrame:
    """A ``rows`` x ``columns`` table of accuracies over two params, as ``GridEffects.heatmap_grid`` makes it."""
    values = np.random.default_rng(0).uniform(0.9, 0.99, (rows, columns))
    return pd.DataFrame(
        values,
        index=pd.Index([round(0.001 * (i + 1), 6) for i in range(rows)], name="lr"),
        columns=pd.Index([round(0.0001 * i, 6) for i in range(columns)], name="weight_decay"),
    )


def test_a_100_by_100_heatmap_is_capped_in_size_unlabelled_per_cell_and_says_so():
    figure = plots.heatmap(grid_of(100, 100), "big: val accuracy", "val accuracy")
    try:
        width, height = figure.get_size_inches()
        axes = figure.axes[0]
        assert (width, height) <= plots.MAX_FIGURE_INCHES and height <= plots.MAX_FIGURE_INCHES[1]
        assert len(axes.texts) == 0  # no value written in 10,000 cells
        assert len(axes.get_xticklabels()) <= plots.MAX_TICK_LABELS + 1
        assert len(axes.get_yticklabels()) <= plots.MAX_TICK_LABELS + 1
        assert "100 x 100 cells" in axes.get_title()
    finally:
        plt.close(figure)


def test_a_small_heatmap_still_writes_every_cell():
    figure = plots.heatmap(grid_of(3, 4), "small: val accuracy", "val accuracy")
    try:
        axes = figure.axes[0]
        assert len(axes.texts) == 12 and axes.get_title() == "small: val accuracy"
        assert [t.get_text() for t in axes.get_xticklabels()] == ["0", "0.0001", "0.0002", "0.0003"]
    finally:
        plt.close(figure)


def test_parallel_coordinates_of_thousands_colour_the_best_and_say_how_many():
    rng = np.random.default_rng(1)
    scores = pd.DataFrame({"lr": rng.choice([0.01, 0.02, 0.05], 3000), "momentum": rng.choice([0.5, 0.9], 3000)})
    scores["val_accuracy"] = rng.uniform(0.8, 0.99, 3000)
    figure = plots.parallel_coordinates(scores, ["lr", "momentum"], "val_accuracy", "big")
    try:
        axes = figure.axes[0]
        [coloured] = axes.collections  # the best 50 in one collection; the rest as one density image
        assert len(coloured.get_segments()) == plots.TOP_TRIALS and len(axes.images) == 1
        assert axes.get_title() == (
            "big: the best 50 of 3,000 trials, coloured by val_accuracy; the other 2,950 as grey density"
        )
        best = scores["val_accuracy"].nlargest(plots.TOP_TRIALS)  # the coloured lines end at the best scores
        low, high = scores["val_accuracy"].min(), scores["val_accuracy"].max()
        ends = sorted(segment[-1, 1] for segment in coloured.get_segments())
        assert ends == sorted(((best - low) / (high - low)).tolist())
    finally:
        plt.close(figure)


def test_a_report_table_shows_its_first_rows_and_says_the_csv_has_them_all(tmp_path):
    frame = pd.DataFrame({"trial": range(250), "val_accuracy": np.linspace(0.99, 0.9, 250)})
    folder = Folder(tmp_path)
    shown = table(frame, folder.csv(frame, "trials"))
    assert len(shown.rows) == MAX_TABLE_ROWS and shown.total == 250
    page = folder.page("t", [Section("a", "A", [shown])]).read_text()
    assert f"The first {MAX_TABLE_ROWS} of 250 rows; all of them in the CSV" in page
    assert len(pd.read_csv(tmp_path / "trials.csv")) == 250


@pytest.mark.benchmark
def test_the_scale_benchmark_measures_every_step_at_a_small_size(tmp_path, data_dir):
    """``benchmarks/scale.py`` on 24 trials: its last line has every step, each with its time and memory."""
    result = subprocess.run(
        [sys.executable, "benchmarks/scale.py", "--trials", "24", "--epochs", "3", "--cache", str(tmp_path)]
        + ["--data-dir", str(data_dir), "--timeout", "300"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert (
        last["trials"] == 24
        and last["epoch_rows"] == 72
        and last["grid"]
        == {
            "lr": 2,
            "weight_decay": 2,
            "momentum": 2,
            "lr_gamma": 3,
        }
    )
    steps = {"run", "plan", "status", "trials", "report", "api.trials", "api.epochs", "api.evaluations", "web"}
    assert set(last["steps"]) == steps
    for name, step in last["steps"].items():
        assert step["seconds"] > 0 and step["peak_rss_mb"] > 10 and "error" not in step, (name, step)
    endpoints = last["steps"]["web"]["detail"]["endpoints"]
    assert {e["status"] for e in endpoints.values()} == {200}, endpoints
    assert "/api/sweeps/NAME/trials?since" in endpoints and "/sweeps/NAME/parallel.png" in endpoints
    assert endpoints["/api/sweeps/NAME/trials?since"]["bytes"] < endpoints["/api/sweeps/NAME/trials"]["bytes"]
    assert last["steps"]["api.epochs"]["detail"]["rows"] == 72
    assert set(last["targets_met"]) == {"run", "plan", "report", "web", "web_again", "web_poll_bytes"}

    # That database's trials have no run folders: its report runs no weights, so it never imports torch (1 GB).
    report = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "gridsearch", "report", "scale", "--db", last["db"]]
        + ["--out", str(tmp_path / "report"), "--data-dir", str(data_dir)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    imported = {line.split("|")[-1].strip() for line in report.stderr.splitlines() if line.startswith("import time:")}
    assert "gridsearch.analysis.report" in imported and "torch" not in imported
    page = (tmp_path / "report" / "sweep_scale.html").read_text()  # the sweep's own page of the report
    assert "Without the best weights, ROC AUC and the confidences are left out" in page
