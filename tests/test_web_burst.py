"""The web app under a burst of figure requests: a figure is drawn once per version however many clients ask at
once (each gets it, or 202 if it takes long), a request whose client has left before its turn costs nothing, the
server answers on a bounded pool of threads, and its memory stays flat over hundreds of figure requests. Before:
200 concurrent requests for one ``curves.png`` timed out at 60 s, the server grew to 248 threads and kept drawing
for clients that had left. Real servers on a real results database (``web_study``)."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import combinations
from pathlib import Path

import psutil
import pytest

from benchmarks.web_predict_memory import rss_mb, seven
from gridsearch.store.storage import Storage
from gridsearch.web import figures
from gridsearch.web.app import create_app
from gridsearch.web.limits import REQUEST_THREADS, PooledServer, RequestHandler
from gridsearch.web.live import COMPUTE_THREADS
from tests.test_web_api import answer, one_more_epoch, web_study
from tests.test_webapp import server  # noqa: F401  (a fixture)


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_dir) -> Path:
    return web_study(tmp_path_factory, data_dir)


@pytest.fixture
def copy(study, tmp_path) -> Path:
    """A copy of the study's database, to record epochs in (new versions of the figures)."""
    db = tmp_path / "results.db"
    with sqlite3.connect(study / "results.db") as source, sqlite3.connect(db) as target:
        source.backup(target)
    return db


@pytest.fixture
def drawings(monkeypatch) -> list[int]:
    """How many learning-curves figures the app draws (each call goes on to the real drawing)."""
    calls: list[int] = []
    real = figures.learning_curves

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(figures, "learning_curves", counted)
    return calls


@contextmanager
def serving(db: Path, study: Path, data_dir: Path, threads: int) -> Iterator[str]:
    """The app on ``db`` served by a pooled server of ``threads`` threads in this process; its URL."""
    app = create_app(Storage(str(db), readonly=True), study / "runs", data_dir)
    httpd = PooledServer("127.0.0.1", 0, app, RequestHandler, threads=threads)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.socket.getsockname()[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=120) as response:
        return response.status, response.read()


def halved_keys(db: Path) -> list[str]:
    """The trials of the study's halving sweep, in grid order."""
    query = (
        "SELECT trial_key FROM sweep_trials JOIN sweeps ON sweeps.id = sweep_id WHERE name = 'halved' ORDER BY position"
    )
    return [key for (key,) in sqlite3.connect(db).execute(query)]


def curves_path(db: Path) -> str:
    return f"/sweeps/halved/curves.png?trials={','.join(halved_keys(db))}"


def test_a_burst_for_one_figure_draws_it_once_and_every_client_gets_it(copy, study, data_dir, drawings):
    with serving(copy, study, data_dir, threads=REQUEST_THREADS) as url:
        path = curves_path(copy)
        with ThreadPoolExecutor(40) as clients:
            answers = list(clients.map(lambda _: get(url + path), range(40)))
        assert {status for status, _ in answers} == {200} and len({body for _, body in answers}) == 1
        assert len(drawings) == 1  # before: 40 (one per request, one at a time)
        writer = Storage(str(copy))
        one_more_epoch(writer, path.rsplit("=", 1)[1].split(",")[0])  # a new version of these trials' curves
        writer.close()
        with ThreadPoolExecutor(40) as clients:
            again = list(clients.map(lambda _: get(url + path), range(40)))
        assert {status for status, _ in again} == {200} and len(drawings) == 2
        assert again[0][1] != answers[0][1]


def test_a_client_that_left_before_its_turn_costs_no_drawing(copy, study, data_dir, drawings):
    with serving(copy, study, data_dir, threads=1) as url:
        host, port = url.removeprefix("http://").split(":")
        stalled = socket.create_connection((host, int(port)))
        stalled.sendall(b"GET /api/sweeps HTTP/1.1\r\n")  # half a request: holds the one thread
        gone = socket.create_connection((host, int(port)))
        gone.sendall(f"GET {curves_path(copy)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        gone.close()  # the client gives up before its turn
        stalled.close()  # the thread is free: the next connection is the one whose client left
        status, _ = get(url + "/api/sweeps")  # served after it, by the same one thread
        assert status == 200 and drawings == []
        assert get(url + curves_path(copy))[0] == 200 and len(drawings) == 1


def test_serve_answers_a_burst_on_a_bounded_pool_of_threads_with_flat_memory(study, server):  # noqa: F811
    """600 figure requests, 50 at a time, over every combination of the halved sweep's trials: the server's
    threads stay within its pool and its memory after all of them is within 10% of what it was after 100."""
    keys = [
        key
        for (key,) in sqlite3.connect(study / "results.db").execute(
            "SELECT trial_key FROM sweep_trials JOIN sweeps ON sweeps.id = sweep_id WHERE name = 'halved'"
        )
    ]
    paths = [
        f"/sweeps/halved/curves.png?trials={','.join(chosen)}"
        for size in range(1, len(keys) + 1)
        for chosen in combinations(keys, size)
    ]
    process = psutil.Process(server.pid)
    most_threads = [process.num_threads()]
    statuses: list[int] = []
    rss: list[float] = []
    with ThreadPoolExecutor(50) as clients:
        for batch in range(12):
            requests = [server.url + paths[(batch * 50 + n) % len(paths)] for n in range(50)]
            pending = [clients.submit(get, url) for url in requests]
            while not all(request.done() for request in pending):
                most_threads.append(process.num_threads())
                time.sleep(0.05)
            statuses += [request.result()[0] for request in pending]
            if batch in (1, 11):  # after 100 requests, and after all 600
                rss.append(rss_mb(server.pid))
    assert set(statuses) <= {200, 202} and set(statuses[-100:]) == {200}, statuses  # once drawn, each is served
    # before: a thread per connection (248 in the issue); now the request and computation pools, and what was there
    assert max(most_threads) <= REQUEST_THREADS + COMPUTE_THREADS + most_threads[0]
    assert rss[1] <= 1.10 * rss[0], rss


def test_predict_says_which_tested_model_lost_its_weights(copy, study, data_dir, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(study / "runs", runs)
    selected = dict(sqlite3.connect(copy).execute("SELECT selected_trial, name FROM sweeps").fetchall())
    for key in selected:
        (runs / key / "best.pt").unlink()
    client = create_app(Storage(str(copy), readonly=True), runs, data_dir).test_client()
    status, body = answer(client.post("/api/predict", data=seven(), content_type="application/json"))
    assert status == 404, body  # before: "no tested model in the database yet"
    assert any(
        body["error"].startswith(f"the tested model of sweep {sweep}, trial {key}, has no best weights in its run ")
        for key, sweep in selected.items()
    ), body
