"""How to run sweeps: one :class:`RunOptions`, built once by ``gridsearch run`` (from its flags) or by
``gridsearch.run`` (from its keyword arguments), checked once, and handed to the coordinator."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gridsearch.errors import UserError
from gridsearch.store.connection import DEFAULT_DB
from gridsearch.store.faults import DEFAULT_WAIT_SECONDS

DEVICES = ("auto", "cpu", "cuda")
"""Where trials train: ``auto`` is CUDA when torch sees a GPU, else the CPU."""
EXECUTORS = ("local", "dask", "inline")
"""How workers run: processes of this machine, tasks on a Dask cluster, or inside the ``run`` process."""
DEFAULT_MAX_TRIALS = 10_000


@dataclass(frozen=True)
class RunOptions:
    """``gridsearch run``'s options (the same names as ``gridsearch.run``'s keyword arguments)."""

    db: str = DEFAULT_DB
    db_wait: float = DEFAULT_WAIT_SECONDS
    """How long the run waits out a database that is unreachable or locked before it stops (seconds)."""
    workers: int | None = None
    """Worker processes at once, each training one cohort (default: 1 on a CPU; GPUs x ``slots_per_gpu``; a Dask
    cluster's threads)."""
    data_dir: Path | None = None
    """The datasets' folder (default ``$GRIDSEARCH_DATA``, else ``./data``)."""
    artifacts: Path | None = None
    """Run folders and checkpoints (default ``runs/`` beside the database)."""
    device: str = "auto"
    slots_per_gpu: int = 1
    """Worker processes at once on each GPU."""
    fuse: int = 1
    """The most trials in one cohort: trials that can train as one stack (``jobs.Cohorts``), given to one worker."""
    in_turn: bool = False
    """Train a cohort's members one after another instead of as one stacked model (``fuse`` > 1)."""
    executor: str = "local"
    scheduler: str | None = None
    """With ``executor='dask'``: the scheduler's address (default: a local cluster of ``workers`` processes)."""
    retry_failed: bool = False
    max_trials: int = DEFAULT_MAX_TRIALS
    plain: bool = False
    """Log lines instead of the live display (automatic when not on a terminal)."""
    tensorboard: Path | None = None
    """Write each trial's epochs and hparams as TensorBoard logs under this folder."""
    stall_after: float | None = None
    """Seconds a worker may make no progress before it is killed and its trials trained again (None: from the
    trials' own epoch times, ``pool.WorkerPool.bound``; 0: never)."""
    fail_fast: bool = False
    """Stop the sweep at the first trial that fails for good (its retries spent), interrupting the others."""
    retry_command: str | None = None
    """What to run to train the failed trials again, as the user would type it (None: said in words)."""
    gpus: list[str] = field(default_factory=list)
    """Resolved: with ``device='cuda'``, the GPUs (ids for ``CUDA_VISIBLE_DEVICES``) trials are spread over."""

    @classmethod
    def from_keywords(cls, keywords: dict[str, Any]) -> RunOptions:
        """The options named by ``gridsearch.run``'s keyword arguments; :class:`UserError` for an unknown name."""
        known = {option.name for option in fields(cls)} - {"gpus"}
        for name in keywords:
            if name not in known:
                raise UserError(f"run: unknown option {name!r} (known: {', '.join(sorted(known))})")
        paths = {name: Path(keywords[name]) for name in ("data_dir", "artifacts", "tensorboard") if keywords.get(name)}
        return cls(**{**keywords, **paths, "db": str(keywords.get("db", DEFAULT_DB))})

    def check(self) -> None:
        """:class:`UserError` for a value the command line's parser would refuse."""
        for name in ("workers", "slots_per_gpu", "fuse", "max_trials"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UserError(f"{name}: expected a positive integer, got {value!r}")
        if isinstance(self.db_wait, bool) or not isinstance(self.db_wait, int | float) or not self.db_wait >= 0:
            raise UserError(f"db_wait: expected a number of seconds >= 0, got {self.db_wait!r}")
        stall = self.stall_after
        if stall is not None and (isinstance(stall, bool) or not isinstance(stall, int | float) or not stall >= 0):
            raise UserError(f"stall_after: expected a number of seconds >= 0, got {stall!r}")
        if self.device not in DEVICES:
            raise UserError(f"device: expected one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.executor not in EXECUTORS:
            raise UserError(f"executor: expected one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.scheduler and self.executor != "dask":
            raise UserError("--scheduler needs --executor dask")
