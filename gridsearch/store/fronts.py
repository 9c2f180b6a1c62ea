"""What a sweep of several objectives stores besides its trials: each trial's inference time, measured once, and
the Pareto front its last selection computed. Both tables came with schema version 4; a reader of an older
database finds none of either."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

from sqlalchemy import Engine, delete, inspect, select
from sqlalchemy.orm import Session, sessionmaker

from gridsearch.store.faults import RideOut, retried
from gridsearch.store.models import FrontRow, MeasurementRow, SweepRow


class FrontPoint(NamedTuple):
    """One point of a stored front: its trial, its place (best first by the first objective) and its values."""

    key: str
    position: int
    values: dict[str, float]


class Fronts:
    """The measurements and fronts of :class:`~gridsearch.store.storage.Storage`."""

    session: sessionmaker[Session]
    faults: RideOut
    engine: Engine

    def _has_tables(self) -> bool:
        """Whether the database has the version-4 tables (a reader of a version-3 one goes without)."""
        if not hasattr(self, "_fronts_tables"):
            self._fronts_tables = self.faults.call(lambda: inspect(self.engine).has_table(FrontRow.__tablename__))
        return self._fronts_tables

    @retried
    def save_measurement(self, key: str, name: str, value: float, device: str) -> None:
        """Store what was measured of trial ``key`` as ``name``, replacing an earlier measurement of it."""
        with self.session.begin() as session:
            session.merge(MeasurementRow(trial_key=key, name=name, value=value, device=device))

    @retried
    def measurements(self, keys: Iterable[str], name: str) -> dict[str, float]:
        """Trial key -> its measurement ``name``, for those of ``keys`` that have one."""
        wanted = list(dict.fromkeys(keys))
        if not self._has_tables() or not wanted:
            return {}
        with self.session() as session:
            found = session.execute(
                select(MeasurementRow.trial_key, MeasurementRow.value).where(
                    MeasurementRow.name == name, MeasurementRow.trial_key.in_(wanted)
                )
            ).all()
        return {key: value for key, value in found}

    @retried
    def save_front(self, sweep: str, points: Iterable[tuple[str, Mapping[str, float]]]) -> None:
        """Make ``points`` (trial key, objective values), best first, the front of ``sweep``."""
        with self.session.begin() as session:
            sweep_id = session.scalar(select(SweepRow.id).where(SweepRow.name == sweep))
            session.execute(delete(FrontRow).where(FrontRow.sweep_id == sweep_id))
            session.add_all(
                FrontRow(sweep_id=sweep_id, trial_key=key, position=position, values=dict(values))
                for position, (key, values) in enumerate(points)
            )

    @retried
    def front(self, sweep: str) -> list[FrontPoint]:
        """The stored front of ``sweep``, best first (empty when none was computed)."""
        if not self._has_tables():
            return []
        with self.session() as session:
            rows = session.execute(
                select(FrontRow.trial_key, FrontRow.position, FrontRow.values)
                .join(SweepRow, SweepRow.id == FrontRow.sweep_id)
                .where(SweepRow.name == sweep)
                .order_by(FrontRow.position)
            ).all()
        return [FrontPoint(key, position, values) for key, position, values in rows]
