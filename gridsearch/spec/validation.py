"""Validating a sweep file key by key into a :class:`Sweep`; errors name the file, line and key.

The top-level keys, the dataset split, the search and the seeds are checked here; the architectures,
params and grid by ``gridsearch.spec.grid_validation``. Use it through ``gridsearch.spec.sweep.load_sweep``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import architectures
from gridsearch.errors import UserError
from gridsearch.spec.bounds import Memory, check_sweep_bounds, given
from gridsearch.spec.datasets import DATASETS, Dataset, from_loader
from gridsearch.spec.document import Document, read_document, suggest
from gridsearch.spec.grid_validation import GridPart, GridValidator
from gridsearch.spec.objectives import Selecting, read_objectives
from gridsearch.spec.params import TRAINER_PARAMS
from gridsearch.spec.sampling import MAX_SAMPLED_TRIALS
from gridsearch.spec.search import SAMPLES, STRATEGIES, Search
from gridsearch.spec.sweep import (
    NAME_PATTERN,
    OVER_SEEDS,
    TEST_SET_SIZE,
    DatasetSplit,
    Sweep,
)
from gridsearch.spec.usercode import CodeRef, code_path
from gridsearch.vocabulary import METRICS

TOP_LEVEL_KEYS = (
    "name",
    "description",
    "architecture",
    "dataset",
    "params",
    "grid",
    "search",
    "seeds",
    "select",
    "objectives",
    "threads",
    "timeout",
    "retries",
)
DATASET_KEYS = ("name", "loader", "classes", "digits", "train_size", "val_size", "test_size")
SEARCH_KEYS = ("strategy", "factor", "min_epochs", "sample", "trials", "batch", "seed", "population")
SELECT_KEYS = ("metric", "over_seeds")
MAX_RETRIES = 100
"""The most ``retries`` a sweep may ask for."""


def read_sweep(path: Path, max_trials: int | None = None, build: bool = True, memory: Memory | None = None) -> Sweep:
    """The validated sweep file at ``path``; :class:`UserError` on any problem, including a grid of more
    than ``max_trials`` trials, values past the machine's bounds (``spec.bounds``), and with ``build`` a network
    that cannot be built or (given the ``memory`` it trains in) cannot fit (see :meth:`GridValidator.check_builds`)."""
    code_path([path.parent])  # the user's code beside the sweep file imports, as beside a script
    return SweepValidator(read_document(path, max_trials), max_trials, build, memory).validate()


def grid_size(parts: list[GridPart], search: Search, seeds: int) -> int:
    """How many trials the sweep has, counted from the lengths of its lists (nothing is expanded): the
    product of each grid part's list lengths, summed over the parts (or the points a random or sobol search
    draws, or a tpe or gp search proposes), times the seeds."""
    if search.sample != "grid" or search.asks:
        assert search.trials is not None  # the validator sets it for a sampled or asking search
        return search.trials * seeds
    return seeds * sum(
        math.prod(len(values) if isinstance(values, list) else 1 for values in mapping.values())
        for _, _, mapping in parts
    )


def as_list(value: Any) -> list[Any]:
    """A grid value's list of choices (none for a distribution or nothing)."""
    return value if isinstance(value, list) else []


class SweepValidator:
    """Checks a parsed sweep file key by key, raising errors that point at the line; a sweep of more than
    ``max_trials`` trials is refused before its grid is expanded."""

    def __init__(
        self, document: Document, max_trials: int | None = None, build: bool = True, memory: Memory | None = None
    ):
        self.document = document
        self.max_trials = max_trials
        self.build = build
        self.memory = memory
        self.fail = document.fail
        self.scalar = document.scalar

    def validate(self) -> Sweep:
        """The sweep the document describes."""
        document = self.document.data
        if not isinstance(document, dict):
            raise self.fail((), "a sweep file must be a mapping of keys (name, architecture, grid, ...)")
        for key in document:
            if key not in TOP_LEVEL_KEYS:
                raise self.fail((key,), "unknown key" + suggest(key, TOP_LEVEL_KEYS))
        for required in ("name", "grid"):
            if required not in document:
                raise self.fail((), f"missing required key '{required}'")
        name = self.scalar(document, "name", str)
        if not NAME_PATTERN.fullmatch(name):
            raise self.fail(
                ("name",),
                f"must be 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit, got {name!r}",
            )
        grids = GridValidator(self.document)
        architecture = None
        if "architecture" in document:
            architecture = grids.architecture(("architecture",), self.scalar(document, "architecture", str))
        parts = grids.grid_parts(document["grid"], architecture)
        used = list(dict.fromkeys(a for _, archs, _ in parts for a in archs))
        params = grids.params(document.get("params"), used)
        search = self.search(document.get("search"), params, parts)
        seeds = self.seeds(document.get("seeds", [0]))
        size = grid_size(parts, search, len(seeds))
        if self.max_trials is not None and size > self.max_trials:
            raise UserError(
                f"{self.document.path}: the grid expands to {size:,} trials, more than --max-trials "
                f"{self.max_trials:,}; raise --max-trials if you mean it"
            )
        space = grids.space(parts, params, search.strategy) if search.asks or search.sample != "grid" else {}
        if search.asks:
            grid = []
        elif search.sample == "grid":
            grid = [grids.grid_part(part, params) for part in parts]
        else:
            grid = grids.sampled_grid(parts, params, space, search)
        if "objectives" in document:
            selecting = read_objectives(self.document, search, len(seeds))
        else:
            selecting = Selecting(*self.select(document.get("select", "val_accuracy"), search))
        threads = self.scalar(document, "threads", int, 1)
        if threads < 1:
            raise self.fail(("threads",), f"must be >= 1, got {threads}")
        dataset = self.dataset(document.get("dataset"))
        check_sweep_bounds(self.document, parts, threads, dataset.train_size)
        if self.build or grids.checkpoints:  # a checkpoint file must fit its network: torch is loaded to read it
            batch_size = max((size for _, size in given(self.document, parts, "batch_size")), default=None)
            optimizers = {params.get("optimizer"), *(v for _, _, part in parts for v in as_list(part.get("optimizer")))}
            largest = {
                "batch_size": batch_size or TRAINER_PARAMS["batch_size"].default,
                "optimizer": "adam" if "adam" in optimizers else "sgd",
            }
            for used_architecture in used:
                grids.check_builds(
                    used_architecture, architecture, params, grid, dataset.description, self.memory, largest
                )
        timeout = document.get("timeout")
        if timeout is not None:
            timeout = self.scalar(document, "timeout", float)
            if timeout <= 0:
                raise self.fail(("timeout",), f"must be > 0 seconds, got {timeout}")
        retries = self.scalar(document, "retries", int, 0)
        if not 0 <= retries <= MAX_RETRIES:
            raise self.fail(("retries",), f"must be between 0 and {MAX_RETRIES}, got {retries}")
        return Sweep(
            name=name,
            architecture=architecture,
            dataset=dataset,
            params=params,
            grid=grid,
            seeds=seeds,
            search=search,
            space=space if search.asks else {},
            **selecting.sweep_fields(),
            threads=threads,
            timeout=timeout,
            retries=retries,
            description=self.scalar(document, "description", str, ""),
            source=self.document.text,
            code={name: self.digest(name) for name in used if architectures.is_reference(name)},
            folder=str(self.document.path.parent.resolve()),
        )

    def digest(self, reference: str) -> str:
        """The source digest of the module the user's architecture ``reference`` is defined in."""
        ref = CodeRef.parse(reference)
        assert ref is not None  # the grid validator accepted it
        return ref.digest()

    def dataset(self, mapping: Any) -> DatasetSplit:
        """The ``dataset`` split: train and validation images cut from the dataset's training set (a built-in's
        ``name``, or a ``loader``'s data, which it runs here); sizes checked against the dataset's own."""
        if mapping is None:
            return DatasetSplit()
        at = ("dataset",)
        if not isinstance(mapping, dict):
            raise self.fail(at, "must be a mapping (name or loader, train_size, val_size, test_size)")
        for key in mapping:
            if key not in DATASET_KEYS:
                raise self.fail((*at, key), "unknown key" + suggest(key, DATASET_KEYS))
        loaded = self.loaded(mapping) if "loader" in mapping else None
        name = loaded.name if loaded else self.scalar(mapping, "name", str, "mnist", at)
        if loaded is None and name not in DATASETS:
            raise self.fail((*at, "name"), f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
        known = loaded or DATASETS[name]
        val_default = known.training_size // 6
        defaults = {
            "train_size": known.training_size - val_default,
            "val_size": val_default,
            "test_size": min(TEST_SET_SIZE, known.test_size),
        }
        sizes = {key: self.scalar(mapping, key, int, default, at) for key, default in defaults.items()}
        for key, size in sizes.items():
            limit = known.test_size if key == "test_size" else known.training_size
            if not 1 <= size <= limit:
                raise self.fail((*at, key), f"must be between 1 and {limit} ({known.title}'s size), got {size}")
        if sizes["train_size"] + sizes["val_size"] > known.training_size:
            raise self.fail(
                (*at, "val_size"),
                f"train_size + val_size = "
                f"{sizes['train_size'] + sizes['val_size']} is more than the "
                f"{known.training_size} images of the {known.title} training set",
            )
        return DatasetSplit(name, **sizes, loaded=loaded)

    def loaded(self, mapping: dict[str, Any]) -> Dataset:
        """The description of the data that ``dataset: {loader: package.module:name}`` gives: the loader is
        imported with the sweep file's folder first on the import path and run (once per process)."""
        at = ("dataset",)
        text = self.scalar(mapping, "loader", str, None, at)
        ref = CodeRef.parse(text)
        if ref is None:
            raise self.fail((*at, "loader"), f"must be package.module:function, got {text!r}")
        classes = mapping.get("classes")
        if classes is not None and (
            not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes)
        ):
            raise self.fail((*at, "classes"), "must be a list of class names, in label order")
        digits = self.scalar(mapping, "digits", bool, False, at)
        name = self.scalar(mapping, "name", str, None, at)
        code_path([self.document.path.parent])
        try:
            return from_loader(ref, name, classes, digits)
        except UserError as exc:
            raise self.fail((*at, "loader"), str(exc)) from None

    def select(self, value: Any, search: Search) -> tuple[str, str | None]:
        """The ``select`` metric, and how a configuration's seeds are combined (``select: {metric: ...,
        over_seeds: mean}``; None for ``select: <metric>``, which selects single trials)."""
        at: tuple[str, ...] = ("select",)
        over_seeds = None
        if isinstance(value, dict):
            for key in value:
                if key not in SELECT_KEYS:
                    raise self.fail((*at, key), "unknown key" + suggest(key, SELECT_KEYS))
            over_seeds = self.scalar(value, "over_seeds", str, None, at)
            if over_seeds is not None and over_seeds not in OVER_SEEDS:
                raise self.fail((*at, "over_seeds"), f"unknown {over_seeds!r} (known: {', '.join(OVER_SEEDS)})")
            if over_seeds is not None and search.describes_rungs:
                raise self.fail(
                    (*at, "over_seeds"), f"not supported with strategy {search.strategy}, which promotes single trials"
                )
            metric, at = self.scalar(value, "metric", str, "val_accuracy", at), (*at, "metric")
        else:
            metric = self.scalar(self.document.data, "select", str, "val_accuracy")
        if metric not in METRICS:
            raise self.fail(at, f"unknown metric {metric!r} (known: {', '.join(METRICS)})")
        return metric, over_seeds

    def search(self, mapping: Any, params: dict[str, Any], parts: list[GridPart]) -> Search:
        """The ``search``: a strategy of ``STRATEGIES`` with the keys it takes. Strategies with rungs
        (halving, hyperband) need one ``epochs`` for every trial; drawn and asked-for points need ``trials``."""
        if mapping is None:
            return Search()
        at = ("search",)
        if not isinstance(mapping, dict):
            raise self.fail(at, "must be a mapping: strategy and its settings (e.g. factor, min_epochs, trials, seed)")
        for key in mapping:
            if key not in SEARCH_KEYS:
                raise self.fail((*at, key), "unknown key" + suggest(str(key), SEARCH_KEYS))
        strategy = self.scalar(mapping, "strategy", str, "grid", at)
        if strategy not in STRATEGIES:
            raise self.fail(
                (*at, "strategy"),
                f"unknown strategy {strategy!r}" + suggest(strategy, STRATEGIES) + f" (known: {', '.join(STRATEGIES)})",
            )
        kind = STRATEGIES[strategy]
        for key in mapping:
            if key != "strategy" and key not in kind.keys:
                users = [name for name, other in STRATEGIES.items() if key in other.keys]
                raise self.fail(
                    (*at, key), f"only used by strateg{'y' if len(users) == 1 else 'ies'} {', '.join(users)}"
                )
        sample = strategy if kind.draws else self.scalar(mapping, "sample", str, "grid", at)
        if sample not in SAMPLES:
            raise self.fail((*at, "sample"), f"unknown sample {sample!r} (known: {', '.join(SAMPLES)})")
        if sample == "grid" and not kind.asks:
            for key in ("trials", "seed"):
                if key in mapping and not (key == "seed" and strategy == "hyperband"):  # hyperband: which points
                    raise self.fail((*at, key), "only used with points drawn at random (sample random or sobol)")
        elif "trials" not in mapping:
            what = "how many points to propose" if kind.asks else "how many points to draw"
            raise self.fail(at, f"{strategy if kind.asks else sample} search needs 'trials': {what}")
        trials = self.scalar(mapping, "trials", int, None, at)
        if trials is not None and not 1 <= trials <= MAX_SAMPLED_TRIALS:
            raise self.fail((*at, "trials"), f"must be between 1 and {MAX_SAMPLED_TRIALS:,}, got {trials}")
        seed = self.scalar(mapping, "seed", int, 0, at)
        if not 0 <= seed < 2**32:
            raise self.fail((*at, "seed"), f"must be an integer in [0, 2**32), got {seed}")
        batch = None
        if kind.asks:
            assert trials is not None
            batch = self.scalar(mapping, "batch", int, 1, at)
            if not 1 <= batch <= trials:
                raise self.fail((*at, "batch"), f"must be between 1 and trials ({trials}), got {batch}")
            population = self.population(mapping, batch) if "population" in kind.keys else None
            return Search(strategy, sample=sample, trials=trials, seed=seed, batch=batch, population=population)
        if not kind.rungs:
            return Search(strategy, sample=sample, trials=trials, seed=seed)
        for at_part, _, part in parts:
            if "epochs" in part:
                raise self.fail(
                    (*at_part, "epochs"),
                    f"{'successive halving' if strategy == 'halving' else strategy} needs one 'epochs' for every "
                    "trial: set it in params, not in the grid",
                )
        epochs = params.get("epochs", TRAINER_PARAMS["epochs"].default)
        factor = self.scalar(mapping, "factor", int, Search.factor, at)
        if factor < 2:
            raise self.fail((*at, "factor"), f"must be >= 2, got {factor}")
        min_epochs = self.scalar(mapping, "min_epochs", int, Search.min_epochs, at)
        if not 1 <= min_epochs <= epochs:
            raise self.fail((*at, "min_epochs"), f"must be between 1 and epochs ({epochs}), got {min_epochs}")
        return Search(strategy, factor, min_epochs, sample, trials, seed, epochs=epochs)

    def population(self, mapping: dict, batch: int) -> int:
        """nsga2's ``population``: its generation size, 2 or more (default ``batch``)."""
        population = self.scalar(mapping, "population", int, max(2, batch), ("search",))
        if not 2 <= population <= MAX_SAMPLED_TRIALS:
            limit = f"{MAX_SAMPLED_TRIALS:,}"
            raise self.fail(("search", "population"), f"must be between 2 and {limit}, got {population}")
        return population

    def seeds(self, seeds: Any) -> list[int]:
        """The ``seeds``: distinct integers in [0, 2**31)."""
        if not isinstance(seeds, list) or not seeds:
            raise self.fail(("seeds",), "must be a non-empty list of integers, e.g. [0]")
        for index, seed in enumerate(seeds):
            if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**31:
                raise self.fail(("seeds", index), f"must be an integer in [0, 2**31), got {seed!r}")
        if len(set(seeds)) != len(seeds):
            raise self.fail(("seeds",), "lists a seed twice")
        return list(seeds)
