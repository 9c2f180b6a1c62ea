"""Values past what the machine can do are refused before anything trains, in one line naming the file's line
(exit 2, nothing stored): threads above 4 x the cores, a network whose parameters and activations (estimated from
its build on the meta device) exceed the device's memory, a batch larger than the training split, and more than
100,000 epochs without patience. Before, each was stored and failed as a trial (or never ended)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gridsearch.errors import UserError
from gridsearch.spec.bounds import Footprint, Memory, check_memory, footprint
from gridsearch.spec.datasets import DATASETS
from gridsearch.spec.sweep import load_sweep
from tests.conftest import SMALL_SWEEP, cli, write_sweep

PARAMS_NO_PATIENCE = {"epochs": 2, "batch_size": 50, "hidden": 32}


def line_of(sweep: Path, text: str) -> int:
    """The 1-based line of the first line of ``sweep`` containing ``text``."""
    return next(number for number, line in enumerate(sweep.read_text().splitlines(), 1) if text in line)


def refused(tmp_path: Path, data_dir: Path, sweep: Path, *commands: str) -> str:
    """The one ``error:`` line each of ``commands`` (run, plan) answers ``sweep`` with; nothing is stored."""
    lines = set()
    for command in commands:
        result = cli(command, str(sweep), cwd=tmp_path, data_dir=data_dir if command == "run" else None)
        assert result.returncode == 2 and result.stdout == "", result.stderr
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
        lines.add(result.stderr)
    assert len(lines) == 1 and not (tmp_path / "results.db").exists()
    return lines.pop()


def test_threads_above_four_times_the_cores_are_refused(tmp_path, data_dir):
    sweep = write_sweep(tmp_path, threads=100_000)
    cores = os.cpu_count()
    error = refused(tmp_path, data_dir, sweep, "run", "plan")
    assert error.startswith(f"error: {sweep}:{line_of(sweep, 'threads:')}: threads: 100000 threads per trial is more ")
    assert f"than 4 x the {cores} cores of this machine (at most {4 * cores};" in error
    load_sweep(write_sweep(tmp_path, threads=4 * cores), build=False)  # up to 4 x: a warning when it runs


def test_a_network_too_large_for_the_memory_is_refused_before_it_trains(tmp_path, data_dir):
    sweep = write_sweep(tmp_path, params={**PARAMS_NO_PATIENCE, "hidden": 1_000_000_000})
    error = refused(tmp_path, data_dir, sweep, "run")
    assert error.startswith(f"error: {sweep}:{line_of(sweep, 'hidden:')}: params.hidden: lenet53 with ")
    huge = footprint("lenet53", {"hidden": 1_000_000_000, "dropout": 0.25}, DATASETS["mnist"])
    assert huge.parameters == 1_612_000_065_194  # 6.4 TB of float32 weights alone
    gigabytes = huge.training_bytes(50, "sgd") / 1e9
    assert f"needs at least {gigabytes:,.1f} GB to train (1,612,000,065,194 parameters, {huge.activations:,} " in error
    assert "more than the " in error and " GB of memory of this machine" in error
    assert cli("plan", str(sweep), cwd=tmp_path).returncode == 0  # plan builds no network


def test_activations_count_toward_the_memory_a_batch_needs(tmp_path):
    """LeNet-5-3's activations for one image, counted by hand from its layers (each conv is followed by batch norm
    and ReLU, both the conv's shape), against the meta device's count."""
    convs = [30 * 30 * 32, 28 * 28 * 32, 12 * 12 * 64, 10 * 10 * 64]
    pools, classifier = [14 * 14 * 32, 5 * 5 * 64], [1600, 1600, 128, 128, 128, 128, 10]  # flatten, dropout, ...
    lenet = footprint("lenet53", {"hidden": 128, "dropout": 0.25}, DATASETS["mnist"])
    assert lenet == Footprint(parameters=271_530, activations=3 * sum(convs) + sum(pools) + sum(classifier))
    needed = 4 * (271_530 * 3 + 2 * lenet.activations * 500)  # SGD: weights, gradients, momentum
    assert lenet.training_bytes(500, "sgd") == needed
    assert check_memory(lenet, 500, "sgd", Memory(needed, "test")) is None
    assert "batches of 500, sgd), more than a small device" in check_memory(
        lenet, 500, "sgd", Memory(needed - 1, "a small device")
    )
    sweep = write_sweep(tmp_path, params={"epochs": 2, "batch_size": 500}, grid={"hidden": [16, 128]})
    small = Memory(lenet.training_bytes(500, "sgd") - 1, "a small device")
    with pytest.raises(UserError, match=rf"^{sweep}:{line_of(sweep, 'hidden:')}: grid: lenet53 with .*hidden.: 128"):
        load_sweep(sweep, memory=small)
    load_sweep(write_sweep(tmp_path, params={**PARAMS_NO_PATIENCE, "batch_size": 400}), memory=small)


@pytest.mark.parametrize("where", ["params", "grid"])
def test_a_batch_larger_than_the_training_split_is_refused(tmp_path, data_dir, where):
    huge = 1_000_000_000
    if where == "params":
        sweep = write_sweep(tmp_path, params={**SMALL_SWEEP["params"], "batch_size": huge})
        at = f"{sweep}:{line_of(sweep, 'batch_size:')}: params.batch_size"
    else:
        sweep = write_sweep(tmp_path, params={"epochs": 2, "hidden": 32}, grid={"batch_size": [50, huge]})
        at = f"{sweep}:{line_of(sweep, f'- {huge}')}: grid.batch_size[1]"
    error = refused(tmp_path, data_dir, sweep, "run", "plan")
    assert error == f"error: {at}: batch_size {huge:,} is more than the 500 images of the training split\n"


def test_epochs_above_100000_need_patience(tmp_path, data_dir):
    sweep = write_sweep(tmp_path, params={**PARAMS_NO_PATIENCE, "epochs": 10**12})
    error = refused(tmp_path, data_dir, sweep, "run", "plan")
    assert error == (
        f"error: {sweep}:{line_of(sweep, 'epochs:')}: params.epochs: 1,000,000,000,000 epochs is more than 100,000; "
        "set patience to stop early, or ask for fewer\n"
    )
    load_sweep(write_sweep(tmp_path, params={**PARAMS_NO_PATIENCE, "epochs": 10**12, "patience": 5}), build=False)


def test_the_bounds_and_the_builds_read_the_datasets_shape(tmp_path):
    """A network is sized and built at its dataset's image shape and classes, not MNIST's: a LeNet-5-3 on USPS's
    16x16 digits is smaller, one on scikit-learn's 8x8 digits cannot be built (one line at the sweep's line)."""
    usps = footprint("lenet53", {"hidden": 128, "dropout": 0.25}, DATASETS["usps"])
    mnist = footprint("lenet53", {"hidden": 128, "dropout": 0.25}, DATASETS["mnist"])
    assert usps.parameters == 271_530 - 64 * (5 * 5 - 2 * 2) * 128  # the classifier's input: 2x2 maps, not 5x5
    assert usps.activations < mnist.activations / 2
    convnets = [footprint("convnet", {"channels": 16}, DATASETS[name]) for name in ("mnist", "usps")]
    assert convnets[0].parameters - convnets[1].parameters == 64 * (3 * 3 - 2 * 2) * 10
    load_sweep(write_sweep(tmp_path, dataset={"name": "usps", "train_size": 500, "val_size": 300}))
    sweep = write_sweep(tmp_path, dataset={"name": "sklearn_digits", "train_size": 500, "val_size": 300})
    message = rf"^{sweep}:\d+: params: lenet53 cannot be built with .*: images of 8x8 pixels are too small"
    with pytest.raises(UserError, match=message):
        load_sweep(sweep)
