"""Everything around the engine at scale: a database of N finished trials (100 epoch rows each by default),
stored through the project's own ``Storage``, then the wall time and peak memory of each reader of it. Last
line: one JSON object, each step beside its target from issue 22.

The database is built once per shape and kept (default under /tmp/gridsearch-scale/): 1-epoch-``mlp``-like
trials whose metrics are drawn from a seeded generator, ``--epochs`` epoch rows each, the best trial
selected and tested (with its runner-up) on the first 1,000 MNIST test images. The grid is four params of
about equal length (``--shape deep``; 10 x 10 x 10 x 10 at 10,000 trials) or two (``--shape square``:
100 x 100).

Each step is a fresh process (its peak RSS from ``os.wait4``): the no-op ``run`` (every trial done,
``--executor inline``), ``plan``, ``status``, ``trials``, ``report``, the API readers
``gridsearch.trials`` / ``epochs`` / ``evaluations``, and the web app, whose endpoints are each requested
twice through Flask's test client (seconds of the first request and of the second, which may be answered from
a cache; bytes), the server's peak RSS for all of them. An endpoint whose answer the server computes in the
background answers the first request 202 (computing): the probe waits for that computation, records how long it
took (``computed_in_background_seconds``) and asks again.

    python benchmarks/scale.py [--trials 10000] [--shape deep|square] [--only run,plan,report,api,web]
                               [--timeout 180] [--cache /tmp/gridsearch-scale]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SWEEP = "scale"
STEPS = ("run", "plan", "status", "trials", "report", "api", "web")
TARGETS = {"run": 8.0, "plan": 3.0, "report": 20.0, "web": 0.5}
"""Seconds, from issue 22 (the web's: per endpoint)."""
TARGET_RSS_MB = {"run": 1024.0, "report": 1024.0}
WEB_POLL_BYTES = 100_000
"""The live sweep page's poll, at most."""
TEST_SIZE = 1000
PARAM_VALUES = {
    "lr": lambda n: [round(0.005 * (i + 1), 4) for i in range(n)],
    "weight_decay": lambda n: [round(0.00005 * i, 6) for i in range(n)],
    "momentum": lambda n: [round(0.5 + 0.45 * i / max(n - 1, 1), 4) for i in range(n)],
    "lr_gamma": lambda n: [round(0.5 + 0.45 * i / max(n - 1, 1), 4) for i in range(n)],
}


def factors(count: int, parts: int) -> list[int]:
    """``count`` as a product of ``parts`` factors, each about the ``parts``-th root of what is left."""
    sizes = []
    for left in range(parts, 1, -1):
        root = round(count ** (1 / left))
        size = max(d for d in range(1, root + 1) if count % d == 0)
        sizes.append(size)
        count //= size
    return [*sizes, count]


def sweep_document(trials: int, shape: str, epochs: int) -> dict:
    """A sweep file of ``trials`` mlp trials over 4 params (``deep``) or 2 (``square``)."""
    names = list(PARAM_VALUES)[: 4 if shape == "deep" else 2]
    sizes = factors(trials, len(names))
    return {
        "name": SWEEP,
        "architecture": "mlp",
        "dataset": {"train_size": 5000, "val_size": 2000, "test_size": TEST_SIZE},
        "params": {"epochs": epochs, "batch_size": 100},
        "grid": {name: PARAM_VALUES[name](size) for name, size in zip(names, sizes)},
        "seeds": [0],
    }


def build(folder: Path, trials: int, shape: str, epochs: int, data_dir: Path) -> dict:
    """The sweep file and database of ``trials`` finished trials in ``folder`` (kept: built once)."""
    from sqlalchemy import insert, update

    from gridsearch.spec.sweep import load_sweep
    from gridsearch.store.models import EpochRow, TrialRow, utcnow
    from gridsearch.store.storage import Storage
    from gridsearch.training import data
    from gridsearch.vocabulary import TrialStatus

    folder.mkdir(parents=True, exist_ok=True)
    path, db = folder / "scale.yaml", folder / "results.db"
    done = folder / "built.json"
    if done.exists():
        return json.loads(done.read_text())
    db.unlink(missing_ok=True)
    path.write_text(yaml.safe_dump(sweep_document(trials, shape, epochs), sort_keys=False))
    started = time.perf_counter()
    sweep = load_sweep(path, max_trials=max(trials, 10_000))
    points = list(sweep.trials())
    storage = Storage(str(db))
    storage.save_sweep(sweep, points)
    generator = np.random.default_rng(0)
    final = np.clip(0.97 - 0.02 * generator.random(len(points)) - 0.01 * np.arange(len(points)) / len(points), 0, 1)
    curve = 1 - np.exp(-np.arange(1, epochs + 1) / 3)  # each trial's val accuracy rises towards its final
    now = utcnow()
    summaries = []
    with storage.engine.begin() as connection:
        for index, trial in enumerate(points):
            accuracy = 0.1 + (final[index] - 0.1) * curve
            noise = generator.normal(0, 0.002, epochs)
            rows = [
                {
                    "trial_key": trial.key,
                    "epoch": epoch,
                    "train_loss": float(1.5 * (1 - accuracy[epoch]) + 0.01),
                    "train_accuracy": float(min(accuracy[epoch] + 0.01, 1.0)),
                    "val_loss": float(1.6 * (1 - accuracy[epoch]) + 0.02 + abs(noise[epoch])),
                    "val_accuracy": float(min(accuracy[epoch] + noise[epoch], 1.0)),
                    "lr": float(trial.params["lr"]),
                    "seconds": 0.4,
                }
                for epoch in range(epochs)
            ]
            connection.execute(insert(EpochRow), rows)
            best = max(rows, key=lambda row: row["val_accuracy"])
            summaries.append(
                {
                    "key": trial.key,
                    "status": TrialStatus.DONE,
                    "best_epoch": best["epoch"],
                    "val_accuracy": best["val_accuracy"],
                    "val_loss": best["val_loss"],
                    "epochs_run": epochs,
                    "train_seconds": 0.4 * epochs,
                    "parameter_count": 109_386,
                    "attempts": 1,
                    "device": "cpu",
                    "started_at": now,
                    "finished_at": now,
                }
            )
    with storage.session.begin() as session:
        session.execute(update(TrialRow), summaries)  # bulk UPDATE by primary key
    ranked = sorted(summaries, key=lambda s: (-s["val_accuracy"], s["val_loss"]))
    data.prepare(data_dir)  # the parsed arrays, from the raw files on first use
    labels = data.test_split(data_dir, TEST_SIZE).labels.numpy()
    storage.set_selected(SWEEP, ranked[0]["key"])
    for place, summary in enumerate(ranked[:2]):
        predicted = labels.copy()
        wrong = np.random.default_rng(place).choice(TEST_SIZE, 20 + 5 * place, replace=False)
        predicted[wrong] = (predicted[wrong] + 1) % 10
        confusion = np.zeros((10, 10), dtype=int)
        np.add.at(confusion, (labels, predicted), 1)
        storage.save_evaluation(
            summary["key"],
            "test",
            {
                "samples": TEST_SIZE,
                "accuracy": float((predicted == labels).mean()),
                "loss": 0.1,
                "errors": int((predicted != labels).sum()),
                "confusion": confusion.tolist(),
                "predictions": predicted.tolist(),
                "seconds": 0.5,
            },
        )
    storage.close()
    built = {
        "sweep_file": str(path),
        "db": str(db),
        "trials": len(points),
        "epoch_rows": len(points) * epochs,
        "grid": {name: len(values) for name, values in sweep.grid[0].items()},
        "build_seconds": round(time.perf_counter() - started, 1),
        "db_mb": round(db.stat().st_size / 2**20, 1),
    }
    done.write_text(json.dumps(built))
    return built


LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
sys.stderr.write(f"\\nmaxrss_kb={usage.ru_maxrss}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""
"""Runs a command and writes its peak RSS last on stderr. Linux keeps a process's peak RSS across exec, so the
command is forked from this small process, not from the benchmark, whose memory it would otherwise inherit."""


def measure(command: list[str], timeout: float, env: dict[str, str]) -> dict:
    """Wall seconds and peak RSS (MB) of ``command`` in a fresh process; its last stdout line if JSON."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, *command],
            stdout=out,
            stderr=err,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            out.seek(0)
            return {"seconds": None, "peak_rss_mb": None, "timeout": timeout, **partial(out.read().decode())}
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        lines = out.read().decode(errors="replace").strip().splitlines()
        *errors, peak = err.read().decode(errors="replace").strip().splitlines()
        result: dict = {"seconds": round(seconds, 2), "peak_rss_mb": round(int(peak.split("=")[1]) / 1024, 1)}
        if process.returncode != 0:
            result["error"] = (errors or ["?"])[-1][:300]
        elif lines and lines[-1].startswith("{"):
            result["detail"] = json.loads(lines[-1])
        return result


def partial(printed: str) -> dict:
    """The endpoints a web probe stopped by its timeout had measured (it prints each as it goes)."""
    found = [json.loads(line) for line in printed.splitlines() if line.startswith('{"endpoint"')]
    return {"detail": {"endpoints": {e.pop("endpoint"): e for e in found}}} if found else {}


def probe_api(db: str, reader: str) -> dict:
    """Seconds and rows of one ``gridsearch`` reader of the sweep."""
    import gridsearch

    started = time.perf_counter()
    table = getattr(gridsearch, reader)(db, SWEEP)
    return {"reader_seconds": round(time.perf_counter() - started, 2), "rows": len(table)}


def probe_web(db: str, data_dir: str) -> dict:
    """Each endpoint of the web app on ``db``, twice: the slower's seconds, and its bytes."""
    from gridsearch.store.storage import Storage
    from gridsearch.web.app import create_app

    storage = Storage(db, readonly=True)
    app = create_app(storage, Path(db).parent / "runs", Path(data_dir))
    client, live = app.test_client(), app.extensions["gridsearch.live"]
    trials = client.get(f"/api/sweeps/{SWEEP}/trials").get_json()
    keys = ",".join(trial["key"] for trial in trials["trials"][:3])
    paths = [
        "/",
        f"/sweeps/{SWEEP}",
        "/api/sweeps",
        f"/api/sweeps/{SWEEP}/trials",
        f"/api/sweeps/{SWEEP}/analysis",
        "/api/models",
        f"/sweeps/{SWEEP}/heatmap.png",
        f"/sweeps/{SWEEP}/confusion.png",
        f"/sweeps/{SWEEP}/curves.png?trials={keys}",
        f"/sweeps/{SWEEP}/importance.png",
        f"/sweeps/{SWEEP}/parallel.png",
    ]
    if "version" in trials.get("sweep", {}):  # the live page's poll once it has the sweep: only what changed
        paths.append(f"/api/sweeps/{SWEEP}/trials?since={trials['sweep']['version']}")
    endpoints = {}
    for path in paths:
        times, statuses, computed = [], [], None
        for _ in range(2):
            started = time.perf_counter()
            response = client.get(path)
            times.append(time.perf_counter() - started)
            statuses.append(response.status_code)
            if response.status_code == 202:  # computed in the background: how long until it is, then ask again
                started = time.perf_counter()
                live.wait_computed(600)
                computed = round(time.perf_counter() - started, 3)
        name = path.split("?trials=")[0].split("?since=")[0].replace(f"/{SWEEP}", "/NAME")
        name += "?since" if "?since=" in path else ""
        endpoints[name] = {
            "seconds": round(times[0], 3),
            "again_seconds": round(times[1], 3),
            "bytes": len(response.data),
            "status": response.status_code,
            **({"first_status": statuses[0], "computed_in_background_seconds": computed} if computed else {}),
        }
        print(json.dumps({"endpoint": name, **endpoints[name]}), flush=True)
    return {"endpoints": endpoints}


def cli(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "gridsearch", *arguments]


def steps(built: dict, only: list[str], timeout: float, data_dir: Path, scratch: Path) -> dict:
    """Each step of ``only``, measured in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRIDSEARCH_DATA": str(data_dir)}
    db, path = built["db"], built["sweep_file"]
    here = [sys.executable, str(Path(__file__).resolve())]
    commands = {
        "run": cli("run", path, "--db", db, "--executor", "inline", "--plain", "--data-dir", str(data_dir)),
        "plan": cli("plan", path, "--db", db, "--max-trials", str(max(built["trials"], 10_000))),
        "status": cli("status", "--db", db),
        "trials": cli("trials", SWEEP, "--db", db),
        "report": cli("report", SWEEP, "--db", db, "--out", str(scratch / "report"), "--data-dir", str(data_dir)),
        "api.trials": [*here, "--probe", "api", "trials", "--db", db],
        "api.epochs": [*here, "--probe", "api", "epochs", "--db", db],
        "api.evaluations": [*here, "--probe", "api", "evaluations", "--db", db],
        "web": [*here, "--probe", "web", "-", "--db", db, "--data-dir", str(data_dir)],
    }
    results = {}
    for name, command in commands.items():
        if name.split(".")[0] in only:
            results[name] = measure(command, timeout, env)
            print(json.dumps({name: results[name]}), flush=True)
    return results


def verdicts(results: dict) -> dict:
    """Each measured step against its target (True: met; None: not measured)."""
    met = {}
    for name, target in TARGETS.items():
        if name in results and name != "web":
            seconds, rss = results[name]["seconds"], results[name]["peak_rss_mb"]
            limit = TARGET_RSS_MB.get(name, math.inf)
            met[name] = seconds is not None and seconds <= target and rss <= limit
    endpoints = results.get("web", {}).get("detail", {}).get("endpoints")
    if endpoints:
        met["web"] = all(e["seconds"] <= TARGETS["web"] for e in endpoints.values())
        met["web_again"] = all(e["again_seconds"] <= TARGETS["web"] for e in endpoints.values())
        poll = endpoints.get("/api/sweeps/NAME/trials?since", endpoints["/api/sweeps/NAME/trials"])
        met["web_poll_bytes"] = poll["bytes"] <= WEB_POLL_BYTES
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=100, help="epoch rows per trial")
    parser.add_argument("--shape", choices=("deep", "square"), default="deep")
    parser.add_argument("--only", default=",".join(STEPS), help=f"comma-separated steps of {', '.join(STEPS)}")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds a step may take (then: timeout)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "gridsearch-scale")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--probe", nargs=2, metavar=("KIND", "WHAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    from gridsearch.training.data import default_data_dir

    data_dir = args.data_dir or default_data_dir()
    if args.probe:
        kind, what = args.probe
        print(json.dumps(probe_api(args.db, what) if kind == "api" else probe_web(args.db, str(data_dir))))
        return
    only = [step for step in args.only.split(",") if step]
    unknown = sorted(set(only) - set(STEPS))
    if unknown:
        parser.error(f"--only: unknown step {unknown[0]!r}; expected some of {', '.join(STEPS)}")
    built = build(
        args.cache / f"{args.trials}-{args.shape}-{args.epochs}", args.trials, args.shape, args.epochs, data_dir
    )
    print(json.dumps({"built": built}), flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="scale-"))
    try:
        results = steps(built, only, args.timeout, data_dir, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps({"benchmark": "scale", **built, "steps": results, "targets_met": verdicts(results)}))


if __name__ == "__main__":
    main()
