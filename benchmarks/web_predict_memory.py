"""The web app's memory under load: bursts of concurrent ``POST /api/predict`` against a real ``serve``
process, with the server's resident memory (RSS) read from ``/proc`` after each burst. Last line: one
JSON object.

A server that holds memory per request thread (thread pools, malloc arenas, unbounded caches) grows with
each burst; a bounded one levels off after the first, so ``growth_mb`` (RSS after the last burst minus
after the first) stays small.

    python benchmarks/web_predict_memory.py [--db results.db] [--requests 200] [--bursts 3]

Without ``--db`` it first trains a small LeNet-5-3 (``gridsearch run``, real MNIST from ``--data-dir``)
in a temporary folder. The server runs the ``gridsearch`` found on this script's ``PYTHONPATH``
(default: this checkout), so the same script measures an older checkout too.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
SWEEP = {
    "name": "digits",
    "architecture": "lenet53",
    "dataset": {"train_size": 1000, "val_size": 300, "test_size": 300},
    "params": {"epochs": 1, "batch_size": 50, "lr": 0.05},
    "grid": {"hidden": [64]},
}


def seven() -> bytes:
    """A JSON predict request: a 7 drawn on a 280x280 white canvas, as the recognizer sends it."""
    image = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(image).line([(70, 60), (215, 60), (125, 245)], fill="black", width=22)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return json.dumps({"image": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()}).encode()


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def burst(url: str, body: bytes, requests: int) -> int:
    """``requests`` predict requests sent at once, each on its own connection; how many got 200."""
    start, ok, lock = threading.Barrier(requests), [0], threading.Lock()

    def send() -> None:
        start.wait()
        request = urllib.request.Request(url + "/api/predict", body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                response.read()
                with lock:
                    ok[0] += response.status == 200
        except OSError as error:
            print(json.dumps({"error": str(error)}), flush=True)

    threads = [threading.Thread(target=send) for _ in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ok[0]


def train(folder: Path, data_dir: Path, env: dict[str, str]) -> Path:
    """A results database with one small tested LeNet-5-3, made by ``gridsearch run``."""
    sweep = folder / "digits.yaml"
    sweep.write_text(yaml.safe_dump(SWEEP))
    command = [sys.executable, "-m", "gridsearch", "run", str(sweep), "--plain", "--data-dir", str(data_dir)]
    subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True)  # cwd: not this checkout
    return folder / "results.db"


def measure(db: Path, requests: int, bursts: int, env: dict[str, str]) -> dict[str, object]:
    """Start ``serve`` on ``db``, send ``bursts`` bursts of ``requests``; RSS before and after each."""
    command = [sys.executable, "-m", "gridsearch", "serve", "--db", str(db), "--port", "0"]
    server = subprocess.Popen(command, cwd=db.parent, env=env, stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://[\d.]+:\d+", server.stdout.readline()).group(0)
        body = seven()
        burst(url, body, 1)  # the model loaded, the first request's one-off costs paid
        rss = {"after_one_request": rss_mb(server.pid)}
        ok, started = 0, time.perf_counter()
        for number in range(1, bursts + 1):
            ok += burst(url, body, requests)
            time.sleep(1)
            rss[f"after_burst_{number}"] = rss_mb(server.pid)
            print(json.dumps({"burst": number, "rss_mb": round(rss[f"after_burst_{number}"], 1)}), flush=True)
        seconds = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "requests": requests,
        "bursts": bursts,
        "succeeded": ok,
        "seconds": round(seconds, 1),
        "rss_mb": {name: round(value, 1) for name, value in rss.items()},
        "growth_mb": round(rss[f"after_burst_{bursts}"] - rss["after_burst_1"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="a results database with a tested model (default: train one)")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("GRIDSEARCH_DATA", "data")))
    parser.add_argument("--requests", type=int, default=200, help="concurrent requests per burst")
    parser.add_argument("--bursts", type=int, default=3)
    args = parser.parse_args()
    path = os.environ.get("PYTHONPATH", str(ROOT))
    env = dict(os.environ, PYTHONPATH=path)
    with tempfile.TemporaryDirectory() as folder:
        db = args.db.resolve() if args.db else train(Path(folder), args.data_dir.resolve(), env)
        result = measure(db, args.requests, args.bursts, env)
    print(json.dumps({"gridsearch": path, **result}))


if __name__ == "__main__":
    main()
