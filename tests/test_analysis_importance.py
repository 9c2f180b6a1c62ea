"""Which knob mattered, on known tables: the functional ANOVA of exactly additive and exactly interacting grids,
its main effects against scipy's one-way ANOVA and an independent two-way sums-of-squares computation, and the
random-forest estimate of an incomplete grid; the figures drawn from them."""

from __future__ import annotations

from itertools import product

import numpy as np
import pandas as pd
import pytest
from scipy.stats import f_oneway

from gridsearch.analysis import plots
from gridsearch.analysis.importance import forest_cells, functional_anova, is_complete


def grid(values: dict[str, list], f) -> pd.Series:
    points = list(product(*values.values()))
    index = pd.MultiIndex.from_tuples(points, names=list(values))
    return pd.Series([f(*point) for point in points], index=index, dtype=float)


def shares(cells: pd.Series) -> dict[str, float]:
    frame = functional_anova(cells)
    return dict(zip(frame["term"], frame["share"]))


def test_an_additive_grid_splits_by_the_variances_of_its_effects_with_no_interaction():
    cells = grid({"a": [0, 1, 2], "b": [0, 10]}, lambda a, b: a + b)
    # a's effect is -1, 0, 1 (variance 2/3); b's is -5, 5 (variance 25)
    total = 2 / 3 + 25
    assert shares(cells) == pytest.approx({"b": 25 / total, "a": (2 / 3) / total, "a x b": 0}, abs=1e-12)
    assert list(functional_anova(cells)["term"]) == ["b", "a", "a x b"]  # largest first


def test_a_pure_interaction_has_no_main_effects():
    cells = grid({"a": [-1, 1], "b": [-1, 1]}, lambda a, b: a * b)
    assert shares(cells) == pytest.approx({"a": 0, "b": 0, "a x b": 1}, abs=1e-12)
    assert functional_anova(grid({"a": [1, 2]}, lambda a: 0.5))["share"].isna().all()  # nothing varies


def test_main_effects_match_one_way_anova_and_two_way_sums_of_squares():
    generator = np.random.default_rng(0)
    cells = grid({"lr": [0.01, 0.02, 0.05, 0.1], "step": [1, 3, 5]}, lambda *_: generator.normal())
    got = shares(cells)
    frame = cells.reset_index(name="y")
    n = len(frame)
    for name in ("lr", "step"):
        groups = [group["y"].to_numpy() for _, group in frame.groupby(name)]
        f = f_oneway(*groups).statistic  # F = (SS_between / (k - 1)) / (SS_within / (n - k))
        k = len(groups)
        assert got[name] == pytest.approx(f * (k - 1) / (f * (k - 1) + n - k), rel=1e-10)
    y = cells.to_numpy().reshape(4, 3)  # rows: lr, columns: step
    grand = y.mean()
    ss_total = ((y - grand) ** 2).sum()
    ss_lr = 3 * ((y.mean(axis=1) - grand) ** 2).sum()
    ss_step = 4 * ((y.mean(axis=0) - grand) ** 2).sum()
    ss_interaction = ((y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + grand) ** 2).sum()
    assert ss_lr + ss_step + ss_interaction == pytest.approx(ss_total)
    assert got == pytest.approx(
        {"lr": ss_lr / ss_total, "step": ss_step / ss_total, "lr x step": ss_interaction / ss_total}, rel=1e-10
    )


def test_three_params_leave_higher_order_interactions_as_the_rest():
    cells = grid({"a": [-1, 1], "b": [-1, 0, 1], "c": [-1, 1]}, lambda a, b, c: 2 * a + a * c)
    got = shares(cells)
    assert got["a"] == pytest.approx(4 / 5) and got["a x c"] == pytest.approx(1 / 5)
    assert got["higher-order interactions"] == pytest.approx(0, abs=1e-12) and got["b"] == pytest.approx(0, abs=1e-12)
    generator = np.random.default_rng(1)
    noisy = grid({"a": [0, 1], "b": [0, 1, 2], "c": [0, 1]}, lambda *_: generator.normal())
    assert sum(shares(noisy).values()) == pytest.approx(1)
    assert shares(noisy)["higher-order interactions"] > 0


def test_an_incomplete_grid_gets_the_forest_estimate_over_the_complete_grid():
    points = pd.DataFrame(
        [(a, b) for a, b in product([0.01, 0.02, 0.05], ["sgd", "adam"]) if (a, b) != (0.05, "adam")],
        columns=["lr", "optimizer"],
    )
    assert not is_complete(points, ["lr", "optimizer"]) and is_complete(points.iloc[:2], ["lr"])
    scores = points.assign(val_accuracy=0.9 + 2 * points["lr"] + 0.001 * (points["optimizer"] == "adam"))
    cells = forest_cells(scores, ["lr", "optimizer"], "val_accuracy")
    assert len(cells) == 6 and cells.index.names == ["lr", "optimizer"]
    assert cells.equals(forest_cells(scores, ["lr", "optimizer"], "val_accuracy"))  # seeded
    assert shares(cells)["lr"] > 0.9  # lr drives the scores; the optimizer barely moves them


def test_the_bar_chart_and_parallel_coordinates_draw_every_term_and_trial():
    cells = grid({"lr": [0.01, 0.1], "zoom": ["[0.9, 1.1]", "[1, 1]"]}, lambda lr, zoom: lr + (zoom == "[1, 1]"))
    frame = functional_anova(cells)
    bars = plots.importance_bars(frame, "t")
    assert [t.get_text() for t in bars.axes[0].get_yticklabels()] == list(frame["term"])
    scores = cells.reset_index(name="val_accuracy")
    figure = plots.parallel_coordinates(scores, ["lr", "zoom"], "val_accuracy", "t")
    [lines] = figure.axes[0].collections  # 4 trials: each drawn in colour, none as the density beneath
    assert [len(segment) for segment in lines.get_segments()] == [3] * 4  # lr, zoom, metric
    assert len(figure.axes[0].images) == 0 and figure.axes[0].get_title() == "t: every trial, coloured by val_accuracy"
    marks = {text.get_text() for text in figure.axes[0].texts}
    assert marks == {"0.01", "0.1", "[0.9, 1.1]", "[1, 1]", "1.00%", "110.00%"}  # values as written, no np.float64
