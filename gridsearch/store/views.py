"""The results database as pandas DataFrames, apart from its storage (as Optuna's ``trials_dataframe``):
the sweeps with their trial counts, a sweep's trials best first, epochs, evaluations and plain SQL."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import closing
from typing import TYPE_CHECKING, Any, NamedTuple

import pandas as pd
from sqlalchemy import func, select

from gridsearch.errors import UserError
from gridsearch.spec.config import config_value
from gridsearch.store.connection import NOT_READ_ONLY
from gridsearch.store.models import EpochRow, EvaluationRow, SweepRow, SweepTrialRow, TrialRow
from gridsearch.vocabulary import METRICS, STATUS_ORDER, TrialStatus, metric

if TYPE_CHECKING:
    from gridsearch.store.storage import Storage


class BestScore(NamedTuple):
    """A sweep's select metric and its best value among the sweep's done trials (None if none is done)."""

    metric: str
    value: float | None


def status_table(storage: Storage) -> pd.DataFrame:
    """One row per sweep: trial counts by status (a column each, in ``STATUS_ORDER``), ``trials``, and the
    ``selected`` trial."""
    with storage.session() as session:
        rows = session.execute(
            select(SweepRow.name, SweepRow.architecture, TrialRow.status, func.count())
            .join(SweepTrialRow, SweepTrialRow.sweep_id == SweepRow.id)
            .join(TrialRow, TrialRow.key == SweepTrialRow.trial_key)
            .group_by(SweepRow.name, SweepRow.architecture, TrialRow.status)
        ).all()
        sweeps = session.execute(select(SweepRow.name, SweepRow.selected_trial).order_by(SweepRow.id)).all()
    counts = pd.DataFrame(
        [(name, architecture, status.value, n) for name, architecture, status, n in rows],
        columns=["sweep", "architecture", "status", "n"],
    )
    table = counts.pivot_table(
        index=["sweep", "architecture"], columns="status", values="n", fill_value=0, aggfunc="sum"
    )
    statuses = [status.value for status in STATUS_ORDER]
    table = table.reindex(columns=statuses, fill_value=0).reset_index()
    table.columns.name = None
    table["trials"] = table[statuses].sum(axis=1)
    table["selected"] = table["sweep"].map(dict(sweeps))
    order = {name: i for i, (name, _) in enumerate(sweeps)}
    return table.sort_values("sweep", key=lambda names: names.map(order)).reset_index(drop=True)


def best_scores(storage: Storage) -> dict[str, BestScore]:
    """Per sweep: its select metric and the best value of it among its done trials so far."""
    best_of = [(func.min if known.ascending else func.max)(getattr(TrialRow, known.name)) for known in METRICS.values()]
    with storage.session() as session:
        sweeps = session.execute(select(SweepRow.name, SweepRow.select_metric)).all()
        best = session.execute(
            select(SweepRow.name, *best_of)
            .join(SweepTrialRow, SweepTrialRow.sweep_id == SweepRow.id)
            .join(TrialRow, TrialRow.key == SweepTrialRow.trial_key)
            .where(TrialRow.status == TrialStatus.DONE)
            .group_by(SweepRow.name)
        ).all()
    scores = {name: dict(zip(METRICS, values, strict=True)) for name, *values in best}
    return {name: BestScore(select_metric, scores.get(name, {}).get(select_metric)) for name, select_metric in sweeps}


def trials_table(storage: Storage, sweep: str) -> pd.DataFrame:
    """The trials of ``sweep`` with their gridded params as columns, best first by its select metric
    (successive halving: highest rung first, with a ``rung`` column)."""
    row = storage.sweep(sweep)
    rungs = storage.rungs(sweep) if row.search["strategy"] == "halving" else None
    records = [
        {
            "key": trial.key,
            **{name: config_value(trial.config, name) for name in row.gridded_params},
            "seed": trial.seed,
            "status": trial.status.value,
            **({"rung": rungs[trial.key]} if rungs else {}),
            "best_epoch": trial.best_epoch,
            "epochs_run": trial.epochs_run,
            "val_accuracy": trial.val_accuracy,
            "val_loss": trial.val_loss,
            "train_seconds": trial.train_seconds,
            "error": trial.error,
        }
        for trial in storage.trials(sweep)
    ]
    table = pd.DataFrame.from_records(records)
    if table.empty:
        return table
    first = (["rung"], [False]) if rungs else ([], [])  # successive halving: the last rung's trials first
    return table.sort_values(
        [*first[0], row.select_metric],
        ascending=[*first[1], metric(row.select_metric).ascending],
        na_position="last",
        kind="stable",
    ).reset_index(drop=True)


def epochs(storage: Storage, keys: Iterable[str]) -> pd.DataFrame:
    """Per-epoch metrics of the trials ``keys``, by trial and epoch."""
    query = select(EpochRow).where(EpochRow.trial_key.in_(list(keys))).order_by(EpochRow.trial_key, EpochRow.epoch)
    with storage.session() as session:
        return pd.read_sql(query, session.connection())


def evaluations(storage: Storage, keys: Iterable[str]) -> pd.DataFrame:
    """Every evaluation of the trials ``keys`` (confusion and predictions decoded, as lists)."""
    query = (
        select(EvaluationRow)
        .where(EvaluationRow.trial_key.in_(list(keys)))
        .order_by(EvaluationRow.trial_key, EvaluationRow.id)
    )
    with storage.session() as session:
        return pd.read_sql(query, session.connection())


def query(storage: Storage, sql: str) -> pd.DataFrame:
    """The rows of one SQL statement, run as written (nothing in it is taken for a parameter). On SQLite a
    read-only storage runs only a statement that reads: anything else fails before it starts. On PostgreSQL
    the statement is prepared, so it is one statement, inside one read-only transaction."""
    try:
        with storage.engine.connect() as connection:
            cursor: Any = connection.connection.cursor()  # the driver's own (sqlite3's, psycopg's)
            with closing(cursor):
                if connection.dialect.driver == "psycopg":
                    cursor.execute(sql, prepare=True)  # several statements could COMMIT, then write
                else:
                    cursor.execute(sql)  # sqlite3 refuses several statements
                if cursor.description is None:
                    raise UserError("query: the statement returns no rows (query is read-only)")
                return pd.DataFrame(cursor.fetchall(), columns=[column[0] for column in cursor.description])
    except storage.engine.dialect.loaded_dbapi.Error as exc:
        reason = str(exc).strip().splitlines()[0]
        if reason in NOT_READ_ONLY:
            reason = "the statement does more than read: writing, ATTACH, VACUUM and setting a PRAGMA are refused"
        raise UserError(f"query: {reason}") from None


def epoch_seconds(storage: Storage, sweep: str) -> float:
    """Seconds of every training epoch of every trial of ``sweep``, summed in the database."""
    with storage.session() as session:
        total = session.scalar(
            select(func.sum(EpochRow.seconds))
            .join(SweepTrialRow, SweepTrialRow.trial_key == EpochRow.trial_key)
            .join(SweepRow, SweepRow.id == SweepTrialRow.sweep_id)
            .where(SweepRow.name == sweep)
        )
    return float(total or 0.0)


class TrialState(NamedTuple):
    """What the live sweep page shows of one trial, apart from its params (see :func:`trial_states`)."""

    key: str
    position: int
    rung: int | None
    seed: int
    status: str
    epochs_run: int
    best_epoch: int | None
    val_accuracy: float | None
    val_loss: float | None
    train_seconds: float | None
    error: str | None


def trial_states(storage: Storage, sweep: str) -> list[TrialState]:
    """Every trial of ``sweep`` as it stands, in grid order: one query of plain columns (no config, no ORM rows)."""
    with storage.session() as session:
        rows = session.execute(
            select(
                TrialRow.key,
                SweepTrialRow.position,
                SweepTrialRow.rung,
                TrialRow.seed,
                TrialRow.status,
                TrialRow.epochs_run,
                TrialRow.best_epoch,
                TrialRow.val_accuracy,
                TrialRow.val_loss,
                TrialRow.train_seconds,
                TrialRow.error,
            )
            .join(SweepTrialRow, SweepTrialRow.trial_key == TrialRow.key)
            .join(SweepRow, SweepRow.id == SweepTrialRow.sweep_id)
            .where(SweepRow.name == sweep)
            .order_by(SweepTrialRow.position)
        ).all()
    return [
        TrialState(key, position, rung, seed, status.value, *rest) for key, position, rung, seed, status, *rest in rows
    ]


def trial_configs(storage: Storage, keys: Iterable[str], sweep: str | None = None) -> dict[str, Any]:
    """The resolved config of each trial of ``keys`` (a trial's config never changes: its key is its hash); with
    ``sweep``, of those of them that belong to it."""
    query = select(TrialRow.key, TrialRow.config).where(TrialRow.key.in_(list(keys)))
    if sweep is not None:
        query = (
            query.join(SweepTrialRow, SweepTrialRow.trial_key == TrialRow.key)
            .join(SweepRow, SweepRow.id == SweepTrialRow.sweep_id)
            .where(SweepRow.name == sweep)
        )
    with storage.session() as session:
        return dict(session.execute(query).all())


def last_evaluation(storage: Storage, sweep: str) -> int:
    """The id of the latest evaluation of any trial of ``sweep`` (0: none): it changes when one is stored."""
    with storage.session() as session:
        found = session.scalar(
            select(func.max(EvaluationRow.id))
            .join(SweepTrialRow, SweepTrialRow.trial_key == EvaluationRow.trial_key)
            .join(SweepRow, SweepRow.id == SweepTrialRow.sweep_id)
            .where(SweepRow.name == sweep)
        )
    return int(found or 0)
