"""The results database as pandas DataFrames, apart from its storage (as Optuna's ``trials_dataframe``):
the sweeps with their trial counts, a sweep's trials best first, epochs, evaluations and plain SQL."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from typing import Any, NamedTuple

import pandas as pd
from sqlalchemy import String, case, func, select, type_coerce

from gridsearch.errors import UserError
from gridsearch.spec.config import config_value
from gridsearch.spec.search import Search
from gridsearch.store.connection import NOT_READ_ONLY
from gridsearch.store.models import EpochRow, EvaluationRow, SweepRow, SweepTrialRow, TrialRow
from gridsearch.store.storage import Storage, chunks
from gridsearch.vocabulary import FINISHED, METRICS, STATUS_ORDER, TrialStatus, metric


class BestScore(NamedTuple):
    """A sweep's select metric and its best value among the sweep's done trials (None if none is done)."""

    metric: str
    value: float | None


def status_table(storage: Storage) -> pd.DataFrame:
    """One row per sweep: its ``architecture`` and ``dataset`` (its name), trial counts by status (a column each, in
    ``STATUS_ORDER``), ``trials``, and the ``selected`` trial."""
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
    table.insert(2, "dataset", table["sweep"].map(sweep_datasets(storage)))
    table["trials"] = table[statuses].sum(axis=1)
    table["selected"] = table["sweep"].map(dict(sweeps))
    order = {name: i for i, (name, _) in enumerate(sweeps)}
    return table.sort_values("sweep", key=lambda names: names.map(order)).reset_index(drop=True)


def sweep_datasets(storage: Storage, names: Iterable[str] | None = None) -> dict[str, str]:
    """The name of the dataset each sweep with trials (of ``names``, if given) trains on, read from one of its
    trials' configs (a sweep's trials share its dataset)."""
    first = (
        select(SweepTrialRow.sweep_id, func.min(SweepTrialRow.trial_key).label("key"))
        .group_by(SweepTrialRow.sweep_id)
        .subquery()
    )
    query = (
        select(SweepRow.name, TrialRow.config)
        .join(first, first.c.sweep_id == SweepRow.id)
        .join(TrialRow, TrialRow.key == first.c.key)
    )
    if names is not None:
        query = query.where(SweepRow.name.in_(list(names)))
    with storage.session() as session:
        rows = session.execute(query).all()
    return {name: config["dataset"]["name"] for name, config in rows}


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


def trials_table(storage: Storage, sweep: str, keys: Iterable[str] | None = None) -> pd.DataFrame:
    """The trials of ``sweep`` (those of them among ``keys``, if given) with their gridded params as columns,
    best first by its select metric (successive halving: highest rung first, with a ``rung`` column)."""
    row = storage.sweep(sweep)
    rungs = storage.rungs(sweep) if Search.from_record(row.search).describes_rungs else None
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
        for trial in storage.trials(sweep, keys)
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


EPOCH_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")
"""The metrics of an epoch, as stored (table ``epochs``)."""


def epochs_by_trial(storage: Storage, keys: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """Per-epoch metrics of the trials ``keys`` in one pass: trial key -> its epochs in order, as mappings
    (what a strategy's standings are computed from), one query per ``CHUNK`` keys."""
    columns = [getattr(EpochRow, name) for name in EPOCH_COLUMNS]
    grouped: dict[str, list[dict[str, Any]]] = {}
    with storage.session() as session:
        for part in chunks(list(keys)):
            query = (
                select(EpochRow.trial_key, *columns)
                .where(EpochRow.trial_key.in_(part))
                .order_by(EpochRow.trial_key, EpochRow.epoch)
            )
            for key, *values in session.execute(query):
                grouped.setdefault(key, []).append(dict(zip(EPOCH_COLUMNS, values, strict=True)))
    return grouped


def epochs(storage: Storage, keys: Iterable[str], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-epoch metrics of the trials ``keys`` (``trial_key``, ``epoch`` and ``columns`` of
    ``EPOCH_COLUMNS``: default all), by trial and epoch. Read by the epochs table's primary key
    (trial, epoch), one query per ``CHUNK`` keys; only the columns asked for leave the database."""
    names = [
        "trial_key",
        "epoch",
        *(name for name in (EPOCH_COLUMNS if columns is None else columns) if name != "epoch"),
    ]
    chosen = [getattr(EpochRow, name) for name in names]
    with storage.session() as session:
        frames = [
            pd.read_sql(
                select(*chosen).where(EpochRow.trial_key.in_(part)).order_by(EpochRow.trial_key, EpochRow.epoch),
                session.connection(),
            )
            for part in chunks(list(dict.fromkeys(keys)))
        ]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else (frames or [pd.DataFrame(columns=names)])[0]


def epoch_chunks(
    storage: Storage, trials: Sequence[tuple[str, int]], rows: int, columns: Sequence[str] | None = None
) -> Iterator[pd.DataFrame]:
    """``epochs`` of ``trials`` (pairs of a key and how many epochs it has recorded), a few whole trials at a
    time: each frame holds about ``rows`` rows (one trial at least), so reading a sweep of any size holds one
    frame at a time."""
    group: list[str] = []
    size = 0
    for key, count in trials:
        group.append(key)
        size += count
        if size >= rows:
            yield epochs(storage, group, columns)
            group, size = [], 0
    if group:
        yield epochs(storage, group, columns)


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
    """Every trial of ``sweep`` as it stands, in grid order: one query of plain columns (no config, no ORM rows;
    the status read as the string it is stored as, not converted to ``TrialStatus`` and back)."""
    with storage.session() as session:
        rows = session.execute(
            select(
                TrialRow.key,
                SweepTrialRow.position,
                SweepTrialRow.rung,
                TrialRow.seed,
                type_coerce(TrialRow.status, String),
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
    return [TrialState(*row) for row in rows]


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


def results_stamp(storage: Storage, sweep: str, budget: int) -> tuple[tuple[object, ...], ...]:
    """What a sweep's analysis is computed from, summed in one aggregate query: for each status, how many trials
    have it and the sums of their positions, rungs, scores (finished ones) and epochs up to ``budget`` (a halving
    sweep's rung-0 budget; 0: none). It changes when a trial finishes, is promoted or is scored, not per epoch."""
    finished = TrialRow.status.in_(sorted(FINISHED))
    position = SweepTrialRow.position + 1
    with storage.session() as session:
        rows = session.execute(
            select(
                TrialRow.status,
                func.count(),
                func.sum(position),
                func.sum(position * position),
                func.sum(func.coalesce(SweepTrialRow.rung, -1) * position),
                func.sum(case((finished, TrialRow.val_accuracy * position), else_=0.0)),
                func.sum(case((finished, TrialRow.val_loss * position), else_=0.0)),
                func.sum(case((TrialRow.epochs_run < budget, TrialRow.epochs_run), else_=budget) * position),
            )
            .join(SweepTrialRow, SweepTrialRow.trial_key == TrialRow.key)
            .join(SweepRow, SweepRow.id == SweepTrialRow.sweep_id)
            .where(SweepRow.name == sweep)
            .group_by(TrialRow.status)
            .order_by(TrialRow.status)
        ).all()
    return tuple((status.value, *sums) for status, *sums in rows)


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


def trial_sweeps(storage: Storage, keys: Iterable[str]) -> dict[str, list[str]]:
    """The sweeps each trial of ``keys`` belongs to (a trial can be in several: its key is its config's hash), in
    the order the sweeps were made."""
    query = (
        select(SweepTrialRow.trial_key, SweepRow.name)
        .join(SweepRow, SweepRow.id == SweepTrialRow.sweep_id)
        .where(SweepTrialRow.trial_key.in_(list(keys)))
        .order_by(SweepRow.id)
    )
    found: dict[str, list[str]] = {}
    with storage.session() as session:
        for key, name in session.execute(query):
            found.setdefault(key, []).append(name)
    return found


class Score(NamedTuple):
    """An evaluation of a trial without its confusion matrix and predictions."""

    id: int
    trial_key: str
    name: str
    accuracy: float
    errors: int
    samples: int


def evaluation_scores(storage: Storage, keys: Iterable[str], prefix: str = "") -> list[Score]:
    """The evaluations of the trials ``keys`` whose name starts with ``prefix`` (all: ``""``), oldest first, without
    their predictions (only the scores leave the database)."""
    query = (
        select(
            EvaluationRow.id,
            EvaluationRow.trial_key,
            EvaluationRow.name,
            EvaluationRow.accuracy,
            EvaluationRow.errors,
            EvaluationRow.samples,
        )
        .where(EvaluationRow.trial_key.in_(list(keys)), EvaluationRow.name.startswith(prefix, autoescape=True))
        .order_by(EvaluationRow.id)
    )
    with storage.session() as session:
        return [Score(*row) for row in session.execute(query)]
