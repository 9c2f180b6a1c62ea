"""What the coordinator asks a worker to do: one ``Job`` for a cohort of trials, sent as JSON; and the one rule by
which trials form cohorts (:class:`Cohorts`)."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired, TypedDict

from gridsearch.spec.config import TrialConfig
from gridsearch.spec.datasets import described
from gridsearch.spec.params import AUGMENTATION_PARAMS, TRANSFORMER_PARAMS
from gridsearch.vocabulary import format_params, format_value

Task = Literal["train", "evaluate", "measure"]


class Member(TypedDict):
    """One trial of a cohort: its key, resolved config and run folder."""

    key: str
    config: TrialConfig
    run_dir: str


class Job(TypedDict):
    """Train a cohort's trials (to their end, or to ``epoch_budget`` epochs), evaluate one trial's best
    weights on the test set, or measure each member's inference time (``training.inference``). A cohort's members
    share what lets them train as one stack (``cohort_signature``); ``fused``: they do, else they train one after
    another in the worker; each reports its own events."""

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
    """Train the members as one stacked model (``gridsearch.training.fused``) rather than one after another."""
    code_path: NotRequired[list[str]]
    """Folders first on the worker's import path (the sweep file's), so the user's own code imports there."""
    parent_pid: NotRequired[int]
    """A Dask worker's subprocess: the task process it must die with."""


PER_MEMBER = frozenset(
    {"lr", "momentum", "nesterov", "weight_decay", "lr_gamma", "lr_step", "lr_min", "patience", "init_from"}
    | {"dropout"}
    | set(TRANSFORMER_PARAMS)
    | set(AUGMENTATION_PARAMS)
)
"""The params the members of one stack may differ in: each member has its own optimizer hyperparameters,
schedule, patience, starting weights, dropout rates and augmentation. Every other param (the network's shape,
batch size, epochs, the optimizer, precision) is the stack's."""


def cohort_signature(config: TrialConfig) -> tuple:
    """What the trials of one cohort share: architecture, seed, data split, threads and every param but those in
    ``PER_MEMBER`` (whether ``elastic_alpha`` is 0 too: it decides how many random numbers an augmentation draws).
    So they see the same batches in the same order, and one network structure serves them all: they can train as
    one stack."""
    params, split = config["params"], config["dataset"]
    shared = tuple(sorted((name, repr(value)) for name, value in params.items() if name not in PER_MEMBER))
    where = (split["name"], split["train_size"], split["val_size"])
    elastic = params.get("elastic_alpha", 0) > 0
    return (config["architecture"], config["seed"], where, config["threads"], shared, elastic)


@dataclass
class Cohorts:
    """The one rule by which trials form cohorts, used where the coordinator forms them and by ``plan``: trials in
    order, each cohort the first trial left and up to ``fuse - 1`` more with its ``cohort_signature``. Trained
    ``stacked`` (``--fuse K`` without ``--in-turn``), a trial whose architecture has no stacked form is a cohort
    of its own."""

    fuse: int
    stacked: bool
    _unstackable: dict[str, str | None] = field(default_factory=dict)

    def signature(self, config: TrialConfig) -> Hashable | None:
        """What ``config`` shares with its cohort-mates; None if it has none."""
        if self.fuse == 1 or self.no_stacked_form(config) is not None:
            return None
        return cohort_signature(config)

    def no_stacked_form(self, config: TrialConfig) -> str | None:
        """Why trials of ``config``'s architecture on its dataset cannot train stacked, when they must (None: they
        can, or need not)."""
        if not self.stacked:
            return None
        dataset = described(config["dataset"])
        found = f"{config['architecture']} {dataset.shape} {len(dataset.classes)}"
        if found not in self._unstackable:
            from gridsearch.training.stack import stacked_form  # torch: only when cohorts train stacked

            self._unstackable[found] = stacked_form(config["architecture"], dataset)
        return self._unstackable[found]

    def form(self, configs: Sequence[TrialConfig]) -> list[list[int]]:
        """The cohorts of ``configs`` (by index) in the order they are handed out."""
        alike: dict[Hashable, deque[int]] = {}
        signatures = [self.signature(config) for config in configs]
        for index, signature in enumerate(signatures):
            alike.setdefault(index if signature is None else signature, deque()).append(index)
        cohorts, taken = [], set()
        for index, signature in enumerate(signatures):
            if index not in taken:  # the first trial left heads its signature's queue
                queue = alike[index if signature is None else signature]
                cohorts.append([queue.popleft() for _ in range(min(self.fuse, len(queue)))])
                taken.update(cohorts[-1])
        return cohorts

    def describe(self, configs: Sequence[TrialConfig], keys: Sequence[str] | None = None) -> list[str]:
        """What ``form`` makes of ``configs``: a line saying how many cohorts of which size and what keeps trials
        apart, then, given their ``keys``, one line per cohort (what sets it apart, and its trials)."""
        cohorts = self.form(configs)
        sizes = Counter(len(cohort) for cohort in cohorts)
        counts = ", ".join(f"{n} of {size}" for size, n in sorted(sizes.items(), reverse=True))
        way = "one stack each" if self.stacked else "trained in turn"
        line = f"cohorts (--fuse {self.fuse}, {way}): {len(configs)} trials in {len(cohorts)} cohorts ({counts})"
        apart = _differing([_shared(config) for config in configs])
        if apart and len(cohorts) > 1:
            line += f"; trials that differ in {', '.join(apart)} cannot share a cohort"
        for architecture, config in {config["architecture"]: config for config in configs}.items():
            if (reason := self.no_stacked_form(config)) is not None:
                line += f"; {architecture} has no stacked form ({reason}): each of its trials trains per-trial alone"
        if keys is None:
            return [line]
        lines = [line]
        for number, cohort in enumerate(cohorts[:20], 1):
            shared = _shared(configs[cohort[0]])
            label = format_params((name, shared.get(name)) for name in apart)
            lines.append(f"  cohort {number}: {label + ': ' if label else ''}{', '.join(keys[i] for i in cohort)}")
        if len(cohorts) > 20:
            lines.append(f"  ... and {len(cohorts) - 20} more cohorts")
        return lines


def _shared(config: TrialConfig) -> dict[str, Any]:
    """What a trial shares with its cohort-mates, by name."""
    split = config["dataset"]
    fixed = {"architecture": config["architecture"], "seed": config["seed"], "threads": config["threads"]}
    fixed["dataset"] = f"{split['name']}[{split['train_size']}/{split['val_size']}]"
    return fixed | {name: value for name, value in config["params"].items() if name not in PER_MEMBER}


def _differing(shared: list[dict[str, Any]]) -> list[str]:
    """The names whose values differ among ``shared``."""
    names = dict.fromkeys(name for each in shared for name in each)
    return [name for name in names if len({format_value(each.get(name)) for each in shared}) > 1]
