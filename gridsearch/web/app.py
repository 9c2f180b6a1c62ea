"""``serve``: a local web app on the results database, a live sweep dashboard and a draw-a-digit recognizer.

The app is assembled here from its parts: the pages and their assets (``pages``), the JSON endpoints the
pages poll every two seconds (``api``), the figures drawn on request (``figures``), the front of a sweep of
several objectives (``fronts``), what a trained network learned (``trained``), the augmentation explorer
(``augment``), the drawings classified on a thread of their own (``inference``) and the request-size limit
(``limits``). Every part finds sweeps and trials through one :class:`~gridsearch.web.catalog.Catalog`; every
refusal is answered here, as one JSON line (or a page, to a browser asking for one), never a traceback.

The database is opened read-only: with SQLite's WAL, reading never blocks the coordinator of a running
sweep.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from flask import Flask, render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import ClientDisconnected, HTTPException
from werkzeug.serving import select_address_family

from gridsearch.analysis.preprocessing import BadDrawing
from gridsearch.errors import Unavailable, UserError
from gridsearch.store.connection import describe
from gridsearch.store.faults import reason
from gridsearch.store.storage import Storage
from gridsearch.training.data import default_data_dir
from gridsearch.web import api, augment, figures, fronts, pages, trained
from gridsearch.web.catalog import Catalog, RequestError
from gridsearch.web.digits import Digits
from gridsearch.web.inference import Inference
from gridsearch.web.limits import IDLE_SECONDS, BodyLimit, PooledServer, RequestHandler
from gridsearch.web.live import LiveSweeps

MAX_REQUEST_BYTES = 2 * 1024 * 1024
"""Largest request body accepted (a 280x280 canvas as a PNG data URL is about 10 kB)."""


def create_app(storage: Storage, artifacts: Path, data_dir: Path | None = None) -> Flask:
    """The web app on ``storage`` (opened read-only), loading models from the run folders in ``artifacts`` and
    the datasets' test images from ``data_dir`` (default: ``$GRIDSEARCH_DATA`` or ``./data``)."""
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.wsgi_app = BodyLimit(app.wsgi_app, MAX_REQUEST_BYTES)  # type: ignore[method-assign]
    catalog = Catalog(storage, artifacts)
    app.register_blueprint(pages.blueprint(catalog))
    inference = Inference(catalog)
    digits = Digits(data_dir or default_data_dir())
    live = LiveSweeps(storage)
    app.extensions["gridsearch.live"] = live  # what computes in the background (tests wait on it)
    app.register_blueprint(api.blueprint(catalog, live, inference, digits))
    app.register_blueprint(figures.blueprint(catalog, live))
    app.register_blueprint(fronts.blueprint(catalog, live))
    app.register_blueprint(trained.blueprint(catalog, inference, digits))
    app.register_blueprint(augment.blueprint(digits))

    def error(status: int, message: str) -> ResponseReturnValue:
        """``{"error": message}``, or the error page to a browser asking for a page."""
        if (
            request.path.startswith(("/api/", "/assets/"))
            or request.path.endswith(".png")
            or not request.accept_mimetypes.accept_html
        ):
            return {"error": message}, status
        return render_template("error.html", title=f"Error {status}", status=status, message=message), status

    @app.errorhandler(RequestError)
    def refused(exc: RequestError) -> ResponseReturnValue:
        return error(exc.status, str(exc))

    @app.errorhandler(BadDrawing)
    def bad_drawing(exc: BadDrawing) -> ResponseReturnValue:
        return error(400, str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        if exc.code == 413:
            return error(413, f"the request body is larger than {MAX_REQUEST_BYTES // 1024} kB")
        if isinstance(exc, ClientDisconnected):
            return error(
                400, f"the request body ended before its Content-Length, or stopped arriving for {IDLE_SECONDS:g} s"
            )
        return error(exc.code or 500, f"{exc.name}: {exc.description}")

    @app.errorhandler(SQLAlchemyError)
    def database_error(exc: SQLAlchemyError) -> ResponseReturnValue:
        why = reason(exc)
        app.logger.error("database error: %s", why)
        return error(503, f"cannot read the database {catalog.database} ({why})")

    @app.errorhandler(Unavailable)
    def database_unavailable(exc: Unavailable) -> ResponseReturnValue:
        app.logger.error("%s", exc)
        return error(503, str(exc))

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> ResponseReturnValue:
        app.logger.exception("internal error")
        return error(500, f"internal error ({type(exc).__name__}); the traceback is in the server's log")

    return app


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
        server = PooledServer(host, port, app, RequestHandler, fd=listener.fileno())
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request: the pages poll
    print(f"serving {describe(storage.url)} at http://{host}:{server.port}/ (Ctrl-C to stop)", flush=True)
    server.serve_forever()
