"""The web app under a burst of figure requests: ``--requests`` concurrent ``GET /sweeps/NAME/curves.png`` for one
figure nobody has drawn yet, against a real ``serve`` process, then the same burst again (the figure drawn by
then). Per burst: how many got 200, 202 or no answer within ``--timeout`` seconds, the latency percentiles, the
server's most threads during it and its resident memory (RSS) before and after. Last line: one JSON object.

    python benchmarks/web_burst.py [--db results.db --sweep NAME] [--requests 200] [--timeout 60]

Without ``--db`` it first trains a small sweep of three LeNet-5-3 trials (``gridsearch run``, real MNIST from
``--data-dir``) in a temporary folder. The server runs the ``gridsearch`` found on this script's ``PYTHONPATH``
(default: this checkout), so the same script measures an older checkout too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SWEEP = {
    "name": "burst",
    "architecture": "lenet53",
    "dataset": {"train_size": 1000, "val_size": 300, "test_size": 300},
    "params": {"epochs": 3, "batch_size": 50, "hidden": 32},
    "grid": {"lr": [0.02, 0.05, 0.1]},
}


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB."""
    return int(re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024


def threads(pid: int) -> int:
    """Threads of process ``pid``."""
    return int(re.search(r"Threads:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))


def train(folder: Path, data_dir: Path, env: dict[str, str]) -> Path:
    """A results database with the small sweep, made by ``gridsearch run``."""
    sweep = folder / "burst.yaml"
    sweep.write_text(yaml.safe_dump(SWEEP))
    command = [sys.executable, "-m", "gridsearch", "run", str(sweep), "--plain", "--data-dir", str(data_dir)]
    subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True)  # cwd: not this checkout
    return folder / "results.db"


def burst(url: str, requests: int, timeout: float, pid: int) -> dict[str, object]:
    """``requests`` GETs of ``url`` sent at once, each on its own connection: statuses, latencies, most threads."""
    start = threading.Barrier(requests + 1)
    answers: list[tuple[str, float]] = []
    lock = threading.Lock()

    def send() -> None:
        start.wait()
        began = time.perf_counter()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                response.read()
                status = str(response.status)
        except urllib.error.HTTPError as error:
            status = str(error.code)
        except OSError:  # no answer within the timeout, or the connection dropped
            status = "no answer"
        with lock:
            answers.append((status, time.perf_counter() - began))

    clients = [threading.Thread(target=send) for _ in range(requests)]
    for client in clients:
        client.start()
    before = rss_mb(pid)
    start.wait()
    most = threads(pid)
    while any(client.is_alive() for client in clients):
        most = max(most, threads(pid))
        time.sleep(0.05)
    time.sleep(1)
    latencies = sorted(seconds for _, seconds in answers)
    statuses = [status for status, _ in answers]
    return {
        "statuses": {status: statuses.count(status) for status in sorted(set(statuses))},
        "p50_s": round(statistics.median(latencies), 2),
        "p99_s": round(latencies[int(0.99 * (len(latencies) - 1))], 2),
        "max_s": round(latencies[-1], 2),
        "most_threads": most,
        "rss_before_mb": round(before, 1),
        "rss_after_mb": round(rss_mb(pid), 1),
    }


def measure(db: Path, sweep: str, requests: int, timeout: float, env: dict[str, str]) -> dict[str, object]:
    """Start ``serve`` on ``db``; two bursts for the learning curves of every trial of ``sweep``."""
    query = "SELECT trial_key FROM sweep_trials JOIN sweeps ON sweeps.id = sweep_id WHERE name = ? ORDER BY position"
    with sqlite3.connect(db) as connection:
        keys = [key for (key,) in connection.execute(query, (sweep,))]
    command = [sys.executable, "-m", "gridsearch", "serve", "--db", str(db), "--port", "0"]
    server = subprocess.Popen(
        command, cwd=db.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        url = re.search(r"http://[\d.]+:\d+", server.stdout.readline()).group(0)
        urllib.request.urlopen(url + "/api/sweeps", timeout=timeout).read()  # the server's one-off costs paid
        figure = f"{url}/sweeps/{sweep}/curves.png?trials={','.join(keys)}"
        bursts = {}
        for name in ("first", "again"):
            bursts[name] = burst(figure, requests, timeout, server.pid)
            print(json.dumps({"burst": name, **bursts[name]}), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"requests": requests, "timeout_s": timeout, "trials": len(keys), **bursts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="a results database (default: train a small sweep)")
    parser.add_argument("--sweep", default=SWEEP["name"], help="the sweep whose trials' curves are asked for")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("GRIDSEARCH_DATA", "data")))
    parser.add_argument("--requests", type=int, default=200, help="concurrent requests per burst")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a client waits for its answer")
    args = parser.parse_args()
    path = os.environ.get("PYTHONPATH", str(ROOT))
    env = dict(os.environ, PYTHONPATH=path)
    with tempfile.TemporaryDirectory() as folder:
        db = args.db.resolve() if args.db else train(Path(folder), args.data_dir.resolve(), env)
        result = measure(db, args.sweep, args.requests, args.timeout, env)
    print(json.dumps({"gridsearch": path, **result}))


if __name__ == "__main__":
    main()
