"""Riding out a database that goes away for a while: a lost connection, a server restarting or stopped,
SQLite's write lock held by another program, an SQLite file whose disk is full.

Every call :class:`~gridsearch.store.storage.Storage` makes to its database runs through
:meth:`RideOut.call`: a transient fault is retried with exponential backoff for up to ``seconds`` (saying
once that it waits, and once that the database is back); past that, :class:`DatabaseUnavailable` ends the
run with one line. Each call is one transaction, and every write is idempotent (updates, upserts, a claim
that recognises its own lease), so a retry after a commit whose answer was lost changes nothing.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from gridsearch.errors import Unavailable

DEFAULT_WAIT_SECONDS = 300.0
"""How long a run waits for its database by default (``run --db-wait``)."""
FIRST_DELAY_SECONDS = 0.25
MAX_DELAY_SECONDS = 5.0
SQLITE_LOCKED = ("database is locked", "database table is locked", "database is busy")
SQLITE_FULL = "database or disk is full"
ROOM_BYTES = 1000 * 4096
"""The free space an SQLite writer needs: its write-ahead log grows by up to 1,000 pages of 4 kB between two
checkpoints into the database file (SQLite's default)."""

P = ParamSpec("P")
R = TypeVar("R")


class DatabaseUnavailable(Unavailable):
    """The database stayed unreachable (or locked) longer than the run waits."""


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a database fault worth waiting out: the connection lost or refused, the server
    shutting down or starting up, SQLite's lock held too long. Errors of the statement itself (a missing
    table, a full disk, a constraint) are not."""
    if isinstance(exc, DisconnectionError):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if isinstance(exc.orig, sqlite3.Error):
        return any(text in str(exc.orig) for text in SQLITE_LOCKED)
    return isinstance(exc, OperationalError | InterfaceError)  # another server's connection-level errors


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite finding its disk full: an outage to wait out like the others."""
    if not isinstance(exc, DBAPIError) or not isinstance(exc.orig, sqlite3.Error):
        return False
    return getattr(exc.orig, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or SQLITE_FULL in str(exc.orig)


def reason(exc: BaseException) -> str:
    """The first line of the driver's message for ``exc``."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _to_stderr(line: str) -> None:
    """The default of :attr:`RideOut.waiting` (a run puts its progress display there)."""
    print(line, file=sys.stderr, flush=True)


@dataclass
class RideOut:
    """How the calls to one database wait out its transient faults."""

    where: str
    """The database, as messages name it."""
    seconds: float = DEFAULT_WAIT_SECONDS
    """How long in all one call waits for the database; 0 gives up at the first fault."""
    waiting: Callable[[str], None] = field(default=_to_stderr)
    """Told in one line when a call starts waiting and when the database is back (a run's progress display)."""
    folder: Path | None = None
    """An SQLite file's folder, whose free space a full disk is reported with."""

    def call(self, function: Callable[[], R]) -> R:
        """``function()``, retried with backoff while it fails with a transient fault, for up to ``seconds``;
        :class:`DatabaseUnavailable` past that."""
        started: float | None = None
        delay = FIRST_DELAY_SECONDS
        while True:
            try:
                result = function()
            except (DBAPIError, DisconnectionError) as exc:
                if not transient(exc) and not disk_full(exc):
                    raise
                now = time.monotonic()
                if started is None:
                    started = now
                    if self.seconds > 0:
                        why = self._why(exc)
                        self.waiting(f"database {self.where} unavailable ({why}); waiting up to {self.seconds:g} s")
                if now - started + delay > self.seconds:
                    raise DatabaseUnavailable(self._gave_up(now - started, exc)) from None
                time.sleep(delay)
                delay = min(2 * delay, MAX_DELAY_SECONDS)
                continue
            if started is not None:
                self.waiting(f"database {self.where} is back after {time.monotonic() - started:.0f} s")
            return result

    def _why(self, exc: BaseException) -> str:
        """The driver's reason; for a full disk, the folder with what is free there and what is needed."""
        if not disk_full(exc) or self.folder is None:
            return reason(exc)
        free = shutil.disk_usage(self.folder).free if self.folder.exists() else 0
        return f"its disk is full: {free / 1e6:.1f} MB free in {self.folder}, about {ROOM_BYTES / 1e6:.1f} MB needed"

    def _gave_up(self, waited: float, exc: BaseException) -> str:
        if self.seconds <= 0:  # a reader: its user is there to try again
            return f"database {self.where} unavailable ({self._why(exc)})"
        back = "there is room on its disk" if disk_full(exc) else "the database is back"
        return (
            f"database {self.where} unavailable for {waited:.0f} s ({self._why(exc)}); the run stopped, its trials "
            f"are resumable: run the same command again once {back} (or wait longer with --db-wait, "
            f"now {self.seconds:g} s)"
        )


class _HasRideOut(Protocol):
    faults: RideOut


S = TypeVar("S", bound=_HasRideOut)


def retried(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """A :class:`Storage` method whose database work is retried through the storage's :class:`RideOut`."""

    @wraps(method)
    def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.faults.call(lambda: method(self, *args, **kwargs))

    return wrapper
