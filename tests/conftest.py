"""Shared fixtures: a real MNIST data folder, small sweep files, and the CLI run in this process (``cli``) or as
a real subprocess (``gridsearch``, where the process boundary is the point)."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
from contextlib import closing, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
SHARED_MNIST = ROOT.parent / "shared" / "datasets" / "mnist"
MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def needs(what: str, install: str) -> None:
    """Skip the calling test with one line saying what ``install`` provides ``what``; under ``CI`` (where
    everything must be present) fail instead."""
    message = f"{what} not found: {install} (see docs/testing.md)"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _mnist_source() -> Path | None:
    """MNIST's raw files: in ``$GRIDSEARCH_DATA``, else in the checkout's ``data`` folder (the CLI's default when
    run from here), else in the shared datasets folder."""
    candidates = [ROOT / "data" / "MNIST" / "raw", SHARED_MNIST]
    if os.environ.get("GRIDSEARCH_DATA"):
        candidates.insert(0, Path(os.environ["GRIDSEARCH_DATA"]) / "MNIST" / "raw")
    return next((c for c in candidates if all((c / name).exists() for name in MNIST_FILES)), None)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder holding the real MNIST files (linked), parsed once for the whole session."""
    source = _mnist_source()
    if source is None:
        needs("MNIST", "put MNIST/raw/*.gz in ./data or set GRIDSEARCH_DATA")
    root = tmp_path_factory.mktemp("data")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        (raw / name).symlink_to(source / name)
    from gridsearch.training.data import prepare

    prepare(root)
    return root


@pytest.fixture
def in_process_training():
    """Train in this process (cheap), restoring the torch settings a trial changes."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


SMALL_SWEEP: dict[str, Any] = {
    "name": "small",
    "architecture": "lenet53",
    "dataset": {"train_size": 500, "val_size": 300, "test_size": 400},
    "params": {"epochs": 2, "batch_size": 50, "hidden": 32, "patience": 5},
    "grid": {"lr": [0.02, 0.08], "lr_step": [1, 3]},
    "seeds": [0],
}


def write_sweep(folder: Path, filename: str = "sweep.yaml", **changes: Any) -> Path:
    """A small sweep file (4 trials of a narrow LeNet-5-3 on 500 images) with ``changes`` applied."""
    document = {**SMALL_SWEEP, **changes}
    path = folder / filename
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def built_in_architectures() -> set[str]:
    """The registry's built-in names, without a user's model (``package.module:Name``) that another test run in
    this process declared."""
    import architectures

    return {name for name in architectures.REGISTRY if not architectures.is_reference(name)}


def checkpoint_file(path: Path, architecture: str = "lenet53", seed: int = 0, **params: Any) -> Path:
    """A real checkpoint at ``path``: the weights of ``architecture`` built with ``params``, initialised from
    ``seed``."""
    import architectures

    torch.manual_seed(seed)
    torch.save(architectures.get(architecture).build(**params).state_dict(), path)
    return path


def gridsearch(
    *args: str, cwd: Path, data_dir: Path | None = None, check: bool = False, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``python -m gridsearch ARGS`` as a real subprocess in ``cwd``; with ``data_dir``, every command reads
    its datasets there (``cwd``'s default ``data`` folder holds nothing)."""
    command = [sys.executable, "-m", "gridsearch", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if data_dir is not None:
        env["GRIDSEARCH_DATA"] = str(data_dir)
        if args and args[0] == "run":
            command += ["--data-dir", str(data_dir), "--plain"]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"gridsearch {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


@dataclass
class Result:
    """What a CLI command run in this process returned and printed."""

    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, cwd: Path, data_dir: Path | None = None, check: bool = False) -> Result:
    """Run ``gridsearch ARGS`` through the CLI's own ``main`` in this process, in folder ``cwd``. With
    ``data_dir``, every command reads its datasets there (``cwd``'s default ``data`` folder holds nothing) and
    ``run`` trains inline (``--executor inline``: one trial at a time, in this process), unless the command picks
    its own ``--executor`` or ``--workers``; torch's global settings and the environment are restored after."""
    from gridsearch.cli import main

    command = list(args)
    if data_dir is not None and args and args[0] == "run":
        command += ["--data-dir", str(data_dir), "--plain"]
        if "--executor" not in args and "--workers" not in args:
            command += ["--executor", "inline"]
    out, err = io.StringIO(), io.StringIO()
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    previous, configured = Path.cwd(), os.environ.get("GRIDSEARCH_DATA")
    os.chdir(cwd)
    if data_dir is not None:
        os.environ["GRIDSEARCH_DATA"] = str(data_dir)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(command)
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(previous)
        if configured is None:
            os.environ.pop("GRIDSEARCH_DATA", None)
        else:
            os.environ["GRIDSEARCH_DATA"] = configured
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    result = Result(code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"gridsearch {' '.join(args)} exited {code}:\n{result.stdout}\n{result.stderr}")
    return result


def rows(db: Path, sql: str, *params: Any) -> list[tuple]:
    """Rows of a plain SQL query on an SQLite results file."""
    with closing(sqlite3.connect(db)) as connection, connection:  # committed, then closed
        return connection.execute(sql, params).fetchall()


def epoch_metrics(db: Path) -> dict[tuple[str, int], tuple]:
    """Every recorded epoch's metrics (seconds excluded), keyed by (trial key, epoch)."""
    return {
        (key, epoch): rest
        for key, epoch, *rest in rows(
            db, "SELECT trial_key, epoch, train_loss, train_accuracy, val_loss, val_accuracy, lr FROM epochs"
        )
    }
