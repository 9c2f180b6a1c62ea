"""Free space for run folders: no trial starts into a full disk, and a full disk is waited out like any outage.

A trial's run folder holds at most its best weights, two resume checkpoints (weights and optimizer state) and a
third being written beside them (``trial_bytes``). Before the coordinator starts a cohort, the artifacts folder's
disk must have room for it; while it has not (or once a worker's checkpoint did not fit), the run starts nothing
new and waits, saying so once, for up to its patience (``--db-wait``, as for its database): once space is back it
says so and goes on; past its patience it stops with one line naming the folder and the space it needs, its
trials resumable, and the same command run again finishes them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gridsearch.errors import Unavailable

FLOAT_BYTES = 4
OPTIMIZER_SLOTS = 2
"""Tensors of optimizer state per parameter, at most (Adam's two moments; SGD's momentum is one)."""
FOLDER_BYTES = 1 << 20
"""Room for what else a run folder holds: its log, epoch history, checksums and ``made_by.json``."""


class ArtifactsFull(Unavailable):
    """The artifacts folder's disk stayed full longer than the run waits."""


def trial_bytes(parameter_count: int) -> int:
    """The most a run folder holds while its trial of ``parameter_count`` parameters trains: ``best.pt``, then
    ``last.pt`` and ``last.prev.pt`` with a new ``last.pt`` being written beside them, each with optimizer state."""
    weights = FLOAT_BYTES * parameter_count
    return weights + 3 * weights * (1 + OPTIMIZER_SLOTS) + FOLDER_BYTES


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged process may still write on ``folder``'s disk (0 when it has no free inode left)."""
    try:
        stats = os.statvfs(folder)
    except OSError:  # the folder is gone: the run folders' own checks say so
        return 0
    return 0 if stats.f_files and not stats.f_favail else stats.f_bavail * stats.f_frsize


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


@dataclass
class SpaceWatch:
    """Whether ``folder``'s disk has room for the next trials, waiting up to ``patience`` seconds for it."""

    folder: Path
    patience: float
    say: Callable[[str], None]
    since: float | None = None
    """When the wait began (monotonic seconds); None while there is room."""
    short: int = 0
    """What was free when a write last found the disk full: room means this much more than ``needed``."""

    def failed(self) -> None:
        """A write found the disk full: there is room again only once more is free than now."""
        self.short = free_bytes(self.folder)

    def room_for(self, needed: int) -> bool:
        """Whether ``needed`` bytes are free now. If not, the wait goes on (said once as it starts), and past the
        patience the run stops (:class:`ArtifactsFull`); once there is room again, that is said too."""
        free = free_bytes(self.folder)
        needed += self.short
        now = time.monotonic()
        if free >= needed:
            if self.since is not None:
                self.say(f"artifacts folder {self.folder} has room again after {now - self.since:.0f} s")
                self.since = None
            self.short = 0
            return True
        if self.since is None:
            self.since = now
            self.say(
                f"artifacts folder {self.folder} is full ({megabytes(free)} free, about {megabytes(needed)} needed "
                f"to go on); starting nothing new, waiting up to {self.patience:g} s for space"
            )
        elif now - self.since > self.patience:
            raise ArtifactsFull(
                f"artifacts folder {self.folder} is full: {megabytes(free)} free, about {megabytes(needed)} needed to "
                f"go on, for {now - self.since:.0f} s; the run stopped, its trials are resumable: free space there and "
                f"run the same command again (or wait longer with --db-wait, now {self.patience:g} s)"
            )
        return False
