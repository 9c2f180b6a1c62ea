"""``serve``: the real app as a subprocess, its JSON API over HTTP, and its pages in headless Chromium.

A LeNet-5-3 trained here on real MNIST backs the recognizer; a second small sweep runs while the
dashboard is open.
"""

import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from gridsearch.training import data
from tests.conftest import ROOT, gridsearch, rows, write_sweep

CHROMIUM = Path(os.environ.get("GRIDSEARCH_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SEVEN = [[(70, 60), (215, 60), (125, 245)]]  # top bar, then the diagonal, in one stroke (pad pixels)
ONE = [[(140, 40), (140, 245)]]
LIVE_TRIALS = 3


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_dir):
    """A database with a LeNet-5-3 trained on 2,000 MNIST digits for 2 epochs (tested on 500)."""
    folder = tmp_path_factory.mktemp("webapp")
    sweep = write_sweep(
        folder,
        "digits.yaml",
        name="digits",
        dataset={"train_size": 2000, "val_size": 500, "test_size": 500},
        params={"epochs": 2, "batch_size": 50, "lr": 0.05, "lr_step": 3, "patience": 5},
        grid={"hidden": [64]},
        threads=2,
    )
    gridsearch("run", str(sweep), cwd=folder, data_dir=data_dir, check=True)
    return folder


@pytest.fixture(scope="module")
def server(study):
    """``python -m gridsearch serve --port 0`` on the study's database; yields its base URL."""
    log = (study / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "gridsearch", "serve", "--port", "0"],
        cwd=study,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if not match:
        process.kill()
        raise AssertionError(f"serve printed {line!r}:\n{(study / 'serve.log').read_text()}")
    yield match.group(0)
    process.terminate()
    process.wait(timeout=10)
    log.close()


class LiveRun:
    """A 3-trial sweep over two params run as a real subprocess on the study's database, on demand."""

    def __init__(self, folder: Path, data_dir: Path):
        self.sweep = write_sweep(
            folder,
            "live.yaml",
            name="live",
            grid=[{"lr": [0.02, 0.08], "lr_step": [1]}, {"lr": [0.02], "lr_step": [3]}],
            params={"epochs": 2, "batch_size": 50, "hidden": 16},
            dataset={"train_size": 1500, "val_size": 200, "test_size": 200},
        )
        # each trial lasts a few seconds (workers start in ~0.1 s), longer than the page's 2 s poll
        self.folder, self.data_dir, self.process = folder, data_dir, None

    def start(self) -> None:
        if self.process is None:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gridsearch",
                    "run",
                    str(self.sweep),
                    "--plain",
                    "--data-dir",
                    str(self.data_dir),
                ],
                cwd=self.folder,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def finish(self) -> int:
        """Start the run if needed and wait for it; its exit status."""
        self.start()
        output, _ = self.process.communicate(timeout=300)
        assert self.process.returncode == 0, output
        return self.process.returncode


@pytest.fixture(scope="module")
def live_run(study, data_dir):
    run = LiveRun(study, data_dir)
    yield run
    if run.process is not None and run.process.poll() is None:
        run.process.kill()
        run.process.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium (Debian's) driven by Playwright, with a fresh profile."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "Playwright is not installed: pip install -e '.[test]'"
    if reason is None and not CHROMIUM.exists():
        reason = f"no Chromium at {CHROMIUM}: apt-get install chromium (or set GRIDSEARCH_CHROMIUM)"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(error))
    yield page
    page.close()
    assert not errors, f"JavaScript errors: {errors}"


def strict_json(text: bytes) -> dict:
    """JSON as browsers read it: NaN and Infinity (which Python would accept) are errors."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in the JSON answer: browsers cannot parse it")

    return json.loads(text, parse_constant=refuse)


def request(url: str, body: bytes | None = None) -> tuple[int, dict]:
    """Status and JSON body of a GET (or a POST of the JSON ``body``)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=60) as response:
            return response.status, strict_json(response.read())
    except urllib.error.HTTPError as error:
        assert error.headers["Content-Type"] == "application/json", error.headers["Content-Type"]
        return error.code, strict_json(error.read())


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def predict(server: str, **fields) -> tuple[int, dict]:
    return request(server + "/api/predict", json.dumps(fields).encode())


# -- the command ------------------------------------------------------------------------------


def test_serve_refuses_a_missing_database_and_a_busy_port(study, tmp_path):
    result = gridsearch("serve", "--db", "nothing.db", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: --db {tmp_path / 'nothing.db'}: no such database (run a sweep first)"
    ]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = gridsearch("serve", "--port", str(port), cwd=study)
    assert result.returncode == 2
    assert re.fullmatch(rf"error: --host 127\.0\.0\.1 --port {port}: cannot listen there \(.+\)\n", result.stderr)


# -- the JSON API -----------------------------------------------------------------------------


def test_api_lists_sweeps_trials_and_models_as_the_database_has_them(server, study):
    db = study / "results.db"
    status, body = request(server + "/api/sweeps")
    assert status == 200
    digits = next(s for s in body["sweeps"] if s["name"] == "digits")
    [(key, val_accuracy)] = rows(
        db,
        "SELECT t.key, t.val_accuracy FROM trials t JOIN sweeps s ON s.selected_trial = t.key WHERE s.name = 'digits'",
    )
    assert digits | {"done": 1, "pending": 0, "trials": 1, "progress": 1.0, "selected_trial": key} == digits
    assert digits["best"] == pytest.approx(val_accuracy)

    status, body = request(server + "/api/sweeps/digits/trials")
    [(accuracy, errors, samples)] = rows(
        db, "SELECT accuracy, errors, samples FROM evaluations WHERE trial_key = ? AND name = 'test'", key
    )
    assert status == 200 and [t["key"] for t in body["trials"]] == [key]
    assert body["trials"][0]["params"] == {"hidden": 64} and body["trials"][0]["epochs_run"] == 2
    assert body["test"]["accuracy"] == pytest.approx(accuracy) and body["test"]["errors"] == errors
    assert np.array(body["test"]["confusion"]).sum() == samples == 500

    status, body = request(server + "/api/models")
    assert status == 200 and body["default"] == key
    assert body["models"][0] | {"sweep": "digits", "architecture": "lenet53"} == body["models"][0]


def test_predict_reads_real_mnist_digits_drawn_large(server, data_dir):
    test = data.test_split(data_dir, 20)  # drawn large, they come back re-preprocessed, not as they were
    right = 0
    for image, label in zip(test.images[:, 0].numpy(), test.labels.tolist()):
        drawing = Image.fromarray(255 - image).resize((280, 280), Image.Resampling.BILINEAR)  # dark on white
        status, body = predict(server, image=data_url(drawing))
        assert status == 200 and len(body["probabilities"]) == 10
        assert sum(body["probabilities"]) == pytest.approx(1.0, abs=1e-4)
        assert np.array(body["input"]).shape == (28, 28) and np.array(body["saliency"]).shape == (28, 28)
        right += body["digit"] == label
    assert right >= 17


def blank(size: tuple[int, int] = (280, 280)) -> Image.Image:
    return Image.new("RGB", size, "white")


def test_bad_requests_get_a_4xx_with_a_one_line_json_error(server):
    stroke = blank()
    ImageDraw.Draw(stroke).line([(140, 40), (140, 240)], fill="black", width=20)
    good = data_url(stroke)
    posts = [
        (b"{not json", 400, "must be a JSON object"),
        (b"[1, 2]", 400, "must be a JSON object"),
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
        (b"x" * (3 * 1024 * 1024), 413, "larger than 2048 kB"),
    ]
    for body, expected, message in posts:
        status, answer = request(server + "/api/predict", body)
        assert (status, list(answer)) == (expected, ["error"]), (body[:80], answer)
        assert message in answer["error"] and "\n" not in answer["error"] and "Traceback" not in answer["error"]
    gets = [
        ("/api/sweeps/nope/trials", 404, "no sweep named 'nope'"),
        ("/api/nothing", 404, "Not Found"),
        ("/sweeps/digits/heatmap.png", 404, "fewer than two gridded params"),
        ("/sweeps/digits/curves.png", 400, "1 to 10 trial keys"),
        ("/sweeps/digits/curves.png?trials=../../runs", 404, "no trial '../../runs'"),
        ("/assets/..%2F..%2Fcli.py", 404, "Not Found"),
        ("/assets/webapp.py", 404, "no asset 'webapp.py'"),
    ]
    for path, expected, message in gets:
        status, answer = request(server + path)
        assert status == expected and message in answer["error"], (path, answer)
    status, answer = request(server + "/api/sweeps", b"{}")
    assert status == 405 and "Method Not Allowed" in answer["error"]


# -- in the browser (``browser`` first: without Chromium they skip before anything is trained) ----


def test_dashboard_counts_advance_while_a_sweep_runs(browser, page, server, live_run):
    page.goto(server + "/")
    page.wait_for_selector("#updated:has-text('Live')")
    page.evaluate("window.notReloaded = true")
    live_run.start()
    done = page.locator('tr[data-sweep="live"] td[data-count="done"]')
    done.wait_for(timeout=60_000)  # the sweep appears once the run has stored it
    seen = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and (not seen or seen[-1] < LIVE_TRIALS):
        seen.append(int(done.inner_text()))
        page.wait_for_timeout(200)
    assert live_run.finish() == 0  # the page polled all along without blocking the run
    assert seen[0] < LIVE_TRIALS and seen[-1] == LIVE_TRIALS and seen == sorted(seen)
    assert len(set(seen)) >= 3, f"the done count jumped: {seen}"
    page.wait_for_selector(f'tr[data-sweep="live"] :text("{LIVE_TRIALS} / {LIVE_TRIALS} finished")')
    assert page.evaluate("window.notReloaded")  # updated in place, not by reloading
    page.screenshot(path=str(live_run.folder / "sweeps.png"))


def test_sweep_page_shows_trials_best_first_figures_and_the_test_result(browser, page, server, live_run, study):
    live_run.finish()
    page.goto(server + "/sweeps/live")
    page.wait_for_selector("#trials tbody tr")
    keys = page.locator("#trials tbody tr").evaluate_all("rows => rows.map(row => row.dataset.key)")
    expected = [
        key
        for (key,) in rows(
            study / "results.db",
            """
        SELECT t.key FROM trials t JOIN sweep_trials m ON m.trial_key = t.key JOIN sweeps s ON s.id = m.sweep_id
        WHERE s.name = 'live' ORDER BY t.val_accuracy DESC, m.position""",
        )
    ]
    assert keys == expected and len(keys) == LIVE_TRIALS
    page.click("#trials th:text-is('val loss')")
    losses = [float(text) for text in page.locator("#trials tbody td:nth-child(10)").all_inner_texts()]
    assert losses == sorted(losses) and len(losses) == LIVE_TRIALS
    page.wait_for_function("""['curves', 'heatmap', 'confusion'].every(id => {
        const image = document.getElementById(id);
        return !image.hidden && image.complete && image.naturalWidth > 100; })""")
    [(accuracy,)] = rows(
        study / "results.db",
        "SELECT e.accuracy FROM evaluations e JOIN sweeps s ON s.selected_trial = e.trial_key WHERE s.name = 'live'",
    )
    assert f"Test accuracy {accuracy:.2%}" in page.inner_text("#test")
    page.screenshot(path=str(study / "sweep.png"), full_page=True)


def draw(page, strokes: list[list[tuple[int, int]]]) -> str:
    """Draw ``strokes`` on the pad with the mouse; the digit shown once the last answer is in."""
    asked = int(page.get_attribute("#digit", "data-asked"))
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        (x, y), *rest = stroke
        page.mouse.move(box["x"] + x, box["y"] + y)
        page.mouse.down()
        for x, y in rest:
            page.mouse.move(box["x"] + x, box["y"] + y, steps=12)
        page.mouse.up()
    page.wait_for_function(
        """asked => { const digit = document.getElementById('digit');
        return +digit.dataset.asked >= asked && digit.dataset.asked === digit.dataset.answered; }""",
        arg=asked + len(strokes),
        timeout=60_000,
    )
    return page.inner_text("#digit")


def test_recognizer_reads_a_drawn_seven_and_one(browser, page, server, study):
    page.goto(server + "/recognizer")
    page.wait_for_function("document.getElementById('model').value !== ''")
    assert "digits: lenet53" in page.inner_text("#model")
    assert draw(page, SEVEN) == "7"
    assert page.inner_text("#message") == ""
    seen = page.evaluate("""Array.from(document.getElementById('seen').getContext('2d')
        .getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 0))""")
    assert min(seen) == 0 and np.mean(np.array(seen) < 128) > 0.05  # a dark digit on white, 28x28
    assert page.inner_text('.barrow.top[data-digit="7"] .value').endswith("%")
    page.check("#show-saliency")
    assert page.is_visible("#saliency")
    alpha = page.evaluate("""Array.from(document.getElementById('saliency').getContext('2d')
        .getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 3))""")
    assert max(alpha) > 150 and np.mean(np.array(alpha) > 0) < 0.6  # some places, not everywhere
    page.screenshot(path=str(study / "recognizer.png"))
    page.click("#clear")
    assert page.inner_text("#digit") == "?"
    assert draw(page, ONE) == "1"
