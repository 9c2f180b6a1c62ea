"""The Python API (``gridsearch.run``, ``trials``, ``epochs``, ``evaluations``) in this process, from a script
without a main guard and from standard input (real worker processes), from the docs notebook, and
``gridsearch --version``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import gridsearch
from gridsearch.errors import UserError
from tests.conftest import ROOT, rows

TINY = {
    "name": "tiny",
    "architecture": "mlp",
    "dataset": {"train_size": 300, "val_size": 200, "test_size": 200},
    "params": {"epochs": 1, "batch_size": 50},
    "grid": {"lr": [0.05, 0.1]},
    "seeds": [0],
}

SCRIPT = """\
import json
import gridsearch

outcome = gridsearch.run("tiny.yaml", db="results.db", workers=2, data_dir={data_dir!r}, plain=True)
tiny = outcome["tiny"]
print("RESULT " + json.dumps({{"statuses": tiny.statuses, "selected": tiny.selected, "test": tiny.test_accuracy}}))
"""
"""No ``if __name__ == "__main__"`` guard: run as a file and piped to ``python -``."""


def _tiny(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False))
    return path


def test_run_returns_each_sweeps_outcome_and_the_dataframes_read_the_database(tmp_path, data_dir, in_process_training):
    db = tmp_path / "results.db"
    outcome = gridsearch.run(_tiny(tmp_path), db=db, data_dir=data_dir, executor="inline", plain=True)
    tiny = outcome["tiny"]
    assert outcome.ok and list(outcome.sweeps) == ["tiny"]
    assert tiny.counts == {"done": 2} and not tiny.interrupted
    [(selected, val, best_epoch)] = rows(
        db, "SELECT key, val_accuracy, best_epoch FROM trials WHERE key = (SELECT selected_trial FROM sweeps)"
    )
    [(test,)] = rows(db, "SELECT accuracy FROM evaluations WHERE trial_key = ? AND name = 'test'", selected)
    assert (tiny.selected, tiny.val_accuracy, tiny.best_epoch, tiny.test_accuracy) == (selected, val, 0, test)
    assert set(tiny.params) == {"lr"} and best_epoch == 0

    trials = gridsearch.trials(db, "tiny")
    assert list(trials.columns[:4]) == ["key", "lr", "seed", "status"]
    assert {"best_epoch", "val_accuracy", "val_loss", "selected"} <= set(trials.columns)
    assert trials["key"].iloc[0] == selected and trials["selected"].tolist() == [True, False]
    epochs = gridsearch.epochs(db, "tiny")
    assert len(epochs) == 2 and {"key", "lr", "epoch", "train_loss", "val_accuracy", "epoch_lr"} <= set(epochs.columns)
    assert epochs.set_index("key").loc[selected, "val_accuracy"] == val
    evaluations = gridsearch.evaluations(db, "tiny")
    assert evaluations[["key", "name", "accuracy"]].values.tolist() == [[selected, "test", test]]
    assert len(evaluations["confusion"].iloc[0]) == 10

    again = gridsearch.run(_tiny(tmp_path), db=db, data_dir=data_dir, executor="inline", plain=True)
    assert again["tiny"] == tiny  # resumed: nothing left to train, the same outcome


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda d: gridsearch.run(d / "missing.yaml", db=d / "r.db"), "missing.yaml"),
        (lambda d: gridsearch.run([], db=d / "r.db"), "at least one sweep file"),
        (lambda d: gridsearch.run(d / "tiny.yaml", db=d / "r.db", workers=0), "workers: expected a positive"),
        (lambda d: gridsearch.run(d / "tiny.yaml", db=d / "r.db", device="tpu"), "device: expected one of"),
        (lambda d: gridsearch.run(d / "tiny.yaml", db=d / "r.db", executor="ray"), "executor: expected one of"),
        (lambda d: gridsearch.trials(d / "r.db", "tiny"), "no such database"),
    ],
)
def test_bad_input_raises_a_user_error_before_anything_runs(tmp_path, call, message):
    _tiny(tmp_path)
    with pytest.raises(UserError, match=message):
        call(tmp_path)
    assert not (tmp_path / "r.db").exists()


def test_reading_an_unknown_sweep_names_the_known_ones(tmp_path, data_dir, in_process_training):
    gridsearch.run(_tiny(tmp_path), db=tmp_path / "r.db", data_dir=data_dir, executor="inline", plain=True)
    for read in (gridsearch.trials, gridsearch.epochs, gridsearch.evaluations):
        with pytest.raises(UserError, match=r"no sweep named 'nope' .*\(sweeps: tiny\)"):
            read(tmp_path / "r.db", "nope")


def test_run_works_from_a_script_without_main_guard_and_from_standard_input(tmp_path, data_dir):
    """multiprocessing re-runs the caller's ``__main__`` in each child: without a guard that is the whole
    sweep again in every worker (it hung), and ``python -`` made every trial fail (``'<stdin>'``)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    script = SCRIPT.format(data_dir=str(data_dir))
    (tmp_path / "script").mkdir()
    (tmp_path / "script" / "script.py").write_text(script)
    runs = {
        "script": subprocess.Popen(
            [sys.executable, "script.py"],
            cwd=_tiny(tmp_path / "script").parent,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ),
        "stdin": subprocess.Popen(
            [sys.executable, "-"],
            cwd=_tiny(tmp_path / "stdin").parent,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ),
    }
    inputs = {"script": None, "stdin": script}
    for how, process in runs.items():
        try:
            out, err = process.communicate(inputs[how], timeout=150)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            pytest.fail(f"{how}: still running after 150 s\n{out}\n{err}")
        assert process.returncode == 0, f"{how}:\n{out}\n{err}"
        [line] = [line for line in out.splitlines() if line.startswith("RESULT ")]
        result = json.loads(line.removeprefix("RESULT "))
        assert list(result["statuses"].values()) == ["done", "done"], f"{how}:\n{out}\n{err}"
        assert result["selected"] in result["statuses"] and 0 < result["test"] <= 1


def test_the_quickstart_notebook_runs_a_sweep_and_plots_it(tmp_path, data_dir, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("GRIDSEARCH_DATA", str(data_dir))  # the kernel inherits this environment
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    path = ROOT / "docs" / "quickstart.ipynb"
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells), "commit the notebook with its outputs cleared"
    nbclient.NotebookClient(notebook, timeout=240, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output["output_type"] == "error"]
    text = "".join(output.get("text", "") for output in outputs)
    assert "{'done': 3}" in text and "test " in text
    assert sum("image/png" in output.get("data", {}) for output in outputs) == 2  # the two figures


def test_version_is_printed_by_the_command_and_python_m():
    expected = f"gridsearch {gridsearch.__version__}"
    for command in ([sys.executable, "-m", "gridsearch", "--version"], ["gridsearch", "--version"]):
        if command[0] == "gridsearch" and not _installed("gridsearch"):
            continue
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert (done.returncode, done.stdout.strip()) == (0, expected), command


def test_importing_gridsearch_loads_neither_torch_nor_the_api_until_used():
    code = (
        "import sys, gridsearch; print('torch' in sys.modules, 'gridsearch.api' in sys.modules); "
        "gridsearch.trials; print('torch' in sys.modules, 'gridsearch.api' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.stdout.split() == ["False", "False", "False", "True"], done.stderr


def _installed(program: str) -> bool:
    import shutil

    return shutil.which(program) is not None
