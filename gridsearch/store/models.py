"""The tables of ``results.db``, as SQLAlchemy models.

Trials are keyed by the hash of their resolved config, so one trial can belong to several sweeps.
Accuracies are fractions in [0, 1]; times are UTC; JSON columns (SQLAlchemy's ``JSON`` type) hold JSON
text with sorted keys.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 2
"""Bumped whenever a table changes; a database of another version is upgraded or refused."""

UPGRADES: dict[int, list[str]] = {
    1: [
        'ALTER TABLE sweeps ADD COLUMN search TEXT NOT NULL DEFAULT \'{"strategy": "grid"}\'',
        "ALTER TABLE sweep_trials ADD COLUMN rung INTEGER",
    ],
}
"""Schema version -> the SQL statements that bring a database of that version to the next one."""

TRIAL_STATUSES = ("pending", "running", "done", "stopped", "failed", "timeout", "interrupted")
"""pending: never started; interrupted: stopped before the end, resumes from its checkpoint;
stopped: trained part of its epochs by a successive-halving sweep that did not promote it (yet);
a sweep that needs more of it resumes it from its checkpoint."""
UNFINISHED = ("pending", "running", "interrupted", "stopped")


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


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
    gridded_params: Mapped[list[str]] = mapped_column(JSON)
    """JSON list of the params the grid varies."""
    source: Mapped[str] = mapped_column(Text)
    """The sweep file's text as last run."""
    test_size: Mapped[int] = mapped_column(Integer)
    search: Mapped[dict[str, Any]] = mapped_column(JSON, server_default='{"strategy": "grid"}')
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
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    """Canonical JSON of the resolved config (architecture, params, dataset, seed, threads)."""
    seed: Mapped[int] = mapped_column(Integer)
    threads: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
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
    value: Mapped[Any] = mapped_column(JSON)
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
    confusion: Mapped[list[list[int]]] = mapped_column(JSON)
    """JSON 10x10 list: confusion[true][predicted]."""
    predictions: Mapped[list[int]] = mapped_column(JSON)
    """JSON list of predicted labels, in data-set order."""
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
