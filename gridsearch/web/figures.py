"""The sweep page's figures as PNGs, drawn on request by the report's own functions: the hyperparameter
heatmap, the selected trial's test confusion matrix, the learning curves of chosen trials, and which gridded
param mattered (variance decomposition bars, parallel coordinates)."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable

import matplotlib.pyplot as plt
import numpy as np
from flask import Blueprint, Response, request
from matplotlib.figure import Figure

from gridsearch.analysis import plots
from gridsearch.analysis.curves import learning_curves
from gridsearch.analysis.effects import grid_effects, grid_heatmap
from gridsearch.analysis.importance import MIN_TRIALS, Importance, sweep_importance
from gridsearch.spec.config import TrialConfig, config_value
from gridsearch.spec.datasets import described
from gridsearch.store import views
from gridsearch.vocabulary import SHORT_KEY, format_params
from gridsearch.web.catalog import Catalog, RequestError
from gridsearch.web.live import LiveSweeps, computing, digest

MAX_CURVES = 10
"""Most trials drawn in one learning-curves figure."""
FIGURE_DPI = 80
WAIT_SECONDS = 10.0
"""How long a request waits for a figure being drawn (by it or another request) before it answers 202."""
_pyplot = threading.Lock()
"""pyplot's figure registry is not thread-safe, and requests are served in threads."""


def drawn(make_figure: Callable[[], Figure]) -> bytes:
    """The figure ``make_figure`` draws, as PNG bytes."""
    buffer = io.BytesIO()
    with _pyplot:
        figure = make_figure()
        try:
            figure.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
        finally:
            plt.close(figure)
    return buffer.getvalue()


def png(make_figure: Callable[[], Figure]) -> Response:
    """The figure ``make_figure`` draws, as a PNG response."""
    return Response(drawn(make_figure), mimetype="image/png")


def curve_labels(configs: dict[str, TrialConfig], gridded: list[str]) -> dict[str, str]:
    """Each trial's legend label: its key as the tables show it, then the gridded params (and seed) that set it
    apart from the other trials drawn, empty ones left out (``3f2a9c1e lr=0.05 seed=1``)."""
    values = {key: [*((p, config_value(c, p)) for p in gridded), ("seed", c["seed"])] for key, c in configs.items()}
    apart = [
        i
        for i, (_, first) in enumerate(next(iter(values.values()), []))
        if any(v[i][1] != first for v in values.values())
    ]
    return {key: " ".join([key[:SHORT_KEY], format_params(v[i] for i in apart)]).strip() for key, v in values.items()}


def blueprint(catalog: Catalog, live: LiveSweeps) -> Blueprint:
    """The figure endpoints ``/sweeps/NAME/*.png`` on ``catalog``; those drawn from the sweep's results (all but
    the curves) are drawn once per results version (``live``)."""
    figures = Blueprint("figures", __name__, url_prefix="/sweeps/<name>")
    storage = catalog.storage

    def once(name: str, figure: str, make_png: Callable[[], bytes], version: str | None = None) -> Response:
        """The PNG ``make_png`` makes once per ``version`` (default: the results version of sweep ``name``), in the
        background, however many requests ask for it at once: each waits for it up to ``WAIT_SECONDS``, then
        answers 202 until it is made."""
        version = version or live.results_version(catalog.sweep(name))
        made = live.ready_within((name, figure, version), make_png, WAIT_SECONDS)
        return computing(version) if made is None else Response(made, mimetype="image/png")

    @figures.get("/heatmap.png")
    def heatmap(name: str) -> Response:
        def make() -> bytes:
            effects = grid_effects(storage, catalog.sweep(name))
            if len(effects.factors) < 2:
                raise RequestError(
                    404,
                    f"sweep {name}: fewer than two gridded params vary, each on its own, among the trials it compares "
                    f"({effects.basis}), so there is no heatmap",
                )
            return drawn(lambda: grid_heatmap(effects, name))

        return once(name, "heatmap", make)

    @figures.get("/curves.png")
    def curves(name: str) -> Response:
        row = catalog.sweep(name)
        keys = [key for key in request.args.get("trials", "").split(",") if key]
        if not keys or len(keys) > MAX_CURVES:
            raise RequestError(400, f"trials must list 1 to {MAX_CURVES} trial keys, separated by commas")
        members = views.trial_configs(storage, keys, sweep=name)
        for key in keys:
            if key not in members:
                raise RequestError(404, f"sweep {name} has no trial {key[:40]!r}")
        epochs = views.epochs(storage, keys)

        def make() -> bytes:
            labels = curve_labels({key: members[key] for key in keys}, row.gridded_params)
            return drawn(lambda: learning_curves({labels[key]: epochs[epochs["trial_key"] == key] for key in keys}))

        version = digest((tuple(keys), tuple(epochs.itertuples(index=False, name=None))))  # these trials' epochs
        return once(name, "curves", make, version)

    def importance(name: str) -> Importance:
        catalog.sweep(name)
        found = sweep_importance(storage, name)
        if found is None:
            raise RequestError(
                404,
                f"sweep {name}: fewer than {MIN_TRIALS} scored trials or no varying gridded param, "
                "so no variance to split",
            )
        return found

    @figures.get("/importance.png")
    def importance_bars(name: str) -> Response:
        def make() -> bytes:
            found = importance(name)
            how = "exact functional ANOVA" if found.exact else "random-forest estimate"
            return drawn(lambda: plots.importance_bars(found.shares, f"{name}: {found.metric} ({how})"))

        return once(name, "importance", make)

    @figures.get("/parallel.png")
    def parallel(name: str) -> Response:
        def make() -> bytes:
            found = importance(name)
            return drawn(lambda: plots.parallel_coordinates(found.scores, found.params, found.metric, name))

        return once(name, "parallel", make)

    @figures.get("/confusion.png")
    def confusion(name: str) -> Response:
        def make() -> bytes:
            row = catalog.sweep(name)
            test = storage.evaluation(row.selected_trial, "test") if row.selected_trial else None
            if test is None:
                raise RequestError(404, f"sweep {name} has no tested trial yet")
            dataset = described(storage.trial_rows([test.trial_key])[test.trial_key].config["dataset"])
            title = f"{name}: test confusion matrix"
            return drawn(lambda: plots.confusion_matrix(np.array(test.confusion), title, dataset))

        return once(name, "confusion", make)

    return figures
