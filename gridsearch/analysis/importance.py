"""Which knob mattered: the variance of a sweep's select metric over its gridded params, split into main effects
and pairwise interactions (functional ANOVA), with a parallel-coordinates view of every trial.

On a complete grid the decomposition is exact: every grid point's score (the mean over its seeds) weighs the
same, the grand mean, each param's main effect (the mean at each of its values minus the grand mean) and each
pair's interaction (the pair's means minus both main effects and the grand mean) are orthogonal, and their
variances add up to the total. On an incomplete grid (failed trials, a grid of several parts) a random forest
(scikit-learn's, seeded) is fitted to the trials and the same decomposition is taken of its predictions over the
complete grid: an estimate, as Optuna's fANOVA evaluator estimates it.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations, product

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor

from gridsearch.analysis import plots
from gridsearch.analysis.effects import aliases, grid_effects
from gridsearch.analysis.webpage import Block, Figure, Folder, Group, Note, table
from gridsearch.spec.search import Search
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import format_percent

FOREST_TREES = 200
FOREST_SEED = 0
MIN_TRIALS = 3
"""An estimate from fewer scored trials is not attempted."""


def functional_anova(cells: pd.Series) -> pd.DataFrame:
    """Shares of the variance of ``cells`` (one value per point of a complete grid; a MultiIndex, one level per
    param) carried by each param's main effect and each pair's interaction, largest first; with three params or
    more, a last row holds the rest (higher-order interactions). NaN shares when every cell is equal."""
    params = list(cells.index.names)
    centred = cells - cells.mean()
    total = float((centred**2).mean())
    effects = {(name,): centred.groupby(level=name).transform("mean") for name in params}
    records = [{"term": name, "kind": "main", "variance": float((effects[(name,)] ** 2).mean())} for name in params]
    for a, b in combinations(params, 2):
        pair = centred.groupby(level=[a, b]).transform("mean") - effects[(a,)] - effects[(b,)]
        records.append({"term": f"{a} x {b}", "kind": "interaction", "variance": float((pair**2).mean())})
    if len(params) > 2:
        rest = total - sum(r["variance"] for r in records)
        records.append({"term": "higher-order interactions", "kind": "rest", "variance": max(rest, 0.0)})
    frame = pd.DataFrame.from_records(records)
    frame["share"] = frame["variance"] / total if total > 0 else float("nan")
    return frame.sort_values("variance", ascending=False, kind="stable").reset_index(drop=True)


def is_complete(points: pd.DataFrame, params: list[str]) -> bool:
    """Whether ``points`` holds every combination of its params' values."""
    combinations_seen = len(points[params].drop_duplicates())
    return combinations_seen == int(np.prod([points[name].nunique() for name in params]))


def encoded(values: pd.Series, levels: list[object]) -> np.ndarray:
    """A param's values as numbers for the forest: themselves when numeric, else their position among ``levels``."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=float)
    return values.map({level: i for i, level in enumerate(levels)}).to_numpy(dtype=float)


def forest_cells(scores: pd.DataFrame, params: list[str], metric: str) -> pd.Series:
    """A seeded random forest fitted to the trials' ``metric``, predicted at every point of the complete grid."""
    levels = {name: sorted(scores[name].unique(), key=str) for name in params}
    grid = pd.DataFrame(list(product(*levels.values())), columns=params)
    x = np.column_stack([encoded(scores[name], levels[name]) for name in params])
    forest = RandomForestRegressor(n_estimators=FOREST_TREES, random_state=FOREST_SEED, n_jobs=1)
    forest.fit(x, scores[metric].to_numpy(dtype=float))
    predicted = forest.predict(np.column_stack([encoded(grid[name], levels[name]) for name in params]))
    return pd.Series(predicted, index=pd.MultiIndex.from_frame(grid))


@dataclass(frozen=True)
class Importance:
    """A sweep's variance decomposition: ``shares`` (term, kind, variance, share), whether it is exact, and the
    trials it came from (``scores``: one row per trial, the gridded ``params`` and ``metric`` as columns). Params
    that vary together count as one, named by the first of them (``aliased``: the others, by that name)."""

    shares: pd.DataFrame
    exact: bool
    scores: pd.DataFrame
    params: list[str]
    metric: str
    basis: str
    aliased: dict[str, list[str]]


def sweep_importance(storage: Storage, sweep: str) -> Importance | None:
    """The variance decomposition of ``sweep``'s select metric over its varying gridded params (a halving
    sweep's val accuracy at rung 0, which every trial trained), params that vary together counted as one;
    None when no param varies or fewer than ``MIN_TRIALS`` trials are scored."""
    row = storage.sweep(sweep)
    effects = grid_effects(storage, row)
    metric = "val_accuracy" if Search.from_record(row.search).describes_rungs else row.select_metric
    scores = effects.scores.dropna(subset=[metric]) if len(effects.scores) else effects.scores
    if not effects.params or len(scores) < MIN_TRIALS:
        return None
    groups = aliases(scores, effects.params)
    params = [group[0] for group in groups]
    aliased = {group[0]: group[1:] for group in groups if len(group) > 1}
    exact = is_complete(scores, params)
    cells = scores.groupby(params)[metric].mean() if exact else forest_cells(scores, params, metric)
    basis = f"{metric} of {effects.basis}" if metric != "val_accuracy" else effects.basis
    return Importance(functional_anova(cells), exact, scores, params, metric, basis, aliased)


def importance_section(folder: Folder, storage: Storage, sweep: str) -> Group:
    """Which gridded param carried the variance of one sweep: a table, a bar chart, parallel coordinates."""
    found = sweep_importance(storage, sweep)
    if found is None:
        return Group(
            sweep, [Note(f"Fewer than {MIN_TRIALS} scored trials or no varying gridded param: nothing to split.")]
        )
    how = (
        "Exact functional ANOVA over the complete grid (each grid point's mean over its seeds)"
        if found.exact
        else f"An estimate: the grid is incomplete, so a random forest ({FOREST_TREES} trees, seed {FOREST_SEED}) "
        "was fitted to the trials and its predictions over the complete grid were decomposed"
    )
    caption = f"{how}: share of the variance of {found.metric} carried by each param and each pair ({found.basis})."
    together = [f"{name} (with {', '.join(others)})" for name, others in found.aliased.items()]
    if len(found.params) == 1 and found.aliased:
        ((name, others),) = found.aliased.items()
        note = (
            f"The gridded params vary together over the trials: the value of {name} fixes those of "
            f"{', '.join(others)} (one point per grid part, as in a committee's pool of models), so no share of the "
            "variance can be credited to any one of them."
        )
        return Group(sweep, [Note(note)])
    blocks: list[Block] = [
        Figure(
            folder.png(plots.importance_bars(found.shares, f"{sweep}: {found.metric}"), f"importance_{sweep}"), caption
        ),
        table(
            found.shares,
            folder.csv(found.shares, f"importance_{sweep}"),
            {"share": format_percent, "variance": "{:.3g}".format},
        ),
        Figure(
            folder.png(
                plots.parallel_coordinates(found.scores, found.params, found.metric, sweep), f"parallel_{sweep}"
            ),
            f"Every compared trial as one line through its gridded params, coloured by {found.metric} ({found.basis}).",
        ),
    ]
    if together:
        blocks.append(Note(f"Params that vary together count as one, named by the first: {'; '.join(together)}."))
    return Group(sweep, blocks)
