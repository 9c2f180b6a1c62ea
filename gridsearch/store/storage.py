"""Storage of sweeps, trials, epochs and evaluations behind one interface, over SQLAlchemy.

What the engine writes and every reader reads goes through :class:`Storage`; the pandas views of it
(tables of sweeps and trials, epochs, SQL queries) are in ``gridsearch.store.views``. Every statement
binds its values; nothing is formatted into SQL.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Unpack

from sqlalchemy import Table, delete, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gridsearch.errors import UserError
from gridsearch.store import connection
from gridsearch.store.connection import DEFAULT_DB, database_url, location
from gridsearch.store.faults import DEFAULT_WAIT_SECONDS, RideOut, reason, retried
from gridsearch.store.fronts import Fronts
from gridsearch.store.leases import Leases, Owner
from gridsearch.store.models import (
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
from gridsearch.store.records import EpochMetrics, Evaluation, TrialSummary, TrialUpdate
from gridsearch.store.schema import database_id, open_schema
from gridsearch.vocabulary import FAILURES, TrialStatus

if TYPE_CHECKING:
    from gridsearch.spec.sweep import Sweep, Trial

__all__ = ["Owner", "Storage"]  # Owner: for the engine, which names owners

CHUNK = 10_000
"""Keys per ``IN`` list of a bulk read."""
TEST_LABELS = "test_labels:"
"""``meta`` key prefix of a dataset's test labels (``save_test_labels``)."""


class Storage(Leases, Fronts):
    """The results database.

    ``readonly=True`` opens it for reading only (``status``, ``query``, reports, the web app): nothing is
    written, and a database older than this version's schema is refused unless its tables read the same.
    ``create=False`` refuses a database that does not exist yet. ``upgrade=True`` (writers) upgrades an
    older database in place; ``upgraded_from`` then says from which schema version. ``wait``: how many
    seconds each call waits out a lost connection or a held lock (:mod:`~gridsearch.store.faults`; default
    a few minutes for writers, none for readers, whose users are there to retry).
    """

    def __init__(
        self,
        db: str = DEFAULT_DB,
        *,
        readonly: bool = False,
        create: bool = True,
        upgrade: bool = False,
        wait: float | None = None,
    ):
        self.url = database_url(db)
        self.location = where = location(self.url)
        seconds = (0.0 if readonly else DEFAULT_WAIT_SECONDS) if wait is None else wait
        file = connection.sqlite_path(self.url)
        self.faults = RideOut(where, seconds, folder=None if file is None else file.parent)
        try:
            self.engine = connection.connect(self.url, where, readonly=readonly, create=create and not readonly)
            self.session = sessionmaker(self.engine, expire_on_commit=False)
            try:  # another run may hold SQLite's write lock as this one opens (a server that is down is
                # reported at once by ``connect``: at the start, the likelier cause is a wrong URL)
                self.upgraded_from = self.faults.call(
                    lambda: open_schema(
                        self.engine, where, create=create and not readonly, upgrade=upgrade and not readonly
                    )
                )
            except BaseException:  # refused (another version, not a gridsearch database): let go of the file
                self.engine.dispose()
                raise
            self.database_id = self.faults.call(lambda: database_id(self.engine))
            """Given at creation (None: a database made before ids); each run folder records it."""
        except ImportError as exc:
            raise UserError(
                f"--db {where}: its database driver is not installed ({exc}); install it with pip"
            ) from None
        except (DBAPIError, SQLAlchemyError) as exc:
            raise UserError(f"--db {where}: cannot open the database ({reason(exc)})") from None

    def close(self) -> None:
        """Close every connection (an SQLite writer's last one folds its write-ahead log into the file, and
        the last one of any kind removes the -wal and -shm files)."""
        self.engine.dispose()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- sweeps and trials -------------------------------------------------------------------

    @retried
    def save_sweep(self, sweep: Sweep, trials: list[Trial], prune: bool = True) -> None:
        """Store ``sweep`` and its trials; trials already known keep their results.
        A point the grid lists twice is one trial, at its first position. New trials and their params go
        in as bulk inserts; the sweep's links to its trials are upserted (only new, moved or dropped ones
        are written), so storing a sweep again writes next to nothing. ``prune=False`` (points a strategy
        proposes as it goes): ``trials`` join the sweep's others, after them, and those stay."""
        unique: dict[str, Trial] = {}
        for trial in trials:  # the first of each key, in grid order (a key is a hash: computed once)
            unique.setdefault(trial.key, trial)
        keys = list(unique)
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
            known = {
                key
                for part in chunks(keys)
                for key in session.scalars(select(TrialRow.key).where(TrialRow.key.in_(part)))
            }
            new = {key: trial for key, trial in unique.items() if key not in known}
            if new:
                connection = session.connection()
                connection.execute(
                    insert(_table(TrialRow)),
                    [
                        {
                            "key": key,
                            "architecture": trial.architecture,
                            "config": trial.config(),
                            "seed": trial.seed,
                            "threads": trial.threads,
                            "status": TrialStatus.PENDING,
                        }
                        for key, trial in new.items()
                    ],
                )
                connection.execute(  # trials before the rows that refer to them
                    insert(_table(TrialParamRow)),
                    [
                        {"trial_key": key, "name": name, "value": value, "number": _number(value)}
                        for key, trial in new.items()
                        for name, value in trial.params.items()
                    ],
                )
            if not prune:
                linked = list(
                    session.scalars(
                        select(SweepTrialRow.trial_key)
                        .where(SweepTrialRow.sweep_id == row.id)
                        .order_by(SweepTrialRow.position)
                    )
                )
                keys = linked + [key for key in keys if key not in set(linked)]
            self._link(session, row.id, keys, rungs=sweep.search.describes_rungs)
            if prune and row.selected_trial is not None and row.selected_trial not in unique:
                row.selected_trial = None

    @staticmethod
    def _link(session: Session, sweep_id: int, keys: list[str], rungs: bool) -> None:
        """Make the sweep's links its trials ``keys`` at their positions: insert the new ones, move the
        ones whose position changed, delete the ones no longer in it. A rung reached in an earlier run is
        kept for a search with rungs (its strategy sets each rung again as it runs) and cleared otherwise."""
        linked = dict(
            session.execute(
                select(SweepTrialRow.trial_key, SweepTrialRow.position).where(SweepTrialRow.sweep_id == sweep_id)
            ).all()
        )
        wanted = {key: position for position, key in enumerate(keys)}
        gone = [key for key in linked if key not in wanted]
        for part in chunks(gone):
            session.execute(
                delete(SweepTrialRow).where(SweepTrialRow.sweep_id == sweep_id, SweepTrialRow.trial_key.in_(part))
            )
        moved = [
            {"sweep_id": sweep_id, "trial_key": key, "position": position}
            for key, position in wanted.items()
            if key in linked and linked[key] != position
        ]
        if moved:
            session.execute(update(SweepTrialRow), moved)
        added = [
            {"sweep_id": sweep_id, "trial_key": key, "position": position}
            for key, position in wanted.items()
            if key not in linked
        ]
        if added:
            session.connection().execute(insert(_table(SweepTrialRow)), added)
        if not rungs:
            session.execute(
                update(SweepTrialRow)
                .where(SweepTrialRow.sweep_id == sweep_id, SweepTrialRow.rung.is_not(None))
                .values(rung=None)
            )

    @retried
    def sweep(self, name: str) -> SweepRow:
        """The sweep called ``name``; :class:`UserError` if there is none."""
        with self.session() as session:
            row = session.scalar(select(SweepRow).where(SweepRow.name == name))
        if row is None:
            known = ", ".join(self.sweep_names()) or "none yet"
            raise UserError(f"no sweep named {name!r} in {self.location} (sweeps: {known})")
        return row

    @retried
    def selected_trial(self, sweep: str) -> str | None:
        """Key of the trial ``sweep`` selected, or None (no such sweep, or none selected yet)."""
        with self.session() as session:
            return session.scalar(select(SweepRow.selected_trial).where(SweepRow.name == sweep))

    @retried
    def sweep_names(self) -> list[str]:
        """Every sweep's name, oldest first."""
        with self.session() as session:
            return list(session.scalars(select(SweepRow.name).order_by(SweepRow.id)))

    @retried
    def trials(self, sweep: str, keys: Iterable[str] | None = None) -> list[TrialRow]:
        """The trials of ``sweep`` (those of them among ``keys``, if given), in grid order."""
        row = self.sweep(sweep)
        query = (
            select(SweepTrialRow.position, TrialRow)
            .join(SweepTrialRow, SweepTrialRow.trial_key == TrialRow.key)
            .where(SweepTrialRow.sweep_id == row.id)
            .order_by(SweepTrialRow.position)
        )
        with self.session() as session:
            if keys is None:
                return [trial for _, trial in session.execute(query)]
            found = [
                found
                for part in chunks(list(dict.fromkeys(keys)))
                for found in session.execute(query.where(TrialRow.key.in_(part))).all()
            ]
        return [trial for _, trial in sorted(found, key=lambda pair: pair[0])]

    @retried
    def trial(self, key: str) -> TrialRow | None:
        """The trial ``key``, or None if there is none."""
        with self.session() as session:
            return session.get(TrialRow, key)

    @retried
    def trials_starting(self, prefix: str, limit: int = 2) -> list[TrialRow]:
        """Up to ``limit`` trials whose key starts with ``prefix`` (a key as ``status`` shortens it), by key."""
        with self.session() as session:
            query = select(TrialRow).where(TrialRow.key.startswith(prefix, autoescape=True))
            return list(session.scalars(query.order_by(TrialRow.key).limit(limit)))

    @retried
    def trial_rows(self, keys: Iterable[str]) -> dict[str, TrialRow]:
        """The stored trials among ``keys``, by key in the order given, read in bulk (one query per
        ``CHUNK`` keys) rather than one query each; keys with no trial are left out."""
        wanted = list(dict.fromkeys(keys))
        with self.session() as session:
            found = {
                row.key: row
                for part in chunks(wanted)
                for row in session.scalars(select(TrialRow).where(TrialRow.key.in_(part)))
            }
        return {key: found[key] for key in wanted if key in found}

    @retried
    def set_rung(self, sweep: str, keys: Iterable[str], rung: int) -> None:
        """Record that the trials ``keys`` of ``sweep`` reached rung ``rung`` (the index of a budget in its
        search's ``rung_epochs``); a trial keeps the highest it reached (Hyperband's brackets share trials)."""
        row = self.sweep(sweep)
        with self.session.begin() as session:
            session.execute(
                update(SweepTrialRow)
                .where(SweepTrialRow.sweep_id == row.id, SweepTrialRow.trial_key.in_(list(keys)))
                .where(or_(SweepTrialRow.rung.is_(None), SweepTrialRow.rung < rung))
                .values(rung=rung)
            )

    @retried
    def rungs(self, sweep: str) -> dict[str, int | None]:
        """Trial key -> the successive-halving rung it reached in ``sweep`` (None in a grid sweep)."""
        row = self.sweep(sweep)
        with self.session() as session:
            return dict(
                session.execute(
                    select(SweepTrialRow.trial_key, SweepTrialRow.rung).where(SweepTrialRow.sweep_id == row.id)
                ).all()
            )

    @retried
    def reset_failed(self, keys: Iterable[str]) -> int:
        """Mark failed or timed-out trials among ``keys`` pending again; returns how many."""
        with self.session.begin() as session:
            result = session.connection().execute(
                update(TrialRow)
                .where(TrialRow.key.in_(list(keys)), TrialRow.status.in_(FAILURES))
                .values(status=TrialStatus.PENDING, error=None)
            )
            return result.rowcount

    @retried
    def update_trial(self, key: str, **values: Unpack[TrialUpdate]) -> None:
        """Set columns of trial ``key`` (worker pid, device, versions, parameter count)."""
        with self.session.begin() as session:
            session.execute(update(TrialRow).where(TrialRow.key == key).values(**values))

    @retried
    def record_epoch(self, key: str, metrics: EpochMetrics) -> None:
        """Store (or replace, on resume) one epoch's metrics and the trial's progress."""
        with self.session.begin() as session:
            session.merge(EpochRow(trial_key=key, **metrics))
            session.execute(
                update(TrialRow)
                .where(TrialRow.key == key)
                .values(epochs_run=metrics["epoch"] + 1, heartbeat_at=utcnow())
            )

    @retried
    def finish(
        self, key: str, status: TrialStatus, summary: TrialSummary | None = None, error: str | None = None
    ) -> None:
        """Close trial ``key`` with ``status`` (done, stopped, failed, timeout or interrupted)."""
        values: dict[str, object] = {"status": status, "error": error, "worker_pid": None, "owner": None}
        if status != TrialStatus.INTERRUPTED:
            values["finished_at"] = utcnow()
        values.update(summary or {})
        with self.session.begin() as session:
            session.execute(update(TrialRow).where(TrialRow.key == key).values(values))

    # -- selection and evaluations ----------------------------------------------------------

    @retried
    def set_selected(self, sweep: str, key: str | None) -> None:
        """Record ``key`` as the trial ``sweep`` selected (None: none yet)."""
        with self.session.begin() as session:
            session.execute(
                update(SweepRow).where(SweepRow.name == sweep).values(selected_trial=key, updated_at=utcnow())
            )

    @retried
    def save_evaluation(self, key: str, name: str, result: Evaluation) -> None:
        """Store the evaluation ``name`` of trial ``key``, replacing an earlier one of that name."""
        with self.session.begin() as session:
            session.execute(delete(EvaluationRow).where(EvaluationRow.trial_key == key, EvaluationRow.name == name))
            session.add(EvaluationRow(trial_key=key, name=name, **result))

    @retried
    def evaluation(self, key: str, name: str) -> EvaluationRow | None:
        """Trial ``key``'s evaluation called ``name``, or None."""
        with self.session() as session:
            return session.scalar(
                select(EvaluationRow).where(EvaluationRow.trial_key == key, EvaluationRow.name == name)
            )

    @retried
    def save_test_labels(self, dataset: str, labels: list[int]) -> None:
        """Keep the labels of ``dataset``'s first ``len(labels)`` official test images in the database (``meta``),
        so that a report can test stored predictions against them where the dataset's files are absent."""
        with self.session.begin() as session:
            session.merge(Meta(key=f"{TEST_LABELS}{dataset}", value=json.dumps(labels)))

    @retried
    def test_labels(self, dataset: str) -> list[int] | None:
        """The test labels of ``dataset`` kept by :meth:`save_test_labels`, or None."""
        with self.session() as session:
            value = session.scalar(select(Meta.value).where(Meta.key == f"{TEST_LABELS}{dataset}"))
        return None if value is None else list(json.loads(value))


def _table(model: type[Base]) -> Table:
    """The Core table of ``model``, for executemany inserts (the ORM's bulk insert runs a statement per row
    once a JSON column is in it)."""
    return model.metadata.tables[model.__tablename__]


def chunks(keys: list[str]) -> Iterator[list[str]]:
    """``keys`` in parts of at most ``CHUNK``: an ``IN`` list of each part stays under every database's limit
    on bound parameters (SQLite's is 32,766)."""
    for start in range(0, len(keys), CHUNK):
        yield keys[start : start + CHUNK]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
