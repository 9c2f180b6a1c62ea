"""Hyperparameter effects: how val accuracy varies over a sweep's grid (its trials table, a heatmap over two
gridded params, the marginals of each) and, for a successive-halving sweep, its rungs.

The map compares trials on one footing. In a grid sweep every trial trains the same epochs, so each done
trial is placed at its best epoch. In a successive-halving sweep only the promoted trials train on, so every
trial is placed by what rung 0 gave it, the budget they all trained: its best epoch (by the sweep's
``select``, the first of equals) among its first ``min_epochs`` epochs, read from the epochs table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

import pandas as pd
from matplotlib.figure import Figure as PlotFigure

from gridsearch.analysis import plots
from gridsearch.analysis.curves import rung_curves
from gridsearch.analysis.trained_models import BestModel
from gridsearch.analysis.webpage import Block, Figure, Folder, Group, Note, seconds, table
from gridsearch.spec.search import Search
from gridsearch.store import views
from gridsearch.store.models import SweepRow
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import STATUS_ORDER, TrialStatus, format_params, format_percent, metric

RUNG_ZERO = "rung0_val_accuracy"
"""Column of a halving sweep's trials table: what the map places each trial by."""


@dataclass(frozen=True)
class GridEffects:
    """A sweep's comparable trials: ``scores`` has one row per trial (key, each gridded param made hashable,
    seed, ``val_accuracy`` on the common footing); ``params`` lists the gridded params that take several
    values among them, the heatmap's axes first."""

    scores: pd.DataFrame
    params: list[str]
    basis: str
    """What each trial's val accuracy is, for captions."""
    quantity: str = "val accuracy"
    """What the heatmap shows, in its title."""

    @cached_property
    def factors(self) -> list[list[str]]:
        """``params`` in groups that vary together (:func:`aliases`), each named by its first (computed once: the
        heatmap's cells, grid and table all read it)."""
        return aliases(self.scores, self.params) if self.params else []

    @property
    def axes(self) -> list[str]:
        """One param per factor: the heatmap's axes are the first two."""
        return [group[0] for group in self.factors]

    @property
    def cells(self) -> str:
        """What one cell of the heatmap over the first two ``axes`` holds."""
        axes = self.axes
        single = self.scores.groupby(axes[:2]).size().max() == 1
        return "one trial per cell" if single else f"mean over {', '.join([*axes[2:], 'seeds'])}"

    def heatmap_grid(self) -> pd.DataFrame:
        """Mean val accuracy over the first two ``axes`` (rows: the first's values)."""
        rows, columns = self.axes[:2]
        return self.scores.pivot_table(index=rows, columns=columns, values="val_accuracy")

    def heatmap_table(self) -> pd.DataFrame:
        """The heatmap's cells as a table: a column of the first axis's values, one per value of the second
        (``lr_step=3``)."""
        grid = self.heatmap_grid()
        grid.columns = [format_params([(self.axes[1], value)]) for value in grid.columns]
        return grid.reset_index()


def aliases(scores: pd.DataFrame, params: list[str]) -> list[list[str]]:
    """``params`` in groups that vary together over the trials ``scores``, the one with the most values first:
    two go together when the value of one fixes the value of the other (a grid of several parts, one point each,
    such as a committee's pool of models, where each model has its own learning rate). The variance cannot be
    split between the params of a group: they are one factor."""
    points = scores[params].drop_duplicates()
    groups: list[list[str]] = []
    for name in params:
        for group in groups:
            pair = points[[group[0], name]].drop_duplicates()
            if pair[group[0]].is_unique or pair[name].is_unique:
                group.append(name)
                break
        else:
            groups.append([name])
    return [sorted(group, key=lambda name: -points[name].nunique()) for group in groups]


def hashable(value: object) -> object:
    """Grid values usable as group keys (lists such as zoom ranges become their JSON text)."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def rung_zero(storage: Storage, sweep: SweepRow, trials: pd.DataFrame) -> pd.DataFrame:
    """The trials of a halving sweep that trained rung 0's budget (or were done sooner: early stopping),
    with ``val_accuracy`` at their best epoch within it."""
    budget = Search.from_record(sweep.search).first_budget
    assert budget is not None, "a search with rungs"
    select = metric(sweep.select_metric)
    epochs = views.epochs(storage, list(trials["key"]))
    first = epochs[epochs["epoch"] < budget]
    best = first.sort_values(select.name, ascending=select.ascending, kind="stable").drop_duplicates("trial_key")
    trained = trials["key"].map(first.groupby("trial_key").size()).fillna(0)
    placed = trials[(trained >= budget) | (trials["status"] == TrialStatus.DONE)]
    return placed.assign(val_accuracy=placed["key"].map(best.set_index("trial_key")["val_accuracy"]))


def grid_effects(storage: Storage, sweep: SweepRow) -> GridEffects:
    """The trials of ``sweep`` that its map compares, and the gridded params that vary among them."""
    trials = views.trials_table(storage, sweep.name)
    if trials.empty:
        return GridEffects(trials, [], "no trials yet")
    quantity = "val accuracy"
    search = Search.from_record(sweep.search)
    if search.describes_rungs:
        scores = rung_zero(storage, sweep, trials)
        budget = search.first_budget or 1
        first = "its first epoch" if budget == 1 else f"its first {budget} epochs"
        basis = f"every trial at its best epoch (by {sweep.select_metric}) within {first}: rung 0, which all trained"
        quantity = f"val accuracy at rung 0, {budget} epoch{'s' if budget > 1 else ''}"
    else:
        scores = trials[trials["status"] == TrialStatus.DONE]
        basis = "every done trial at its best epoch"
    scores = scores.assign(**{name: scores[name].map(hashable) for name in sweep.gridded_params})
    params = [name for name in sweep.gridded_params if scores[name].nunique() > 1]
    return GridEffects(scores.reset_index(drop=True), params, basis, quantity)


def grid_heatmap(effects: GridEffects, sweep: str) -> PlotFigure:
    """Val accuracy over the first two of ``effects.axes`` (at least two factors)."""
    return plots.heatmap(effects.heatmap_grid(), f"{sweep}: {effects.quantity} ({effects.cells})", "val accuracy")


def status_counts(statuses: pd.Series) -> str:
    """How many trials have each status, in the usual order: ``2 done, 2 stopped``."""
    counts = statuses.value_counts()
    return ", ".join(f"{counts[status]} {status}" for status in STATUS_ORDER if counts.get(status, 0))


def effects_section(folder: Folder, storage: Storage, model: BestModel) -> Group:
    """Val accuracy over the grid of one sweep: its trials table, the heatmap of the first two varying
    params, the marginals, and for a halving sweep its rungs."""
    name, sweep = model.name, model.sweep
    trials = views.trials_table(storage, name)
    effects = grid_effects(storage, sweep)
    halving = Search.from_record(sweep.search).describes_rungs
    if halving:
        trials[RUNG_ZERO] = trials["key"].map(effects.scores.set_index("key")["val_accuracy"])
    percent = {"val_accuracy": format_percent, RUNG_ZERO: format_percent}
    blocks: list[Block] = [
        table(
            trials.drop(columns=["error"]),
            folder.csv(trials, f"grid_{name}"),
            {**percent, "val_loss": "{:.4f}".format, "train_seconds": seconds},
        )
    ]
    if halving:
        blocks.append(Note(f"{RUNG_ZERO}: {effects.basis}; the heatmap and marginals show it."))
    factors = effects.factors
    if len(factors) >= 2:
        figure = folder.png(grid_heatmap(effects, name), f"heatmap_{name}")
        cells = effects.heatmap_table()
        axes = " x ".join(effects.axes[:2])
        blocks += [
            Figure(figure, f"Val accuracy of {name} over {axes} ({effects.cells}): {effects.basis}."),
            table(cells, folder.csv(cells, f"heatmap_{name}"), {c: format_percent for c in cells.columns[1:]}),
        ]
    if factors:
        figure = folder.png(plots.marginals(effects.scores, factors, "val_accuracy", name), f"marginals_{name}")
        blocks.append(
            Figure(figure, f"Val accuracy against each gridded param, max and mean over the others: {effects.basis}.")
        )
    else:
        blocks.append(Note("No gridded param takes two values among the compared trials: nothing to plot."))
    if halving:
        blocks.append(rungs_section(folder, storage, model))
    return Group(f"{name} ({sweep.architecture}; {status_counts(trials['status'])})", blocks)


def rungs_table(storage: Storage, sweep: SweepRow) -> pd.DataFrame:
    """Successive halving: each rung's epoch budget, its trials, how many went on, and the epochs it trained."""
    budgets = Search.from_record(sweep.search).rung_epochs or []
    reached = {key: rung for key, rung in storage.rungs(sweep.name).items() if rung is not None}
    epochs = views.epochs(storage, reached)
    records = []
    for rung, (budget, previous) in enumerate(zip(budgets, [0, *budgets])):
        keys = [key for key, top in reached.items() if top >= rung]
        trained = epochs[epochs["trial_key"].isin(keys) & (epochs["epoch"] >= previous) & (epochs["epoch"] < budget)]
        records.append(
            {
                "rung": rung,
                "epochs": budget,
                "trials": len(keys),
                "promoted": sum(top > rung for top in reached.values()),
                "epochs_trained": len(trained),
            }
        )
    return pd.DataFrame.from_records(records)


def rungs_section(folder: Folder, storage: Storage, model: BestModel) -> Group:
    """The rungs of a successive-halving sweep: a table, and every trial's curve coloured by its rung."""
    name = model.name
    rungs = rungs_table(storage, model.sweep)
    reached = storage.rungs(name)
    epochs = views.epochs(storage, reached)
    full = len(reached) * int(rungs["epochs"].iloc[-1])
    curves = [(rung, epochs[epochs["trial_key"] == key]) for key, rung in reached.items() if rung is not None]
    select = model.sweep.select_metric
    trained = int(rungs["epochs_trained"].sum())
    return Group(
        "Successive halving",
        [
            table(rungs, folder.csv(rungs, f"rungs_{name}")),
            Note(
                "Each rung trains its trials to its epochs, continuing from their checkpoints; the best "
                f"promoted ones go on to the next. {trained:,} epochs trained in all, "
                f"{format_percent(trained / full, 0)} of the {full:,} a full grid would train."
            ),
            Figure(
                folder.png(
                    rung_curves(curves, rungs["epochs"].tolist(), select, f"{name}: {select} per epoch"),
                    f"rung_curves_{name}",
                ),
                "Every trial's validation curve, coloured by the highest rung it reached; dotted lines mark "
                "the rungs' epoch budgets.",
            ),
        ],
    )
