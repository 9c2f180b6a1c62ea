"""Which coordinator runs which trial: its owner, claimed atomically, and held while its heartbeat is fresh.

Two ``run`` commands on one database share its trials this way: each claims a trial before it starts it,
and a trial whose owner died (its process is gone, or it sent no heartbeat for ``LEASE_SECONDS``) can be
claimed again.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.orm import Session, sessionmaker

from gridsearch.store.faults import RideOut, retried
from gridsearch.store.models import TrialRow, utcnow
from gridsearch.vocabulary import CLAIMABLE, TrialStatus

LEASE_SECONDS = 60.0
"""A running trial whose coordinator sent no heartbeat for this long is taken over."""


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


class Leases:
    """The claims and heartbeats of :class:`~gridsearch.store.storage.Storage`."""

    session: sessionmaker[Session]
    faults: RideOut

    @retried
    def claim(self, key: str, owner: Owner) -> bool:
        """Atomically take trial ``key`` for ``owner`` if it is free; True if this call got it.

        A trial is free when unfinished and not running, or running under an owner that is dead or
        whose heartbeat is older than the lease. A trial ``owner`` already holds counts as got: a claim
        retried after its commit's answer was lost (``store.faults``) finds its own lease.
        """
        with self.session() as session:
            row = session.get(TrialRow, key)
        if row is None or row.status not in CLAIMABLE:
            return False
        if row.status == TrialStatus.RUNNING and row.owner == str(owner):
            return True
        if row.status == TrialStatus.RUNNING:
            stale = row.heartbeat_at is None or row.heartbeat_at < utcnow() - timedelta(seconds=LEASE_SECONDS)
            if not stale and not (row.owner and Owner.parse(row.owner).is_dead()):
                return False
        now = utcnow()
        with self.session.begin() as session:
            result = session.connection().execute(
                update(TrialRow)
                .where(
                    TrialRow.key == key,
                    TrialRow.status == row.status,
                    _same(TrialRow.owner, row.owner),
                    _same(TrialRow.heartbeat_at, row.heartbeat_at),
                )
                .values(
                    status=TrialStatus.RUNNING,
                    owner=str(owner),
                    heartbeat_at=now,
                    worker_pid=None,
                    started_at=func.coalesce(TrialRow.started_at, now),
                    error=None,
                    attempts=TrialRow.attempts + 1,
                )
            )
            return result.rowcount == 1

    @retried
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


def _same(column: Any, value: Any) -> Any:
    return column.is_(None) if value is None else column == value
