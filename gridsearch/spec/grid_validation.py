"""Validating what a sweep trains: its architectures, fixed ``params`` and ``grid`` parts, and the
distributions a random or sobol search draws its points from.

Every value is checked against its definition (``gridsearch.spec.params`` for the trainer's, the
builder's signature for an architecture's own), without torch. Before a sweep runs (and whenever it starts
from checkpoint files, which torch reads), every distinct set of an architecture's own params is also built
once on the meta device at the dataset's image shape and classes, so that bad combinations fail before anything
trains.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import architectures
from gridsearch.spec.bounds import Memory, check_memory, footprint
from gridsearch.spec.document import Document, Location, suggest
from gridsearch.spec.params import Param, coerce_type
from gridsearch.spec.sampling import DISTRIBUTIONS, Dimension, Distribution, draw_points
from gridsearch.spec.search import Search
from gridsearch.spec.sweep import NAME_PATTERN, accepted_params, grid_points
from gridsearch.spec.warm_start import (
    CheckpointFile,
    is_file_reference,
    matching_tensors,
    read_checkpoint,
    split_reference,
)

if TYPE_CHECKING:
    import torch

    from gridsearch.spec.datasets import Dataset

GridPart = tuple[Location, list[str], dict]
"""A grid part before its values are checked: its location, the architectures it trains, its mapping."""


class GridValidator:
    """Checks the architectures, params and grid of ``document``, raising errors that point at the line."""

    def __init__(self, document: Document):
        self.document = document
        self.checkpoints: dict[Path, CheckpointFile] = {}
        """Every ``init_from`` file read, by path."""
        self.named: dict[str, Location] = {}
        """Where each of the user's own architectures is first named."""

    def architecture(self, at: Location, name: Any) -> str:
        """``name``, which must be a registered architecture or name the user's own builder
        (``package.module:builder``, found with the sweep file's folder first on the import path)."""
        if isinstance(name, str) and architectures.is_reference(name):
            try:
                architectures.get(name)
            except ValueError as exc:
                raise self.document.fail(at, f"{name}: {exc}") from None
            self.named.setdefault(name, at)
            return name
        if not isinstance(name, str) or name not in architectures.REGISTRY:
            raise self.document.fail(
                at,
                f"unknown architecture {name!r}"
                + suggest(str(name), architectures.REGISTRY)
                + f" (known: {', '.join(sorted(architectures.REGISTRY))})",
            )
        return name

    def params(self, mapping: Any, used: list[str]) -> dict[str, Any]:
        """The fixed ``params``, each valid for every one of the ``used`` architectures."""
        if mapping is None:
            return {}
        if not isinstance(mapping, dict):
            raise self.document.fail(("params",), "must be a mapping of parameter names to values")
        return {
            name: self.value(("params", name), value, self.accepted(("params", name), name, used))
            for name, value in mapping.items()
        }

    def grid_parts(self, grid: Any, default: str | None) -> list[GridPart]:
        """Each part of the grid with the architectures it trains (its own list, or ``default``)."""
        parts = grid if isinstance(grid, list) else [grid]
        if not parts:
            raise self.document.fail(("grid",), "the grid is empty")
        checked = []
        for index, part in enumerate(parts):
            at: Location = ("grid", index) if isinstance(grid, list) else ("grid",)
            if not isinstance(part, dict):
                raise self.document.fail(at, "must be a mapping of parameter names to lists of values")
            if not part:
                raise self.document.fail(at, "the grid is empty")
            names = part.get("architecture")
            if "architecture" not in part:
                if default is None:
                    raise self.document.fail(at, "no architecture: set 'architecture' at the top or in this grid part")
                used = [default]
            else:
                if not isinstance(names, list) or not names:
                    raise self.document.fail((*at, "architecture"), "must be a non-empty list of architecture names")
                used = [self.architecture((*at, "architecture", i), n) for i, n in enumerate(names)]
            checked.append((at, used, part))
        return checked

    def grid_part(self, part: GridPart, fixed: dict[str, Any]) -> dict[str, list[Any]]:
        """A grid part's lists of checked values; a param may not be both ``fixed`` and gridded."""
        at, used, mapping = part
        resolved: dict[str, list[Any]] = {}
        for name, values in mapping.items():
            if name == "architecture":
                resolved[name] = list(values)
                continue
            param = self.accepted((*at, name), name, used)
            if isinstance(values, dict):
                raise self.document.fail(
                    (*at, name),
                    "a distribution needs search strategy random or sobol (or halving with sample random or "
                    "sobol); a grid takes a list of values",
                )
            resolved[name] = self.choices((*at, name), name, values, param, fixed)
        return resolved

    def choices(self, at: Location, name: str, values: Any, param: Param, fixed: dict[str, Any]) -> list[Any]:
        """The checked list of values of gridded param ``name`` (at ``at``), which is not ``fixed`` too."""
        if name in fixed:
            raise self.document.fail(at, "set both in params and in grid; keep one")
        if not isinstance(values, list):
            raise self.document.fail(at, f"must be a list of values, e.g. [{values!r}]")
        if not values:
            raise self.document.fail(at, "empty list of values: the grid is empty")
        return [self.value((*at, i), v, param) for i, v in enumerate(values)]

    def space(self, parts: list[GridPart], fixed: dict[str, Any], strategy: str) -> dict[str, Dimension]:
        """The one grid mapping of a search that draws or asks for its points, as dimensions: a checked
        distribution or list of checked choices per gridded name."""
        if len(parts) != 1:
            raise self.document.fail(
                ("grid",), f"{strategy} search draws from one grid mapping, not a list of {len(parts)} parts"
            )
        at, used, mapping = parts[0]
        space: dict[str, Dimension] = {}
        for name, values in mapping.items():
            if name == "architecture":
                space[name] = list(values)
                continue
            param = self.accepted((*at, name), name, used)
            if isinstance(values, dict):
                if name in fixed:
                    raise self.document.fail((*at, name), "set both in params and in grid; keep one")
                space[name] = self.distribution((*at, name), values, param)
            else:
                space[name] = self.choices((*at, name), name, values, param, fixed)
        return space

    def sampled_grid(
        self, parts: list[GridPart], fixed: dict[str, Any], space: dict[str, Dimension], search: Search
    ) -> list[dict[str, list[Any]]]:
        """The points a random or sobol ``search`` draws from ``space`` (the one grid mapping's dimensions),
        each a single-point grid part of checked values, in drawing order."""
        at, used, _ = parts[0]
        params = {name: self.accepted((*at, name), name, used) for name in space if name != "architecture"}
        assert search.trials is not None  # the validator sets it for a sampled search
        points = draw_points(space, search.sample, search.trials, search.seed)
        return [
            {
                name: [value if name == "architecture" else self.value((*at, name), value, params[name])]
                for name, value in point.items()
            }
            for point in points
        ]

    def distribution(self, at: Location, spec: dict, param: Param) -> Distribution:
        """A ``{uniform | loguniform | int: [low, high]}`` of numbers ``param`` admits, low < high."""
        kind = next(iter(spec)) if len(spec) == 1 else None
        if kind not in DISTRIBUTIONS:
            raise self.document.fail(
                at,
                "a distribution is one of {uniform: [low, high]}, {loguniform: [low, high]}, {int: [low, high]}"
                + (suggest(str(kind), DISTRIBUTIONS) if kind is not None else f", got {len(spec)} keys"),
            )
        at = (*at, kind)
        if param.type not in (int, float):
            raise self.document.fail(at, f"only numeric params take a distribution, not {param.type.__name__} ones")
        if param.type is int and kind != "int":
            raise self.document.fail(at, "an integer param takes {int: [low, high]}")
        bounds = spec[kind]
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise self.document.fail(at, f"must be a [low, high] pair of numbers, got {bounds!r}")
        try:
            low, high = (param.coerce(coerce_type(bound, int if kind == "int" else float)) for bound in bounds)
        except ValueError as exc:
            raise self.document.fail(at, str(exc)) from None
        if not low < high:
            raise self.document.fail(at, f"low must be below high, got [{low}, {high}]")
        if kind == "loguniform" and low <= 0:
            raise self.document.fail(at, f"loguniform needs low > 0, got {low}")
        return Distribution(kind, low, high)

    def check_builds(
        self,
        architecture: str,
        default: str | None,
        params: dict[str, Any],
        grid: list[dict],
        dataset: Dataset,
        memory: Memory | None = None,
        largest: dict[str, Any] | None = None,
    ) -> None:
        """Build ``architecture`` (on the meta device, for ``dataset``'s images and classes) once for each distinct
        combination of its own params, to catch bad values, check that each ``init_from`` checkpoint fits it, and
        (given ``memory``) that it fits there with the ``largest`` batch_size. Only its own gridded params (and
        ``init_from``) are combined, so the grid is never expanded."""
        import torch  # here, not above: a sweep is read without torch (e.g. by ``plan``)

        entry = architectures.get(architecture)
        try:
            entry.build  # noqa: B018 -- the user's module imported here, its failure one error at its line
        except Exception as exc:
            at = self.named.get(architecture, ("architecture",))
            raise self.document.fail(at, f"{architecture}: importing it raised {type(exc).__name__}: {exc}") from None
        own, defaults = set(entry.params()), entry.defaults()
        fits = entry.data_params(dataset.shape, len(dataset.classes))
        tried: set[str] = set()
        for part in grid:
            if architecture not in part.get("architecture", [default]):
                continue
            for point in grid_points({k: v for k, v in part.items() if k in own or k == "init_from"}):
                values = {k: v for k, v in {**defaults, **params, **point}.items() if k in own}
                init_from = point.get("init_from", params.get("init_from"))
                signature = json.dumps([values, init_from], sort_keys=True)
                if signature in tried:
                    continue
                tried.add(signature)
                try:
                    with torch.device("meta"):  # shapes only: no memory, however large the values
                        model = entry.build(**values, **fits)
                except (ValueError, TypeError, RuntimeError, NotImplementedError) as exc:
                    where = ("grid",) if set(point) - {"init_from"} else ("params",)
                    raise self.document.fail(where, f"{architecture} cannot be built with {values}: {exc}") from None
                if memory is not None and largest is not None:
                    gridded = bool(set(point) - {"init_from"})
                    self.check_fits(architecture, values, gridded, dataset, memory, largest)
                if is_file_reference(init_from):
                    self.check_fit(architecture, model, init_from, "init_from" in point)

    def check_fits(
        self,
        architecture: str,
        values: dict[str, Any],
        gridded: bool,
        dataset: Dataset,
        memory: Memory,
        largest: dict[str, Any],
    ) -> None:
        """Refuse ``architecture`` built with its own ``values`` for ``dataset`` if training it with the ``largest``
        batch_size and optimizer needs more than ``memory``; the error points at the grid if ``gridded``, else at the
        params."""
        fits = footprint(architecture, values, dataset)
        why = check_memory(fits, largest["batch_size"], largest["optimizer"], memory)
        if why is not None:
            fixed = self.document.data.get("params") or {}
            where = ("grid",) if gridded else ("params", *[name for name in values if name in fixed][:1])
            raise self.document.fail(where, f"{architecture} with {values} {why}")

    def check_fit(self, architecture: str, model: torch.nn.Module, init_from: str, gridded: bool) -> None:
        """Refuse an ``init_from`` checkpoint that fills none of ``model``'s tensors."""
        checkpoint = self.checkpoints[split_reference(init_from)[0]]
        target = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
        if not matching_tensors(target, checkpoint.shapes):
            raise self.document.fail(
                ("grid",) if gridded else ("params", "init_from"),
                f"{checkpoint.path} fits none of the {len(target)} tensors of {architecture} (by name and shape): "
                "a checkpoint of another architecture?",
            )

    def accepted(self, at: Location, name: Any, used: list[str]) -> Param:
        """The definition of param ``name``, which every one of the ``used`` architectures must accept."""
        for architecture in used:
            accepted = accepted_params(architecture)
            if name not in accepted:
                raise self.document.fail(
                    at, f"unknown parameter for architecture {architecture!r}" + suggest(str(name), accepted)
                )
        return accepted_params(used[0])[name]

    def value(self, at: Location, value: Any, param: Param) -> Any:
        """``value`` checked against ``param``; an ``init_from`` is resolved too."""
        try:
            value = param.coerce(value)
        except ValueError as exc:
            raise self.document.fail(at, str(exc)) from None
        return self.init_from(at, value) if "init_from" in at else value

    def init_from(self, at: Location, value: str) -> str:
        """``best:<sweep>``, ``trial:<key>``, or a checkpoint file's reference: its path made absolute, and
        its content's digest (``gridsearch.spec.warm_start``).

        A relative path is read from the sweep file's folder and may not leave it; the file must be a
        PyTorch checkpoint of weights.
        """
        if not value:
            return value
        if value.startswith("trial:"):
            if not re.fullmatch(r"[0-9a-f]{16}", value.removeprefix("trial:")):
                raise self.document.fail(at, f"'trial:' must be followed by a 16-hex-digit trial key, got {value!r}")
            return value
        if value.startswith("best:"):
            if not NAME_PATTERN.fullmatch(value.removeprefix("best:")):
                raise self.document.fail(at, f"'best:' must be followed by a sweep name, got {value!r}")
            return value
        path = Path(value).expanduser()
        if not path.is_absolute():
            folder = self.document.path.parent.resolve()
            path = (folder / path).resolve()
            if not path.is_relative_to(folder):
                raise self.document.fail(
                    at,
                    f"{value!r} leaves the sweep file's folder; give an absolute path "
                    "to load a checkpoint from elsewhere",
                )
        if not path.is_file():
            raise self.document.fail(at, f"no checkpoint file at {path}")
        if path not in self.checkpoints:
            try:
                self.checkpoints[path] = read_checkpoint(path)
            except ValueError as exc:
                raise self.document.fail(at, f"{path}: {exc}") from None
        return self.checkpoints[path].reference
