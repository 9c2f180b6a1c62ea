"""The web app's logic in-process (Flask's test client): its JSON endpoints, figures and refusals on a real
results database, made by real sweeps run through the engine.

The database (``web_study``, shared with ``test_webapp.py``) holds a LeNet-5-3 trained on 2,000 MNIST digits
for the recognizer, and a completed successive-halving sweep whose unpromoted trials are ``stopped``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml
from filelock import FileLock
from flask.testing import FlaskClient
from PIL import Image, ImageDraw

from gridsearch.analysis import importance
from gridsearch.cli import main
from gridsearch.store.storage import Storage
from gridsearch.training import data
from gridsearch.training.augmentation import AUGMENTATION_DEFAULTS, BatchAugmenter
from gridsearch.vocabulary import STATUS_ORDER, TrialStatus
from gridsearch.web import recognizer
from gridsearch.web.app import create_app
from tests.conftest import cli, rows, write_sweep

HALVED = {
    "name": "halved",
    "grid": [{"lr": [0.02, 0.08], "lr_step": [1]}, {"lr": [0.02], "lr_step": [3]}],
    "params": {"epochs": 3, "batch_size": 50, "hidden": 16, "patience": 5},
    "dataset": {"train_size": 300, "val_size": 200, "test_size": 200},
    "search": {"strategy": "halving", "factor": 3, "min_epochs": 1},
}
"""3 trials by successive halving: all train 1 epoch, the best ceil(3 / 3) = 1 goes on to 3, 2 stay stopped."""
STATUSES = [status.value for status in STATUS_ORDER]
SWEEP_KEYS = {
    *STATUSES,
    "name",
    "architecture",
    "dataset",
    "digits",
    "trials",
    "finished",
    "progress",
    "select",
    "best",
    "selected_trial",
}


def web_study(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The web tests' study folder (``results.db``, ``runs/``), made once per test session by ``gridsearch run``
    (inline, in this process): the ``digits`` sweep (one LeNet-5-3, 2,000 training digits, 2 epochs, tested on
    500) and ``HALVED``."""
    # Under pytest-xdist each worker has its own base folder: the study goes in their shared parent, made by
    # whichever worker comes first while the other waits on the lock (the recipe of xdist's documentation).
    root = tmp_path_factory.getbasetemp()
    folder = (root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root) / "web-study"
    folder.mkdir(exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if not (folder / "made").exists():
            _make_web_study(folder, data_dir)
    return folder


def _make_web_study(folder: Path, data_dir: Path) -> None:
    digits = write_sweep(
        folder,
        "digits.yaml",
        name="digits",
        dataset={"train_size": 2000, "val_size": 500, "test_size": 500},
        params={"epochs": 2, "batch_size": 50, "lr": 0.05, "lr_step": 3, "patience": 5},
        grid={"hidden": [64]},
        threads=1,  # on busy cores, torch's threads wait on each other many times over
    )
    halved = write_sweep(folder, "halved.yaml", **HALVED)
    cli("run", str(digits), str(halved), cwd=folder, data_dir=data_dir, check=True)
    (folder / "made").touch()


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_dir) -> Path:
    return web_study(tmp_path_factory, data_dir)


@pytest.fixture(scope="module")
def client(study, data_dir) -> FlaskClient:
    """The app on the study's database, opened read-only as ``serve`` opens it."""
    return create_app(Storage(str(study / "results.db"), readonly=True), study / "runs", data_dir).test_client()


def answer(response) -> tuple[int, dict]:
    """Status and JSON body, read as browsers read JSON (NaN or Infinity in it fail the test)."""
    assert response.content_type == "application/json", response.content_type

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in the JSON answer: browsers cannot parse it")

    return response.status_code, json.loads(response.data, parse_constant=refuse)


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def blank(size: tuple[int, int] = (280, 280)) -> Image.Image:
    return Image.new("RGB", size, "white")


def computed(client: FlaskClient, path: str):
    """The answer of ``path``, whose value the server computes in the background: the first request may answer
    202 (computing, with ``Retry-After``); then the test waits for the computation to end (an event) and asks again."""
    response = client.get(path)
    if response.status_code == 202:
        assert response.get_json()["state"] == "computing" and response.headers["Retry-After"]
        assert client.application.extensions["gridsearch.live"].wait_computed(120)
        response = client.get(path)
    return response


def png_size(response) -> tuple[int, int]:
    """Width and height of a PNG answer (it must be one)."""
    assert response.status_code == 200 and response.content_type == "image/png", response.data[:200]
    return Image.open(io.BytesIO(response.data)).size


def sweep_summary(client: FlaskClient, name: str) -> dict:
    status, body = answer(client.get("/api/sweeps"))
    assert status == 200
    return next(sweep for sweep in body["sweeps"] if sweep["name"] == name)


# -- the JSON API -----------------------------------------------------------------------------


def test_api_lists_sweeps_trials_and_models_as_the_database_has_them(client, study):
    db = study / "results.db"
    digits = sweep_summary(client, "digits")
    [(key, val_accuracy)] = rows(
        db,
        "SELECT t.key, t.val_accuracy FROM trials t JOIN sweeps s ON s.selected_trial = t.key WHERE s.name = 'digits'",
    )
    assert set(digits) == SWEEP_KEYS
    assert digits | {"done": 1, "pending": 0, "trials": 1, "progress": 1.0, "selected_trial": key} == digits
    assert digits["best"] == pytest.approx(val_accuracy)

    status, body = answer(client.get("/api/sweeps/digits/trials"))
    [(accuracy, errors, samples)] = rows(
        db, "SELECT accuracy, errors, samples FROM evaluations WHERE trial_key = ? AND name = 'test'", key
    )
    assert status == 200 and [t["key"] for t in body["trials"]] == [key]
    assert body["trials"][0]["params"] == {"hidden": 64} and body["trials"][0]["epochs_run"] == 2
    assert body["test"]["accuracy"] == pytest.approx(accuracy) and body["test"]["errors"] == errors
    assert np.array(body["test"]["confusion"]).sum() == samples == 500

    status, body = answer(client.get("/api/models"))
    tested = rows(
        db, "SELECT e.trial_key, e.accuracy FROM evaluations e JOIN sweeps s ON s.selected_trial = e.trial_key"
    )
    assert status == 200 and [m["trial"] for m in body["models"]] == [k for k, _ in sorted(tested, key=lambda t: -t[1])]
    assert body["default"] == key == body["models"][0]["trial"]
    assert body["models"][0] | {"sweep": "digits", "architecture": "lenet53"} == body["models"][0]


def test_a_completed_halving_sweep_is_finished_with_its_stopped_trials(client, study):
    """Its unpromoted trials are ``stopped``: counted, finished, and on the heatmap (they were left out)."""
    statuses = dict(
        rows(
            study / "results.db",
            "SELECT t.status, count(*) FROM trials t JOIN sweep_trials m ON m.trial_key = t.key "
            "JOIN sweeps s ON s.id = m.sweep_id WHERE s.name = 'halved' GROUP BY t.status",
        )
    )
    assert statuses == {"done": 1, "stopped": 2}
    halved = sweep_summary(client, "halved")
    assert set(halved) == SWEEP_KEYS
    assert {status: halved[status] for status in STATUSES} == {status: statuses.get(status, 0) for status in STATUSES}
    assert (halved["trials"], halved["finished"], halved["progress"]) == (3, 3, 1.0)

    status, body = answer(client.get("/api/sweeps/halved/trials"))
    sweep = body["sweep"]
    assert status == 200 and sum(sweep[status] for status in STATUSES) == sweep["trials"] == sweep["finished"] == 3
    assert sorted(t["status"] for t in body["trials"]) == ["done", "stopped", "stopped"]
    assert sweep["heatmap"] == ["lr", "lr_step"] and body["test"]["trial"] == sweep["selected_trial"]
    assert min(png_size(computed(client, "/sweeps/halved/heatmap.png"))) > 100

    page = client.get("/").get_data(as_text=True)  # the dashboard's columns, in order, stopped among them
    assert f'data-statuses="{" ".join(STATUSES)}"' in page and '<th data-count="stopped">stopped</th>' in page


def test_figures_are_pngs_of_the_sweep(client, study):
    keys = [
        key
        for (key,) in rows(
            study / "results.db",
            "SELECT m.trial_key FROM sweep_trials m JOIN sweeps s ON s.id = m.sweep_id WHERE s.name = 'halved'",
        )
    ]
    assert min(png_size(computed(client, "/sweeps/digits/confusion.png"))) > 100
    assert min(png_size(client.get(f"/sweeps/halved/curves.png?trials={','.join(keys)}"))) > 100


def test_predict_reads_real_mnist_digits_drawn_large(client, data_dir):
    test = data.test_split(data_dir, 20)  # drawn large, they come back re-preprocessed, not as they were
    right = 0
    for image, label in zip(test.images[:, 0].numpy(), test.labels.tolist()):
        drawing = Image.fromarray(255 - image).resize((280, 280), Image.Resampling.BILINEAR)  # dark on white
        status, body = answer(client.post("/api/predict", json={"image": data_url(drawing)}))
        assert status == 200 and len(body["probabilities"]) == 10
        assert sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-4)
        assert np.array(body["input"]).shape == (28, 28) and np.array(body["saliency"]).shape == (28, 28)
        right += body["digit"] == label
    assert right >= 17


def test_bad_requests_get_a_4xx_with_a_one_line_json_error(client, study):
    stroke = blank()
    ImageDraw.Draw(stroke).line([(140, 40), (140, 240)], fill="black", width=20)
    good = data_url(stroke)
    [(stopped,)] = rows(study / "results.db", "SELECT key FROM trials WHERE status = 'stopped' LIMIT 1")
    posts = [
        (b"{not json", 400, "must be a JSON object"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b"[" * 1000 + b"]" * 1000, 400, "nested too deeply"),
        (b'{"image": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1001, 400, "nested too deeply"),
        (json.dumps({"image": good, "model": "x"}).encode(), 400, "unknown field 'model'"),
        (json.dumps({}).encode(), 400, "PNG data URL"),
        (json.dumps({"image": "data:image/jpeg;base64,AAAA"}).encode(), 400, "PNG data URL"),
        (json.dumps({"image": "data:image/png;base64,%%%"}).encode(), 400, "not valid base64"),
        (
            json.dumps({"image": "data:image/png;base64," + base64.b64encode(b"GIF89a...").decode()}).encode(),
            400,
            "not a PNG",
        ),
        (json.dumps({"image": data_url(blank((20, 280)))}).encode(), 400, "20x280 pixels"),
        (json.dumps({"image": data_url(blank((2000, 2000)))}).encode(), 400, "2000x2000 pixels"),
        (json.dumps({"image": data_url(blank())}).encode(), 400, "empty"),
        (json.dumps({"image": good, "trial": "../../etc/passwd"}).encode(), 400, "16 hexadecimal digits"),
        (json.dumps({"image": good, "trial": 7}).encode(), 400, "16 hexadecimal digits"),
        (json.dumps({"image": good, "trial": "0123456789abcdef"}).encode(), 404, "no trial 0123456789abcdef"),
        (json.dumps({"image": good, "trial": stopped}).encode(), 409, f"trial {stopped} is stopped, not done"),
        (b"x" * (3 * 1024 * 1024), 413, "larger than 2048 kB"),
    ]
    for body, expected, message in posts:
        status, reply = answer(client.post("/api/predict", data=body, content_type="application/json"))
        assert (status, list(reply)) == (expected, ["error"]), (body[:80], reply)
        assert message in reply["error"] and "\n" not in reply["error"] and "Traceback" not in reply["error"]
    gets = [
        ("/api/sweeps/nope/trials", 404, "no sweep named 'nope'"),
        ("/api/nothing", 404, "Not Found"),
        ("/sweeps/digits/heatmap.png", 404, "fewer than two gridded params"),
        ("/sweeps/digits/curves.png", 400, "1 to 10 trial keys"),
        ("/sweeps/digits/curves.png?trials=../../runs", 404, "no trial '../../runs'"),
        ("/sweeps/nope/confusion.png", 404, "no sweep named 'nope'"),
        ("/assets/..%2F..%2Fcli.py", 404, "Not Found"),
        ("/assets/webapp.py", 404, "no asset 'webapp.py'"),
    ]
    for path, expected, message in gets:
        status, reply = answer(computed(client, path))
        assert status == expected and message in reply["error"], (path, reply)
    status, reply = answer(client.post("/api/sweeps", json={}))
    assert status == 405 and "Method Not Allowed" in reply["error"]
    page = client.get("/sweeps/nope", headers={"Accept": "text/html"})
    assert page.status_code == 404 and "no sweep named &#39;nope&#39;" in page.get_data(as_text=True)


def test_sweep_analysis_says_which_param_mattered_or_why_not(client, study):
    status, body = answer(computed(client, "/api/sweeps/halved/analysis"))
    found = importance.sweep_importance(Storage(str(study / "results.db"), readonly=True), "halved")
    assert status == 200 and found is not None and body["importance"]["params"] == ["lr", "lr_step"]
    assert body["importance"]["exact"] is False  # halving: an incomplete grid at rung 0, a forest's estimate
    assert [t["term"] for t in body["importance"]["shares"]] == found.shares["term"].tolist()
    assert sum(t["share"] for t in body["importance"]["shares"]) == pytest.approx(1.0, abs=1e-6)
    assert body["margin"] is None and "two done trials" in body["notes"]["margin"]  # its runners-up stopped
    assert min(png_size(computed(client, "/sweeps/halved/importance.png"))) > 100
    assert min(png_size(computed(client, "/sweeps/halved/parallel.png"))) > 100
    status, body = answer(computed(client, "/api/sweeps/digits/analysis"))  # one trial: nothing, each said in one line
    assert (
        status == 200
        and body["importance"] is None is body["margin"]
        and set(body["notes"]) == {"importance", "margin"}
    )


def test_predict_says_draw_bigger_for_tiny_ink_and_unsure_below_half(client):
    tiny = blank()
    ImageDraw.Draw(tiny).ellipse([130, 130, 152, 152], fill="black")  # a tap: a 22-pixel dot
    status, body = answer(client.post("/api/predict", json={"image": data_url(tiny)}))
    assert status == 200 and body["ink_extent"] == pytest.approx(23 / 280, abs=0.01)
    assert body["feedback"].startswith("Draw bigger")
    seven = blank()
    ImageDraw.Draw(seven).line([(70, 60), (215, 60), (125, 245)], fill="black", width=22)
    status, body = answer(client.post("/api/predict", json={"image": data_url(seven)}))
    assert status == 200 and body["ink_extent"] > 0.6
    assert (body["feedback"] is None) == (max(body["probabilities"]) >= recognizer.UNSURE_BELOW)
    assert recognizer.feedback(0.5, 0.3).startswith("That does not look like a digit")
    assert recognizer.feedback(0.5, 0.9) is None


def test_learned_page_and_figures_of_a_trained_trial(client, data_dir):
    key = answer(client.get("/api/models"))[1]["default"]
    status, body = answer(client.get(f"/api/models/{key}"))
    assert status == 200 and body | {"trial": key, "status": "done", "architecture": "lenet53"} == body
    page = client.get(f"/trials/{key}/learned?digit=7").get_data(as_text=True)
    label = int(data.test_split(data_dir, 8).labels[7])
    assert f"test image 7 (a {label})" in page and "maps.png?digit=7&amp;layer=2" in page and "transformer" not in page
    assert min(png_size(client.get(f"/trials/{key}/filters.png"))) > 50  # one row of 6 filters
    assert min(png_size(client.get(f"/trials/{key}/maps.png?digit=7&layer=2"))) > 50  # one row of 16 maps
    for path, expected, message in [
        (f"/trials/{key}/maps.png?digit=10000", 400, "from 0 to 9999"),
        (f"/trials/{key}/maps.png?digit=-1", 400, "from 0 to 9999"),
        (f"/trials/{key}/maps.png?layer=3", 400, "layer must be 1 or 2"),
        (f"/trials/{key}/transformer.png", 404, "no spatial transformer"),
        ("/trials/0123456789abcdef/filters.png", 404, "no trial 0123456789abcdef"),
        ("/trials/nope/learned", 400, "16 hexadecimal digits"),
        ("/api/models/0123456789abcdef", 404, "no trial"),
    ]:
        status, reply = answer(client.get(path))
        assert (status, list(reply)) == (expected, ["error"]) and message in reply["error"], (path, reply)


def test_augment_explorer_distorts_real_digits_within_the_tables_ranges(client):
    status, body = answer(client.get("/api/augment?rotate=30&zoom=0.8,1.2&aug_p=1"))
    assert status == 200 and body["params"] == AUGMENTATION_DEFAULTS | {
        "rotate": 30.0,
        "zoom": [0.8, 1.2],
        "aug_p": 1.0,
    }
    snippet = yaml.safe_load(body["yaml"])["params"]
    assert BatchAugmenter.from_params(snippet).rotate == pytest.approx(np.radians(30)) and snippet["zoom"] == [0.8, 1.2]
    _, height = png_size(client.get("/augment.png?rotate=30&aug_p=1&rows=2&seed=5"))
    assert (
        client.get("/augment.png?rotate=30&aug_p=1&rows=2&seed=5").data
        == client.get("/augment.png?rotate=30&aug_p=1&rows=2&seed=5").data
    )  # a seeded draw is repeatable
    assert png_size(client.get("/augment.png?rotate=30&aug_p=1&rows=4&seed=5"))[1] > height
    assert "elastic_sigma" in client.get("/augment").get_data(as_text=True)
    for query, message in [
        ("rotate=181", "rotate must be in [0, 180] (degrees)"),
        ("shift=1", "shift must be in [0, 1)"),
        ("zoom=1.2,0.8", "zoom must be a [low, high] pair"),
        ("elastic_sigma=0", "elastic_sigma must be in (0, 1000]"),
        ("aug_p=nan", "aug_p must be a finite number"),
        ("rotate=ten", "rotate must be a number"),
        ("brightness=2", "unknown augmentation param 'brightness'"),
        ("rotate=5&rows=9", "rows must be a whole number from 1 to 8"),
        ("seed=-1", "seed must be a whole number"),
    ]:
        for path in ("/api/augment", "/augment.png"):
            status, reply = answer(client.get(f"{path}?{query}"))
            if path == "/api/augment" and query.startswith(("rotate=5&rows", "seed")):
                assert status == 200  # rows and seed belong to the figure only
                continue
            assert (status, list(reply)) == (400, ["error"]) and message in reply["error"], (path, query, reply)


def test_serve_refuses_a_missing_database_and_a_busy_port(study, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["serve", "--db", "nothing.db"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [
        f"error: --db {tmp_path / 'nothing.db'}: no such database (run a sweep first)"
    ]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--db", str(study / "results.db"), "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: --host 127.0.0.1 --port {port}: cannot listen there (")
    assert err.count("\n") == 1


# -- the live page at scale: changes since a version, the analysis once per results version ----------------


@pytest.fixture
def writable(study, tmp_path, data_dir) -> tuple[Storage, FlaskClient]:
    """A copy of the study's database, a writer on it (as a run's coordinator) and the app reading it."""
    copy = tmp_path / "results.db"
    with sqlite3.connect(study / "results.db") as source, sqlite3.connect(copy) as target:
        source.backup(target)
    writer = Storage(str(copy))
    yield writer, create_app(Storage(str(copy), readonly=True), study / "runs", data_dir).test_client()
    writer.close()


def one_more_epoch(storage: Storage, key: str) -> None:
    """Record an epoch after the last of trial ``key``, as a resumed run would."""
    trial = storage.trial(key)
    assert trial is not None
    storage.record_epoch(
        key,
        {
            "epoch": trial.epochs_run,
            "train_loss": 0.5,
            "train_accuracy": 0.8,
            "val_loss": 0.6,
            "val_accuracy": 0.75,
            "lr": 0.01,
            "seconds": 1.0,
        },
    )


def test_the_trials_endpoint_sends_only_the_trials_changed_since_a_version(writable):
    storage, client = writable
    status, full = answer(client.get("/api/sweeps/halved/trials"))
    version = full["sweep"]["version"]
    assert status == 200 and full["since"] is None and len(full["trials"]) == 3 and full["removed"] == []

    status, same = answer(client.get(f"/api/sweeps/halved/trials?since={version}"))  # nothing changed: no trial
    assert status == 200 and same["since"] == version and same["trials"] == [] and same["sweep"] == full["sweep"]

    key = full["trials"][-1]["key"]
    one_more_epoch(storage, key)
    status, delta = answer(client.get(f"/api/sweeps/halved/trials?since={version}"))
    assert delta["since"] == version and [t["key"] for t in delta["trials"]] == [key]
    before = next(t for t in full["trials"] if t["key"] == key)
    assert delta["trials"][0] == before | {"epochs_run": before["epochs_run"] + 1}
    assert delta["sweep"]["version"] != version
    assert delta["sweep"]["results_version"] == full["sweep"]["results_version"]  # an epoch: no new results

    status, again = answer(client.get("/api/sweeps/halved/trials?since=0123456789abcdef"))  # a version it never gave
    assert again["since"] is None and len(again["trials"]) == 3  # every trial, best first as before
    assert [t["key"] for t in again["trials"]] == [t["key"] for t in full["trials"]]


def test_the_analysis_is_computed_once_per_results_version_not_per_epoch(writable):
    storage, client = writable
    waiting = client.get("/api/sweeps/halved/analysis")  # never computed in the request: 202 until it is
    assert waiting.status_code == 202 and waiting.get_json()["state"] == "computing"
    status, first = answer(computed(client, "/api/sweeps/halved/analysis"))
    assert status == 200 and first["importance"] is not None
    _, trials = answer(client.get("/api/sweeps/halved/trials"))
    assert first["results_version"] == trials["sweep"]["results_version"]
    stopped = next(t for t in trials["trials"] if t["status"] == "stopped")

    one_more_epoch(storage, stopped["key"])  # a recorded epoch: the same analysis, not computed again
    _, cached = answer(computed(client, "/api/sweeps/halved/analysis"))
    assert cached == first

    summary = {
        "best_epoch": stopped["best_epoch"],
        "val_accuracy": 0.999,
        "val_loss": 0.01,
        "epochs_run": stopped["epochs_run"] + 1,
        "train_seconds": 9.0,
    }
    storage.finish(stopped["key"], TrialStatus.DONE, summary)  # a trial done: new results, a new analysis
    _, trials = answer(client.get("/api/sweeps/halved/trials"))
    _, fresh = answer(computed(client, "/api/sweeps/halved/analysis"))
    assert fresh["results_version"] == trials["sweep"]["results_version"] != first["results_version"]
    assert fresh["computed_at"] > first["computed_at"]
