"""The sweep page's trade-offs: a sweep of several objectives' front as JSON, and a scatter of any two of its
objectives as a PNG (``gridsearch.analysis.fronts``), each made once per results version of the sweep."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from flask import Blueprint, Response, request

from gridsearch.analysis.fronts import front_points, front_table, scatter_front, sweep_objectives
from gridsearch.spec.pareto import Objective, Rule
from gridsearch.store.models import SweepRow
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import OBJECTIVE_LABELS
from gridsearch.web.catalog import Catalog, RequestError
from gridsearch.web.figures import drawn
from gridsearch.web.live import LiveSweeps, computing


def blueprint(catalog: Catalog, live: LiveSweeps) -> Blueprint:
    """``GET /api/sweeps/NAME/front`` and ``GET /sweeps/NAME/front.png?x=OBJECTIVE&y=OBJECTIVE``."""
    fronts = Blueprint("fronts", __name__)
    storage = catalog.storage

    @fronts.get("/api/sweeps/<name>/front")
    def front(name: str) -> dict[str, Any] | Response:
        """``{"objectives": [{"metric", "direction", "label"}], "rule", "selected_trial", "points", "front": [{"key",
        "params", "values", "selected", "test_accuracy"}], "note"}``; a sweep of one objective has no front (a note)."""
        row = catalog.sweep(name)
        objectives, rule = sweep_objectives(storage, name)
        if not objectives or rule is None:
            note = f"sweep {name} selects by one objective ({row.select_metric}): no front"
            return {
                "objectives": [],
                "rule": None,
                "selected_trial": row.selected_trial,
                "points": 0,
                "front": [],
                "note": note,
            }
        version = live.results_version(row)
        made = live.ready((name, "front", version), lambda: front_answer(storage, row, objectives, rule))
        return computing(version) if made is None else made

    @fronts.get("/sweeps/<name>/front.png")
    def front_png(name: str) -> Response:
        row = catalog.sweep(name)
        objectives, _ = sweep_objectives(storage, name)
        names = [o.metric for o in objectives]
        x, y = request.args.get("x", names[-1] if names else ""), request.args.get("y", names[0] if names else "")
        if len(names) < 2 or x not in names or y not in names or x == y:
            raise RequestError(
                404, f"sweep {name}: x and y must be two of its objectives ({', '.join(names) or 'none'})"
            )
        version = live.results_version(row)

        def make() -> bytes:
            found = front_points(storage, [name], objectives)
            if found.empty:
                raise RequestError(404, f"sweep {name}: no trial has a value of every objective yet")
            title = f"{name}: {OBJECTIVE_LABELS[y]} against {OBJECTIVE_LABELS[x]}"
            return drawn(lambda: scatter_front(found, objectives, x, y, title))

        made = live.ready((name, f"front-{x}-{y}", version), make)
        return computing(version) if made is None else Response(made, mimetype="image/png")

    return fronts


def front_answer(storage: Storage, row: SweepRow, objectives: Sequence[Objective], rule: Rule) -> dict[str, Any]:
    """What ``/api/sweeps/NAME/front`` answers for sweep ``row``, of several objectives."""
    found = front_points(storage, [row.name], objectives)
    members = front_table(found, storage, objectives).to_dict("records")
    return {
        "objectives": [
            {"metric": o.metric, "direction": o.direction, "label": OBJECTIVE_LABELS[o.metric]} for o in objectives
        ],
        "rule": f"{rule.name}: {rule.describe()}",
        "selected_trial": row.selected_trial,
        "points": len(found),
        "front": [
            {
                "key": member["key"],
                "params": member["params"],
                "values": {o.metric: float(member[o.metric]) for o in objectives},
                "selected": bool(member["selected"]),
                "test_accuracy": None if pd.isna(member["test_accuracy"]) else float(member["test_accuracy"]),
            }
            for member in members
        ],
        "note": None if len(found) else "no trial has a value of every objective yet",
    }
