"""How the command line prints tables and the selected trial."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from gridsearch.spec.config import config_value
from gridsearch.spec.datasets import described
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import (
    SHORT_KEY,
    STATUS_ORDER,
    TERMINAL_COLUMNS,
    format_count,
    format_epoch,
    format_params,
    format_percent,
    format_value,
    tidy_float,
)

PERCENT_COLUMNS = ("val_accuracy", "accuracy", "test_accuracy")
EPOCH_COLUMNS = ("best_epoch", "epoch")
"""Columns that hold a stored (0-based) epoch number, shown from 1 on a terminal."""
COUNT_COLUMNS = ("parameter_count", "parameters", "samples", "errors", "train_size", "epochs_run")
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
        errors = f"{format_count(test.errors)} errors in {format_count(test.samples)}"
        tested = f"test {format_percent(test.accuracy)} ({errors})"
    val = format_percent(trial.val_accuracy)
    dataset = described(trial.config["dataset"])
    on = "" if dataset.name == "mnist" else f" on {dataset.title}"
    return f"selected trial {trial.key} ({gridded}){on}: val {val} at epoch {format_epoch(trial.best_epoch)}; {tested}"


def percent_columns(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` as people read it on a terminal: accuracies as percentages, losses to 4 decimals, seconds
    to a tenth, counts with thousands separators, epochs from 1, other numbers as written in sweep files
    (``lr_step`` 4, not 4.0)."""
    table = table.copy()
    for column in table.columns:
        if column in PERCENT_COLUMNS:
            shown = table[column].map(lambda v: format_percent(v) if pd.notna(v) else "")
        elif column in EPOCH_COLUMNS:
            shown = table[column].map(lambda v: format_epoch(int(v)) if pd.notna(v) else "")
        elif column in COUNT_COLUMNS:
            shown = table[column].map(lambda v: format_count(int(v)) if pd.notna(v) else "")
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


KEY_COLUMNS = ("key", "selected")
LESS_READ = ("train_seconds", "val_loss", "epochs_run", "seed")
"""What a narrow table drops first, in order, when it cannot fit otherwise."""


def narrow(table: pd.DataFrame, width: int = TERMINAL_COLUMNS, params: Sequence[str] = ()) -> pd.DataFrame:
    """``table`` (as ``percent_columns`` shows it, or ``status``'s counts) cut to fit ``width`` columns: trial keys to
    their first ``SHORT_KEY`` characters, count columns that are all 0 dropped, errors cut with '…', then the
    columns of ``LESS_READ`` dropped until it fits; then the gridded ``params`` with one value in every row, then the
    others from the last; last, the widest text cut with '…' (``--wide`` shows it all)."""
    table = table.copy()
    for column in KEY_COLUMNS:
        if column in table:
            table[column] = table[column].map(lambda v: v[:SHORT_KEY] if isinstance(v, str) else "")
    counts = [status.value for status in STATUS_ORDER if status.value in table]
    table = table.drop(columns=[column for column in counts if not table[column].any()])
    if "error" in table:
        errors = table["error"].map(lambda v: v if isinstance(v, str) else "")
        room = max(width - _width(table.drop(columns="error")) - 1, len("error"))
        table["error"] = errors.map(lambda text: text if len(text) <= room else text[: room - 1] + "…")
        if not errors.str.len().any():
            table = table.drop(columns="error")
    shown = [name for name in params if name in table and name != "architecture"]
    constant = [name for name in shown if table[name].map(repr).nunique() <= 1]
    for column in [*LESS_READ, *constant, *reversed([name for name in shown if name not in constant])]:
        if _width(table) <= width:
            break
        if column in table:
            table = table.drop(columns=column)
    while (over := _width(table) - width) > 0 and (text := _widest_text(table)) is not None:
        cells = table[text].map(lambda v: "" if v is None else str(v))
        room = max(cells.str.len().max() - over, len(text), 2)
        table[text] = [cell if len(cell) <= room else cell[: room - 1] + "…" for cell in cells]
        if cells.str.len().max() <= room:
            break
    return table


def _widest_text(table: pd.DataFrame) -> str | None:
    """The text column (not a key, not a count) whose longest cell is longest: the one to cut first."""
    texts = [
        c
        for c in table.columns
        if (table[c].dtype == object or pd.api.types.is_string_dtype(table[c])) and c not in (*KEY_COLUMNS, "sweep")
    ]
    lengths = {c: table[c].map(lambda v: len(str(v)) if v is not None else 0).max() for c in texts}
    return max(lengths, key=lambda c: lengths[c]) if lengths else None


def _width(table: pd.DataFrame) -> int:
    """How many characters the widest line of ``table`` as a plain-text table takes."""
    return max((len(line) for line in format_table(table, "table").splitlines()), default=0)
