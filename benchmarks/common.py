"""Shared set-up of the benchmarks: real MNIST, the seed model and optimizer, interleaved timing."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gridsearch.spec.sweep import resolved_defaults
from gridsearch.training import data
from gridsearch.training.models import build_model, make_optimizer

BATCH = 86


def arguments(description: str, extend: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """The benchmarks' common options, and those ``extend`` adds."""
    parser = argparse.ArgumentParser(description=description)
    if extend is not None:
        extend(parser)
    parser.add_argument("--data-dir", type=Path, default=data.default_data_dir())
    parser.add_argument("--samples", type=int, default=8600, help="training images per timed epoch")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per loop (median reported)")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


def seed_model(architecture: str = "lenet53") -> tuple[nn.Module, torch.optim.Optimizer]:
    """A fresh seeded LeNet-5-3 and the study's SGD (lr 0.05, Nesterov momentum, weight decay)."""
    torch.manual_seed(0)
    params = {**resolved_defaults(architecture), "lr": 0.05}
    model = build_model({"architecture": architecture, "params": params})
    return model, make_optimizer(model, params)


def dataloader_loop(data_dir: Path, samples: int, transform: Callable) -> Callable[[], int]:
    """One epoch of the usual torchvision loop: MNIST dataset, per-sample ``transform``, DataLoader."""
    mnist = datasets.MNIST(str(data_dir), train=True, transform=transform)
    loader = DataLoader(Subset(mnist, range(samples)), batch_size=BATCH, shuffle=True)
    model, optimizer = seed_model()

    def loop() -> int:
        model.train()
        for images, labels in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
        return samples

    return loop


def samples_per_second(loops: dict[str, Callable[[], int]], repeats: int) -> dict[str, float]:
    """Median samples/s of each loop; loops run round-robin so machine noise hits all alike."""
    rates: dict[str, list[float]] = {name: [] for name in loops}
    for loop in loops.values():  # warm-up: allocator, kernels, page cache
        loop()
    for _ in range(repeats):
        for name, loop in loops.items():
            started = time.perf_counter()
            samples = loop()
            rates[name].append(samples / (time.perf_counter() - started))
            print(json.dumps({"loop": name, "samples_per_s": round(rates[name][-1], 1)}), flush=True)
    return {name: statistics.median(values) for name, values in rates.items()}


def summary(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}
