"""The fastest correct CPU training of LeNet-5-3: what ``channels_last``, bf16 autocast, thread counts and
workers give per epoch of 50,000 images, and what bf16 does to accuracy. Last line: one JSON object.

Speed: the engine's own epoch loop (``train_epoch``, deterministic kernels as in a trial) on ``--samples``
real MNIST training images, the four precision/layout modes interleaved (so machine noise hits all alike)
at each thread count; the rate is turned into seconds per epoch of 50,000 images. Workers: the same loop
in ``--workers`` processes of one thread at once, beside one process with that many threads.

Accuracy (``--accuracy-epochs`` > 0): the seed recipe (lr 0.08, step 4) on all 50,000 images under fp32
and under bf16 + channels_last, seeds 0 .. ``--seeds``-1, through ``gridsearch run`` (two workers); the
validation accuracy (10,000 images) of every seed's last epoch, and the paired differences.

    python benchmarks/cpu_training_modes.py [--samples 8600] [--threads 1,2] [--accuracy-epochs 3 --seeds 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from common import BATCH, samples_per_second, seed_model, summary
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gridsearch.spec.sweep import resolved_defaults  # noqa: E402
from gridsearch.training import data  # noqa: E402
from gridsearch.training.loop import train_epoch  # noqa: E402
from gridsearch.training.models import make_augmenter, make_deterministic  # noqa: E402

FULL_EPOCH = 50000
MODES = {
    "fp32": (False, False),
    "channels_last": (False, True),
    "bf16": (True, False),
    "bf16+channels_last": (True, True),
}
"""Mode -> (bf16 autocast, channels_last)."""
ADOPTED = {"amp": "bf16", "channels_last": True}
"""The mode the accuracy check compares with fp32, as sweep-file params."""


def epoch_loop(data_dir: Path, samples: int, bf16: bool, channels_last: bool, architecture: str = "lenet53"):
    """One epoch of the engine's loop over ``samples`` images, in the given mode, with the architecture's
    augmentation if it has one; returns the samples."""
    train, _ = data.training_splits(data_dir, samples, 1)
    model, optimizer = seed_model(architecture)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    augment = make_augmenter({"architecture": architecture, "params": resolved_defaults(architecture)})  # type: ignore[typeddict-item]
    generator = torch.Generator().manual_seed(0)

    def loop() -> int:
        train_epoch(model, optimizer, train, BATCH, generator, augment, bf16=bf16)
        return len(train)

    return loop


def per_architecture(data_dir: Path, samples: int, names: list[str], repeats: int) -> dict[str, float]:
    """Seconds per epoch of 50,000 images of each architecture in the adopted mode, one thread."""
    make_deterministic(1)
    loops = {name: epoch_loop(data_dir, samples, True, True, name) for name in names}
    return {name: round(FULL_EPOCH / rate, 1) for name, rate in samples_per_second(loops, repeats).items()}


def speed(data_dir: Path, samples: int, threads: int, repeats: int) -> dict[str, float]:
    """Seconds per epoch of 50,000 images of each mode at ``threads`` threads."""
    make_deterministic(threads)
    loops = {name: epoch_loop(data_dir, samples, *mode) for name, mode in MODES.items()}
    rates = samples_per_second(loops, repeats)
    return {name: round(FULL_EPOCH / rate, 1) for name, rate in rates.items()}


def _worker(data_dir: Path, samples: int, mode: str, repeats: int, start, rates) -> None:
    make_deterministic(1)
    loop = epoch_loop(data_dir, samples, *MODES[mode])
    loop()  # warm-up
    start.wait()
    started = time.perf_counter()
    done = sum(loop() for _ in range(repeats))
    rates.put(done / (time.perf_counter() - started))


def workers(data_dir: Path, samples: int, mode: str, count: int, repeats: int) -> float:
    """Seconds per epoch of 50,000 images, per trial, with ``count`` one-thread processes training at once."""
    context = multiprocessing.get_context("spawn")
    start, rates = context.Barrier(count), context.Queue()
    processes = [
        context.Process(target=_worker, args=(data_dir, samples, mode, repeats, start, rates)) for _ in range(count)
    ]
    for process in processes:
        process.start()
    aggregate = sum(rates.get() for _ in processes)
    for process in processes:
        process.join()
    return round(FULL_EPOCH / (aggregate / count), 1)


def accuracy(data_dir: Path, epochs: int, seeds: int) -> dict[str, object]:
    """Last-epoch validation accuracy (%) of fp32 and the adopted mode, per seed, on the full split."""
    document = {
        "name": "bf16_check",
        "architecture": "lenet53",
        "dataset": {"train_size": FULL_EPOCH, "val_size": 10000, "test_size": 10000},
        "params": {"epochs": epochs, "lr": 0.08, "lr_step": 4},
        "grid": [{"amp": ["off"]}, {key: [value] for key, value in ADOPTED.items()}],
        "seeds": list(range(seeds)),
    }
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "sweep.yaml").write_text(yaml.safe_dump(document))
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "gridsearch", "run", "sweep.yaml", "--plain", "--workers", "2"]
            + ["--data-dir", str(data_dir.resolve())],
            cwd=folder,
            check=True,
        )
        wall = time.perf_counter() - started
        with sqlite3.connect(Path(folder) / "results.db") as connection:
            rows = connection.execute(
                "SELECT t.seed, t.config, e.val_accuracy FROM trials t "
                "JOIN epochs e ON e.trial_key = t.key AND e.epoch = t.epochs_run - 1 ORDER BY t.seed"
            ).fetchall()
    by_mode: dict[str, list[float]] = {"fp32": [], "bf16+channels_last": []}
    for _seed, config, val_accuracy in rows:
        mode = "bf16+channels_last" if json.loads(config)["params"].get("amp") == "bf16" else "fp32"
        by_mode[mode].append(100 * val_accuracy)
    differences = [b - a for a, b in zip(by_mode["fp32"], by_mode["bf16+channels_last"], strict=True)]
    return {
        "epochs": epochs,
        "val_accuracy_percent": by_mode,
        "summary": {mode: summary(values) for mode, values in by_mode.items()},
        "paired_difference_percent": summary(differences),
        "paired_t_test_p": float(stats.ttest_rel(by_mode["bf16+channels_last"], by_mode["fp32"]).pvalue),
        "sweep_wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=data.default_data_dir())
    parser.add_argument("--samples", type=int, default=8600, help="training images per timed epoch")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per loop (median reported)")
    parser.add_argument("--threads", default="1,2", help="thread counts to time, comma-separated")
    parser.add_argument("--workers", type=int, default=2, help="one-thread processes training at once")
    parser.add_argument(
        "--architectures",
        default="lenet53,lenet53_augmented,stn,tps_stn,mlp,convnet,vgg_small,resnet_small",
        help="architectures timed in the adopted mode (empty: none)",
    )
    parser.add_argument("--accuracy-epochs", type=int, default=0, help="epochs of the accuracy check (0: none)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the accuracy check")
    args = parser.parse_args()
    data.prepare(args.data_dir)
    result: dict[str, object] = {
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "samples": args.samples,
        "epoch_seconds_50k": {
            f"{threads} threads": speed(args.data_dir, args.samples, threads, args.repeats)
            for threads in map(int, args.threads.split(","))
        },
        f"epoch_seconds_50k_{args.workers}_workers": {
            mode: workers(args.data_dir, args.samples, mode, args.workers, args.repeats)
            for mode in ("fp32", "bf16+channels_last")
        },
    }
    if args.architectures:
        result["adopted_epoch_seconds_50k_by_architecture"] = per_architecture(
            args.data_dir, args.samples, args.architectures.split(","), args.repeats
        )
    if args.accuracy_epochs:
        result["accuracy"] = accuracy(args.data_dir, args.accuracy_epochs, args.seeds)
    print(json.dumps(result))


def cpu_name() -> str:
    """The CPU's model name and whether it has AVX-512 BF16 / AMX instructions (Linux)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    return f"{name} ({', '.join(sorted(flags & {'avx512_bf16', 'amx_bf16', 'amx_tile'})) or 'no bf16 instructions'})"


if __name__ == "__main__":
    main()
