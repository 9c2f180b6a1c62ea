"""Sweep files: load and validate the YAML, expand the grid, give every trial a stable key.

A sweep file names an architecture, a dataset split, fixed ``params`` and a ``grid`` (a dict of
lists, or a list of such dicts, as scikit-learn's ``ParameterGrid`` takes), and optionally how to
``search`` it (every trial to the end, or successive halving). Every key is checked before anything
runs; problems raise :class:`UserError` naming the file, line and key.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from sklearn.model_selection import ParameterGrid

import architectures
from gridsearch.errors import UserError
from gridsearch.spec import halving
from gridsearch.spec.params import OPTIONAL_PARAMS, SPEED_PARAMS, TRAINER_PARAMS, Param, coerce_type

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
SEARCH_KEYS = ("strategy", "factor", "min_epochs")
STRATEGIES = ("grid", "halving")
DATASETS = {"mnist": 60000}
"""Dataset name -> size of its official training set (train and validation are cut from it)."""
TEST_SET_SIZE = 10000
SELECT_METRICS = {"val_accuracy": "max", "val_loss": "min"}
"""Metric a sweep may select its best trial by -> whether the best is the max or the min."""
MAX_FILE_BYTES = 1_000_000
MAX_YAML_NODES = 100_000
"""Guards against huge files and alias bombs (a few anchors expanding to billions of values)."""
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


@dataclass(frozen=True)
class DatasetSplit:
    """Which images a trial trains and validates on (first ``train_size``, last ``val_size``)."""

    name: str = "mnist"
    train_size: int = 50000
    val_size: int = 10000
    test_size: int = TEST_SET_SIZE
    """How many of the official test images the selected trial is evaluated on."""

    def trial_part(self) -> dict[str, Any]:
        """The part of the split that shapes a trial's training (and so its key)."""
        return {"name": self.name, "train_size": self.train_size, "val_size": self.val_size}


@dataclass(frozen=True)
class Trial:
    """One point of a sweep: an architecture, its fully resolved params, a data split and a seed."""

    architecture: str
    params: dict[str, Any]
    dataset: dict[str, Any]
    seed: int
    threads: int
    select: str

    def config(self) -> dict[str, Any]:
        """The canonical resolved config; its hash is the trial key.

        ``select`` belongs here because it decides early stopping and which weights are kept.
        """
        return {
            "architecture": self.architecture,
            "params": dict(sorted(self.params.items())),
            "dataset": self.dataset,
            "seed": self.seed,
            "threads": self.threads,
            "select": self.select,
        }

    @property
    def key(self) -> str:
        return trial_key(self.config())


def trial_key(config: dict[str, Any]) -> str:
    """Stable 16-hex-digit key of a resolved trial config (SHA-256 of its canonical JSON)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Search:
    """How a sweep searches its grid: every trial to the end (``grid``), or successive halving over
    epochs (``halving``: all trials train ``min_epochs``, the best ``1 / factor`` go on, ...)."""

    strategy: str = "grid"
    factor: int = 3
    min_epochs: int = 1


@dataclass(frozen=True)
class Sweep:
    """A validated sweep file. ``architecture`` is the default; a grid may also vary it."""

    name: str
    architecture: str | None
    dataset: DatasetSplit
    params: dict[str, Any]
    grid: list[dict[str, list[Any]]]
    seeds: list[int]
    search: Search = Search()
    select: str = "val_accuracy"
    threads: int = 1
    timeout: float | None = None
    description: str = ""
    source: str = field(default="", compare=False)

    @property
    def architectures(self) -> list[str]:
        """Every architecture the sweep trains, in first-seen order."""
        names = dict.fromkeys([self.architecture] if self.architecture else [])
        for part in self.grid:
            names.update(dict.fromkeys(part.get("architecture", [self.architecture])))
        return [name for name in names if name]

    @property
    def rung_epochs(self) -> list[int] | None:
        """Successive halving: the epoch budget of each rung (its trials' epochs are fixed); None for a grid."""
        if self.search.strategy != "halving":
            return None
        epochs = self.params.get("epochs", TRAINER_PARAMS["epochs"].default)
        return halving.rung_epochs(self.search.min_epochs, self.search.factor, epochs)

    def search_record(self) -> dict[str, Any]:
        """What the database records of the search (see ``SweepRow.search``)."""
        if self.search.strategy == "grid":
            return {"strategy": "grid"}
        return {
            "strategy": "halving",
            "factor": self.search.factor,
            "min_epochs": self.search.min_epochs,
            "rung_epochs": self.rung_epochs,
        }

    @property
    def gridded_params(self) -> list[str]:
        """Names of the params the grid varies, in first-seen order."""
        names: dict[str, None] = {}
        for part in self.grid:
            names.update(dict.fromkeys(part))
        return list(names)

    def __len__(self) -> int:
        return len(ParameterGrid(self.grid)) * len(self.seeds)

    def trials(self) -> Iterator[Trial]:
        """Every trial of the sweep, in grid order, each seed in turn."""
        for point in ParameterGrid(self.grid):
            point = dict(point)
            architecture = point.pop("architecture", self.architecture)
            params = {**resolved_defaults(architecture), **self.params, **point}
            params = {
                name: value
                for name, value in params.items()
                if name not in SPEED_PARAMS or value != SPEED_PARAMS[name].default
            }
            for seed in self.seeds:
                yield Trial(architecture, params, self.dataset.trial_part(), seed, self.threads, self.select)


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
    accepted.update({name: OPTIONAL_PARAMS[name] for name in entry.training_params})
    accepted.update(SPEED_PARAMS)
    for name, parameter in entry.params().items():
        annotation = parameter.annotation
        expected = {"int": int, "float": float, "bool": bool, "str": str}.get(annotation, annotation)
        accepted[name] = Param(expected, parameter.default)
    return accepted


def resolved_defaults(architecture: str) -> dict[str, Any]:
    """Default value of every param of ``architecture`` (but the speed params, left out at their defaults)."""
    return {name: param.default for name, param in accepted_params(architecture).items() if name not in SPEED_PARAMS}


def load_sweep(path: str | Path, max_trials: int | None = None) -> Sweep:
    """Read and validate the sweep file at ``path``; :class:`UserError` on any problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such sweep file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read sweep file ({exc.strerror})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise UserError(f"{path}: sweep file is larger than {MAX_FILE_BYTES:,} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    document, lines = _parse_yaml(text, path)
    sweep = _SweepValidator(path, lines).validate(document, text)
    if max_trials is not None and len(sweep) > max_trials:
        raise UserError(
            f"{path}: the grid expands to {len(sweep):,} trials, more than --max-trials "
            f"{max_trials:,}; raise --max-trials if you mean it"
        )
    return sweep


def _parse_yaml(text: str, path: Path) -> tuple[Any, dict[tuple, int]]:
    """The YAML document and the line of every key and list item in it, rejecting duplicate keys."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        lines: dict[tuple, int] = {}
        _index_lines(node, (), lines, path, [0])
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{where}: malformed YAML: {problem}") from None
    return document, lines


def _index_lines(node: yaml.Node | None, at: tuple, lines: dict, path: Path, count: list[int]) -> None:
    count[0] += 1
    if count[0] > MAX_YAML_NODES:
        raise UserError(
            f"{path}: the YAML expands to more than {MAX_YAML_NODES:,} values (too large, or an alias bomb)"
        )
    if node is None:
        return
    lines[at] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise UserError(f"{path}:{key_node.start_mark.line + 1}: {_dotted(at + (key,))}: duplicate key")
            seen.add(key)
            lines[at + (key,)] = key_node.start_mark.line + 1
            _index_lines(value_node, at + (key,), lines, path, count)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, at + (index,), lines, path, count)


def _dotted(at: tuple) -> str:
    text = ""
    for part in at:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


class _SweepValidator:
    """Checks a parsed sweep document key by key, raising errors that point at the line."""

    def __init__(self, path: Path, lines: dict[tuple, int]):
        self.path = path
        self.lines = lines

    def fail(self, at: tuple, message: str) -> UserError:
        line = next((self.lines[at[:n]] for n in range(len(at), -1, -1) if at[:n] in self.lines), None)
        where = f"{self.path}:{line}" if line else str(self.path)
        return UserError(f"{where}: {_dotted(at)}: {message}")

    def validate(self, document: Any, text: str) -> Sweep:
        if not isinstance(document, dict):
            raise self.fail((), "a sweep file must be a mapping of keys (name, architecture, grid, ...)")
        for key in document:
            if key not in TOP_LEVEL_KEYS:
                raise self.fail((key,), "unknown key" + _suggest(key, TOP_LEVEL_KEYS))
        for required in ("name", "grid"):
            if required not in document:
                raise self.fail((), f"missing required key '{required}'")
        name = self.scalar(document, "name", str)
        if not NAME_PATTERN.fullmatch(name):
            raise self.fail(
                ("name",),
                f"must be 1-100 letters, digits, '_', '.' or '-', starting with a letter or digit, got {name!r}",
            )
        architecture = None
        if "architecture" in document:
            architecture = self.architecture(("architecture",), self.scalar(document, "architecture", str))
        parts = self.grid_parts(document["grid"], architecture)
        used = list(dict.fromkeys(a for _, archs, _ in parts for a in archs))
        params = self.params(document.get("params"), used)
        grid = [self.grid_part(at, archs, part, params) for at, archs, part in parts]
        for used_architecture in used:
            self.check_builds(used_architecture, architecture, params, grid)
        select = self.scalar(document, "select", str, "val_accuracy")
        if select not in SELECT_METRICS:
            raise self.fail(("select",), f"unknown metric {select!r} (known: {', '.join(SELECT_METRICS)})")
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
            source=text,
        )

    def scalar(self, mapping: dict, key: str, expected: type, default: Any = None, at: tuple = ()) -> Any:
        if key not in mapping:
            return default
        try:
            return coerce_type(mapping[key], expected)
        except ValueError as exc:
            raise self.fail(at + (key,), str(exc)) from None

    def dataset(self, document: Any) -> DatasetSplit:
        if document is None:
            return DatasetSplit()
        if not isinstance(document, dict):
            raise self.fail(("dataset",), "must be a mapping (name, train_size, val_size, test_size)")
        known = ("name", "train_size", "val_size", "test_size")
        for key in document:
            if key not in known:
                raise self.fail(("dataset", key), "unknown key" + _suggest(key, known))
        at = ("dataset",)
        name = self.scalar(document, "name", str, "mnist", at)
        if name not in DATASETS:
            raise self.fail(at + ("name",), f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
        sizes = {
            key: self.scalar(document, key, int, getattr(DatasetSplit, key), at)
            for key in ("train_size", "val_size", "test_size")
        }
        for key, size in sizes.items():
            limit = TEST_SET_SIZE if key == "test_size" else DATASETS[name]
            if not 1 <= size <= limit:
                raise self.fail(at + (key,), f"must be between 1 and {limit}, got {size}")
        if sizes["train_size"] + sizes["val_size"] > DATASETS[name]:
            raise self.fail(
                at + ("val_size",),
                f"train_size + val_size = "
                f"{sizes['train_size'] + sizes['val_size']} is more than the "
                f"{DATASETS[name]} images of the {name} training set",
            )
        return DatasetSplit(name, **sizes)

    def architecture(self, at: tuple, name: Any) -> str:
        if not isinstance(name, str) or name not in architectures.REGISTRY:
            raise self.fail(
                at,
                f"unknown architecture {name!r}"
                + _suggest(str(name), architectures.REGISTRY)
                + f" (known: {', '.join(sorted(architectures.REGISTRY))})",
            )
        return name

    def param_value(self, at: tuple, value: Any, param: Param) -> Any:
        try:
            value = param.coerce(value)
        except ValueError as exc:
            raise self.fail(at, str(exc)) from None
        return self.init_from(at, value) if "init_from" in at else value

    def init_from(self, at: tuple, value: str) -> str:
        """``best:<sweep>``, ``trial:<key>``, or a checkpoint path made absolute.

        A relative path is read from the sweep file's folder and may not leave it.
        """
        if not value:
            return value
        if value.startswith("trial:"):
            if not re.fullmatch(r"[0-9a-f]{16}", value.removeprefix("trial:")):
                raise self.fail(at, f"'trial:' must be followed by a 16-hex-digit trial key, got {value!r}")
            return value
        if value.startswith("best:"):
            if not NAME_PATTERN.fullmatch(value.removeprefix("best:")):
                raise self.fail(at, f"'best:' must be followed by a sweep name, got {value!r}")
            return value
        path = Path(value).expanduser()
        if not path.is_absolute():
            folder = self.path.parent.resolve()
            path = (folder / path).resolve()
            if not path.is_relative_to(folder):
                raise self.fail(
                    at,
                    f"{value!r} leaves the sweep file's folder; give an absolute path "
                    "to load a checkpoint from elsewhere",
                )
        if not path.is_file():
            raise self.fail(at, f"no checkpoint file at {path}")
        return str(path)

    def accepted(self, at: tuple, name: Any, architectures_: list[str]) -> Param:
        """The definition of param ``name``, which every one of ``architectures_`` must accept."""
        for architecture in architectures_:
            accepted = accepted_params(architecture)
            if name not in accepted:
                raise self.fail(
                    at, f"unknown parameter for architecture {architecture!r}" + _suggest(str(name), accepted)
                )
        return accepted_params(architectures_[0])[name]

    def params(self, document: Any, used: list[str]) -> dict[str, Any]:
        if document is None:
            return {}
        if not isinstance(document, dict):
            raise self.fail(("params",), "must be a mapping of parameter names to values")
        return {
            name: self.param_value(("params", name), value, self.accepted(("params", name), name, used))
            for name, value in document.items()
        }

    def grid_parts(self, document: Any, default: str | None) -> list[tuple[tuple, list[str], dict]]:
        """(location, architectures, raw mapping) of each part of the grid."""
        parts = document if isinstance(document, list) else [document]
        if not parts:
            raise self.fail(("grid",), "the grid is empty")
        checked = []
        for index, part in enumerate(parts):
            at = ("grid", index) if isinstance(document, list) else ("grid",)
            if not isinstance(part, dict):
                raise self.fail(at, "must be a mapping of parameter names to lists of values")
            if not part:
                raise self.fail(at, "the grid is empty")
            names = part.get("architecture")
            if names is None:
                if default is None:
                    raise self.fail(at, "no architecture: set 'architecture' at the top or in this grid part")
                used = [default]
            else:
                if not isinstance(names, list) or not names:
                    raise self.fail(at + ("architecture",), "must be a non-empty list of architecture names")
                used = [self.architecture(at + ("architecture", i), n) for i, n in enumerate(names)]
            checked.append((at, used, part))
        return checked

    def grid_part(self, at: tuple, used: list[str], part: dict, fixed: dict[str, Any]) -> dict[str, list[Any]]:
        resolved: dict[str, list[Any]] = {}
        for name, values in part.items():
            if name == "architecture":
                resolved[name] = list(values)
                continue
            param = self.accepted(at + (name,), name, used)
            if name in fixed:
                raise self.fail(at + (name,), "set both in params and in grid; keep one")
            if not isinstance(values, list):
                raise self.fail(at + (name,), f"must be a list of values, e.g. [{values!r}]")
            if not values:
                raise self.fail(at + (name,), "empty list of values: the grid is empty")
            resolved[name] = [self.param_value(at + (name, i), v, param) for i, v in enumerate(values)]
        return resolved

    def check_builds(self, architecture: str, default: str | None, params: dict[str, Any], grid: list[dict]) -> None:
        """Build the network (on the meta device) once for each distinct combination of its own params,
        to catch bad values."""
        entry = architectures.get(architecture)
        own = set(entry.params())
        tried: set[str] = set()
        for point in ParameterGrid(grid):
            if point.get("architecture", default) != architecture:
                continue
            values = {k: v for k, v in {**entry.defaults(), **params, **point}.items() if k in own}
            signature = json.dumps(values, sort_keys=True)
            if signature in tried:
                continue
            tried.add(signature)
            try:
                with torch.device("meta"):  # shapes only: no memory, however large the values
                    entry.build(**values)
            except (ValueError, TypeError, RuntimeError, NotImplementedError) as exc:
                where = ("grid",) if any(k in point for k in values) else ("params",)
                raise self.fail(where, f"{architecture} cannot be built with {values}: {exc}") from None

    def search(self, document: Any, params: dict[str, Any], parts: list[tuple[tuple, list[str], dict]]) -> Search:
        if document is None:
            return Search()
        at = ("search",)
        if not isinstance(document, dict):
            raise self.fail(at, "must be a mapping (strategy, factor, min_epochs)")
        for key in document:
            if key not in SEARCH_KEYS:
                raise self.fail(at + (key,), "unknown key" + _suggest(key, SEARCH_KEYS))
        strategy = self.scalar(document, "strategy", str, "grid", at)
        if strategy not in STRATEGIES:
            raise self.fail(
                at + ("strategy",),
                f"unknown strategy {strategy!r}"
                + _suggest(strategy, STRATEGIES)
                + f" (known: {', '.join(STRATEGIES)})",
            )
        if strategy == "grid":
            for key in ("factor", "min_epochs"):
                if key in document:
                    raise self.fail(at + (key,), "only used by strategy halving")
            return Search()
        for at_part, _, part in parts:
            if "epochs" in part:
                raise self.fail(
                    at_part + ("epochs",),
                    "successive halving needs one 'epochs' for every trial: set it in params, not in the grid",
                )
        epochs = params.get("epochs", TRAINER_PARAMS["epochs"].default)
        factor = self.scalar(document, "factor", int, Search.factor, at)
        if factor < 2:
            raise self.fail(at + ("factor",), f"must be >= 2, got {factor}")
        min_epochs = self.scalar(document, "min_epochs", int, Search.min_epochs, at)
        if not 1 <= min_epochs <= epochs:
            raise self.fail(at + ("min_epochs",), f"must be between 1 and epochs ({epochs}), got {min_epochs}")
        return Search(strategy, factor, min_epochs)

    def seeds(self, document: Any) -> list[int]:
        if not isinstance(document, list) or not document:
            raise self.fail(("seeds",), "must be a non-empty list of integers, e.g. [0]")
        seeds = []
        for index, seed in enumerate(document):
            if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**31:
                raise self.fail(("seeds", index), f"must be an integer in [0, 2**31), got {seed!r}")
            seeds.append(seed)
        if len(set(seeds)) != len(seeds):
            raise self.fail(("seeds",), "lists a seed twice")
        return seeds


def _suggest(name: str, known: Any) -> str:
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
