"""A trained trial's inference time: milliseconds to classify one image, measured once, in a worker, on the device
the trial trains on.

The trial's network (its best weights when they are there: the time does not depend on them) classifies the first
``IMAGES`` of its validation images one at a time (a batch of 1, as the recognizer does), in eval mode, without
gradients, with the trial's threads and, set, its bf16 autocast, after ``WARMUP`` passes; on CUDA each pass is
timed from a synchronised start to a synchronised end. The measure is the median pass, so a pass interrupted by
another process on a busy machine does not count. It is a time, not a result: it varies from machine to machine
and run to run, and so does what a search steered by it does.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

from gridsearch.spec.config import TrialConfig
from gridsearch.training import data
from gridsearch.training.checkpoints import load_verified
from gridsearch.training.models import build_model, make_deterministic, uses_bf16

IMAGES = 100
"""Validation images timed, one pass each."""
WARMUP = 10
"""Untimed passes first (lazy initialisation, caches, CUDA kernels)."""


@torch.no_grad()
def inference_ms(config: TrialConfig, run_dir: Path, data_dir: Path, device: torch.device) -> float:
    """The median milliseconds the trial's network takes to classify one of its validation images on ``device``."""
    make_deterministic(config["threads"])
    model = build_model(config).to(device)
    if (run_dir / "best.pt").exists():
        model.load_state_dict(load_verified(run_dir / "best.pt", device)["model"])
    model.eval()
    split = config["dataset"]
    _, val = data.training_splits(data_dir, split["train_size"], split["val_size"], split)
    images = val.images[:IMAGES].to(device).float().div_(255)
    bf16 = uses_bf16(config)

    def classify(index: int) -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            model(images[index % len(images)].unsqueeze(0))

    for index in range(WARMUP):
        classify(index)
    times = []
    for index in range(IMAGES):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        classify(index)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)
