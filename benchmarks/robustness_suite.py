"""The robustness suite's 12 conditions on the study's LeNet-5-3 (docs/study: its database and best weights), end to
end as ``evaluate --suite robustness`` runs them, split by stage, with the reference in the same run: the suite as it
ran before (each condition's images computed again for every model, in float32). Last line: one JSON object.

    python benchmarks/robustness_suite.py [--data-dir data] [--test-size 10000] [--threads 2] [--models 12]
        [--precision trial|fp32] [--no-before]

Stages: the conditions' images made once for the image set (``robustness.condition_images`` into an empty cache
folder) and read back by the next model; the model's forward passes on the 12 conditions as ``result`` computes an
evaluation row (``training.predict``: batches of 1,000, the precision asked); USPS and scikit-learn's digits (loaded,
preprocessed, run); the 14 rows written to a copy of the study's database. ``twelve_conditions_s`` (distortions
once + 12 forward passes) is the figure the suite is held to (60 s on 2 cores); ``twelve_conditions_cpu_s`` is
the CPU time of both threads for it: on a loaded machine, two free cores would take about half of it.

``--precision trial`` runs the study's trial as its test evaluation ran (bfloat16 autocast: ``amp: bf16``);
``fp32`` runs the same weights in float32, which is what a LeNet-5-3 trial trained in float32 costs. On a CPU
without bfloat16 instructions (``bf16_native: false``: no AVX-512 BF16 or AMX, so oneDNN cannot run bfloat16 and
PyTorch falls back to its reference convolution) the trial's precision is several times slower than float32.
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
    """Seconds of the 12 conditions as they ran before: transformed for this model, run in float32."""
    started = time.perf_counter()
    for name in robustness.CONDITIONS:
        predict.logits(model, robustness.transformed(name, images), False)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=data.default_data_dir())
    parser.add_argument("--test-size", type=int, default=10000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", type=int, default=12, help="models evaluated on one image set, for the totals")
    parser.add_argument("--precision", choices=("trial", "fp32"), default="trial")
    parser.add_argument("--no-before", action="store_true", help="skip the reference (the suite as it ran before)")
    args = parser.parse_args()
    storage = Storage(str(STUDY / "results.db"), readonly=True)
    trial = selected_trial(storage, "lenet53_cpu")
    model = load_model(trial, STUDY / "runs")
    torch.set_num_threads(args.threads)
    test = data.test_split(args.data_dir, args.test_size)
    precision = bf16(trial) if args.precision == "trial" else False
    usps = robustness.usps_folder()
    with tempfile.TemporaryDirectory() as folder:
        cache = Path(folder)
        made, cpu = time.perf_counter(), time.process_time()
        robustness.condition_images(test.images, cache)  # the first model of an image set pays for them
        distortions = time.perf_counter() - made
        read = time.perf_counter()
        robustness.condition_images(test.images, cache)  # every later model reads them (run_suite again)
        cached = time.perf_counter() - read
        suite = robustness.run_suite(model, precision, test.images, test.labels, None, digits=False, cache=cache)
        cpu_twelve = time.process_time() - cpu
        forward = sum(row["seconds"] for row in suite.values())
        started = time.perf_counter()
        loads = {robustness.DIGITS_NAME: robustness.load_sklearn_digits}
        if (usps / "usps.h5").exists():
            loads[robustness.USPS_NAME] = lambda: robustness.load_usps(usps)
        for name, load in loads.items():  # as run_suite runs them (28x28 already)
            suite[name] = robustness.result(model, *load(), precision)
        external_s = time.perf_counter() - started
        copy = cache / "results.db"
        copy.write_bytes((STUDY / "results.db").read_bytes())
        written = time.perf_counter()
        with Storage(str(copy)) as out:  # as evaluate stores them: one row each, replacing the study's
            for name, row in suite.items():
                out.save_evaluation(trial.key, name, row)
        writes = time.perf_counter() - written
        old = None if args.no_before else before(model, test.images)
    twelve = distortions + forward
    seconds = {
        "distortions_once": round(distortions, 1),
        "cached_distortions_read": round(cached, 2),
        "forward_12_conditions": round(forward, 1),
        "twelve_conditions_s": round(twelve, 1),
        "twelve_conditions_cpu_s": round(cpu_twelve, 1),
        "usps_and_digits": round(external_s, 1),
        "storage_writes_14_rows": round(writes, 2),
        f"now_{args.models}_models": round(distortions + args.models * (cached + forward), 1),
    }
    if old is not None:
        seconds |= {
            "before_one_model_fp32": round(old, 1),
            f"before_{args.models}_models_fp32": round(args.models * old, 1),
        }
    result = {
        "cpu": platform.processor() or platform.machine(),
        "bf16_instructions": cpu_flags(),
        "bf16_native": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "torch": torch.__version__,
        "threads": args.threads,
        "test_size": args.test_size,
        "conditions": len(robustness.CONDITIONS),
        "trial": trial.key,
        "precision_now": "bf16" if precision else "fp32",
        "accuracy": {
            name.removeprefix(robustness.PREFIX): round(100 * row["accuracy"], 2) for name, row in suite.items()
        },
        "seconds": seconds,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
