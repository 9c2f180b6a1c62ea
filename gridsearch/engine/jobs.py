"""What the coordinator asks a worker to do: one ``Job`` for a cohort of trials, sent as JSON."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

from gridsearch.spec.config import TrialConfig

Task = Literal["train", "evaluate", "measure"]


class Member(TypedDict):
    """One trial of a cohort: its key, resolved config and run folder."""

    key: str
    config: TrialConfig
    run_dir: str


class Job(TypedDict):
    """Train a cohort's trials (to their end, or to ``epoch_budget`` epochs), evaluate one trial's best
    weights on the test set, or measure each member's inference time (``training.inference``). A cohort's
    members share what lets them train in lockstep (``cohort_signature``); here they train one after another in
    one worker, each reporting its own events."""

    task: Task
    cohort: str
    """The cohort's id: its first member's key."""
    members: list[Member]
    data_dir: str
    device: str
    """'cpu' or 'cuda'."""
    visible_gpu: str | None
    """The GPU the worker is pinned to (``CUDA_VISIBLE_DEVICES``), or None."""
    test_size: int
    epoch_budget: int | None
    coordinator_pid: int
    """The worker ends itself as soon as this process ends (a ``kill -9`` of the coordinator alone)."""
    fused: NotRequired[bool]
    """Train the members that can stack as one stacked model (``gridsearch.training.fused``) rather than in turn."""
    parent_pid: NotRequired[int]
    """A Dask worker's subprocess: the task process it must die with."""


def cohort_signature(config: TrialConfig) -> tuple:
    """What the trials of one cohort share: architecture, batch size, epochs, seed, data split and threads
    (so they see the same batches in the same order and could train as one stacked model)."""
    params = config["params"]
    split = config["dataset"]
    return (
        config["architecture"],
        params["batch_size"],
        params["epochs"],
        config["seed"],
        split["name"],
        split["train_size"],
        split["val_size"],
        config["threads"],
    )
