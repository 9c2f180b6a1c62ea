"""Search strategies: which trials to train next, and how far, from the results so far (ask and tell).

Modelled on scikit-learn's ``BaseSearchCV._run_search(evaluate_candidates)``: a strategy is handed a
function that trains a batch of trials (to an epoch budget, or to their end) and returns where each
stands (``evaluate_candidates``: the ask is its argument, the tell its result); it calls it as often as
it likes, choosing each batch from the standings of the earlier ones, and returns the finalists, among
which the coordinator selects the best. Every choice is a function of the sweep file and of recorded
results alone, taken in a fixed order, so a resumed run (or one with more workers) makes the same ones.

Adding a strategy: a class here with ``_run_search``, named in :data:`STRATEGY_CLASSES`, and its entry in
``gridsearch.spec.search.STRATEGIES`` (the keys it takes, how it is said in words).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gridsearch.spec import halving
from gridsearch.spec.sampling import Distribution
from gridsearch.spec.sweep import Sweep, Trial
from gridsearch.vocabulary import metric

if TYPE_CHECKING:
    import optuna

STARTUP_TRIALS = 10
"""Optuna's default number of random points before TPE or GP model the results."""
EvaluateCandidates = Callable[[Sequence[Trial], int | None], list[halving.Standing]]
"""Train these trials to this many epochs (None: to their end); their standings within that budget."""


class SearchCallbacks:
    """What a strategy tells the run as it goes; each does nothing unless overridden (the coordinator's
    progress display and store listen)."""

    def rung_started(self, rung: int, rungs: int, budget: int, keys: Sequence[str]) -> None:
        """A rung of successive halving (``rung`` of ``rungs``, indexing the search's ``rung_epochs``) starts
        training ``keys`` to ``budget`` epochs."""

    def message(self, text: str) -> None:
        """One line for the user."""


class SearchStrategy:
    """Decides which trials of ``sweep`` train, to how many epochs, and which are finalists."""

    def __init__(self, sweep: Sweep, callbacks: SearchCallbacks | None = None):
        self.sweep = sweep
        self.callbacks = callbacks or SearchCallbacks()

    def candidates(self) -> list[Trial]:
        """The trials known before anything trains (grid order; none for a strategy that asks)."""
        return list(self.sweep.trials())

    def first_batch(self) -> list[Trial]:
        """The trials of its first call of ``evaluate_candidates`` (what ``plan`` can show)."""
        return self.candidates()

    def search(self, evaluate_candidates: EvaluateCandidates) -> list[str]:
        """Run the search; the keys of the finalists."""
        return self._run_search(evaluate_candidates)

    def _run_search(self, evaluate_candidates: EvaluateCandidates) -> list[str]:
        raise NotImplementedError


class GridSearch(SearchStrategy):
    """Every trial to its end; all are finalists. Also random and sobol search, over their drawn points."""

    def _run_search(self, evaluate_candidates: EvaluateCandidates) -> list[str]:
        trials = self.candidates()
        evaluate_candidates(trials, None)
        return unique_keys(trials)


class HalvingSearch(SearchStrategy):
    """Successive halving over epochs: each rung trains its trials to the rung's budget, the best
    ``1 / factor`` go on (see ``gridsearch.spec.halving``); the last rung's trials are the finalists."""

    def _run_search(self, evaluate_candidates: EvaluateCandidates) -> list[str]:
        budgets = self.sweep.rung_epochs
        assert budgets is not None
        return self.halve(self.candidates(), budgets, None, evaluate_candidates)

    def halve(
        self, trials: list[Trial], budgets: list[int], sizes: list[int] | None, evaluate_candidates: EvaluateCandidates
    ) -> list[str]:
        """Successive halving of ``trials`` over ``budgets``: rung ``i`` keeps ``sizes[i]`` of them (None:
        ``ceil`` of the rung before over ``factor``); the keys of the last rung's trials."""
        search, rungs = self.sweep.search, self.sweep.rung_epochs or []
        candidates = trials
        for rung, (budget, following) in enumerate(itertools.pairwise(budgets)):
            keys = unique_keys(candidates)
            self.callbacks.rung_started(rungs.index(budget), len(rungs), budget, keys)
            standings = evaluate_candidates(candidates, budget)
            keep = None if sizes is None else sizes[rung + 1]
            if self.sweep.objectives:
                promoted = set(halving.promote_by_front(standings, search.factor, self.sweep.objectives, keep))
            else:
                promoted = set(halving.promote(standings, search.factor, self.sweep.select, keep))
            self.callbacks.message(
                f"rung {rung} done: the best {len(promoted)} of {len(keys)} trials go on to {following} epochs"
            )
            candidates = [trial for trial in candidates if trial.key in promoted]
        self.callbacks.rung_started(rungs.index(budgets[-1]), len(rungs), budgets[-1], unique_keys(candidates))
        evaluate_candidates(candidates, None)  # the last rung trains its trials to their end
        return unique_keys(candidates)


class HyperbandSearch(HalvingSearch):
    """Hyperband (Li et al. 2018): successive halving in each of its brackets in turn, the bracket with the
    most trials first. Bracket ``s`` starts ``n`` of the sweep's points (a permutation of them seeded by
    ``(seed, s)``, kept in grid order); a point shared by brackets is one trial, trained once: a later
    bracket reads what an earlier one trained. The finalists are every bracket's last rung."""

    def _run_search(self, evaluate_candidates: EvaluateCandidates) -> list[str]:
        search, trials = self.sweep.search, self.candidates()
        keys = unique_keys(trials)
        finalists: list[str] = []
        for bracket in search.brackets:
            assert bracket.n is not None
            chosen = set(np.random.default_rng([search.seed, bracket.s]).permutation(len(keys))[: bracket.n].tolist())
            points = {key for index, key in enumerate(keys) if index in chosen}
            sizes = bracket.sizes(search.factor, len(points))
            self.callbacks.message(
                f"bracket s={bracket.s}: {len(points)} trials from {bracket.budgets[0]} epochs, rungs of {sizes} trials"
            )
            bracket_trials = [trial for trial in trials if trial.key in points]
            finalists += self.halve(bracket_trials, bracket.budgets, sizes, evaluate_candidates)
        return list(dict.fromkeys(finalists))


@dataclass(frozen=True)
class Told:
    """A point proposed earlier, as the next batch's sampler is told it: its values (its ``select`` score, or with
    several objectives its value of each; the mean over its seeds; None if one failed) and the bookkeeping the
    sampler kept on it when it was proposed (``kept_attrs``)."""

    point: dict[str, Any]
    values: tuple[float, ...] | None
    attrs: dict[str, Any]


class OptunaSearch(SearchStrategy):
    """A model-based search through one of Optuna's samplers, used only to propose points (ask and tell).

    ``trials`` points are proposed in batches of ``batch``: batch ``b`` comes from a fresh in-memory study
    fed every earlier point with its score (the mean of its seeds' ``select``, or of their value of each
    objective; failed if any failed), in key order, and a sampler seeded from ``(seed, b)``. So the same file
    proposes the same points whatever the workers, the executor or an interruption. Proposed numbers are rounded as
    random draws are (4 significant digits, within the bounds); a point proposed twice is one trial. All points
    are finalists.
    """

    @property
    def startup(self) -> int:
        """Random points before the sampler models anything: Optuna's default of 10, but at most a quarter of
        ``trials`` (at least 2), so a small budget is not all random."""
        assert self.sweep.search.trials is not None
        return max(2, min(STARTUP_TRIALS, self.sweep.search.trials // 4))

    def candidates(self) -> list[Trial]:
        return []

    def first_batch(self) -> list[Trial]:
        assert self.sweep.search.batch is not None
        proposed = self.ask(0, self.sweep.search.batch, {})
        return [trial for point, _ in proposed for trial in self.sweep.point_trials(point)]

    def _run_search(self, evaluate_candidates: EvaluateCandidates) -> list[str]:
        search = self.sweep.search
        assert search.trials is not None and search.batch is not None
        told: dict[str, Told] = {}
        keys: list[str] = []
        for batch, start in enumerate(range(0, search.trials, search.batch)):
            proposed = self.ask(batch, min(search.batch, search.trials - start), told)
            trials = [trial for point, _ in proposed for trial in self.sweep.point_trials(point)]
            self.callbacks.message(
                f"{search.strategy} batch {batch + 1} of {-(-search.trials // search.batch)}: {len(proposed)} points"
            )
            standings = {standing.key: standing for standing in evaluate_candidates(trials, None)}
            for point, attrs in proposed:
                seeds = self.sweep.point_trials(point)
                told[seeds[0].key] = Told(point, self.mean_values([standings[t.key] for t in seeds]), attrs)
            keys += unique_keys(trials)
        return list(dict.fromkeys(keys))

    def mean_values(self, standings: Sequence[halving.Standing]) -> tuple[float, ...] | None:
        """A point's values from its seeds' standings: the mean of each; None if a seed has none."""
        if self.sweep.objectives:
            values = [standing.values for standing in standings]
        else:
            values = [None if standing.score is None else (standing.score,) for standing in standings]
        known = [value for value in values if value is not None]
        if len(known) < len(values):
            return None
        return tuple(float(mean) for mean in np.mean(known, axis=0))

    def ask(self, batch: int, count: int, told: dict[str, Told]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """``count`` points proposed by a sampler seeded from ``(seed, batch)``, given the ``told`` points (by
        first seed's key), fed in key order; each with the sampler's bookkeeping on it (``kept_attrs``)."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        distributions = {name: _distribution(dimension) for name, dimension in self.sweep.space.items()}
        seed = int(np.random.SeedSequence([self.sweep.search.seed, batch]).generate_state(1)[0])
        directions: list[str] = [objective.direction for objective in self.sweep.objectives]
        directions = directions or [metric(self.sweep.select).direction]
        study = optuna.create_study(
            directions=["minimize" if d == "min" else "maximize" for d in directions], sampler=self.sampler(seed)
        )
        for key in sorted(told):
            entry = told[key]
            params = {name: _encode(self.sweep.space[name], value) for name, value in entry.point.items()}
            state = optuna.trial.TrialState.COMPLETE if entry.values is not None else optuna.trial.TrialState.FAIL
            study.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions=distributions,
                    values=None if entry.values is None else list(entry.values),
                    state=state,
                    system_attrs=entry.attrs,
                )
            )
        proposed = []
        for _ in range(count):
            asked = study.ask(distributions)
            point = {name: _decode(self.sweep.space[name], asked.params[name]) for name in self.sweep.space}
            proposed.append((point, self.kept_attrs(study.trials[asked.number].system_attrs)))
        return proposed

    def kept_attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """What of the sampler's bookkeeping on a proposed trial it is told again with it (none by default)."""
        return {}

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        raise NotImplementedError


class TPESearch(OptunaSearch):
    """Tree-structured Parzen estimators (Optuna's ``TPESampler``; its random start-up points first)."""

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.startup)


class NSGA2Search(OptunaSearch):
    """NSGA-II (Optuna's ``NSGAIISampler``): generations of ``population`` points, the first drawn at random, each
    next one bred from the best of the ones before by non-dominated rank and crowding distance. Each point is told
    again with the generation the sampler gave it when it proposed it."""

    def kept_attrs(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {name: value for name, value in attrs.items() if name.endswith(":generation")}

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        assert self.sweep.search.population is not None
        return optuna.samplers.NSGAIISampler(population_size=self.sweep.search.population, seed=seed)


class GPSearch(OptunaSearch):
    """Bayesian optimisation with a Gaussian process (Optuna's ``GPSampler``; its random start-up points first)."""

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        import optuna

        with warnings.catch_warnings():  # experimental in some Optuna versions
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=self.startup)


STRATEGY_CLASSES: dict[str, type[SearchStrategy]] = {
    "grid": GridSearch,
    "random": GridSearch,
    "sobol": GridSearch,
    "halving": HalvingSearch,
    "hyperband": HyperbandSearch,
    "tpe": TPESearch,
    "nsga2": NSGA2Search,
    "gp": GPSearch,
}
"""The engine's class of each strategy of ``gridsearch.spec.search.STRATEGIES``."""


def strategy_for(sweep: Sweep, callbacks: SearchCallbacks | None = None) -> SearchStrategy:
    """The strategy of ``sweep``'s ``search:``."""
    return STRATEGY_CLASSES[sweep.search.strategy](sweep, callbacks)


def unique_keys(trials: Sequence[Trial]) -> list[str]:
    """The keys of ``trials`` in order, each once."""
    return list(dict.fromkeys(trial.key for trial in trials))


def _distribution(dimension: Distribution | list[Any]) -> optuna.distributions.BaseDistribution:
    """Optuna's distribution for a dimension: a list of choices by index (values may be lists)."""
    import optuna

    if isinstance(dimension, list):
        return optuna.distributions.CategoricalDistribution(list(range(len(dimension))))
    if dimension.kind == "int":
        return optuna.distributions.IntDistribution(int(dimension.low), int(dimension.high))
    return optuna.distributions.FloatDistribution(dimension.low, dimension.high, log=dimension.kind == "loguniform")


def _encode(dimension: Distribution | list[Any], value: Any) -> Any:
    return dimension.index(value) if isinstance(dimension, list) else value


def _decode(dimension: Distribution | list[Any], value: Any) -> Any:
    if isinstance(dimension, list):
        return dimension[value]
    return dimension.rounded(value)
