"""Successive halving and Hyperband over epochs: the rung schedules and which trials are promoted, as pure
functions.

The idea of scikit-learn's ``HalvingGridSearchCV`` with epochs as the resource: every trial trains
``min_epochs`` epochs (rung 0); the best ``1 / factor`` of them continue from their checkpoints to
``min_epochs * factor`` epochs (rung 1), and so on; the last rung trains to the sweep's ``epochs``.
Hyperband (Li et al., 2018) runs several such brackets, each starting more trials at a smaller budget.
Every decision is a function of the recorded epochs alone, so a resumed sweep makes the same ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from gridsearch.spec import pareto
from gridsearch.vocabulary import metric

M = TypeVar("M", bound=Mapping[str, Any])


def rung_epochs(min_epochs: int, factor: int, epochs: int) -> list[int]:
    """The epoch budget of each rung: ``min_epochs * factor ** r`` while below ``epochs``, then ``epochs``.

    >>> rung_epochs(1, 3, 9), rung_epochs(4, 3, 100)
    ([1, 3, 9], [4, 12, 36, 100])
    """
    if not 1 <= min_epochs <= epochs or factor < 2:
        raise ValueError(f"need 1 <= min_epochs <= epochs and factor >= 2, got {min_epochs}, {epochs}, {factor}")
    budgets = []
    budget = min_epochs
    while budget < epochs:
        budgets.append(budget)
        budget *= factor
    return budgets + [epochs]


@dataclass(frozen=True)
class Bracket:
    """One run of successive halving: bracket ``s`` starts ``n`` trials (None: all of them) at
    ``budgets[0]`` epochs; rung ``i`` trains ``sizes[i]`` of them to ``budgets[i]``."""

    s: int
    n: int | None
    budgets: list[int]

    def sizes(self, factor: int, available: int | None = None) -> list[int]:
        """Hyperband: how many trials each rung trains, ``floor(n / factor ** i)``, at most ``available``."""
        assert self.n is not None, "a Hyperband bracket"
        cap = self.n if available is None else min(self.n, available)
        return [min(cap, self.n // factor**i) for i in range(len(self.budgets))]


def hyperband_brackets(min_epochs: int, factor: int, epochs: int) -> list[Bracket]:
    """Hyperband's brackets (Li et al. 2018, Algorithm 1) with ``R = epochs``, ``eta = factor`` and the
    smallest budget ``min_epochs``, in the paper's order (most trials first): ``s_max`` is the largest ``s``
    with ``min_epochs * factor ** s <= epochs``; bracket ``s`` starts ``n = ceil((s_max + 1) / (s + 1) *
    factor ** s)`` trials at ``r = epochs / factor ** s`` epochs (rounded down), and its rung ``i`` trains
    ``floor(n / factor ** i)`` of them to ``r * factor ** i``.

    >>> [(b.s, b.n, b.budgets) for b in hyperband_brackets(1, 3, 9)]
    [(2, 9, [1, 3, 9]), (1, 5, [3, 9]), (0, 3, [9])]
    """
    if not 1 <= min_epochs <= epochs or factor < 2:
        raise ValueError(f"need 1 <= min_epochs <= epochs and factor >= 2, got {min_epochs}, {epochs}, {factor}")
    s_max = 0
    while min_epochs * factor ** (s_max + 1) <= epochs:
        s_max += 1
    return [
        Bracket(
            s,
            -(-(s_max + 1) * factor**s // (s + 1)),
            [epochs * factor**i // factor**s for i in range(s + 1)],
        )
        for s in range(s_max, -1, -1)
    ]


def promoted_count(candidates: int, factor: int) -> int:
    """How many of a rung's ``candidates`` go on to the next rung: ``ceil(candidates / factor)``."""
    return math.ceil(candidates / factor)


def rung_sizes(trials: int, factor: int, rungs: int) -> list[int]:
    """How many trials each of ``rungs`` rungs trains at most (fewer if some fail)."""
    sizes = [trials]
    for _ in range(rungs - 1):
        sizes.append(promoted_count(sizes[-1], factor))
    return sizes


def planned_epochs(trials: int, factor: int, budgets: Sequence[int]) -> list[int]:
    """Epochs each rung trains at most (early stopping and failures make it fewer): every trial of
    rung ``r`` goes from ``budgets[r - 1]`` to ``budgets[r]`` epochs."""
    sizes = rung_sizes(trials, factor, len(budgets))
    return [size * (budget - previous) for size, budget, previous in zip(sizes, budgets, [0, *budgets])]


@dataclass(frozen=True)
class Standing:
    """A trial's result in a rung: its select metric and val loss at its best epoch within the rung's
    budget; ``score`` None when it cannot be promoted (it failed, or has no epoch). With several objectives,
    ``values``: its value of each (None when one is missing)."""

    key: str
    score: float | None
    val_loss: float | None
    values: tuple[float, ...] | None = None


def best_epoch(epochs: Iterable[M], select: str, budget: int | None = None) -> M | None:
    """The best of the epochs (numbered below ``budget``, if given) by metric ``select``, the first of
    equals: the epoch whose weights training keeps as ``best.pt``. None if there is none."""
    better = metric(select).better
    best = None
    for metrics in sorted(epochs, key=lambda m: m["epoch"]):
        if (budget is None or metrics["epoch"] < budget) and (best is None or better(metrics[select], best[select])):
            best = metrics
    return best


def standing(key: str, epochs: Iterable[Mapping[str, Any]], budget: int, select: str, failed: bool = False) -> Standing:
    """The standing of trial ``key`` in a rung of ``budget`` epochs, from its recorded ``epochs``."""
    best = None if failed else best_epoch(epochs, select, budget)
    if best is None:
        return Standing(key, None, None)
    return Standing(key, best[select], best["val_loss"])


def promote(standings: Sequence[Standing], factor: int, select: str, keep: int | None = None) -> list[str]:
    """Keys of the best ``keep`` (default ``ceil(len(standings) / factor)``) trials by ``select``, best
    first; ties go to the lower val loss, then to the earlier standing (grid order). Trials without a score
    are never promoted, so fewer go on when some failed."""
    rank = metric(select).rank
    scored = [(s.key, s.score, s.val_loss) for s in standings if s.score is not None]
    ranked = sorted(scored, key=lambda s: (rank(s[1]), s[2]))
    count = promoted_count(len(standings), factor) if keep is None else keep
    return [key for key, _, _ in ranked[:count]]


def promote_by_front(
    standings: Sequence[Standing], factor: int, objectives: Sequence[pareto.Objective], keep: int | None = None
) -> list[str]:
    """Several objectives (MO-ASHA): keys of the first ``keep`` (default ``ceil(len(standings) / factor)``) trials
    by non-dominated rank of their ``values``, then crowding distance within the rank, then key. Trials without
    values are never promoted."""
    scored = [s for s in standings if s.values is not None]
    count = promoted_count(len(standings), factor) if keep is None else keep
    points = pareto.losses([s.values for s in scored if s.values is not None], objectives)
    return pareto.promotion_order([s.key for s in scored], points, count)[:count]
