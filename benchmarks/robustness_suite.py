"""The robustness suite's 12 conditions on the study's LeNet-5-3 (docs/study: its database and best weights), as it
ran before (each condition's images computed again for every model evaluated, in float32 whatever the trial's
precision) and as it runs now (each condition's images computed once per image set, cached in the data folder, and
every model run as its test evaluation ran: ``training.predict``). Both in one run, interleaved, on the same
images; ``--models M`` extrapolates to a study evaluating M models on one image set. Last line: one JSON object.

    python benchmarks/robustness_suite.py [--data-dir data] [--test-size 10000] [--threads 2] [--models 12]
        [--precision trial|fp32]

``--precision fp32`` runs the trial in float32 now too (for a CPU without bfloat16 instructions, where the
trial's own bfloat16 runs several times slower than float32: the figure then measures the distortions' saving).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from gridsearch.analysis import robustness
from gridsearch.analysis.trained_models import bf16, load_model, selected_trial
from gridsearch.store.storage import Storage
from gridsearch.training import data, predict

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "docs" / "study"


def cpu_flags() -> list[str]:
    """The CPU's bfloat16 instruction sets (none: bfloat16 autocast is emulated, and slow)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return []
    return sorted({flag for flag in flags if flag in ("avx512_bf16", "amx_bf16", "amx_tile")})


def before(model: torch.nn.Module, images: torch.Tensor) -> float:
    """Seconds of the suite's conditions as they ran before: transformed for this model, run in float32."""
    started = time.perf_counter()
    for name in robustness.CONDITIONS:
        predict.logits(model, robustness.transformed(name, images), False)
    return time.perf_counter() - started


def after(model: torch.nn.Module, images: torch.Tensor, precision: bool, cache: Path) -> tuple[float, float]:
    """Seconds to read (or make) the conditions' images from ``cache``, and to run the model on all of them."""
    started = time.perf_counter()
    sets = robustness.condition_images(images, cache)
    loaded = time.perf_counter() - started
    for condition in sets.values():
        predict.logits(model, condition, precision)
    return loaded, time.perf_counter() - started - loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=data.default_data_dir())
    parser.add_argument("--test-size", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", type=int, default=12, help="models evaluated on one image set, for the totals")
    parser.add_argument("--precision", choices=("trial", "fp32"), default="trial")
    args = parser.parse_args()
    storage = Storage(str(STUDY / "results.db"), readonly=True)
    trial = selected_trial(storage, "lenet53_cpu")
    model = load_model(trial, STUDY / "runs")
    torch.set_num_threads(args.threads)
    images = data.test_split(args.data_dir, args.test_size).images
    precision = bf16(trial) if args.precision == "trial" else False
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder)
        made = time.perf_counter()
        robustness.condition_images(images, cache)  # the first model of an image set pays for the distortions
        distortions = time.perf_counter() - made
        old = before(model, images)
        loaded, forward = after(model, images, precision, cache)
    now_one = distortions + forward
    result = {
        "cpu": platform.processor() or platform.machine(),
        "bf16_instructions": cpu_flags(),
        "torch": torch.__version__,
        "threads": args.threads,
        "test_size": args.test_size,
        "conditions": len(robustness.CONDITIONS),
        "trial": trial.key,
        "precision_now": "bf16" if precision else "fp32",
        "seconds": {
            "before_one_model": round(old, 1),
            "distortions_once": round(distortions, 1),
            "cached_distortions_read": round(loaded, 2),
            "forward_now": round(forward, 1),
            "now_one_model": round(now_one, 1),
            f"before_{args.models}_models": round(args.models * old, 1),
            f"now_{args.models}_models": round(distortions + args.models * (loaded + forward), 1),
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
