"""Validating a sweep file key by key into a :class:`Sweep`; errors name the file, line and key.

The top-level keys, the dataset split, the search and the seeds are checked here; the architectures,
params and grid by ``gridsearch.spec.grid_validation``. Use it through ``gridsearch.spec.sweep.load_sweep``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gridsearch.errors import UserError
from gridsearch.spec.document import Document, read_document, suggest
from gridsearch.spec.grid_validation import GridPart, GridValidator
from gridsearch.spec.params import TRAINER_PARAMS
from gridsearch.spec.sweep import DATASETS, NAME_PATTERN, STRATEGIES, TEST_SET_SIZE, DatasetSplit, Search, Sweep
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
    "threads",
    "timeout",
)
DATASET_KEYS = ("name", "train_size", "val_size", "test_size")
SEARCH_KEYS = ("strategy", "factor", "min_epochs")


def read_sweep(path: Path, max_trials: int | None = None) -> Sweep:
    """The validated sweep file at ``path``; :class:`UserError` on any problem, including a grid of more
    than ``max_trials`` trials."""
    sweep = SweepValidator(read_document(path)).validate()
    if max_trials is not None and len(sweep) > max_trials:
        raise UserError(
            f"{path}: the grid expands to {len(sweep):,} trials, more than --max-trials "
            f"{max_trials:,}; raise --max-trials if you mean it"
        )
    return sweep


class SweepValidator:
    """Checks a parsed sweep file key by key, raising errors that point at the line."""

    def __init__(self, document: Document):
        self.document = document
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
        grid = [grids.grid_part(part, params) for part in parts]
        for used_architecture in used:
            grids.check_builds(used_architecture, architecture, params, grid)
        select = self.scalar(document, "select", str, "val_accuracy")
        if select not in METRICS:
            raise self.fail(("select",), f"unknown metric {select!r} (known: {', '.join(METRICS)})")
        search = self.search(document.get("search"), params, parts)
        threads = self.scalar(document, "threads", int, 1)
        if threads < 1:
            raise self.fail(("threads",), f"must be >= 1, got {threads}")
        timeout = document.get("timeout")
        if timeout is not None:
            timeout = self.scalar(document, "timeout", float)
            if timeout <= 0:
                raise self.fail(("timeout",), f"must be > 0 seconds, got {timeout}")
        return Sweep(
            name=name,
            architecture=architecture,
            dataset=self.dataset(document.get("dataset")),
            params=params,
            grid=grid,
            seeds=self.seeds(document.get("seeds", [0])),
            search=search,
            select=select,
            threads=threads,
            timeout=timeout,
            description=self.scalar(document, "description", str, ""),
            source=self.document.text,
        )

    def dataset(self, mapping: Any) -> DatasetSplit:
        """The ``dataset`` split: train and validation images cut from the official training set."""
        if mapping is None:
            return DatasetSplit()
        at = ("dataset",)
        if not isinstance(mapping, dict):
            raise self.fail(at, "must be a mapping (name, train_size, val_size, test_size)")
        for key in mapping:
            if key not in DATASET_KEYS:
                raise self.fail((*at, key), "unknown key" + suggest(key, DATASET_KEYS))
        name = self.scalar(mapping, "name", str, "mnist", at)
        if name not in DATASETS:
            raise self.fail((*at, "name"), f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
        sizes = {
            key: self.scalar(mapping, key, int, getattr(DatasetSplit, key), at)
            for key in ("train_size", "val_size", "test_size")
        }
        for key, size in sizes.items():
            limit = TEST_SET_SIZE if key == "test_size" else DATASETS[name]
            if not 1 <= size <= limit:
                raise self.fail((*at, key), f"must be between 1 and {limit}, got {size}")
        if sizes["train_size"] + sizes["val_size"] > DATASETS[name]:
            raise self.fail(
                (*at, "val_size"),
                f"train_size + val_size = "
                f"{sizes['train_size'] + sizes['val_size']} is more than the "
                f"{DATASETS[name]} images of the {name} training set",
            )
        return DatasetSplit(name, **sizes)

    def search(self, mapping: Any, params: dict[str, Any], parts: list[GridPart]) -> Search:
        """The ``search``: a plain grid, or successive halving with one ``epochs`` for every trial."""
        if mapping is None:
            return Search()
        at = ("search",)
        if not isinstance(mapping, dict):
            raise self.fail(at, "must be a mapping (strategy, factor, min_epochs)")
        for key in mapping:
            if key not in SEARCH_KEYS:
                raise self.fail((*at, key), "unknown key" + suggest(key, SEARCH_KEYS))
        strategy = self.scalar(mapping, "strategy", str, "grid", at)
        if strategy not in STRATEGIES:
            raise self.fail(
                (*at, "strategy"),
                f"unknown strategy {strategy!r}" + suggest(strategy, STRATEGIES) + f" (known: {', '.join(STRATEGIES)})",
            )
        if strategy == "grid":
            for key in ("factor", "min_epochs"):
                if key in mapping:
                    raise self.fail((*at, key), "only used by strategy halving")
            return Search()
        for at_part, _, part in parts:
            if "epochs" in part:
                raise self.fail(
                    (*at_part, "epochs"),
                    "successive halving needs one 'epochs' for every trial: set it in params, not in the grid",
                )
        epochs = params.get("epochs", TRAINER_PARAMS["epochs"].default)
        factor = self.scalar(mapping, "factor", int, Search.factor, at)
        if factor < 2:
            raise self.fail((*at, "factor"), f"must be >= 2, got {factor}")
        min_epochs = self.scalar(mapping, "min_epochs", int, Search.min_epochs, at)
        if not 1 <= min_epochs <= epochs:
            raise self.fail((*at, "min_epochs"), f"must be between 1 and epochs ({epochs}), got {min_epochs}")
        return Search(strategy, factor, min_epochs)

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
