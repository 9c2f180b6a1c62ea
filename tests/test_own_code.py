"""A model of the user's own (``examples/own_model``): named as ``package.module:builder``, imported by every
worker from the sweep file's folder, its source part of its trials' keys; a module that cannot be used is one
error line. Real subprocesses, real MNIST, real SQLite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, epoch_metrics, gridsearch, rows
from tests.test_distributed import local_dask_cluster
from tests.test_faults import RESULTS, SELECTION, kill_9_at, start_run

EXAMPLE = ROOT / "examples" / "own_model"
SMALL = {"dataset": {"loader": "mypkg.data:load", "train_size": 300, "val_size": 200, "test_size": 200}}
USER_MODEL = "mypkg.models:SmallNet"


def example(folder: Path, **changes: object) -> Path:
    """A copy of the example in ``folder``, its sweep on small sizes (and ``changes``); the copy's folder."""
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("__pycache__", "runs", "*.db*"))
    sweep = folder / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({**yaml.safe_load(sweep.read_text()), **SMALL, **changes}, sort_keys=False))
    return folder


def outcome(db: Path) -> tuple[list, list, dict]:
    """What a run stored that an undisturbed run must equal: trials, the selected trial's test, every epoch."""
    return rows(db, RESULTS), rows(db, SELECTION), epoch_metrics(db)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir) -> Path:
    """The example run once with two local workers, undisturbed; its folder."""
    folder = example(tmp_path_factory.mktemp("own") / "own_model")
    gridsearch("run", "sweep.yaml", "--workers", "2", cwd=folder, data_dir=data_dir, check=True)
    return folder


def test_the_example_runs_on_local_workers_dask_and_fused_stacks_alike(reference, tmp_path, data_dir):
    trials, selected, epochs = outcome(reference / "results.db")
    assert {row[1] for row in trials} == {"done"} and len(trials) == 5
    assert len(selected) == 1 and rows(reference / "results.db", "SELECT COUNT(*) FROM evaluations") == [(1,)]
    architectures = rows(reference / "results.db", "SELECT DISTINCT json_extract(config, '$.architecture') FROM trials")
    assert {a for (a,) in architectures} == {USER_MODEL, "mlp"}
    dask = example(tmp_path / "dask")
    gridsearch("run", "sweep.yaml", "--executor", "dask", cwd=dask, data_dir=data_dir, check=True)
    assert outcome(dask / "results.db") == (trials, selected, epochs)
    fused = example(tmp_path / "fused")
    gridsearch("run", "sweep.yaml", "--fuse", "2", cwd=fused, data_dir=data_dir, check=True)
    stacked = rows(fused / "results.db", RESULTS)  # a stack sums in another order: the same to float rounding
    assert [row[:4] for row in stacked] == [row[:4] for row in trials]
    assert [row[4:] for row in stacked] == [pytest.approx(row[4:], rel=1e-5) for row in trials]
    assert rows(fused / "results.db", SELECTION)[0][0] == selected[0][0]


@pytest.mark.faults
def test_kill_9_of_the_coordinator_then_a_rerun_gives_the_undisturbed_numbers(reference, tmp_path, data_dir):
    folder = example(tmp_path / "own_model")
    db = folder / "results.db"
    coordinator = start_run(folder, data_dir, "--workers", "2")
    kill_9_at(db, "SELECT COUNT(*) FROM trials WHERE status = 'running' AND epochs_run >= 1", coordinator)
    assert rows(db, "SELECT COUNT(*) FROM evaluations") == [(0,)]
    gridsearch("run", "sweep.yaml", "--workers", "2", cwd=folder, data_dir=data_dir, check=True)
    assert outcome(db) == outcome(reference / "results.db")


def test_editing_the_model_makes_its_trials_new_and_nothing_else(reference, tmp_path, data_dir):
    folder = tmp_path / "own_model"
    shutil.copytree(reference, folder)
    unedited = gridsearch("plan", "sweep.yaml", cwd=folder, data_dir=data_dir, check=True).stdout
    assert "5 trials of mypkg.models:SmallNet, mlp: 5 done" in unedited
    assert "new since their code changed" not in unedited
    models = folder / "mypkg" / "models.py"
    models.write_text(models.read_text().replace("nn.ReLU()", "nn.GELU()"))
    edited = gridsearch("plan", "sweep.yaml", cwd=folder, data_dir=data_dir, check=True).stdout
    assert "5 trials of mypkg.models:SmallNet, mlp: 4 new, 1 done" in edited
    assert "4 trial(s) new since their code changed: mypkg/models.py" in edited


BROKEN = {
    "raises on import": ("mypkg.models:SmallNet", "raise RuntimeError('no GPU driver here')\n", "RuntimeError"),
    "names nothing": ("mypkg.models:LargeNet", "", "defines no 'LargeNet'"),
    "missing module": ("mypkg.modells:SmallNet", "", "no module 'mypkg.modells'"),
    "bad signature": ("mypkg.models:make", "def make(width=len('ab')):\n    pass\n", "must be literals"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_model_that_cannot_be_used_is_one_error_line_and_nothing_stored(case, tmp_path, data_dir):
    architecture, prepend, said = BROKEN[case]
    folder = example(tmp_path / "own_model", architecture=architecture, grid={"lr": [0.05]})
    models = folder / "mypkg" / "models.py"
    models.write_text(prepend + models.read_text())
    result = gridsearch("run", "sweep.yaml", cwd=folder, data_dir=data_dir)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: sweep.yaml:2: architecture: ") and said in line, line
    assert not (folder / "results.db").exists() and not (folder / "runs").exists()


def test_a_worker_that_cannot_import_the_model_stops_the_run_with_one_error(tmp_path, data_dir):
    folder = example(tmp_path / "own_model")
    models = folder / "mypkg" / "models.py"
    only_in_the_coordinator = (
        "import multiprocessing\n"
        "if multiprocessing.parent_process() is not None:  # a forked worker, not the coordinator\n"
        "    raise ModuleNotFoundError('torchvision.ops is not installed on this worker')\n"
    )
    models.write_text(only_in_the_coordinator + models.read_text())
    result = gridsearch("run", "sweep.yaml", "--workers", "2", cwd=folder, data_dir=data_dir)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot import mypkg.models:SmallNet" in errors[0], result.stderr
    assert "torchvision.ops is not installed on this worker" in errors[0]
    assert ("failed",) not in rows(folder / "results.db", "SELECT DISTINCT status FROM trials")


def test_a_dask_worker_that_cannot_import_the_model_stops_the_run_with_one_error(tmp_path, data_dir):
    """A real Dask cluster whose workers lack what the model imports: the infrastructure's one line, no failed
    trial."""
    folder = example(tmp_path / "own_model")
    models = folder / "mypkg" / "models.py"
    only_on_the_cluster = (
        "import os\n"
        "if os.environ.get('WORKER_WITHOUT_OPS'):  # this cluster's workers lack a dependency\n"
        "    raise ModuleNotFoundError('torchvision.ops is not installed on this worker')\n"
    )
    models.write_text(only_on_the_cluster + models.read_text())
    with local_dask_cluster(WORKER_WITHOUT_OPS="1") as (address, _):
        result = gridsearch(
            "run", "sweep.yaml", "--executor", "dask", "--scheduler", address, cwd=folder, data_dir=data_dir
        )
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot import mypkg.models:SmallNet" in errors[0], result.stderr
    assert "torchvision.ops is not installed on this worker" in errors[0] and "resumable" in errors[0]
    assert ("failed",) not in rows(folder / "results.db", "SELECT DISTINCT status FROM trials")


def test_the_console_script_imports_the_users_code_from_the_current_folder(reference, tmp_path, data_dir):
    """Run as the ``gridsearch`` console script does (its own folder first on the import path, not the current
    one), ``evaluate`` from the example's folder still finds ``mypkg`` there, as ``python -m gridsearch`` would."""
    folder = tmp_path / "own_model"
    shutil.copytree(reference, folder)
    script = tmp_path / "bin" / "gridsearch"
    script.parent.mkdir()
    script.write_text("import sys\nfrom gridsearch.cli import main\nsys.exit(main())\n")
    result = subprocess.run(
        [sys.executable, str(script), "evaluate", "own_model", "--ensemble", "5", "--data-dir", str(data_dir)],
        cwd=folder,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert rows(folder / "results.db", "SELECT COUNT(*) FROM evaluations WHERE name = 'ensemble/top5'") == [(1,)]
