"""Sweeps: what a validated sweep file says, its grid expanded into trials with stable keys.

A sweep file names an architecture, a dataset split, fixed ``params`` and a ``grid`` (a dict of
lists, or a list of such dicts, as scikit-learn's ``ParameterGrid`` takes), and optionally how to
``search`` it (every trial to the end, successive halving or Hyperband, points drawn at random: random
or sobol, see ``gridsearch.spec.sampling``, or points proposed from the results so far: tpe, nsga2, gp; see
``gridsearch.spec.search``). :func:`load_sweep` reads one (see
``gridsearch.spec.validation``): every key is checked before anything runs, and problems raise
:class:`UserError` naming the file, line and key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import architectures
from gridsearch.errors import UserError
from gridsearch.spec.config import DatasetPart, TrialConfig
from gridsearch.spec.datasets import DATASETS, Dataset
from gridsearch.spec.params import AUGMENTATION_PARAMS, SPEED_PARAMS, TRAINER_PARAMS, TRANSFORMER_PARAMS, Param
from gridsearch.spec.pareto import Objective, Rule
from gridsearch.spec.sampling import Dimension
from gridsearch.spec.search import Search

if TYPE_CHECKING:
    from gridsearch.spec.bounds import Memory

OVER_SEEDS = ("mean",)
"""How ``select: {over_seeds: ...}`` scores a configuration from its seeds' scores."""
TEST_SET_SIZE = 10000
"""The test images a sweep is evaluated on unless it says (or its dataset has fewer)."""
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
"""A sweep name: 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit."""
EXTRA_PARAMS: dict[str, dict[str, Param]] = {
    architectures.AUGMENTATION: AUGMENTATION_PARAMS,
    architectures.TRANSFORMER: TRANSFORMER_PARAMS,
}
"""The params of each trainer-side extra an architecture may switch on (``architectures.EXTRAS``)."""


@dataclass(frozen=True)
class DatasetSplit:
    """Which images a trial trains and validates on (first ``train_size``, last ``val_size``)."""

    name: str = "mnist"
    train_size: int = 50000
    val_size: int = 10000
    test_size: int = TEST_SET_SIZE
    """How many of the official test images the selected trial is evaluated on."""
    loaded: Dataset | None = None
    """The description of a loader's data (None: the built-in dataset ``name``)."""

    @property
    def description(self) -> Dataset:
        """What the whole engine reads of the dataset: its shape, classes, sizes."""
        return self.loaded or DATASETS[self.name]

    def trial_part(self) -> DatasetPart:
        """The part of the split that shapes a trial's training (and so its key)."""
        return self.description.part(self.train_size, self.val_size)  # type: ignore[return-value]


@dataclass(frozen=True)
class Trial:
    """One point of a sweep: an architecture, its fully resolved params, a data split and a seed."""

    architecture: str
    params: dict[str, Any]
    dataset: DatasetPart
    seed: int
    threads: int
    select: str
    code: dict[str, str] = field(default_factory=dict)
    """The user's own modules it trains (module -> source digest): part of its key, so an edit is a new trial."""

    def config(self) -> TrialConfig:
        """The canonical resolved config; its hash is the trial key.

        ``select`` belongs here because it decides early stopping and which weights are kept.
        """
        config: TrialConfig = {
            "architecture": self.architecture,
            "params": dict(sorted(self.params.items())),
            "dataset": self.dataset,
            "seed": self.seed,
            "threads": self.threads,
            "select": self.select,
        }
        if self.code:
            config["code"] = dict(sorted(self.code.items()))
        return config

    @cached_property
    def key(self) -> str:
        """The hash of ``config()``, computed once."""
        return trial_key(self.config())


def grid_points(part: Mapping[str, Sequence[Any]]) -> Iterator[dict[str, Any]]:
    """Every point of a grid part (name -> values) in scikit-learn's ``ParameterGrid`` order: the names
    sorted, the last one varying fastest. Done here because importing scikit-learn takes a second."""
    names = sorted(part)
    for values in itertools.product(*(part[name] for name in names)):
        yield dict(zip(names, values))


def trial_key(config: TrialConfig) -> str:
    """Stable 16-hex-digit key of a resolved trial config (SHA-256 of its canonical JSON)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file. ``architecture`` is the default; a grid may also vary it."""

    name: str
    architecture: str | None
    dataset: DatasetSplit
    params: dict[str, Any]
    grid: list[dict[str, list[Any]]]
    """The grid's parts (a strategy that asks has none: its points are proposed from ``space``)."""
    seeds: list[int]
    search: Search = field(default_factory=Search)
    space: dict[str, Dimension] = field(default_factory=dict)
    """A strategy that asks: the grid mapping's dimensions (a distribution or a list of choices each)."""
    select: str = "val_accuracy"
    over_seeds: str | None = None
    """``mean``: select the configuration (grid point) by the mean of its seeds' ``select`` scores."""
    objectives: tuple[Objective, ...] = ()
    """Several objectives (``gridsearch.spec.objectives``): a front, and ``rule`` picks one trial of it; one
    objective is ``select`` (and none are listed here)."""
    rule: Rule | None = None
    threads: int = 1
    timeout: float | None = None
    retries: int = 0
    """How many times a run trains a failed trial again (from its checkpoint); not part of any trial."""
    description: str = ""
    source: str = field(default="", compare=False)
    code: dict[str, str] = field(default_factory=dict)
    """Each of the user's own architectures (``package.module:builder``) -> its module's source digest."""
    folder: str = field(default="", compare=False)
    """The sweep file's folder: first on every worker's import path, so the user's code beside it imports."""

    @property
    def architectures(self) -> list[str]:
        """Every architecture the sweep trains, in first-seen order."""
        names = dict.fromkeys([self.architecture] if self.architecture else [])
        parts: list[Mapping[str, Any]] = [*self.grid, self.space]
        for part in parts:
            names.update(dict.fromkeys(part.get("architecture", [self.architecture])))
        return [name for name in names if name]

    @property
    def rung_epochs(self) -> list[int] | None:
        """Successive halving or Hyperband: every rung's epoch budget (its trials' epochs are fixed); else None."""
        return self.search.rung_epochs

    def search_record(self) -> dict[str, Any]:
        """What the database records of the search (see ``SweepRow.search``), and ``over_seeds`` if set; with
        several objectives, those and the select rule."""
        record = self.search.record()
        if self.over_seeds:
            record["over_seeds"] = self.over_seeds
        if self.objectives:
            assert self.rule is not None
            record.update(objectives=[objective.record() for objective in self.objectives], rule=self.rule.record())
        return record

    @property
    def gridded_params(self) -> list[str]:
        """Names of the params the grid varies, in first-seen order."""
        names: dict[str, None] = dict.fromkeys(self.space)
        for part in self.grid:
            names.update(dict.fromkeys(part))
        return list(names)

    def __len__(self) -> int:
        """How many trials it has (a strategy that asks: at most)."""
        points = (
            (self.search.trials or 0)
            if self.search.asks
            else sum(math.prod(map(len, part.values())) for part in self.grid)
        )
        return points * len(self.seeds)

    def trials(self) -> Iterator[Trial]:
        """Every trial of the grid, in grid order, each seed in turn (none for a strategy that asks)."""
        for part in self.grid:
            for point in grid_points(part):
                yield from self.point_trials(point)

    def point_trials(self, point: Mapping[str, Any]) -> list[Trial]:
        """The trials of one point (gridded name -> value), one per seed."""
        point = dict(point)
        architecture = point.pop("architecture", self.architecture)
        code = {architecture.partition(":")[0]: self.code[architecture]} if architecture in self.code else {}
        params = {**resolved_defaults(architecture), **self.params, **point}
        params = {
            name: value
            for name, value in params.items()
            if name not in SPEED_PARAMS or value != SPEED_PARAMS[name].default
        }
        return [
            Trial(architecture, params, self.dataset.trial_part(), seed, self.threads, self.select, code)
            for seed in self.seeds
        ]


def resolve_warm_starts(sweep: Sweep, selected_trial: Callable[[str], str | None]) -> Sweep:
    """``sweep`` with every ``init_from: best:<name>`` replaced by ``trial:<key>`` of that sweep's
    selected trial (``selected_trial(name)``), so that trial keys name the exact weights used."""

    def resolve(value: Any) -> Any:
        if not (isinstance(value, str) and value.startswith("best:")):
            return value
        name = value.removeprefix("best:")
        key = selected_trial(name)
        if key is None:
            raise UserError(
                f"{sweep.name}: init_from {value}: sweep {name!r} has no selected trial yet; "
                "run it first (e.g. list its file before this one)"
            )
        return f"trial:{key}"

    params = {name: resolve(value) for name, value in sweep.params.items()}
    grid = [{name: [resolve(v) for v in values] for name, values in part.items()} for part in sweep.grid]
    return replace(sweep, params=params, grid=grid)


def accepted_params(architecture: str) -> dict[str, Param]:
    """Every param a sweep of ``architecture`` may set: the trainer's, its extras and the builder's."""
    entry = architectures.get(architecture)
    accepted = dict(TRAINER_PARAMS)
    for extra in sorted(entry.training_params):
        accepted.update(EXTRA_PARAMS[extra])
    accepted.update(SPEED_PARAMS)
    for name, parameter in entry.params().items():
        annotation = parameter.annotation
        expected = {"int": int, "float": float, "bool": bool, "str": str}.get(annotation, annotation)
        accepted[name] = Param(expected, parameter.default)
    return accepted


def resolved_defaults(architecture: str) -> dict[str, Any]:
    """Default value of every param of ``architecture`` (but the speed params, left out at their defaults)."""
    return {name: param.default for name, param in accepted_params(architecture).items() if name not in SPEED_PARAMS}


def load_sweep(
    path: str | Path, max_trials: int | None = None, build: bool = True, memory: Memory | None = None
) -> Sweep:
    """Read and validate the sweep file at ``path``; :class:`UserError` on any problem, including a grid
    of more than ``max_trials`` trials. ``build``: also build each distinct network on the meta device (with
    torch), so that values its builder refuses fail now, and networks too large for ``memory`` (where trials
    train) are refused; ``plan`` reads sweeps without (and without torch)."""
    # Imported here: the validator builds the classes above, so it imports this module.
    from gridsearch.spec.validation import read_sweep

    return read_sweep(Path(path), max_trials, build, memory)
