"""``serve``: a local web app on the results database, a live sweep dashboard and a draw-a-digit recognizer.

Flask renders each page's frame (Jinja templates in ``templates/``) and a little plain JavaScript
(``assets/``) fills it from the JSON endpoints, polling them every two seconds: pages follow a running
sweep without reloading, and there is no front-end build, library or network fetch. The figures are
the report's own (``plots``, ``report``), rendered to PNG on request.

The database is opened read-only: with SQLite's WAL, reading never blocks the coordinator of a running
sweep. Requests name sweeps and trials, never files: a model is a trial key of the database, loaded
(checksum verified) from its run folder; the assets are read once at start and served by name.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import re
import socket
import threading
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from flask import Flask, Response, render_template, request
from matplotlib.figure import Figure
from sqlalchemy.exc import SQLAlchemyError
from torch import nn
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server, select_address_family

from gridsearch.analysis import plots
from gridsearch.analysis.preprocessing import BadDrawing, mnist_style, png_ink
from gridsearch.analysis.report import grid_effects, grid_heatmap
from gridsearch.analysis.trained_models import load_model
from gridsearch.errors import UserError
from gridsearch.store.models import SweepRow, TrialRow
from gridsearch.store.storage import Storage, config_value, describe
from gridsearch.web.recognizer import recognize

MAX_REQUEST_BYTES = 2 * 1024 * 1024
"""Largest request body accepted (a 280x280 canvas as a PNG data URL is about 10 kB)."""
PNG_DATA_URL = "data:image/png;base64,"
TRIAL_KEY = re.compile(r"[0-9a-f]{16}")
MAX_CURVES = 10
"""Most trials drawn in one learning-curves figure."""
CACHED_MODELS = 4
STATUSES = ("done", "running", "failed", "timeout", "interrupted", "pending")
FINISHED = ("done", "failed", "timeout")
ASSETS = {
    "style.css": "text/css",
    "common.js": "text/javascript",
    "sweeps.js": "text/javascript",
    "sweep.js": "text/javascript",
    "recognizer.js": "text/javascript",
}
FIGURE_DPI = 80
_pyplot = threading.Lock()
"""pyplot's figure registry is not thread-safe, and requests are served in threads."""


class RequestError(Exception):
    """A request the app refuses: an HTTP status and one line saying why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def create_app(storage: Storage, artifacts: Path) -> Flask:
    """The web app on ``storage`` (opened read-only), loading models from the run folders in ``artifacts``."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    assets = {
        name: resources.files("gridsearch.web").joinpath("assets", name).read_text(encoding="utf-8") for name in ASSETS
    }
    database = describe(storage.url)

    # -- looking things up ------------------------------------------------------------------

    def sweep_row(name: str) -> SweepRow:
        try:
            return storage.sweep(name)
        except UserError as exc:
            raise RequestError(404, str(exc)) from None

    def model_trial(key: object) -> TrialRow:
        """The done trial ``key`` whose best weights are in its run folder."""
        if not isinstance(key, str) or not TRIAL_KEY.fullmatch(key):
            raise RequestError(400, f"trial must be a trial key of 16 hexadecimal digits, got {key!r}")
        trial = storage.trial(key)
        if trial is None:
            raise RequestError(404, f"no trial {key} in {database}")
        if trial.status != "done":
            raise RequestError(409, f"trial {key} is {trial.status}, not done: it has no final weights yet")
        if not (artifacts / key / "best.pt").exists():
            raise RequestError(
                404,
                f"trial {key}: no best weights in its run folder under {artifacts} "
                "(start serve with --artifacts where the run folders are)",
            )
        return trial

    @lru_cache(maxsize=CACHED_MODELS)
    def model(key: str) -> nn.Module:
        try:
            return load_model(storage.trial(key), artifacts)
        except UserError as exc:  # e.g. a damaged checkpoint
            raise RequestError(409, str(exc)) from None

    def models() -> list[dict[str, Any]]:
        """Every sweep's selected trial that was tested and has its weights, best test accuracy first."""
        found = []
        for name in storage.sweep_names():
            key = storage.selected_trial(name)
            test = storage.evaluation(key, "test") if key else None
            if test is None or not (artifacts / key / "best.pt").exists():
                continue
            trial, row = storage.trial(key), storage.sweep(name)
            config = trial.config
            found.append(
                {
                    "trial": key,
                    "sweep": name,
                    "architecture": trial.architecture,
                    "params": {p: config_value(config, p) for p in row.gridded_params},
                    "val_accuracy": trial.val_accuracy,
                    "test_accuracy": test.accuracy,
                    "test_samples": test.samples,
                }
            )
        return sorted(found, key=lambda m: -m["test_accuracy"])

    # -- pages ------------------------------------------------------------------------------

    def page(template: str, title: str, **values: Any) -> str:
        return render_template(template, title=title, database=database, **values)

    @app.get("/")
    def sweeps_page() -> str:
        return page("sweeps.html", "Sweeps")

    @app.get("/sweeps/<name>")
    def sweep_page(name: str) -> str:
        return page("sweep.html", f"Sweep {sweep_row(name).name}", sweep=name)

    @app.get("/recognizer")
    def recognizer_page() -> str:
        return page("recognizer.html", "Recognizer")

    @app.get("/assets/<name>")
    def asset(name: str) -> Response:
        if name not in assets:
            raise RequestError(404, f"no asset {name!r}")
        return Response(assets[name], mimetype=ASSETS[name])

    # -- JSON -------------------------------------------------------------------------------

    @app.get("/api/sweeps")
    def sweeps() -> dict[str, Any]:
        table = storage.status_table()
        best = storage.best_scores()
        records = []
        for row in table.to_dict("records"):
            counts = {status: int(row[status]) for status in STATUSES}
            finished = sum(counts[status] for status in FINISHED)
            select, score = best.get(row["sweep"], (None, None))
            selected = row["selected"] if isinstance(row["selected"], str) else None  # NaN when none
            records.append(
                {
                    "name": row["sweep"],
                    "architecture": row["architecture"],
                    **counts,
                    "trials": int(row["trials"]),
                    "finished": finished,
                    "progress": finished / row["trials"] if row["trials"] else 0.0,
                    "select": select,
                    "best": score,
                    "selected_trial": selected,
                }
            )
        return {"database": database, "sweeps": records}

    @app.get("/api/sweeps/<name>/trials")
    def sweep_trials(name: str) -> dict[str, Any]:
        row = sweep_row(name)
        gridded = row.gridded_params
        table = storage.trials_table(name)
        planned = {t.key: t.config["params"]["epochs"] for t in storage.trials(name)}
        trials = [
            {
                "key": t["key"],
                "params": {p: t[p] for p in gridded},
                "seed": t["seed"],
                "status": t["status"],
                "epochs_run": t["epochs_run"],
                "epochs": planned[t["key"]],
                "best_epoch": t["best_epoch"],
                "val_accuracy": t["val_accuracy"],
                "val_loss": t["val_loss"],
                "train_seconds": t["train_seconds"],
                "error": t["error"],
            }
            for t in json.loads(table.to_json(orient="records"))
        ]  # to_json: NaN -> null
        counts = {status: sum(t["status"] == status for t in trials) for status in STATUSES}
        finished = sum(counts[status] for status in FINISHED)
        _, varying = grid_effects(table, gridded) if trials else (None, [])
        test = storage.evaluation(row.selected_trial, "test") if row.selected_trial else None
        progress = sum(t["epochs_run"] for t in trials)
        return {
            "sweep": {
                "name": row.name,
                "architecture": row.architecture,
                "select": row.select_metric,
                "gridded": gridded,
                **counts,
                "trials": len(trials),
                "finished": finished,
                "heatmap": varying[:2] if len(varying) >= 2 else None,
                "selected_trial": row.selected_trial,
                "version": f"{finished}.{progress}.{row.selected_trial or ''}",
            },
            "test": None
            if test is None
            else {
                "trial": test.trial_key,
                "accuracy": test.accuracy,
                "loss": test.loss,
                "errors": test.errors,
                "samples": test.samples,
                "confusion": test.confusion,
            },
            "trials": trials,
        }

    @app.get("/api/models")
    def model_list() -> dict[str, Any]:
        found = models()
        return {"default": found[0]["trial"] if found else None, "models": found}

    @app.post("/api/predict")
    def predict() -> dict[str, Any]:
        body = request.get_json(force=True, silent=True)
        if not isinstance(body, dict):
            raise RequestError(
                400,
                'the body must be a JSON object: {"image": "data:image/png;base64,...", '
                '"trial": "<optional trial key>"}',
            )
        unknown = sorted(set(body) - {"image", "trial"})
        if unknown:
            raise RequestError(400, f"unknown field {unknown[0]!r}; expected image and optionally trial")
        digit = mnist_style(drawing(body.get("image")))
        if body.get("trial") is None:
            found = models()
            if not found:
                raise RequestError(404, "no tested model in the database yet: run a sweep to the end first")
            body["trial"] = found[0]["trial"]
        trial = model_trial(body["trial"])
        result = recognize(model(trial.key), digit)
        return {
            "trial": trial.key,
            "architecture": trial.architecture,
            "digit": result.digit,
            "probabilities": [round(float(p), 6) for p in result.probabilities],
            "input": digit.tolist(),
            "saliency": np.round(result.saliency, 3).tolist(),
        }

    # -- figures ----------------------------------------------------------------------------

    @app.get("/sweeps/<name>/heatmap.png")
    def heatmap(name: str) -> Response:
        row = sweep_row(name)
        done, params = grid_effects(storage.trials_table(name), row.gridded_params)
        if len(params) < 2:
            raise RequestError(
                404, f"sweep {name}: fewer than two gridded params vary among its done trials, so there is no heatmap"
            )
        return png(lambda: grid_heatmap(done, params, name))

    @app.get("/sweeps/<name>/curves.png")
    def curves(name: str) -> Response:
        row = sweep_row(name)
        keys = [key for key in request.args.get("trials", "").split(",") if key]
        members = {t.key: t for t in storage.trials(name)}
        if not keys or len(keys) > MAX_CURVES:
            raise RequestError(400, f"trials must list 1 to {MAX_CURVES} trial keys, separated by commas")
        for key in keys:
            if key not in members:
                raise RequestError(404, f"sweep {name} has no trial {key[:40]!r}")
        epochs = storage.epochs(keys)
        gridded = row.gridded_params

        def label(key: str) -> str:
            config = members[key].config
            values = {p: config_value(config, p) for p in gridded} | {"seed": members[key].seed}
            return " ".join(f"{p}={v:g}" if isinstance(v, float) else f"{p}={v}" for p, v in values.items())

        return png(lambda: plots.learning_curves({label(k): epochs[epochs["trial_key"] == k] for k in keys}))

    @app.get("/sweeps/<name>/confusion.png")
    def confusion(name: str) -> Response:
        row = sweep_row(name)
        test = storage.evaluation(row.selected_trial, "test") if row.selected_trial else None
        if test is None:
            raise RequestError(404, f"sweep {name} has no tested trial yet")
        return png(lambda: plots.confusion_matrix(np.array(test.confusion), f"{name}: test confusion matrix"))

    # -- errors: one JSON line, never a traceback --------------------------------------------

    def error(status: int, message: str) -> tuple[Any, int]:
        if (
            request.path.startswith(("/api/", "/assets/"))
            or request.path.endswith(".png")
            or not request.accept_mimetypes.accept_html
        ):
            return {"error": message}, status
        return page("error.html", f"Error {status}", status=status, message=message), status

    @app.errorhandler(RequestError)
    def refused(exc: RequestError) -> tuple[Any, int]:
        return error(exc.status, str(exc))

    @app.errorhandler(BadDrawing)
    def bad_drawing(exc: BadDrawing) -> tuple[Any, int]:
        return error(400, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Any, int]:
        if exc.code == 413:
            return error(413, f"the request body is larger than {MAX_REQUEST_BYTES // 1024} kB")
        return error(exc.code or 500, f"{exc.name}: {exc.description}")

    @app.errorhandler(SQLAlchemyError)
    def database_error(exc: SQLAlchemyError) -> tuple[Any, int]:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        app.logger.error("database error: %s", reason)
        return error(503, f"cannot read the database {database} ({reason})")

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> tuple[Any, int]:
        app.logger.exception("internal error")
        return error(500, f"internal error ({type(exc).__name__}); the traceback is in the server's log")

    return app


def drawing(data_url: object) -> np.ndarray:
    """The ink of a PNG data URL (``data:image/png;base64,...``); :class:`BadDrawing` if it is not one."""
    if not isinstance(data_url, str) or not data_url.startswith(PNG_DATA_URL):
        raise BadDrawing(f"image must be a PNG data URL starting with {PNG_DATA_URL!r}")
    try:
        png = base64.b64decode(data_url[len(PNG_DATA_URL) :], validate=True)
    except binascii.Error:
        raise BadDrawing("image: the data URL is not valid base64") from None
    return png_ink(png)


def png(make_figure: Callable[[], Figure]) -> Response:
    """The figure ``make_figure`` draws, as a PNG response."""
    buffer = io.BytesIO()
    with _pyplot:
        figure = make_figure()
        figure.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
        plt.close(figure)
    return Response(buffer.getvalue(), mimetype="image/png")


def serve(storage: Storage, artifacts: Path, host: str, port: int) -> None:
    """Serve the app on ``host``:``port`` (0: a free port) until interrupted; prints its address first."""
    app = create_app(storage, artifacts)
    listener = socket.socket(select_address_family(host, port), socket.SOCK_STREAM)
    with listener:
        try:  # bound here, not by werkzeug, which prints its own advice and exits on a busy port
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen()
        except OSError as exc:
            raise UserError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None
        server = make_server(host, port, app, threaded=True, fd=listener.fileno())
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request: the pages poll
    print(f"serving {describe(storage.url)} at http://{host}:{server.port}/ (Ctrl-C to stop)", flush=True)
    server.serve_forever()
