"""Training throughput of a cohort trained per-trial (one model after another) against fused (one stacked model
of K members), for the study's models, and the projected time of a full grid. Last line: one JSON object.

    python benchmarks/fused_cohorts.py [--samples 1000] [--fuse 1,5,13] [--architectures lenet53,stn,tps_stn]
    python benchmarks/fused_cohorts.py --device cuda --samples 8600 --fuse 1,5,13,25   # on a GPU, ~minutes

Member-samples/s: images trained per second summed over the members (K members on N images is K*N). Per-trial
runs the worker's own epoch loop (``gridsearch.training.loop.train_epoch``) on one model; fused runs
``gridsearch.training.fused.stack_epoch`` on a stack of K. Both at batch 86 with the study's SGD; the first epoch
of each is a warm-up and is not timed. The projection: ``--grid`` trials of ``--full-epochs`` epochs on
``--full-samples`` images, at the measured rate (per-trial: one worker; fused K: the grid in cohorts of K).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch
from common import BATCH

from gridsearch.spec.sweep import resolved_defaults
from gridsearch.training import data
from gridsearch.training.fused import FusedOptimizer, Hyper, Stack, dropout_generator, stack_epoch
from gridsearch.training.loop import train_epoch
from gridsearch.training.models import build_model, make_deterministic, make_optimizer


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=data.default_data_dir())
    parser.add_argument("--samples", type=int, default=1000, help="training images per timed epoch")
    parser.add_argument("--repeats", type=int, default=1, help="timed epochs per loop (median reported)")
    parser.add_argument("--fuse", default="1,5,13", help="stack sizes K to time (1 is a stack of one)")
    parser.add_argument("--architectures", default="lenet53,stn,tps_stn")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid", type=int, default=25, help="trials in the projected grid (the seed grid: 25)")
    parser.add_argument("--full-samples", type=int, default=50000)
    parser.add_argument("--full-epochs", type=int, default=100)
    return parser.parse_args()


def config(architecture: str, lr: float) -> dict:
    params = {**resolved_defaults(architecture), "lr": lr, "batch_size": BATCH}
    return {"architecture": architecture, "params": params, "seed": 0}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(epoch, device: torch.device, repeats: int) -> float:
    """Median seconds of ``epoch()`` after one untimed warm-up call."""
    epoch()
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        epoch()
        synchronize(device)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def per_trial_rate(architecture: str, train: data.Split, device: torch.device, repeats: int) -> float:
    torch.manual_seed(0)
    cfg = config(architecture, 0.05)
    model = build_model(cfg).to(device)  # type: ignore[arg-type]
    optimizer = make_optimizer(model, cfg["params"])
    generator = torch.Generator(device).manual_seed(0)
    return len(train) / timed(lambda: train_epoch(model, optimizer, train, BATCH, generator), device, repeats)


def fused_rate(architecture: str, k: int, train: data.Split, device: torch.device, repeats: int) -> float:
    models = []
    for member in range(k):
        torch.manual_seed(0)
        models.append(build_model(config(architecture, 0.01 * (member + 1))).to(device))  # type: ignore[arg-type]
    stack = Stack(models, device)
    optimizer = FusedOptimizer(stack, "sgd")
    lr = torch.tensor([0.01 * (m + 1) for m in range(k)], dtype=torch.float64)
    optimizer.set_hyper(
        Hyper(lr.view(k, 1).expand(k, len(stack.names)), torch.full((k,), 0.9), torch.ones(k), torch.full((k,), 5e-4))
    )
    generator = torch.Generator(device).manual_seed(0)
    streams = [dropout_generator(device).get_state()] * k
    active = [True] * k

    def epoch() -> None:
        stack_epoch(stack, optimizer, train, BATCH, generator, [None], streams, active, False)

    return k * len(train) / timed(epoch, device, repeats)


def utilisation(device: torch.device) -> int | None:
    """The GPU's utilisation (percent) as NVML reports it now, if it can."""
    if device.type != "cuda":
        return None
    try:
        return int(torch.cuda.utilization(device))
    except Exception:  # no NVML: the figure is simply left out
        return None


def main() -> None:
    args = arguments()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, as in a worker
    device = torch.device(args.device)
    make_deterministic(args.threads)
    data.prepare(args.data_dir)
    train, _ = data.training_splits(args.data_dir, args.samples, 1)
    train = train.to(device)
    sizes = [int(k) for k in args.fuse.split(",")]
    results: dict[str, dict] = {}
    for architecture in args.architectures.split(","):
        rates = {"per-trial": per_trial_rate(architecture, train, device, args.repeats)}
        for k in sizes:
            rates[f"fused-{k}"] = fused_rate(architecture, k, train, device, args.repeats)
        member_samples = args.grid * args.full_samples * args.full_epochs
        projected = {"per-trial": member_samples / rates["per-trial"]}
        for k in sizes:  # the grid in cohorts of K, the last one smaller but no faster per member
            projected[f"fused-{k}"] = (
                math.ceil(args.grid / k) * k * args.full_samples * args.full_epochs / rates[f"fused-{k}"]
            )
        results[architecture] = {
            "member_samples_per_s": {name: round(rate, 1) for name, rate in rates.items()},
            "speedup_over_per_trial": {name: round(rate / rates["per-trial"], 3) for name, rate in rates.items()},
            "projected_grid_hours": {name: round(seconds / 3600, 2) for name, seconds in projected.items()},
            "gpu_utilisation_percent": utilisation(device),
        }
        print(json.dumps({architecture: results[architecture]}), flush=True)
    summary = {
        "results": results,
        "samples": args.samples,
        "batch_size": BATCH,
        "grid": args.grid,
        "full_samples": args.full_samples,
        "full_epochs": args.full_epochs,
        "threads": args.threads,
        "device": args.device,
        "torch": torch.__version__,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
