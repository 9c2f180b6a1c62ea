"""Sweep wall time with trials run one at a time vs several at once, through the real engine.

On CPU it compares ``--workers 1`` with ``--workers K`` (each trial keeps 1 thread); on a GPU it
compares ``--slots-per-gpu 1`` with ``--slots-per-gpu K`` (K trials packed on each GPU). The same
grid runs each way into a fresh database; the aggregate rate is the training images of all trials'
epochs divided by the sweep's wall time. As a reference, the same run measures how much K plain
training loops (LeNet-5-3, batch 86, 1 thread, K processes at once) gain over one on this machine:
the most any scheduler could get from it. Last line: one JSON object.

    python benchmarks/parallel_trials.py [--device cpu] [--parallel 1,2] [--trials 8] [--train-size 5000]
    python benchmarks/parallel_trials.py --device cuda --parallel 1,2,4,8,16 --train-size 50000 --epochs 2
"""

import argparse
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gridsearch.training import data  # noqa: E402


def run_sweep(folder: Path, args: argparse.Namespace, parallel: int) -> float:
    """Wall seconds of one ``run`` of the grid with ``parallel`` trials at a time."""
    document = {
        "name": f"parallel{parallel}",
        "architecture": "lenet53",
        "dataset": {"train_size": args.train_size, "val_size": 1000, "test_size": 1000},
        "params": {"epochs": args.epochs, "batch_size": 86, **({"amp": "bf16"} if args.bf16 else {})},
        "grid": {"lr": [round(0.02 + 0.01 * i, 3) for i in range(args.trials)]},
    }
    run_dir = folder / f"parallel{parallel}"
    run_dir.mkdir()
    (run_dir / "sweep.yaml").write_text(yaml.safe_dump(document))
    option = ["--slots-per-gpu", str(parallel)] if args.device == "cuda" else ["--workers", str(parallel)]
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gridsearch",
            "run",
            "sweep.yaml",
            "--plain",
            "--device",
            args.device,
            "--data-dir",
            str(args.data_dir.resolve()),
            *option,
        ],
        cwd=run_dir,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def plain_loop_rate(results: "multiprocessing.Queue[float]", batches: int = 150) -> None:
    """Put the samples/s of a plain LeNet-5-3 training loop (random batches of 86, 1 thread) on ``results``."""
    import torch
    import torch.nn.functional as F

    from gridsearch.spec.sweep import resolved_defaults
    from gridsearch.training.models import build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model({"architecture": "lenet53", "params": resolved_defaults("lenet53")})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.rand(86, 1, 28, 28), torch.randint(0, 10, (86,))
    for _timed in (False, True):  # a warm-up pass, then the timed one
        started = time.perf_counter()
        for _ in range(batches):
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
    results.put(batches * 86 / (time.perf_counter() - started))


def loops_at_once(count: int) -> float:
    """Aggregate samples/s of ``count`` plain loops, each in its own process, all at once."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=plain_loop_rate, args=(results,)) for _ in range(count)]
    for process in processes:
        process.start()
    rates = [results.get() for _ in processes]
    for process in processes:
        process.join()
    return sum(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=data.default_data_dir())
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--parallel", default="1,2", help="comma-separated trials at a time; the first is the reference"
    )
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="train with amp: bf16")
    args = parser.parse_args()
    data.prepare(args.data_dir)
    images = args.trials * args.epochs * args.train_size
    runs = []
    with tempfile.TemporaryDirectory() as temporary:
        for parallel in (int(p) for p in args.parallel.split(",")):
            wall = run_sweep(Path(temporary), args, parallel)
            runs.append({"parallel": parallel, "wall_s": round(wall, 2), "samples_per_s": round(images / wall, 1)})
            print(json.dumps(runs[-1]), flush=True)
    reference = runs[0]
    best = max(runs, key=lambda run: run["samples_per_s"])
    alone = loops_at_once(1) if args.device == "cpu" else None
    ceiling = {run["parallel"]: round(loops_at_once(run["parallel"]) / alone, 2) for run in runs[1:]} if alone else {}
    print(
        json.dumps(
            {
                "device": args.device,
                "trials": args.trials,
                "train_size": args.train_size,
                "epochs": args.epochs,
                "runs": runs,
                "wall_ratio_to_reference": {
                    run["parallel"]: round(run["wall_s"] / reference["wall_s"], 3) for run in runs
                },
                "best_parallel": best["parallel"],
                "best_speedup": round(best["samples_per_s"] / reference["samples_per_s"], 2),
                "plain_loops_speedup": ceiling,
            }
        )
    )


if __name__ == "__main__":
    main()
