"""Training samples/s of LeNet-5-3 (batch 86, CPU) through the engine's worker loop, beside a plain
tensor loop and the usual torchvision DataLoader loop, in one run. Last line: one JSON object.

    python benchmarks/epoch_throughput.py [--data-dir data] [--samples 8600] [--repeats 3]
    python benchmarks/epoch_throughput.py --reference /work/main   # also against another checkout's loop

With ``--reference CHECKOUT`` (a copy of the code before a change, e.g. ``git worktree add /tmp/before main``),
the same run also times that checkout's ``train_epoch`` and its whole per-trial trainer (``train_trial``, a
``--trial-epochs``-epoch trial from scratch: start-up, epochs, checkpoints and the end, in a fresh run folder
each time) against this checkout's, interleaved, and reports the ratios (this checkout's over the reference's).
"""

import importlib.util
import json
import statistics
import tempfile
import time
from argparse import ArgumentParser
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from common import BATCH, arguments, data, dataloader_loop, samples_per_second, seed_model
from torchvision import transforms

from gridsearch.spec.sweep import resolved_defaults
from gridsearch.training import loop


def options(parser: ArgumentParser) -> None:
    parser.add_argument("--reference", type=Path, default=None, help="a checkout whose loop to compare against")
    parser.add_argument("--trial-epochs", type=int, default=2, help="epochs of each timed per-trial trial")


def reference_loop(checkout: Path) -> ModuleType:
    """``checkout``'s ``gridsearch/training/loop.py``, imported beside this one (its imports resolve to this
    checkout's modules, which keep the names it uses)."""
    spec = importlib.util.spec_from_file_location("reference_loop", checkout / "gridsearch" / "training" / "loop.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trial_rates(loops: dict[str, ModuleType], args, folder: Path) -> dict[str, dict[str, float]]:
    """Median training samples/s of a whole per-trial trial through each loop's ``train_trial``, round-robin (the
    order reversed every round), by the wall clock and by this process's CPU time (which other processes on a
    busy machine disturb far less)."""
    config = {
        "architecture": "lenet53",
        "params": {**resolved_defaults("lenet53"), "lr": 0.05, "batch_size": BATCH, "epochs": args.trial_epochs},
        "dataset": {"name": "mnist", "train_size": args.samples, "val_size": 1000},
        "seed": 0,
        "threads": args.threads,
        "select": "val_accuracy",
    }
    rates: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in loops}
    samples = args.samples * args.trial_epochs
    for repeat in range(args.repeats + 1):  # the first round warms up
        for name, module in list(loops.items())[:: 1 if repeat % 2 else -1]:
            run_dir = folder / f"{name}-{repeat}"
            run_dir.mkdir()
            wall, cpu = time.perf_counter(), time.process_time()
            module.train_trial(config, run_dir, args.data_dir, torch.device("cpu"), lambda event: None)
            wall, cpu = samples / (time.perf_counter() - wall), samples / (time.process_time() - cpu)
            if repeat:
                rates[name]["wall"].append(wall)
                rates[name]["cpu"].append(cpu)
                print(json.dumps({"trial": name, "samples_per_s": round(wall, 1), "per_cpu_s": round(cpu, 1)}))
    return {name: {clock: statistics.median(values) for clock, values in each.items()} for name, each in rates.items()}


def main() -> None:
    args = arguments(__doc__, options)
    torch.set_num_threads(args.threads)
    data.prepare(args.data_dir)
    train, _ = data.training_splits(args.data_dir, args.samples, 1)
    generator = torch.Generator().manual_seed(0)

    def engine_loop(module: ModuleType):
        model, optimizer = seed_model()

        def epoch() -> int:
            module.train_epoch(model, optimizer, train, BATCH, generator)
            return len(train)

        return epoch

    images = train.images.float().div(255)  # the plain loop gets the data pre-converted to float
    labels = train.labels
    plain_model, plain_optimizer = seed_model()

    def plain() -> int:
        plain_model.train()
        for index in torch.randperm(len(images)).split(BATCH):
            plain_optimizer.zero_grad()
            F.cross_entropy(plain_model(images[index]), labels[index]).backward()
            plain_optimizer.step()
        return len(images)

    dataloader = dataloader_loop(args.data_dir, args.samples, transforms.ToTensor())
    loops = {"engine": engine_loop(loop), "plain": plain, "dataloader": dataloader}
    reference = reference_loop(args.reference) if args.reference else None
    if reference is not None:
        loops["reference"] = engine_loop(reference)
    rates = samples_per_second(loops, args.repeats)
    result = {
        "engine_samples_per_s": round(rates["engine"], 1),
        "plain_samples_per_s": round(rates["plain"], 1),
        "dataloader_samples_per_s": round(rates["dataloader"], 1),
        "ratio_engine_to_plain": round(rates["engine"] / rates["plain"], 3),
        "ratio_dataloader_to_plain": round(rates["dataloader"] / rates["plain"], 3),
    }
    if reference is not None:
        with tempfile.TemporaryDirectory() as folder:
            trials = trial_rates({"engine": loop, "reference": reference}, args, Path(folder))
        result |= {
            "reference": str(args.reference),
            "reference_samples_per_s": round(rates["reference"], 1),
            "ratio_engine_to_reference": round(rates["engine"] / rates["reference"], 3),
            "trial_samples_per_s": {name: round(rate["wall"], 1) for name, rate in trials.items()},
            "trial_samples_per_cpu_s": {name: round(rate["cpu"], 1) for name, rate in trials.items()},
            "ratio_trial_to_reference": round(trials["engine"]["wall"] / trials["reference"]["wall"], 3),
            "ratio_trial_cpu_to_reference": round(trials["engine"]["cpu"] / trials["reference"]["cpu"], 3),
            "trial_epochs": args.trial_epochs,
        }
    result |= {"samples": args.samples, "batch_size": BATCH, "threads": args.threads, "device": "cpu"}
    print(json.dumps(result | {"torch": torch.__version__}))


if __name__ == "__main__":
    main()
