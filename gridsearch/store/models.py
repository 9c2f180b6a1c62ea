"""The tables of ``results.db``, as SQLAlchemy models.

Trials are keyed by the hash of their resolved config, so one trial can belong to several sweeps.
Accuracies are fractions in [0, 1]; times are UTC; JSON columns hold JSON text with sorted keys (TEXT on
SQLite, PostgreSQL's JSON type there).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Enum, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.compiler import TypeCompiler

from gridsearch.spec.config import TrialConfig
from gridsearch.vocabulary import TrialStatus

SCHEMA_VERSION = 4
"""Bumped whenever a table changes (see ``schema.UPGRADES``). 3: the JSON columns have PostgreSQL's JSON
type (they were TEXT; on SQLite they are TEXT either way). 4: the tables ``measurements`` and ``fronts``."""


class JSONText(JSON):
    """SQLAlchemy's JSON type, declared TEXT on SQLite as in every schema version: a column declared JSON
    has NUMERIC affinity there, which would store the JSON text ``5.0`` as the integer 5."""


@compiles(JSONText, "sqlite")
def _text_on_sqlite(_type: JSONText, _compiler: TypeCompiler, **_kw: Any) -> str:
    return "TEXT"


def utcnow() -> datetime:
    """Now in UTC, without a time zone (as every time column stores it)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    """The tables of one results database."""


class Meta(Base):
    """Key/value facts about the database itself, such as its schema version."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class SweepRow(Base):
    """A named sweep: the file it came from and the trial it selected."""

    __tablename__ = "sweeps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    architecture: Mapped[str] = mapped_column(String(100))
    select_metric: Mapped[str] = mapped_column(String(32))
    gridded_params: Mapped[list[str]] = mapped_column(JSONText)
    """JSON list of the params the grid varies."""
    source: Mapped[str] = mapped_column(Text)
    """The sweep file's text as last run."""
    test_size: Mapped[int] = mapped_column(Integer)
    search: Mapped[dict[str, Any]] = mapped_column(JSONText, server_default='{"strategy": "grid"}')
    """JSON of how the grid is searched: {"strategy": "grid"}, or successive halving with its
    "factor", "min_epochs" and the epoch budget of each rung ("rung_epochs")."""
    selected_trial: Mapped[str | None] = mapped_column(ForeignKey("trials.key"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrialRow(Base):
    """One trial: its config, its state and the summary of its best epoch."""

    __tablename__ = "trials"
    key: Mapped[str] = mapped_column(String(16), primary_key=True)
    architecture: Mapped[str] = mapped_column(String(100))
    config: Mapped[TrialConfig] = mapped_column(JSONText)
    """Canonical JSON of the resolved config (architecture, params, dataset, seed, threads)."""
    seed: Mapped[int] = mapped_column(Integer)
    threads: Mapped[int] = mapped_column(Integer)
    status: Mapped[TrialStatus] = mapped_column(
        Enum(TrialStatus, native_enum=False, length=16, values_callable=lambda statuses: [s.value for s in statuses]),
        default=TrialStatus.PENDING,
        index=True,
    )
    """Stored as its value (``done``), a VARCHAR(16) as in every schema version."""
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    epochs_run: Mapped[int] = mapped_column(Integer, default=0)
    best_epoch: Mapped[int | None] = mapped_column(Integer)
    val_accuracy: Mapped[float | None] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float)
    train_seconds: Mapped[float | None] = mapped_column(Float)
    parameter_count: Mapped[int | None] = mapped_column(Integer)
    device: Mapped[str | None] = mapped_column(String(64))
    torch_version: Mapped[str | None] = mapped_column(String(64))
    code_version: Mapped[str | None] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(200))
    """host:pid of the coordinator running it."""
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    heartbeat_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()


class SweepTrialRow(Base):
    """Membership of a trial in a sweep, with its position in the grid."""

    __tablename__ = "sweep_trials"
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True)
    trial_key: Mapped[str] = mapped_column(ForeignKey("trials.key"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    rung: Mapped[int | None] = mapped_column(Integer)
    """Successive halving: the highest rung (from 0) the trial reached in this sweep; None in a grid sweep."""


class TrialParamRow(Base):
    """One resolved param of a trial, queryable by name (value as JSON, and as a number if it is one)."""

    __tablename__ = "trial_params"
    trial_key: Mapped[str] = mapped_column(ForeignKey("trials.key"), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONText)
    number: Mapped[float | None] = mapped_column(Float)


class EpochRow(Base):
    """Metrics of one training epoch of one trial (epochs count from 0)."""

    __tablename__ = "epochs"
    trial_key: Mapped[str] = mapped_column(ForeignKey("trials.key"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    train_loss: Mapped[float] = mapped_column(Float)
    train_accuracy: Mapped[float] = mapped_column(Float)
    val_loss: Mapped[float] = mapped_column(Float)
    val_accuracy: Mapped[float] = mapped_column(Float)
    lr: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)


class EvaluationRow(Base):
    """A trained trial's best weights evaluated on a named data set (e.g. the official test set)."""

    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("trial_key", "name"), Index("ix_evaluations_trial", "trial_key"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trial_key: Mapped[str] = mapped_column(ForeignKey("trials.key"))
    name: Mapped[str] = mapped_column(String(100))
    """What was evaluated, e.g. "test" (the official test set)."""
    samples: Mapped[int] = mapped_column(Integer)
    accuracy: Mapped[float] = mapped_column(Float)
    loss: Mapped[float] = mapped_column(Float)
    errors: Mapped[int] = mapped_column(Integer)
    confusion: Mapped[list[list[int]]] = mapped_column(JSONText)
    """JSON 10x10 list: confusion[true][predicted]."""
    predictions: Mapped[list[int]] = mapped_column(JSONText)
    """JSON list of predicted labels, in data-set order."""
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MeasurementRow(Base):
    """A number measured of a trained trial apart from its epochs, once: its inference milliseconds per image."""

    __tablename__ = "measurements"
    trial_key: Mapped[str] = mapped_column(ForeignKey("trials.key"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    """What was measured, e.g. "inference_ms" (``gridsearch.training.inference``)."""
    value: Mapped[float] = mapped_column(Float)
    device: Mapped[str] = mapped_column(String(64))
    """The device it was measured on."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class FrontRow(Base):
    """One point of a sweep's Pareto front over its objectives, as its last selection computed it."""

    __tablename__ = "fronts"
    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True)
    trial_key: Mapped[str] = mapped_column(ForeignKey("trials.key"), primary_key=True)
    """The point's trial (with several seeds: its configuration's first trial)."""
    position: Mapped[int] = mapped_column(Integer)
    """Its place on the front, best first by the first objective."""
    values: Mapped[dict[str, float]] = mapped_column(JSONText)
    """Objective name -> the point's value (with several seeds: the mean over its configuration's seeds)."""
