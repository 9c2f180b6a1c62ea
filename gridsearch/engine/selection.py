"""Selection: the best finished trial by the sweep's metric, tested once on the test set."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gridsearch.store.models import TrialRow
from gridsearch.store.records import Evaluation
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import TrialStatus, metric


def select_best(rows: Sequence[TrialRow], select: str) -> TrialRow | None:
    """The done trial with the best ``select`` score; ties go to the lower val loss, then grid order."""
    done = [row for row in rows if row.status == TrialStatus.DONE and getattr(row, select) is not None]
    if not done:
        return None
    chosen = metric(select)
    return min(done, key=lambda row: (chosen.rank(getattr(row, select)), row.val_loss))


@dataclass(frozen=True)
class Selection:
    """The best finalist (None if no trial finished) and whether its test evaluation is stored."""

    best: str | None
    tested: bool


def select_and_test(
    storage: Storage,
    sweep: str,
    select: str,
    finalists: Sequence[str],
    test_size: int,
    evaluate: Callable[[str], Evaluation | None],
) -> Selection:
    """Select the best of ``finalists`` and have it evaluated on ``test_size`` test images, once: an
    evaluation of that size already stored is kept. The sweep's selected trial is set only once tested."""
    finalist = set(finalists)
    best = select_best([row for row in storage.trials(sweep) if row.key in finalist], select)
    if best is None:
        storage.set_selected(sweep, None)
        return Selection(None, tested=False)
    previous = storage.evaluation(best.key, "test")
    if previous is None or previous.samples != test_size:
        result = evaluate(best.key)
        if result is None:
            return Selection(best.key, tested=False)
        storage.save_evaluation(best.key, "test", result)
    storage.set_selected(sweep, best.key)
    return Selection(best.key, tested=True)
