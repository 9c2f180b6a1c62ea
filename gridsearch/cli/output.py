"""How the command line prints tables and the selected trial."""

from __future__ import annotations

import pandas as pd

from gridsearch.spec.config import config_value
from gridsearch.spec.datasets import described
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import format_params, format_percent, format_value, tidy_float

PERCENT_COLUMNS = ("val_accuracy", "accuracy", "test_accuracy")
SECONDS_DECIMALS = 3
"""Durations in CSV and JSON: to the millisecond (a sum of epoch times is 38.32, not 38.319873280000024)."""


def selected_line(storage: Storage, sweep: str) -> str:
    """The selected trial of ``sweep``: its gridded params, its dataset when not MNIST, val score and test score, on
    one line."""
    row = storage.sweep(sweep)
    trial = storage.trial(row.selected_trial) if row.selected_trial else None
    if trial is None:
        return f"sweep {sweep} has no selected trial yet"
    test = storage.evaluation(trial.key, "test")
    gridded = format_params((name, config_value(trial.config, name)) for name in row.gridded_params)
    tested = "not tested"
    if test is not None:
        tested = f"test {format_percent(test.accuracy, 3)} ({test.errors} errors in {test.samples})"
    val = format_percent(trial.val_accuracy, 3)
    dataset = described(trial.config["dataset"])
    on = "" if dataset.name == "mnist" else f" on {dataset.title}"
    return f"selected trial {trial.key} ({gridded}){on}: val {val} at epoch {trial.best_epoch}; {tested}"


def percent_columns(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` as people read it on a terminal: accuracies as percentages, losses to 4 decimals, seconds
    to a tenth, other numbers as written in sweep files (``lr_step`` 4, not 4.0)."""
    table = table.copy()
    for column in table.columns:
        if column in PERCENT_COLUMNS:
            shown = table[column].map(lambda v: format_percent(v, 3) if pd.notna(v) else "")
        elif column.endswith("loss"):
            shown = table[column].map(lambda v: f"{v:.4f}" if pd.notna(v) else "")
        elif column.endswith("seconds"):
            shown = table[column].map(lambda v: f"{v:.1f}" if pd.notna(v) else "")
        elif pd.api.types.is_float_dtype(table[column]):
            shown = table[column].map(lambda v: format_value(v) if pd.notna(v) else "")
        elif table[column].dtype == object:
            shown = table[column].map(lambda v: "" if v is None else v)
        else:
            continue
        table[column] = shown
    return table


def format_table(table: pd.DataFrame, fmt: str) -> str:
    """``table`` as a plain-text table, or as CSV or JSON records with floats as measured (``tidy_float``) and
    durations (``*seconds``) to the millisecond."""
    if fmt in ("csv", "json"):
        floats = table.select_dtypes("float").columns
        table = table.assign(
            **{
                column: table[column].round(SECONDS_DECIMALS)
                if column.endswith("seconds")
                else table[column].map(tidy_float)
                for column in floats
            }
        )
    if fmt == "csv":
        return table.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return table.to_json(orient="records", indent=2)
    if table.empty:
        return "(no rows)"
    return table.to_string(index=False, na_rep="")
