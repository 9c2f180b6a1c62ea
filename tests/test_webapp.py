"""``serve`` for real: the command as a subprocess, its connections and memory under load, and its pages in
headless Chromium (the logic behind them is tested in-process in ``test_web_api.py``).

A LeNet-5-3 trained here on real MNIST backs the recognizer; a second small sweep runs while the
dashboard is open.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from benchmarks.web_predict_memory import burst, rss_mb, seven
from gridsearch.web.limits import IDLE_SECONDS
from tests.conftest import ROOT, needs, rows, write_sweep
from tests.test_web_api import web_study

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
LIMIT = 2 * 1024 * 1024
"""The documented request-size limit."""
BURST = 60
"""Concurrent predictions in each of the memory test's bursts (the benchmark sends 200, three times)."""


@pytest.fixture(scope="module")
def study(tmp_path_factory, data_dir) -> Path:
    return web_study(tmp_path_factory, data_dir)


@dataclass(frozen=True)
class Server:
    url: str
    port: int
    pid: int


@pytest.fixture(scope="module")
def server(study, data_dir):
    """``python -m gridsearch serve --port 0`` on the study's database, with the test session's MNIST."""
    log = (study / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "gridsearch", "serve", "--port", "0"],
        cwd=study,
        env=dict(os.environ, PYTHONPATH=str(ROOT), GRIDSEARCH_DATA=str(data_dir)),
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if not match:
        process.kill()
        raise AssertionError(f"serve printed {line!r}:\n{(study / 'serve.log').read_text()}")
    yield Server(match.group(0), int(match.group(1)), process.pid)
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
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        needs("Playwright", "pip install -e '.[test]'")
    if not CHROMIUM.exists():
        needs(f"Chromium at {CHROMIUM}", "apt-get install chromium (or set GRIDSEARCH_CHROMIUM)")
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


# -- the server's connections and memory -------------------------------------------------------------


def exchange(server: Server, head: bytes, body: list[bytes], wait: float = 60) -> tuple[bytes, bool]:
    """Send a raw request (``head``, then each part of ``body``) on a new connection and read the answer:
    all it got, and whether the server closed the connection within ``wait`` seconds (a bound for a
    server that never closes: a closing one ends the wait at once)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as connection:
        connection.sendall(head)
        for part in body:
            connection.sendall(part)
        received = b""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                part = connection.recv(65536)
            except TimeoutError:
                break
            if not part:
                return received, True
            received += part
        return received, False


def chunked(body: bytes, size: int = 64 * 1024) -> list[bytes]:
    """``body`` in HTTP chunks of ``size`` bytes, with the last (empty) chunk."""
    parts = [body[start : start + size] for start in range(0, len(body), size)]
    return [b"%x\r\n%s\r\n" % (len(part), part) for part in parts] + [b"0\r\n\r\n"]


def post_head(length: int | None) -> bytes:
    """A predict request's head, with ``Content-Length: length`` or (None) chunked."""
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    return f"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{framing}\r\n\r\n".encode()


def status_and_json(received: bytes) -> tuple[int, dict]:
    head, _, body = received.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split()[1]), json.loads(body)


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
def test_a_body_over_the_limit_gets_413_and_the_connection_closes(server, framing):
    body = b"x" * (LIMIT + LIMIT // 2)
    head = post_head(None if framing == "chunked" else len(body))
    received, closed = exchange(server, head, chunked(body) if framing == "chunked" else [body])
    status, reply = status_and_json(received)
    assert (status, list(reply)) == (413, ["error"]) and "larger than 2048 kB" in reply["error"]
    assert closed, "the server held the connection open after its 413"
    request = seven()  # a chunked body within the limit is read whole, and the server still answers
    status, reply = status_and_json(exchange(server, post_head(None), chunked(request, 1000))[0])
    assert status == 200 and reply["digit"] == 7


def test_what_the_server_refuses_itself_is_answered_in_json_and_the_connection_closed(server):
    """Requests refused before the app sees them: a URI or header over 64 kB, too many headers, a request line
    that does not parse, a body length declared twice (a request smuggling vector)."""
    get = b"GET /api/sweeps HTTP/1.1\r\nHost: x\r\n"
    cases = [
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URI is too long"),
        (get + b"X-Long: " + b"a" * 70_000 + b"\r\n\r\n", 431, "Line too long"),
        (get + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n", 431, "Too many headers"),
        (b"\x00\xff\xfe garbage \x01\r\n\r\n", 400, "Bad request syntax"),
        (post_head(2).replace(b"\r\n\r\n", b"\r\nContent-Length: 2\r\n\r\n") + b"{}", 400, "declared twice"),
        (post_head(None).replace(b"\r\n\r\n", b"\r\nContent-Length: 5\r\n\r\n") + b"0\r\n\r\n", 400, "declared twice"),
        (post_head(2).replace(b"Content-Length: 2", b"Content-Length: 2x") + b"{}", 400, "not a number of bytes"),
    ]
    for head, expected, message in cases:
        received, closed = exchange(server, head, [])
        status, reply = status_and_json(received)
        assert (status, list(reply)) == (expected, ["error"]) and message in reply["error"], (head[:60], reply)
        assert closed, f"the server held the connection open after its {status}"


def test_a_connection_that_stops_sending_is_closed(server):
    """Garbage without a line end, or a body shorter than its Content-Length: the server stops waiting after
    ``IDLE_SECONDS`` and closes the connection (the body's with a JSON 400)."""
    stalled = [
        (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" * 4, []),  # a TLS hello, sent to plain HTTP
        (post_head(100), [b'{"ima']),
    ]
    with ThreadPoolExecutor(len(stalled)) as pool:  # both wait out the idle limit at once
        (garbage, garbage_closed), (short, short_closed) = pool.map(
            lambda case: exchange(server, *case, wait=IDLE_SECONDS * 6), stalled
        )
    assert garbage_closed and garbage == b""
    status, reply = status_and_json(short)
    assert status == 400 and "ended before its Content-Length" in reply["error"] and short_closed


def test_concurrent_predictions_leave_the_server_memory_where_it_was(server):
    """A leak shows as growth from burst to burst: a first burst warms the server up (model loaded, every inference
    thread run, the allocator's per-thread arenas made, however many of its bounded threads a busy machine lets
    run at once), then two more bursts must leave it where it was."""
    request = seven()
    assert burst(server.url, request, BURST) == BURST
    before = rss_mb(server.pid)
    for _ in range(2):
        assert burst(server.url, request, BURST) == BURST
    grown = rss_mb(server.pid) - before  # was 70 to 190 MB: a burst's worth of requests, each on its own thread
    assert grown < 32, f"two bursts of {BURST} concurrent predictions grew the server by {grown:.0f} MB"


# -- in the browser (``browser`` first: without Chromium they skip before anything is trained) ----


def test_dashboard_counts_advance_while_a_sweep_runs(browser, page, server, live_run):
    page.goto(server.url + "/")
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
    halved = page.locator('tr[data-sweep="halved"]')  # a completed halving sweep: its stopped trials finished
    assert "3 / 3 finished" in halved.inner_text()
    assert halved.locator('td[data-count="stopped"]').inner_text() == "2"
    assert page.evaluate("window.notReloaded")  # updated in place, not by reloading
    page.screenshot(path=str(live_run.folder / "sweeps.png"))


def test_sweep_page_shows_trials_best_first_figures_and_the_test_result(browser, page, server, live_run, study):
    live_run.finish()
    page.goto(server.url + "/sweeps/live")
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
    column = page.locator("#trials th").all_inner_texts().index("val loss") + 1
    losses = [float(text) for text in page.locator(f"#trials tbody td:nth-child({column})").all_inner_texts()]
    assert losses == sorted(losses) and len(losses) == LIVE_TRIALS
    page.wait_for_function("""['curves', 'heatmap', 'confusion'].every(id => {
        const image = document.getElementById(id);
        return !image.hidden && image.complete && image.naturalWidth > 100; })""")
    [(accuracy,)] = rows(
        study / "results.db",
        "SELECT e.accuracy FROM evaluations e JOIN sweeps s ON s.selected_trial = e.trial_key WHERE s.name = 'live'",
    )
    assert f"Test accuracy {accuracy:.2%}" in page.inner_text("#test")
    page.wait_for_function("""['importance', 'parallel'].every(id => {
        const image = document.getElementById(id);
        return !image.hidden && image.complete && image.naturalWidth > 100; })""")
    assert page.inner_text("#margin").startswith(f"The winner {keys[0]} gets ")  # 3 done trials: a runner-up
    assert "random-forest estimate" in page.inner_text("#importance-note")  # 3 of the 4 grid points
    page.screenshot(path=str(study / "sweep.png"), full_page=True)


def test_learned_page_and_augmentation_explorer_show_real_digits(browser, page, server, study):
    [(key,)] = rows(
        study / "results.db", "SELECT s.selected_trial FROM sweeps s WHERE s.name = 'digits'"
    )  # a LeNet-5-3: filters and two layers of feature maps
    page.goto(f"{server.url}/trials/{key}/learned?digit=7")
    page.wait_for_function("""['filters', 'maps-1', 'maps-2'].every(id => {
        const image = document.getElementById(id); return image.complete && image.naturalWidth > 300; })""")
    assert page.input_value("#digit-index") == "7" and not page.locator("#transformer").count()
    page.screenshot(path=str(study / "learned.png"), full_page=True)

    page.goto(server.url + "/augment")
    page.wait_for_function("document.getElementById('augmented').naturalWidth > 300")
    first = page.get_attribute("#augmented", "src")
    assert "rotate: 7.5" in page.inner_text("#yaml")
    page.locator('input[name="rotate"]').fill("45")  # a range input: fill sets it and fires input
    page.wait_for_function("document.getElementById('yaml').textContent.includes('rotate: 45')")
    page.wait_for_function(
        "src => { const image = document.getElementById('augmented');"
        " return image.getAttribute('src') !== src && image.complete && image.naturalWidth > 300; }",
        arg=first,
    )
    assert "rotate=45" in page.get_attribute("#augmented", "src")
    page.screenshot(path=str(study / "augment.png"), full_page=True)


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
    page.goto(server.url + "/recognizer")
    page.wait_for_function("document.getElementById('model').value !== ''")
    assert "digits: lenet53" in page.inner_text("#model")
    assert draw(page, SEVEN) == "7"
    assert page.inner_text("#message") == ""
    seen = page.evaluate("""Array.from(document.getElementById('seen').getContext('2d')
        .getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 0))""")
    assert min(seen) == 0 and np.mean(np.array(seen) < 128) > 0.05  # a dark digit on white, 28x28
    assert page.inner_text('.barrow.top[data-digit="7"] .value').endswith("%")
    page.check("#show-saliency")
    assert page.is_visible("#saliency") and "largest drop" in page.inner_text("#legend")
    alpha = page.evaluate("""Array.from(document.getElementById('saliency').getContext('2d')
        .getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 3))""")
    assert max(alpha) > 150 and np.mean(np.array(alpha) > 0) < 0.6  # some places, not everywhere
    page.screenshot(path=str(study / "recognizer.png"))
    page.click("#clear")
    assert page.inner_text("#digit") == "?"
    draw(page, [[(140, 140)]])  # a tap: a visible dot, too small to read
    dot = page.evaluate("""Array.from(document.getElementById('pad').getContext('2d')
        .getImageData(135, 135, 10, 10).data.filter((_, i) => i % 4 === 0))""")
    assert max(dot) < 50 and page.inner_text("#message").startswith("Draw bigger")
    page.click("#clear")
    assert draw(page, ONE) == "1"

    page.goto(server.url + "/recognizer?trial=0123456789abcdef")  # not a model here: said, not hidden
    page.wait_for_selector("#message[data-trial-refused]")
    assert "?trial=0123456789abcdef cannot be used (no trial 0123456789abcdef" in page.inner_text("#message")
    assert page.input_value("#model") != "0123456789abcdef"
