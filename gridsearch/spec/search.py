"""How a sweep searches: the table of search strategies, and a sweep's typed search description.

Every strategy a sweep file may name has one entry in :data:`STRATEGIES` (the keys it takes, whether it
trains trials to epoch budgets, whether it asks for points from the results so far, and how it is said in
words); the engine's ``gridsearch.engine.strategies`` has its code. A :class:`Search` is what a sweep file's
``search:`` says, typed: the database stores its :meth:`~Search.record`, and the analysis, the store's views
and the report rebuild it with :meth:`Search.from_record` and ask it (``describes_rungs``, ``rung_epochs``,
``label``) instead of reading keys. Adding a strategy means an entry here and a class in the engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from gridsearch.spec import halving

SAMPLES = ("grid", "random", "sobol")
"""Where a strategy's points come from: every grid point, or ``trials`` points drawn at random or by sobol."""


@dataclass(frozen=True)
class StrategyKind:
    """One search strategy as sweep files name it."""

    name: str
    keys: tuple[str, ...]
    """The ``search:`` keys it takes besides ``strategy``."""
    words: str
    """How a report says it, formatted with the :class:`Search`'s fields and ``rungs`` (the rung budgets)."""
    rungs: bool = False
    """It trains trials to epoch budgets (one ``epochs`` for every trial) and promotes the best."""
    asks: bool = False
    """It proposes each batch of points from the results of the earlier ones (its points are not known
    when the file is read): ``trials`` points in batches of ``batch`` from the grid mapping's space."""
    draws: bool = False
    """Its points are ``trials`` drawn from the space when the file is read (its name is the sampler)."""


STRATEGIES: dict[str, StrategyKind] = {
    kind.name: kind
    for kind in (
        StrategyKind("grid", (), "full grid"),
        StrategyKind("random", ("trials", "seed"), "random draws of {trials} points (seed {seed})", draws=True),
        StrategyKind("sobol", ("trials", "seed"), "sobol draws of {trials} points (seed {seed})", draws=True),
        StrategyKind(
            "halving",
            ("factor", "min_epochs", "sample", "trials", "seed"),
            "successive halving (factor {factor}; rungs of {rungs} epochs)",
            rungs=True,
        ),
        StrategyKind(
            "hyperband",
            ("factor", "min_epochs", "sample", "trials", "seed"),
            "hyperband (factor {factor}; {brackets} brackets; budgets of {rungs} epochs; seed {seed})",
            rungs=True,
        ),
        StrategyKind(
            "tpe",
            ("trials", "batch", "seed"),
            "TPE (Optuna's sampler): {trials} points in batches of {batch} (seed {seed})",
            asks=True,
        ),
        StrategyKind(
            "nsga2",
            ("trials", "batch", "seed", "population"),
            "NSGA-II (Optuna's sampler): {trials} points in batches of {batch}, generations of {population} "
            "(seed {seed})",
            asks=True,
        ),
        StrategyKind(
            "gp",
            ("trials", "batch", "seed"),
            "Gaussian process (Optuna's sampler): {trials} points in batches of {batch} (seed {seed})",
            asks=True,
        ),
    )
}


@dataclass(frozen=True)
class Search:
    """A sweep's ``search:``, validated: the strategy and its settings.

    ``sample``: where the points come from (every grid point, or ``trials`` drawn from ``seed``);
    ``factor`` and ``min_epochs``: the rungs of halving and hyperband; ``trials`` and ``batch``: the points
    an asking strategy proposes in all and per batch; ``population``: nsga2's generation size; ``epochs``: every
    trial's epochs, for the rungs.
    """

    strategy: str = "grid"
    factor: int = 3
    min_epochs: int = 1
    sample: str = "grid"
    trials: int | None = None
    seed: int = 0
    batch: int | None = None
    epochs: int | None = None
    population: int | None = None

    @property
    def kind(self) -> StrategyKind:
        return STRATEGIES[self.strategy]

    @property
    def describes_rungs(self) -> bool:
        """Whether its trials train to epoch budgets (rungs), so that all are compared at the first one."""
        return self.kind.rungs

    @property
    def asks(self) -> bool:
        return self.kind.asks

    @property
    def brackets(self) -> list[halving.Bracket]:
        """Hyperband's brackets (one, the whole of successive halving, for ``halving``); none otherwise."""
        if not self.describes_rungs:
            return []
        assert self.epochs is not None, "a search with rungs knows its epochs"
        if self.strategy == "hyperband":
            return halving.hyperband_brackets(self.min_epochs, self.factor, self.epochs)
        budgets = halving.rung_epochs(self.min_epochs, self.factor, self.epochs)
        return [halving.Bracket(len(budgets) - 1, None, budgets)]

    @property
    def rung_epochs(self) -> list[int] | None:
        """Every epoch budget its rungs train to, ascending (a trial's ``rung`` indexes it); None without rungs."""
        if not self.describes_rungs:
            return None
        return sorted({budget for bracket in self.brackets for budget in bracket.budgets})

    @property
    def first_budget(self) -> int | None:
        """The epochs every trial of a search with rungs trained (the first rung's); None without rungs."""
        budgets = self.rung_epochs
        return budgets[0] if budgets else None

    @property
    def label(self) -> str:
        """The search in words, as the report says it."""
        rungs = ", ".join(str(budget) for budget in self.rung_epochs or [])
        words = self.kind.words.format(**self._fields(), rungs=rungs, brackets=len(self.brackets))
        if self.describes_rungs and self.sample != "grid":
            return f"{words} over {self.sample} draws of {self.trials} points (seed {self.seed})"
        return words

    def record(self) -> dict[str, Any]:
        """What the database records of the search (``SweepRow.search``): the strategy and the keys it uses,
        with a search with rungs' budgets (``rung_epochs``) and hyperband's ``epochs``."""
        record: dict[str, Any] = {"strategy": self.strategy}
        if self.describes_rungs:
            record.update(factor=self.factor, min_epochs=self.min_epochs, rung_epochs=self.rung_epochs)
            if self.strategy == "hyperband":
                record.update(epochs=self.epochs, seed=self.seed)
        if self.sample != "grid":
            if self.describes_rungs:
                record["sample"] = self.sample
            record.update(trials=self.trials, seed=self.seed)
        if self.asks:
            record.update(trials=self.trials, batch=self.batch, seed=self.seed)
        if self.population is not None:
            record["population"] = self.population
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Search:
        """The search a database ``record`` describes (older records included: halving's ``epochs`` is its
        last rung's budget)."""
        known = {field.name for field in fields(cls)}
        values = {name: value for name, value in record.items() if name in known}
        if record.get("rung_epochs") and "epochs" not in values:
            values["epochs"] = record["rung_epochs"][-1]
        if STRATEGIES[record["strategy"]].draws:
            values["sample"] = record["strategy"]
        return cls(**values)

    def _fields(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in fields(self)}
