"""Training throughput of the seed grid's points trained per-trial, K worker processes at once (``--slots-per-gpu``
K), against fused stacks of K, through the trainer the worker calls (``gridsearch.engine.worker.run_job``), and
the projected time of the full grid. Last line: one JSON object.

    python benchmarks/fused_cohorts.py [--samples 1000] [--slots-per-gpu 1] [--fuse 5,13] [--architectures lenet53]
    python benchmarks/fused_cohorts.py --device cuda --samples 8600 --slots-per-gpu 1,4,8 --fuse 5,13,25

Each configuration runs in fresh processes (``multiprocessing`` spawn, as CUDA wants): per-trial K, K processes
each training one point of the grid file (``grids/lenet53.yaml``: 25 points, batch 86) as a one-trial job,
released together from a barrier; fused K, one process training K points as one fused job. Each trains
``--epochs`` epochs of ``--samples`` images (and validates on ``--val-samples``), checkpoints included, as a
worker does; the first epoch (start-up, data, CUDA context, kernel choice) is not timed. Member-samples/s: the
training images of the timed epochs summed over the members, over the wall time from the first member's end of
the warm-up epoch to the last member's end of its last epoch. GPU utilisation: ``torch.cuda.utilization()`` (else
``nvidia-smi``) sampled by a thread in this process, averaged over that window; null on the CPU. The projection:
``--grid`` trials (default: the grid file's) of ``--full-epochs`` epochs on ``--full-samples`` images, at the
measured rate (per-trial K: K trials at a time; fused K: the grid in stacks of K, one after another).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import architectures  # noqa: E402
from gridsearch.engine import worker  # noqa: E402
from gridsearch.engine.jobs import Job  # noqa: E402
from gridsearch.spec.config import TrialConfig  # noqa: E402
from gridsearch.spec.sweep import load_sweep, resolved_defaults  # noqa: E402
from gridsearch.training import data  # noqa: E402


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=data.default_data_dir())
    parser.add_argument("--grid-file", type=Path, default=ROOT / "grids" / "lenet53.yaml")
    parser.add_argument("--samples", type=int, default=1000, help="training images per epoch")
    parser.add_argument("--val-samples", type=int, default=None, help="validation images (default: samples / 5)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per configuration, the first untimed")
    parser.add_argument("--slots-per-gpu", default="1", help="per-trial: K worker processes at once, for each K")
    parser.add_argument("--fuse", default="5,13", help="fused: stacks of K, for each K")
    parser.add_argument("--architectures", default=None, help="the grid's points with these networks instead")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1, help="threads of each worker process")
    parser.add_argument("--grid", type=int, default=None, help="trials in the projected grid (default: the file's)")
    parser.add_argument("--full-samples", type=int, default=50000)
    parser.add_argument("--full-epochs", type=int, default=100)
    return parser.parse_args()


def points(args: argparse.Namespace, architecture: str) -> list[TrialConfig]:
    """The grid file's points as trials of ``architecture`` on ``--samples`` images for ``--epochs`` epochs."""
    sweep = load_sweep(args.grid_file)
    configs = [trial.config() for trial in sweep.trials()]
    own = set(architectures.get(configs[0]["architecture"]).params())  # the grid's network's params
    val = args.val_samples or max(args.samples // 5, 10)
    out = []
    for config in configs:
        params = {name: value for name, value in config["params"].items() if name not in own}
        if architecture == config["architecture"]:
            params = config["params"]
        params = {**resolved_defaults(architecture), **params, "epochs": args.epochs, "patience": args.epochs}
        dataset = {**config["dataset"], "train_size": args.samples, "val_size": val}
        out.append({**config, "architecture": architecture, "params": params, "dataset": dataset})
    return out  # type: ignore[return-value]


def job(configs: list[TrialConfig], folder: Path, args: argparse.Namespace, fused: bool) -> Job:
    members = [
        {"key": f"m{i}", "config": {**config, "threads": args.threads}, "run_dir": str(folder / f"m{i}")}
        for i, config in enumerate(configs)
    ]
    return Job(
        task="train",
        cohort="m0",
        members=members,  # type: ignore[typeddict-item]
        data_dir=str(args.data_dir.resolve()),
        device=args.device,
        visible_gpu=None,
        test_size=1,
        epoch_budget=None,
        coordinator_pid=multiprocessing.current_process().pid or 0,
        fused=fused,
    )


def train(job: Job, barrier: Any, results: Any) -> None:
    """A worker process: the job through ``worker.run_job``, when every process of the configuration is ready; puts
    when each member's epochs ended (monotonic seconds), its errors, and the GPU memory it peaked at."""
    worker.configure(job)
    import torch

    ended: dict[str, list[float]] = {}
    errors: list[str] = []

    def emit(event: dict) -> None:
        if event["event"] == "epoch" and not event.get("replayed"):
            ended.setdefault(event["key"], []).append(time.monotonic())
        elif event["event"] == "error":
            errors.append(f"{event['key']}: {event['error']}")

    try:
        barrier.wait()
        worker.run_job(job, emit)  # type: ignore[arg-type]
    except Exception as exc:  # reported, not raised: the other processes are waiting for this one's report
        errors.append(f"{type(exc).__name__}: {exc}")
        barrier.abort()
    memory = torch.cuda.max_memory_allocated() / 2**30 if job["device"] == "cuda" else None
    results.put({"ended": ended, "errors": errors, "gpu_memory_gib": memory})


class Utilisation:
    """The GPU's utilisation (percent), sampled every 0.2 s by a thread, with when."""

    def __init__(self, device: str):
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True) if device == "cuda" else None
        if self.thread is not None:
            self.thread.start()

    def now(self) -> float | None:
        import torch

        try:
            return float(torch.cuda.utilization())
        except Exception:  # no NVML bindings: ask nvidia-smi
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                return float(out.stdout.split()[0])
            except Exception:  # neither: the figure is left out
                return None

    def sample(self) -> None:
        while not self.stop.wait(0.2):
            value = self.now()
            if value is not None:
                self.samples.append((time.monotonic(), value))

    def mean(self, start: float, end: float) -> float | None:
        if self.thread is not None:
            self.stop.set()
            self.thread.join()
        within = [value for when, value in self.samples if start <= when <= end]
        return round(statistics.fmean(within), 1) if within else None


def measure(jobs: list[Job], members: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``jobs`` in one process each, all at once; member-samples/s of their timed epochs, and so on."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(jobs)), context.Queue()
    processes = [context.Process(target=train, args=(each, barrier, results)) for each in jobs]
    utilisation = Utilisation(args.device)
    for process in processes:
        process.start()
    reports = []
    while len(reports) < len(processes):
        try:
            reports.append(results.get(timeout=5))
        except queue.Empty:  # a process that died without a report (killed, crashed in native code) ends the wait
            if any(p.exitcode not in (None, 0) for p in processes):
                barrier.abort()
                reports += [{"ended": {}, "errors": ["a worker process died"], "gpu_memory_gib": None}]
                break
    for process in processes:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()
    errors = [error for report in reports for error in report["errors"]]
    ended = [times for report in reports for times in report["ended"].values()]
    if errors or len(ended) != members or any(len(times) != args.epochs for times in ended):
        utilisation.mean(0, 0)
        return {"rate": None, "errors": errors[:5]}
    start, end = min(times[0] for times in ended), max(times[-1] for times in ended)
    rate = members * args.samples * (args.epochs - 1) / (end - start)
    memory = [report["gpu_memory_gib"] for report in reports if report["gpu_memory_gib"] is not None]
    return {
        "rate": rate,
        "gpu_utilisation_percent": utilisation.mean(start, end),
        "gpu_memory_gib": round(max(memory), 2) if memory else None,
    }


def run_architecture(architecture: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    grid = points(args, architecture)
    trials = args.grid or len(grid)
    member_samples = args.full_samples * args.full_epochs
    figures: dict[str, dict[str, Any]] = {}
    projected: dict[str, float] = {}
    for k in [int(k) for k in args.slots_per_gpu.split(",")]:
        name = "per-trial" if k == 1 else f"per-trial-{k}"
        jobs = [job([grid[i % len(grid)]], folder / f"{name}-{i}", args, fused=False) for i in range(k)]
        figures[name] = measure(jobs, k, args)
        if figures[name]["rate"]:
            projected[name] = trials * member_samples / figures[name]["rate"]
        print(json.dumps({architecture: {name: figures[name]}}), flush=True)
    for k in [int(k) for k in args.fuse.split(",")]:
        name = f"fused-{k}"
        figures[name] = measure(
            [job([grid[i % len(grid)] for i in range(k)], folder / name, args, fused=True)], k, args
        )
        if figures[name]["rate"]:
            projected[name] = math.ceil(trials / k) * k * member_samples / figures[name]["rate"]
        print(json.dumps({architecture: {name: figures[name]}}), flush=True)
    base = figures.get("per-trial", {}).get("rate")
    return {
        "member_samples_per_s": {name: round(f["rate"], 1) for name, f in figures.items() if f["rate"]},
        "speedup_over_per_trial": {
            name: round(f["rate"] / base, 3) for name, f in figures.items() if f["rate"] and base
        },
        "projected_grid_hours": {name: round(seconds / 3600, 3) for name, seconds in projected.items()},
        "gpu_utilisation_percent": {name: f.get("gpu_utilisation_percent") for name, f in figures.items()},
        "gpu_memory_gib": {name: f.get("gpu_memory_gib") for name, f in figures.items()},
        "errors": {name: f["errors"] for name, f in figures.items() if "errors" in f},
    }


def main() -> None:
    args = arguments()
    data.prepare(args.data_dir)
    grid_architecture = load_sweep(args.grid_file).architectures[0]
    results = {}
    folder = Path(tempfile.mkdtemp(prefix="fused-cohorts-"))
    try:
        for architecture in (args.architectures or grid_architecture).split(","):
            results[architecture] = run_architecture(architecture, args, folder / architecture)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    import torch

    summary = {
        "results": results,
        "grid_file": str(args.grid_file),
        "samples": args.samples,
        "val_samples": args.val_samples or max(args.samples // 5, 10),
        "epochs": args.epochs,
        "batch_size": points(args, grid_architecture)[0]["params"]["batch_size"],
        "grid": args.grid or len(points(args, grid_architecture)),
        "full_samples": args.full_samples,
        "full_epochs": args.full_epochs,
        "threads": args.threads,
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "torch": torch.__version__,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
