"""Search strategies: which trials to train next, and how far.

Modelled on scikit-learn's ``BaseSearchCV._run_search(evaluate_candidates)``: a strategy is handed a
function that trains a list of trials (to an epoch budget, or to their end) and returns where each
stands; it calls it as often as it likes and returns the finalists, among which the coordinator
selects the best. Adding a strategy means writing one ``_run_search``.

Random and sobol search need none of their own: the sweep file's points are drawn when it is read
(``gridsearch.spec.sampling``), so they are the grid strategy (or halving, with ``sample``) over them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gridsearch.spec import halving
from gridsearch.spec.sweep import Sweep

EvaluateCandidates = Callable[[Sequence[str], int | None], list[halving.Standing]]
"""Train these trials to this many epochs (None: to their end); their standings within that budget."""
RungStarted = Callable[[int, int, int, Sequence[str]], None]
"""Called with (rung, rungs, budget, trials) as a successive-halving rung starts."""


class SearchStrategy:
    """Decides which of a sweep's trials train, to how many epochs, and which are finalists."""

    def search(self, keys: Sequence[str], evaluate_candidates: EvaluateCandidates) -> list[str]:
        """Run the search over ``keys`` (grid order); the finalists."""
        return self._run_search(list(keys), evaluate_candidates)

    def _run_search(self, keys: list[str], evaluate_candidates: EvaluateCandidates) -> list[str]:
        raise NotImplementedError


class GridSearch(SearchStrategy):
    """Every trial to its end; all are finalists. Also random and sobol search, over their drawn points."""

    def _run_search(self, keys: list[str], evaluate_candidates: EvaluateCandidates) -> list[str]:
        evaluate_candidates(keys, None)
        return keys


class HalvingSearch(SearchStrategy):
    """Successive halving over epochs: each rung trains its trials to the rung's budget, the best
    ``1 / factor`` go on (see ``gridsearch.spec.halving``); the last rung's trials are the finalists."""

    def __init__(
        self, budgets: list[int], factor: int, select: str, rung_started: RungStarted, message: Callable[[str], None]
    ):
        self.budgets = budgets
        self.factor = factor
        self.select = select
        self.rung_started = rung_started
        self.message = message

    def _run_search(self, keys: list[str], evaluate_candidates: EvaluateCandidates) -> list[str]:
        candidates = keys
        for rung, budget in enumerate(self.budgets):
            last = rung == len(self.budgets) - 1
            self.rung_started(rung, len(self.budgets), budget, candidates)
            standings = evaluate_candidates(candidates, None if last else budget)
            if last:
                break
            promoted = set(halving.promote(standings, self.factor, self.select))
            self.message(
                f"rung {rung} done: the best {len(promoted)} of {len(candidates)} trials go on "
                f"to {self.budgets[rung + 1]} epochs"
            )
            candidates = [key for key in keys if key in promoted]
        return candidates


def strategy_for(sweep: Sweep, rung_started: RungStarted, message: Callable[[str], None]) -> SearchStrategy:
    """The strategy of ``sweep``'s ``search:``: halving (whatever its ``sample``), else every trial to its end."""
    if sweep.rung_epochs is None:
        return GridSearch()
    return HalvingSearch(sweep.rung_epochs, sweep.search.factor, sweep.select, rung_started, message)
