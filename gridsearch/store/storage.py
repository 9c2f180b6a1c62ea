"""Storage of sweeps, trials, epochs and evaluations behind one interface, over SQLAlchemy.

Any SQLAlchemy URL works (PostgreSQL for several machines); a plain path means an SQLite file,
opened in WAL mode so that readers (``status``, reports) never block the coordinator that writes.
Every statement binds its values; nothing is formatted into SQL.
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine, create_engine, delete, event, func, insert, inspect, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from gridsearch.errors import UserError
from gridsearch.store.models import (
    SCHEMA_VERSION,
    UNFINISHED,
    UPGRADES,
    Base,
    EpochRow,
    EvaluationRow,
    Meta,
    SweepRow,
    SweepTrialRow,
    TrialParamRow,
    TrialRow,
    utcnow,
)

DEFAULT_DB = "results.db"
LEASE_SECONDS = 60.0
"""A running trial whose coordinator sent no heartbeat for this long is taken over."""


def database_url(db: str) -> str:
    """An SQLAlchemy URL for ``db``: returned as is if it is a URL, else an SQLite file path."""
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).expanduser().resolve()}"


def describe(url: str) -> str:
    """``url`` fit for messages (password hidden)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL, or None for other databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


def artifacts_dir(db: str, artifacts: str | None = None) -> Path:
    """Where run folders go: ``artifacts`` if given, else ``runs/`` beside an SQLite file or here."""
    if artifacts:
        return Path(artifacts).expanduser().resolve()
    path = sqlite_path(database_url(db))
    return (path.parent if path else Path.cwd()) / "runs"


@dataclass(frozen=True)
class Owner:
    """Identity of a coordinator process, written on the trials it runs."""

    host: str
    pid: int

    @classmethod
    def this_process(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid())

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}"

    @classmethod
    def parse(cls, text: str) -> Owner:
        host, _, pid = text.rpartition(":")
        return cls(host, int(pid))

    def is_dead(self) -> bool:
        """True when this owner is a process on this host that no longer exists."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


class Storage:
    """The results database. ``readonly=True`` opens it for reading only (``query``, reports)."""

    def __init__(self, db: str = DEFAULT_DB, *, readonly: bool = False, create: bool = True):
        self.url = database_url(db)
        self.readonly = readonly
        try:
            self.engine = self._connect(create=create and not readonly, readonly=readonly)
            self.session = sessionmaker(self.engine, expire_on_commit=False)
            self._check_schema(create=create and not readonly)
        except ImportError as exc:
            raise UserError(
                f"--db {describe(self.url)}: its database driver is not installed ({exc}); install it with pip"
            ) from None
        except (DBAPIError, SQLAlchemyError) as exc:
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise UserError(f"--db {describe(self.url)}: cannot open the database ({reason})") from None

    def _connect(self, create: bool, readonly: bool) -> Engine:
        path = sqlite_path(self.url)
        try:
            if path is not None:
                if not path.parent.is_dir():
                    raise UserError(f"--db {path}: folder {path.parent} does not exist")
                if not create and not path.exists():
                    raise UserError(f"--db {path}: no such database (run a sweep first)")
                url = f"sqlite:///file:{path}?mode=ro&uri=true" if readonly else self.url
                engine = create_engine(url, connect_args={"timeout": 60}, json_serializer=_canonical_json)
                event.listen(engine, "connect", partial(_sqlite_pragmas, readonly=readonly))
                if not readonly:  # take the write lock at BEGIN: read-then-write is atomic across runs
                    event.listen(engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
            else:
                options = {"options": "-c default_transaction_read_only=on"} if readonly else {}
                engine = create_engine(
                    self.url, connect_args=options, pool_pre_ping=True, json_serializer=_canonical_json
                )
            with engine.connect():
                pass
        except (ArgumentError, NoSuchModuleError, ValueError) as exc:
            raise UserError(f"--db {describe(self.url)}: not a usable database URL ({exc})") from None
        return engine

    def _check_schema(self, create: bool) -> None:
        tables = set(inspect(self.engine).get_table_names())
        where = describe(self.url)
        if not tables:
            if not create:
                raise UserError(f"--db {where}: the database is empty (run a sweep first)")
            with self.engine.begin() as connection:  # tables and version in one transaction: a
                Base.metadata.create_all(connection)  # concurrent opener sees both or neither
                if connection.scalar(select(Meta.value).where(Meta.key == "schema_version")) is None:
                    connection.execute(insert(Meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
            return
        if "meta" not in tables:
            raise UserError(f"--db {where}: not a gridsearch database (it has no meta table)")
        with self.session() as session:
            version = session.get(Meta, "schema_version")
        found = version.value if version else "0"
        if found.isdigit() and int(found) in UPGRADES:
            self._upgrade()
        elif found != str(SCHEMA_VERSION):
            raise UserError(
                f"--db {where}: schema version {found}, but this gridsearch reads version "
                f"{SCHEMA_VERSION}; use the gridsearch version that made it"
            )

    def _upgrade(self) -> None:
        """Bring a database of an older schema version to SCHEMA_VERSION in place, in one transaction; the
        data is kept as is. Read-only opens upgrade too, through a short-lived writable connection.
        Hand-written rather than with Alembic: each upgrade is a couple of ADD COLUMNs."""
        engine = self._connect(create=False, readonly=False) if self.readonly else self.engine
        try:
            with engine.begin() as connection:
                found = int(connection.scalar(select(Meta.value).where(Meta.key == "schema_version")))
                for version in range(found, SCHEMA_VERSION):  # re-read: another process may have done it
                    for statement in UPGRADES[version]:
                        connection.exec_driver_sql(statement)
                connection.execute(update(Meta).where(Meta.key == "schema_version").values(value=str(SCHEMA_VERSION)))
        except DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0]
            raise UserError(
                f"--db {describe(self.url)}: cannot upgrade the database to schema version {SCHEMA_VERSION} ({reason})"
            ) from None
        finally:
            if engine is not self.engine:
                engine.dispose()

    # -- sweeps and trials -------------------------------------------------------------------

    def save_sweep(self, sweep: Any, trials: list[Any]) -> None:
        """Store ``sweep`` (a validated Sweep) and its trials; trials already known keep their results.
        A point the grid lists twice is one trial, at its first position."""
        keys = list(dict.fromkeys(trial.key for trial in trials))
        with self.session.begin() as session:
            row = session.scalar(select(SweepRow).where(SweepRow.name == sweep.name))
            if row is None:
                row = SweepRow(name=sweep.name)
                session.add(row)
            row.architecture = ", ".join(sweep.architectures)
            row.select_metric = sweep.select
            row.gridded_params = sweep.gridded_params
            row.source = sweep.source
            row.test_size = sweep.dataset.test_size
            row.search = sweep.search_record()
            row.updated_at = utcnow()
            session.flush()
            known = set(session.scalars(select(TrialRow.key).where(TrialRow.key.in_(keys))))
            new = list({trial.key: trial for trial in trials if trial.key not in known}.values())
            session.add_all(
                TrialRow(
                    key=trial.key,
                    architecture=trial.architecture,
                    config=trial.config(),
                    seed=trial.seed,
                    threads=trial.threads,
                    status="pending",
                )
                for trial in new
            )
            session.flush()  # trials before the rows that refer to them
            session.add_all(
                TrialParamRow(trial_key=trial.key, name=name, value=value, number=_number(value))
                for trial in new
                for name, value in trial.params.items()
            )
            session.flush()
            session.execute(delete(SweepTrialRow).where(SweepTrialRow.sweep_id == row.id))
            session.add_all(
                SweepTrialRow(sweep_id=row.id, trial_key=key, position=position) for position, key in enumerate(keys)
            )
            if row.selected_trial is not None and row.selected_trial not in keys:
                row.selected_trial = None

    def sweep(self, name: str) -> SweepRow:
        """The sweep called ``name``; :class:`UserError` if there is none."""
        with self.session() as session:
            row = session.scalar(select(SweepRow).where(SweepRow.name == name))
        if row is None:
            known = ", ".join(self.sweep_names()) or "none yet"
            raise UserError(f"no sweep named {name!r} in {describe(self.url)} (sweeps: {known})")
        return row

    def selected_trial(self, sweep: str) -> str | None:
        """Key of the trial ``sweep`` selected, or None (no such sweep, or none selected yet)."""
        with self.session() as session:
            return session.scalar(select(SweepRow.selected_trial).where(SweepRow.name == sweep))

    def sweep_names(self) -> list[str]:
        with self.session() as session:
            return list(session.scalars(select(SweepRow.name).order_by(SweepRow.id)))

    def trials(self, sweep: str) -> list[TrialRow]:
        """The trials of ``sweep``, in grid order."""
        row = self.sweep(sweep)
        with self.session() as session:
            return list(
                session.scalars(
                    select(TrialRow)
                    .join(SweepTrialRow, SweepTrialRow.trial_key == TrialRow.key)
                    .where(SweepTrialRow.sweep_id == row.id)
                    .order_by(SweepTrialRow.position)
                )
            )

    def trial(self, key: str) -> TrialRow | None:
        with self.session() as session:
            return session.get(TrialRow, key)

    def set_rung(self, sweep: str, keys: Iterable[str], rung: int) -> None:
        """Record that the trials ``keys`` of ``sweep`` reached successive-halving rung ``rung``."""
        row = self.sweep(sweep)
        with self.session.begin() as session:
            session.execute(
                update(SweepTrialRow)
                .where(SweepTrialRow.sweep_id == row.id, SweepTrialRow.trial_key.in_(list(keys)))
                .values(rung=rung)
            )

    def rungs(self, sweep: str) -> dict[str, int | None]:
        """Trial key -> the successive-halving rung it reached in ``sweep`` (None in a grid sweep)."""
        row = self.sweep(sweep)
        with self.session() as session:
            return dict(
                session.execute(
                    select(SweepTrialRow.trial_key, SweepTrialRow.rung).where(SweepTrialRow.sweep_id == row.id)
                ).all()
            )

    def reset_failed(self, keys: Iterable[str]) -> int:
        """Mark failed or timed-out trials among ``keys`` pending again; returns how many."""
        with self.session.begin() as session:
            result = session.execute(
                update(TrialRow)
                .where(TrialRow.key.in_(list(keys)), TrialRow.status.in_(("failed", "timeout")))
                .values(status="pending", error=None)
            )
            return result.rowcount

    def claim(self, key: str, owner: Owner) -> bool:
        """Atomically take trial ``key`` for ``owner`` if it is free; True if this call got it.

        A trial is free when unfinished and not running, or running under an owner that is dead or
        whose heartbeat is older than the lease.
        """
        row = self.trial(key)
        if row is None or row.status not in UNFINISHED:
            return False
        if row.status == "running":
            stale = row.heartbeat_at is None or row.heartbeat_at < utcnow() - timedelta(seconds=LEASE_SECONDS)
            if not stale and not (row.owner and Owner.parse(row.owner).is_dead()):
                return False
        now = utcnow()
        with self.session.begin() as session:
            result = session.execute(
                update(TrialRow)
                .where(
                    TrialRow.key == key,
                    TrialRow.status == row.status,
                    _same(TrialRow.owner, row.owner),
                    _same(TrialRow.heartbeat_at, row.heartbeat_at),
                )
                .values(
                    status="running",
                    owner=str(owner),
                    heartbeat_at=now,
                    worker_pid=None,
                    started_at=func.coalesce(TrialRow.started_at, now),
                    error=None,
                    attempts=TrialRow.attempts + 1,
                )
            )
            return result.rowcount == 1

    def heartbeat(self, keys: Iterable[str], owner: Owner) -> None:
        """Renew the lease of the running trials ``keys`` owned by ``owner``."""
        keys = list(keys)
        if not keys:
            return
        with self.session.begin() as session:
            session.execute(
                update(TrialRow)
                .where(TrialRow.key.in_(keys), TrialRow.owner == str(owner))
                .values(heartbeat_at=utcnow())
            )

    def update_trial(self, key: str, **values: Any) -> None:
        """Set columns of trial ``key`` (worker pid, device, versions, parameter count)."""
        with self.session.begin() as session:
            session.execute(update(TrialRow).where(TrialRow.key == key).values(**values))

    def record_epoch(self, key: str, metrics: dict[str, float]) -> None:
        """Store (or replace, on resume) one epoch's metrics and the trial's progress."""
        with self.session.begin() as session:
            session.merge(EpochRow(trial_key=key, **metrics))
            session.execute(
                update(TrialRow)
                .where(TrialRow.key == key)
                .values(epochs_run=metrics["epoch"] + 1, heartbeat_at=utcnow())
            )

    def finish(self, key: str, status: str, summary: dict[str, Any] | None = None, error: str | None = None) -> None:
        """Close trial ``key`` with ``status`` (done, stopped, failed, timeout or interrupted)."""
        values: dict[str, Any] = {"status": status, "error": error, "worker_pid": None, "owner": None}
        if status != "interrupted":
            values["finished_at"] = utcnow()
        with self.session.begin() as session:
            session.execute(update(TrialRow).where(TrialRow.key == key).values(**values, **(summary or {})))

    def epochs(self, keys: Iterable[str]) -> pd.DataFrame:
        """Per-epoch metrics of the trials ``keys``."""
        with self.session() as session:
            query = (
                select(EpochRow).where(EpochRow.trial_key.in_(list(keys))).order_by(EpochRow.trial_key, EpochRow.epoch)
            )
            return pd.read_sql(query, session.connection())

    # -- selection and evaluations ----------------------------------------------------------

    def set_selected(self, sweep: str, key: str | None) -> None:
        with self.session.begin() as session:
            session.execute(
                update(SweepRow).where(SweepRow.name == sweep).values(selected_trial=key, updated_at=utcnow())
            )

    def save_evaluation(self, key: str, name: str, result: dict[str, Any]) -> None:
        """Store the evaluation ``name`` of trial ``key``, replacing an earlier one of that name."""
        with self.session.begin() as session:
            session.execute(delete(EvaluationRow).where(EvaluationRow.trial_key == key, EvaluationRow.name == name))
            session.add(
                EvaluationRow(
                    trial_key=key,
                    name=name,
                    samples=result["samples"],
                    accuracy=result["accuracy"],
                    loss=result["loss"],
                    errors=result["errors"],
                    seconds=result["seconds"],
                    confusion=result["confusion"],
                    predictions=result["predictions"],
                )
            )

    def evaluation(self, key: str, name: str) -> EvaluationRow | None:
        with self.session() as session:
            return session.scalar(
                select(EvaluationRow).where(EvaluationRow.trial_key == key, EvaluationRow.name == name)
            )

    def evaluations(self, keys: Iterable[str]) -> pd.DataFrame:
        """Every evaluation of the trials ``keys`` (confusion and predictions as JSON text)."""
        with self.session() as session:
            query = (
                select(EvaluationRow)
                .where(EvaluationRow.trial_key.in_(list(keys)))
                .order_by(EvaluationRow.trial_key, EvaluationRow.id)
            )
            return pd.read_sql(query, session.connection())

    # -- reading --------------------------------------------------------------------------

    def status_table(self) -> pd.DataFrame:
        """One row per sweep: trial counts by status, the best val score and the selected trial."""
        with self.session() as session:
            rows = session.execute(
                select(SweepRow.name, SweepRow.architecture, TrialRow.status, func.count())
                .join(SweepTrialRow, SweepTrialRow.sweep_id == SweepRow.id)
                .join(TrialRow, TrialRow.key == SweepTrialRow.trial_key)
                .group_by(SweepRow.name, SweepRow.architecture, TrialRow.status)
            ).all()
            sweeps = session.execute(select(SweepRow.name, SweepRow.selected_trial).order_by(SweepRow.id)).all()
        counts = pd.DataFrame(rows, columns=["sweep", "architecture", "status", "n"])
        table = counts.pivot_table(
            index=["sweep", "architecture"], columns="status", values="n", fill_value=0, aggfunc="sum"
        )
        statuses = ["done", "stopped", "running", "failed", "timeout", "interrupted", "pending"]
        table = table.reindex(columns=statuses, fill_value=0).reset_index()
        table["trials"] = table[statuses].sum(axis=1)
        selected = dict(sweeps)
        table["selected"] = table["sweep"].map(selected)
        order = {name: i for i, (name, _) in enumerate(sweeps)}
        return table.sort_values("sweep", key=lambda s: s.map(order)).reset_index(drop=True)

    def best_scores(self) -> dict[str, tuple[str, float | None]]:
        """Per sweep: its select metric, and the best value of it among its done trials so far (None if
        none is done)."""
        with self.session() as session:
            sweeps = session.execute(select(SweepRow.name, SweepRow.select_metric)).all()
            best = session.execute(
                select(SweepRow.name, func.max(TrialRow.val_accuracy), func.min(TrialRow.val_loss))
                .join(SweepTrialRow, SweepTrialRow.sweep_id == SweepRow.id)
                .join(TrialRow, TrialRow.key == SweepTrialRow.trial_key)
                .where(TrialRow.status == "done")
                .group_by(SweepRow.name)
            ).all()
        scores = {name: {"val_accuracy": accuracy, "val_loss": loss} for name, accuracy, loss in best}
        return {name: (metric, scores.get(name, {}).get(metric)) for name, metric in sweeps}

    def trials_table(self, sweep: str) -> pd.DataFrame:
        """The trials of ``sweep`` with their gridded params as columns, best first (successive halving:
        highest rung first, with a ``rung`` column)."""
        row = self.sweep(sweep)
        trials = self.trials(sweep)
        gridded = row.gridded_params
        rungs = self.rungs(sweep) if row.search["strategy"] == "halving" else None
        records = []
        for trial in trials:
            config = trial.config
            records.append(
                {
                    "key": trial.key,
                    **{name: config_value(config, name) for name in gridded},
                    "seed": trial.seed,
                    "status": trial.status,
                    **({"rung": rungs[trial.key]} if rungs else {}),
                    "best_epoch": trial.best_epoch,
                    "epochs_run": trial.epochs_run,
                    "val_accuracy": trial.val_accuracy,
                    "val_loss": trial.val_loss,
                    "train_seconds": trial.train_seconds,
                    "error": trial.error,
                }
            )
        table = pd.DataFrame.from_records(records)
        if table.empty:
            return table
        ascending = row.select_metric == "val_loss"
        order = (["rung"], [False]) if rungs else ([], [])  # successive halving: the last rung's trials first
        return table.sort_values(
            [*order[0], row.select_metric], ascending=[*order[1], ascending], na_position="last", kind="stable"
        ).reset_index(drop=True)

    def query(self, sql: str) -> pd.DataFrame:
        """Run one read-only SQL statement and return its rows."""
        try:
            with self.engine.connect() as connection:
                result = connection.execute(text(sql))
                if not result.returns_rows:
                    raise UserError("query: the statement returns no rows (query is read-only)")
                return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
        except DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0]
            raise UserError(f"query: {reason}") from None


def _canonical_json(value: Any) -> str:
    """JSON columns as text with sorted keys, so a trial's stored config is its canonical form."""
    return json.dumps(value, sort_keys=True)


def _sqlite_pragmas(connection: Any, _record: Any, readonly: bool) -> None:
    cursor = connection.cursor()
    if readonly:
        cursor.execute("PRAGMA query_only = ON")
    else:
        connection.isolation_level = None  # transactions begin with the "begin" listener's BEGIN IMMEDIATE
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA busy_timeout = 60000")
    cursor.close()


def config_value(config: dict[str, Any], name: str) -> Any:
    """The value of gridded param ``name`` (or the architecture) in a resolved trial config."""
    return config["architecture"] if name == "architecture" else config["params"].get(name)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _same(column: Any, value: Any) -> Any:
    return column.is_(None) if value is None else column == value
