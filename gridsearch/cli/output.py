"""How the command line prints tables and the selected trial."""

from __future__ import annotations

import pandas as pd

from gridsearch.spec.config import config_value
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import format_params, format_percent

PERCENT_COLUMNS = ("val_accuracy", "accuracy", "test_accuracy")


def selected_line(storage: Storage, sweep: str) -> str:
    """The selected trial of ``sweep``: its gridded params, val score and test score, on one line."""
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
    return f"selected trial {trial.key} ({gridded}): val {val} at epoch {trial.best_epoch}; {tested}"


def percent_columns(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its accuracy columns as percentages, for the terminal."""
    table = table.copy()
    for column in PERCENT_COLUMNS:
        if column in table:
            table[column] = table[column].map(lambda v: format_percent(v, 3) if pd.notna(v) else "")
    return table


def format_table(table: pd.DataFrame, fmt: str) -> str:
    """``table`` as a plain-text table, CSV or JSON records."""
    if fmt == "csv":
        return table.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return table.to_json(orient="records", indent=2)
    if table.empty:
        return "(no rows)"
    return table.to_string(index=False, na_rep="")
