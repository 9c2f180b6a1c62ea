"""Selection: the best finished trial by the sweep's metric, or the best configuration by the mean of its
seeds' scores (``select: {metric: ..., over_seeds: mean}``), tested once on the test set."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from statistics import fmean

from gridsearch.spec.config import TrialConfig
from gridsearch.store.models import TrialRow
from gridsearch.store.records import Evaluation
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import TrialStatus, metric


def select_best(
    rows: Sequence[TrialRow], select: str, statuses: Collection[TrialStatus] = (TrialStatus.DONE,)
) -> TrialRow | None:
    """The done trial (of ``statuses``) with the best ``select`` score; ties go to the lower val loss, then grid
    order."""
    done = [row for row in rows if row.status in statuses and getattr(row, select) is not None]
    if not done:
        return None
    chosen = metric(select)
    return min(done, key=lambda row: (chosen.rank(getattr(row, select)), row.val_loss))


def configuration(config: TrialConfig) -> str:
    """A trial's configuration (its grid point): the canonical JSON of its config without the seed."""
    return json.dumps({name: value for name, value in config.items() if name != "seed"}, sort_keys=True)


def configurations(rows: Sequence[TrialRow]) -> list[list[TrialRow]]:
    """``rows`` grouped by configuration, in order of first appearance, each group in row order."""
    groups: dict[str, list[TrialRow]] = {}
    for row in rows:
        groups.setdefault(configuration(row.config), []).append(row)
    return list(groups.values())


def seeds_of(rows: Sequence[TrialRow], key: str) -> list[TrialRow]:
    """The trials of ``rows`` that share trial ``key``'s configuration (``key`` itself included)."""
    return next((group for group in configurations(rows) if key in {row.key for row in group}), [])


def select_configuration(rows: Sequence[TrialRow], select: str) -> list[TrialRow] | None:
    """The trials of the configuration with the best mean ``select`` score over its seeds; ties go to the
    lower mean val loss, then grid order. Only configurations whose every trial is done take part."""
    chosen = metric(select)
    groups = configurations(rows)
    scored = [
        (chosen.rank(fmean(getattr(row, select) for row in group)), fmean(row.val_loss or 0.0 for row in group), index)
        for index, group in enumerate(groups)
        if all(row.status == TrialStatus.DONE and getattr(row, select) is not None for row in group)
    ]
    return groups[min(scored)[2]] if scored else None


@dataclass(frozen=True)
class Selection:
    """The best finalist (None if no trial finished) and whether its test evaluation is stored; with
    ``over_seeds``, ``tested`` is whether every seed of its configuration is tested."""

    best: str | None
    tested: bool


def select_and_test(
    storage: Storage,
    sweep: str,
    select: str,
    finalists: Sequence[str],
    test_size: int,
    evaluate: Callable[[str], Evaluation | None],
    over_seeds: str | None = None,
) -> Selection:
    """Select the best of ``finalists`` and have it evaluated on ``test_size`` test images, once: an
    evaluation of that size already stored is kept. With ``over_seeds`` (``mean``), select the
    configuration with the best mean over its seeds, test every one of its seeds, and take its best seed
    (by ``select``) as the sweep's selected trial. The selected trial is set only once all are tested."""
    finalist = set(finalists)
    rows = [row for row in storage.trials(sweep) if row.key in finalist]
    if over_seeds:
        tested = select_configuration(rows, select) or []
        best = select_best(tested, select)
    else:
        best = select_best(rows, select)
        tested = [best] if best else []
    if best is None:
        storage.set_selected(sweep, None)
        return Selection(None, tested=False)
    if not evaluate_once(storage, tested, test_size, evaluate):
        return Selection(best.key, tested=False)
    storage.set_selected(sweep, best.key)
    return Selection(best.key, tested=True)


def evaluate_once(
    storage: Storage, rows: Sequence[TrialRow], test_size: int, evaluate: Callable[[str], Evaluation | None]
) -> bool:
    """Have each of ``rows`` evaluated on ``test_size`` test images, unless an evaluation of that size is stored;
    whether all are (False at the first whose evaluation failed)."""
    for row in rows:
        previous = storage.evaluation(row.key, "test")
        if previous is None or previous.samples != test_size:
            result = evaluate(row.key)
            if result is None:
                return False
            storage.save_evaluation(row.key, "test", result)
    return True
