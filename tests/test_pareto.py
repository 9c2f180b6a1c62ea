"""Several objectives, the pure parts: non-dominated sorting and crowding distance against a brute-force enumeration
of their definitions (random point sets full of ties and duplicates) and against Optuna's own; multi-objective
successive halving on a 12-point grid against a table worked out by hand; the selection rules."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest

from gridsearch.engine.strategies import strategy_for
from gridsearch.spec import halving, pareto
from gridsearch.spec.pareto import Objective, Rule
from gridsearch.spec.sweep import load_sweep
from tests.conftest import write_sweep

ACCURACY_PARAMETERS = (Objective("val_accuracy", "max"), Objective("parameters", "min"))


def dominates(a, b) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def brute_ranks(points: list[tuple]) -> list[int]:
    """The definition: rank r is what no other remaining point dominates, once ranks below r are taken out."""
    rank: list[int | None] = [None] * len(points)
    remaining, current = set(range(len(points))), 0
    while remaining:
        layer = {i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining)}
        for i in layer:
            rank[i] = current
        remaining -= layer
        current += 1
    return rank  # type: ignore[return-value]


def brute_crowding(points: list[tuple]) -> list[float]:
    """NSGA-II's definition, point by point: per objective, the nearest point below and above in (value, index)
    order, their gap over the objective's range; infinite without one of them; nothing if all values are equal."""
    total = [0.0] * len(points)
    for d in range(len(points[0]) if points else 0):
        values = [p[d] for p in points]
        width = max(values) - min(values)
        if width == 0:
            continue
        for i in range(len(points)):
            below = [(values[j], j) for j in range(len(points)) if (values[j], j) < (values[i], i)]
            above = [(values[j], j) for j in range(len(points)) if (values[j], j) > (values[i], i)]
            total[i] += math.inf if not below or not above else (min(above)[0] - max(below)[0]) / width
    return total


def random_sets(seed: int, count: int, distinct: bool):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        n, m = int(rng.integers(1, 25)), int(rng.integers(1, 5))
        if distinct:
            yield rng.random((n, m))
        else:  # a few values per objective: ties and whole duplicates everywhere
            yield rng.integers(0, 4, size=(n, m)).astype(float)


def test_non_dominated_ranks_equal_a_brute_force_enumeration_with_ties_and_duplicates():
    checked = 0
    for points in random_sets(0, 400, distinct=False):
        rows = [tuple(row) for row in points]
        assert pareto.ranks(points).tolist() == brute_ranks(rows)
        checked += len(set(rows)) < len(rows)
        expected_front = {i for i, r in enumerate(brute_ranks(rows)) if r == 0}
        keys = [f"k{i:02d}" for i in range(len(rows))]
        front = pareto.front(keys, points.tolist(), [Objective("val_loss", "min")] * points.shape[1])
        assert {keys.index(key) for key in front} == expected_front
    assert checked > 100  # duplicates were there to be ranked
    for points in random_sets(1, 50, distinct=True):
        assert pareto.ranks(points).tolist() == brute_ranks([tuple(row) for row in points])
        ranked = pareto.ranks(points, enough=3).tolist()  # stops once 3 are ranked: the rest share the next rank
        full = brute_ranks([tuple(row) for row in points])
        cut = next((r for r in sorted(set(full)) if sum(f <= r for f in full) >= 3), max(full))
        assert ranked == [min(f, cut + 1) for f in full]


def test_crowding_distance_equals_a_brute_force_enumeration_with_ties_and_duplicates():
    for points in random_sets(2, 400, distinct=False):
        assert pareto.crowding(points).tolist() == pytest.approx(brute_crowding([tuple(row) for row in points]))
    assert pareto.crowding(np.array([[1.0, 5.0], [1.0, 5.0], [1.0, 5.0]])).tolist() == [0.0, 0.0, 0.0]
    # a duplicate pair inside a front: the first by order gets the gap to the point before it only
    assert pareto.crowding(np.array([[0.0], [1.0], [1.0], [2.0]])).tolist() == [math.inf, 0.5, 0.5, math.inf]


def test_ranks_and_crowding_equal_optunas_own():
    optuna = pytest.importorskip("optuna")
    try:  # Optuna >= 4
        from optuna.study._multi_objective import _fast_non_domination_rank as optuna_ranks
    except ImportError:  # older: the NSGA-II sampler's
        from optuna.samplers.nsgaii._elite_population_selection_strategy import (  # type: ignore[attr-defined]
            _fast_non_dominated_sort as optuna_ranks,
        )
    from optuna.samplers.nsgaii._elite_population_selection_strategy import _calc_crowding_distance

    for points in random_sets(3, 300, distinct=False):
        assert pareto.ranks(points).tolist() == np.asarray(optuna_ranks(points)).tolist()
    for points in random_sets(4, 300, distinct=True):  # Optuna orders ties by its own sorts: compare without ties
        trials = []
        for number, values in enumerate(points.tolist()):
            trial = optuna.trial.create_trial(values=values)
            trial.number = number
            trials.append(trial)
        theirs = _calc_crowding_distance(list(trials))
        assert pareto.crowding(points).tolist() == pytest.approx([theirs[t.number] for t in trials])


# -- successive halving with several objectives --------------------------------------------------------------------

HALVING_12 = {
    "architecture": "lenet53",
    "dataset": {"train_size": 300, "val_size": 200, "test_size": 200},
    "params": {"epochs": 9, "batch_size": 50},
    "grid": {"hidden": [8, 16, 32], "lr": [0.01, 0.02, 0.05, 0.1]},
    "objectives": [{"metric": "val_accuracy", "direction": "max"}, {"metric": "parameters", "direction": "min"}],
    "search": {"strategy": "halving", "factor": 3, "min_epochs": 1},
}
# Val accuracy of each point at each rung's budget (1, 3, 9 epochs) and its network's size (thousands), by name:
# rung 0 has the front A B C K D (C and K are duplicates), E F G H under it, I J under those, and L failed.
TABLE = {
    "A": ((0.90, 0.95, 0.97), 100),
    "B": ((0.85, 0.96, 0.98), 50),
    "C": ((0.80, 0.85, None), 20),
    "K": ((0.80, 0.85, None), 20),
    "D": ((0.70, 0.75, 0.90), 10),
    "E": ((0.88, None, None), 100),
    "F": ((0.84, None, None), 50),
    "G": ((0.79, None, None), 20),
    "H": ((0.60, None, None), 10),
    "I": ((0.87, None, None), 100),
    "J": ((0.80, None, None), 50),
    "L": ((None, None, None), 10),
}


def test_multi_objective_halving_on_a_12_point_grid_promotes_as_worked_out_by_hand(tmp_path):
    """Rung 0 (12 trials, ceil(12/3) = 4 go on): its front is A B C K D. Crowding distance in the front, C and K
    ordered by key (X1 the smaller, X2 the other): accuracy A inf, B (0.90-0.80)/0.20 = 0.5, X1 0.05/0.20 = 0.25,
    X2 0.10/0.20 = 0.5, D inf; size D inf, X1 (20-10)/90 = 0.111, X2 (50-20)/90 = 0.333, B (100-20)/90 = 0.889,
    A inf. Sums: A, D inf; B 1.389; X2 0.833; X1 0.361: A D B X2 go on. Rung 1 (4 trials, 2 go on): B dominates
    A; in the front D X2 B, D and B are the ends (inf), X2 has 1 + 1: B and D go on to 9 epochs."""
    sweep = load_sweep(write_sweep(tmp_path, **HALVING_12, name="mo12"), build=False)
    trials = list(sweep.trials())
    assert len(trials) == 12 and sweep.rung_epochs == [1, 3, 9]
    name_of = {trial.key: name for trial, name in zip(trials, TABLE)}
    x1, x2 = sorted(key for key, name in name_of.items() if name in "CK")
    asked: list[list[str]] = []

    def evaluate(batch, budget):
        asked.append(sorted(name_of[trial.key] for trial in batch))
        rung = {1: 0, 3: 1, None: 2}[budget]
        standings = []
        for trial in batch:
            accuracies, size = TABLE[name_of[trial.key]]
            accuracy = accuracies[rung]
            values = None if accuracy is None else (accuracy, size * 1000.0)
            standings.append(halving.Standing(trial.key, accuracy, 1.0, values))
        return standings

    finalists = strategy_for(sweep).search(evaluate)
    expected_rung_1 = sorted(["A", "D", "B", name_of[x2]])
    assert asked == [sorted(TABLE), expected_rung_1, ["B", "D"]]
    assert sorted(name_of[key] for key in finalists) == ["B", "D"]
    assert name_of[x1] != name_of[x2]


def test_a_front_smaller_than_the_rung_keep_is_filled_from_the_next_rank_by_crowding_then_key():
    objectives = ACCURACY_PARAMETERS
    standings = [
        halving.Standing("e", 0.9, 1.0, (0.90, 5.0)),  # the front alone
        halving.Standing("a", 0.8, 1.0, (0.80, 10.0)),  # rank 1: the ends of its front (crowding inf)
        halving.Standing("d", 0.5, 1.0, (0.50, 6.0)),
        halving.Standing("b", 0.7, 1.0, (0.70, 8.0)),  # rank 1, inside: 0.3 / 0.3 + 4 / 4 = 2
        halving.Standing("c", 0.2, 1.0, (0.20, 20.0)),  # rank 2
        halving.Standing("f", None, None, None),  # failed: never promoted
    ]
    assert halving.promote_by_front(standings, 2, objectives) == ["e", "a", "d"]
    assert halving.promote_by_front(standings, 2, objectives, keep=5) == ["e", "a", "d", "b", "c"]
    tied = [halving.Standing(key, 0.5, 1.0, (0.5, 1.0)) for key in ("q", "p", "r")]  # equal: crowding 0, by key
    assert halving.promote_by_front(tied, 3, objectives, keep=3) == ["p", "q", "r"]


# -- selection rules --------------------------------------------------------------------------------------------------

FRONT = {"big": (0.9910, 500.0), "mid": (0.9905, 100.0), "small": (0.9880, 20.0), "tiny": (0.9500, 5.0)}


def chosen(rule: Rule, points=FRONT, objectives=ACCURACY_PARAMETERS) -> str:
    return pareto.choose(rule, list(points), list(points.values()), objectives)


def test_smallest_within_takes_the_smallest_network_within_the_tolerance_in_points_of_the_best():
    assert chosen(Rule("smallest_within", "val_accuracy", 0.1, "parameters")) == "mid"
    assert chosen(Rule("smallest_within", "val_accuracy", 0.3, "parameters")) == "small"
    assert chosen(Rule("smallest_within", "val_accuracy", 0.0, "parameters")) == "big"
    assert chosen(Rule("smallest_within", "val_accuracy", 5, "parameters")) == "tiny"
    # within 100 parameters of the smallest, the most accurate
    assert chosen(Rule("smallest_within", "parameters", 100, "val_accuracy")) == "mid"


def test_best_and_weighted_rules():
    assert chosen(Rule("best", "val_accuracy")) == "big" and chosen(Rule("best", "parameters")) == "tiny"
    tied = {"b": (0.99, 50.0), "a": (0.99, 50.0), "c": (0.99, 60.0)}  # ties: the other objectives, then key
    assert chosen(Rule("best", "val_accuracy"), tied) == "a"
    assert chosen(Rule("weighted", weights=(("val_accuracy", 1.0),))) == "big"
    assert chosen(Rule("weighted", weights=(("parameters", 1.0),))) == "tiny"
    # scaled over the front: accuracy (0.9910 - v) / 0.041 and size (500 - p) / 495, 1 best; equal weights
    scores = {key: (acc - 0.95) / 0.041 + (500 - size) / 495 for key, (acc, size) in FRONT.items()}
    assert chosen(Rule("weighted", weights=(("val_accuracy", 1.0), ("parameters", 1.0)))) == max(scores, key=scores.get)


def test_objectives_and_rule_round_trip_through_the_database_record(tmp_path):
    sweep = load_sweep(
        write_sweep(
            tmp_path,
            **{**HALVING_12, "search": {"strategy": "grid"}},
            name="rt",
            select={"rule": "weighted", "weights": {"val_accuracy": 2, "parameters": 0.5}},
        ),
        build=False,
    )
    assert pareto.objectives_from(sweep.search_record()) == (sweep.objectives, sweep.rule)
    for rule in (Rule("best", "parameters"), Rule("smallest_within", "val_accuracy", 0.1, "parameters")):
        assert pareto.objectives_from({"objectives": [], "rule": rule.record()})[1] == rule
    assert pareto.objectives_from({"strategy": "grid"}) == ((), None)


@pytest.mark.parametrize("size", [1, 2, 40])
def test_the_front_is_what_no_point_dominates(size):
    rng = np.random.default_rng(size)
    values = rng.integers(0, 5, size=(size, 2)).astype(float).tolist()
    keys = [f"{i:03d}" for i in range(size)]
    front = pareto.front(keys, values, ACCURACY_PARAMETERS)
    losses = [(-a, p) for a, p in values]
    assert set(front) == {k for k, v in zip(keys, losses) if not any(dominates(w, v) for w in losses)}
    assert [values[keys.index(k)][0] for k in front] == sorted((values[keys.index(k)][0] for k in front), reverse=True)
    assert all(not dominates(a, b) for a, b in product([losses[keys.index(k)] for k in front], repeat=2))
