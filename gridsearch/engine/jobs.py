"""What the coordinator asks a worker to do: one ``Job``, sent as JSON."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

from gridsearch.spec.config import TrialConfig


class Job(TypedDict):
    """Train a trial (to its end, or to ``epoch_budget`` epochs), or evaluate its best weights on the test set."""

    task: Literal["train", "evaluate"]
    key: str
    config: TrialConfig
    run_dir: str
    data_dir: str
    device: str
    """'cpu' or 'cuda'."""
    visible_gpu: str | None
    """The GPU the worker is pinned to (``CUDA_VISIBLE_DEVICES``), or None."""
    test_size: int
    epoch_budget: int | None
    coordinator_pid: int
    """The worker ends itself as soon as this process ends (a ``kill -9`` of the coordinator alone)."""
    parent_pid: NotRequired[int]
    """A Dask worker's subprocess: the task process it must die with."""
