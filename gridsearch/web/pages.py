"""The sweeps, sweep and recognizer pages and every page's assets. Flask renders each page's frame from
``templates/``; the JavaScript in ``assets/`` fills it from the JSON endpoints."""

from __future__ import annotations

from importlib import resources

from flask import Blueprint, Response, render_template

from gridsearch.vocabulary import FINISHED, STATUS_ORDER
from gridsearch.web.catalog import Catalog, RequestError

ASSETS = {
    "style.css": "text/css",
    "common.js": "text/javascript",
    "sweeps.js": "text/javascript",
    "sweep.js": "text/javascript",
    "recognizer.js": "text/javascript",
    "augment.js": "text/javascript",
}
STATUSES = [status.value for status in STATUS_ORDER]
"""The statuses in the order pages show them (the scripts read them from the page)."""


def blueprint(catalog: Catalog) -> Blueprint:
    """The pages on ``catalog``, and the assets, read once here and served by name."""
    pages = Blueprint("pages", __name__)
    assets = {
        name: resources.files("gridsearch.web").joinpath("assets", name).read_text(encoding="utf-8") for name in ASSETS
    }

    @pages.app_context_processor
    def every_page() -> dict[str, object]:
        """What every page shows: the database, and the statuses in order (``finished``: those counted
        as finished)."""
        finished = [status.value for status in STATUS_ORDER if status in FINISHED]
        return {"database": catalog.database, "statuses": STATUSES, "finished": finished}

    @pages.get("/")
    def sweeps() -> str:
        return render_template("sweeps.html", title="Sweeps")

    @pages.get("/sweeps/<name>")
    def sweep(name: str) -> str:
        return render_template("sweep.html", title=f"Sweep {catalog.sweep(name).name}", sweep=name)

    @pages.get("/recognizer")
    def recognizer() -> str:
        return render_template("recognizer.html", title="Recognizer")

    @pages.get("/assets/<name>")
    def asset(name: str) -> Response:
        if name not in assets:
            raise RequestError(404, f"no asset {name!r}")
        return Response(assets[name], mimetype=ASSETS[name])

    return pages
