"""Trade-offs: the Pareto front of a sweep of several objectives, or of any set of sweeps' trials (say, the study's
models by accuracy, parameters and seconds per epoch), as a table and as 2-D scatters of any two objectives.

:func:`front_points` gathers the points (one per configuration: a trial, or the mean over its seeds) of the sweeps'
scored trials with their value of each objective, and marks the front over all of them together and each sweep's
selected trial; :func:`scatter_front` draws two objectives of it; :func:`front_part` is the report's section.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from statistics import fmean

import matplotlib.pyplot as plt
import matplotlib.ticker
import pandas as pd

from gridsearch.analysis.trained_models import BestModel
from gridsearch.analysis.webpage import Block, Figure, Folder, Group, Note, Paragraph, table
from gridsearch.engine.objectives import INFERENCE, points
from gridsearch.engine.selection import seeds_of
from gridsearch.errors import UserError
from gridsearch.spec import pareto
from gridsearch.spec.config import config_value
from gridsearch.spec.pareto import Objective
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import OBJECTIVE_LABELS, SCORED, format_params, format_percent

POINT_COLUMNS = ("sweep", "key", "architecture", "params", "on_front", "selected")
"""The columns of :func:`front_points` besides one per objective."""


def sweep_objectives(storage: Storage, sweep: str) -> tuple[tuple[Objective, ...], pareto.Rule | None]:
    """The objectives (none for one) and select rule of ``sweep``, as its file gave them."""
    return pareto.objectives_from(storage.sweep(sweep).search)


def front_points(storage: Storage, sweeps: Sequence[str], objectives: Sequence[Objective]) -> pd.DataFrame:
    """One row per point of ``sweeps``' scored trials (a configuration: with several seeds, its mean values): its
    sweep, first trial ``key``, architecture, gridded ``params`` in words, its value of each objective, whether it
    is on the front of all these points together, and whether it holds its sweep's selected trial."""
    records = []
    for name in sweeps:
        row = storage.sweep(name)
        rows = [trial for trial in storage.trials(name) if trial.status in SCORED]
        wanted = any(objective.metric == INFERENCE for objective in objectives)
        inference = storage.measurements([trial.key for trial in rows], INFERENCE) if wanted else {}
        config = {trial.key: trial.config for trial in rows}
        for point in points(rows, objectives, inference):
            first = config[point.key]
            records.append(
                {
                    "sweep": name,
                    "key": point.key,
                    "architecture": first["architecture"],
                    "params": format_params((p, config_value(first, p)) for p in row.gridded_params),
                    **point.values,
                    "selected": row.selected_trial in point.keys,
                }
            )
    found = pd.DataFrame.from_records(records, columns=[*POINT_COLUMNS, *(o.metric for o in objectives)])
    ids = [f"{sweep}/{key}" for sweep, key in zip(found["sweep"], found["key"])]
    on_front = set(pareto.front(ids, found[[o.metric for o in objectives]].to_numpy().tolist(), objectives))
    return found.assign(on_front=[identity in on_front for identity in ids])


def scatter_front(found: pd.DataFrame, objectives: Sequence[Objective], x: str, y: str, title: str) -> plt.Figure:
    """``found`` (:func:`front_points`) drawn as ``y`` against ``x``: each sweep in a colour, points on the front
    filled and the rest hollow, the front of these two objectives joined by a line, a selected trial ringed."""
    pair = [next(o for o in objectives if o.metric == name) for name in (x, y)]
    figure, axis = plt.subplots(figsize=(6.4, 4.4))

    def shown(name: str, values: pd.Series) -> pd.Series:
        return values * 100 if name == "val_accuracy" else values

    for index, (sweep, group) in enumerate(found.groupby("sweep", sort=False)):
        colour, on = f"C{index % 10}", group["on_front"].astype(bool)
        axis.scatter(shown(x, group[x][on]), shown(y, group[y][on]), s=36, color=colour, label=sweep)
        axis.scatter(shown(x, group[x][~on]), shown(y, group[y][~on]), s=36, facecolors="none", edgecolors=colour)
    chosen = found[found["selected"].astype(bool)]
    axis.scatter(
        shown(x, chosen[x]), shown(y, chosen[y]), s=170, facecolors="none", edgecolors="black", label="selected"
    )
    ids = [str(index) for index in range(len(found))]
    front_2d = pareto.front(ids, found[[x, y]].to_numpy().tolist(), pair)
    joined = found.iloc[[int(index) for index in front_2d]].sort_values(x)
    axis.plot(shown(x, joined[x]), shown(y, joined[y]), color="0.3", linewidth=1, linestyle="--", zorder=1)
    for name, set_scale, ticks in ((x, axis.set_xscale, axis.xaxis), (y, axis.set_yscale, axis.yaxis)):
        values = found[name].astype(float)
        if name == "parameters" and values.min() > 0 and values.max() / values.min() > 20:
            set_scale("log")
        if name == "parameters":
            ticks.set_major_formatter(matplotlib.ticker.EngFormatter(sep=""))
    axis.set_xlabel(_label(x))
    axis.set_ylabel(_label(y))
    axis.set_title(title, fontsize=10)
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    return figure


def _label(name: str) -> str:
    return OBJECTIVE_LABELS[name] + (" (%)" if name == "val_accuracy" else "")


def front_table(found: pd.DataFrame, storage: Storage, objectives: Sequence[Objective]) -> pd.DataFrame:
    """The front members of ``found``, best first by the first objective, with their test accuracy when tested."""
    members = found[found["on_front"]].sort_values(
        [o.metric for o in objectives], ascending=[o.direction == "min" for o in objectives]
    )
    tests = [storage.evaluation(key, "test") for key in members["key"]]
    return members.drop(columns=["on_front"]).assign(test_accuracy=[t.accuracy if t else None for t in tests])


def front_part(folder: Folder, storage: Storage, models: Sequence[BestModel]) -> list[tuple[str, str, list[Block]]]:
    """The report's section on the fronts of its sweeps with several objectives (none without such a sweep): per
    sweep, its rule, a scatter of each pair of objectives and the table of its front."""
    blocks: list[Block] = []
    for model in models:
        objectives, rule = sweep_objectives(storage, model.name)
        if not objectives or rule is None:
            continue
        found = front_points(storage, [model.name], objectives)
        members = front_table(found, storage, objectives)
        names = [o.metric for o in objectives]
        figures: list[Block] = [
            Figure(
                folder.png(
                    scatter_front(found, objectives, x, y, f"{model.name}: {y} against {x}"),
                    f"front_{model.name}_{x}_{y}",
                ),
                f"{_label(y)} against {_label(x)} of every point of {model.name}: filled on the front of all its "
                "objectives, hollow dominated; the dashed line joins the front of these two; the ring is the "
                "selected trial.",
            )
            for y, x in combinations(names, 2)
        ]
        formats = {name: (format_percent if name == "val_accuracy" else _number) for name in names}
        blocks.append(
            Group(
                model.name,
                [
                    Paragraph(
                        f"Objectives: {', '.join(f'{o.metric} ({o.direction})' for o in objectives)}. "
                        f"{len(members)} of its {len(found)} points are on the front; selected by rule "
                        f"{rule.name}: {rule.describe()}: trial {model.trial.key}."
                    ),
                    *figures,
                    table(
                        members,
                        folder.csv(members, f"front_{model.name}"),
                        {**formats, "test_accuracy": format_percent},
                    ),
                    Note(
                        "Front members, best first by the first objective; test accuracy only for those tested "
                        f"(`gridsearch evaluate {model.name} --front` tests them all; it never changes the selection)."
                    ),
                ],
            )
        )
    return [("front", "Trade-offs: the Pareto front", blocks)] if blocks else []


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"


def test_front(storage: Storage, sweep: str, artifacts: Path, data_dir: Path) -> tuple[pd.DataFrame, int]:
    """Test every trial of each point of ``sweep``'s stored front on the sweep's test images, on CPU, as its selected
    trial was (one already tested at that size is kept); the front with each point's test accuracy, and how many
    trials were tested now. Nothing else changes: the selection is the rule's, on validation, never the test."""
    objectives, _ = sweep_objectives(storage, sweep)
    if not objectives:
        raise UserError(f"sweep {sweep!r} selects by one objective: it has no front (list several objectives)")
    stored = storage.front(sweep)
    if not stored:
        raise UserError(f"sweep {sweep!r} has no front yet (run it to the end first)")
    row, rows = storage.sweep(sweep), storage.trials(sweep)
    trials = [trial for point in stored for trial in seeds_of(rows, point.key)]
    todo = [trial for trial in trials if _untested(storage, trial.key, row.test_size)]
    for trial in todo:
        if not (artifacts / trial.key / "best.pt").exists():
            raise UserError(
                f"trial {trial.key}: no best weights at {artifacts / trial.key / 'best.pt'} (pass --artifacts)"
            )
    if todo:
        import torch

        from gridsearch.training import data
        from gridsearch.training.loop import evaluate_trial

        data.prepare(data_dir, todo[0].config["dataset"])
        for trial in todo:
            result, _ = evaluate_trial(
                trial.config, artifacts / trial.key, data_dir, torch.device("cpu"), row.test_size
            )
            storage.save_evaluation(trial.key, "test", result)
    records = []
    for point in stored:
        members = seeds_of(rows, point.key)
        tests = [storage.evaluation(trial.key, "test") for trial in members]
        records.append(
            {
                "key": point.key,
                "params": format_params((p, config_value(members[0].config, p)) for p in row.gridded_params),
                **{o.metric: point.values[o.metric] for o in objectives},
                "test_accuracy": fmean(test.accuracy for test in tests if test),
                "test_errors": sum(test.errors for test in tests if test),
                "selected": row.selected_trial in {trial.key for trial in members},
            }
        )
    return pd.DataFrame.from_records(records), len(todo)


def _untested(storage: Storage, key: str, test_size: int) -> bool:
    previous = storage.evaluation(key, "test")
    return previous is None or previous.samples != test_size
