"""TensorBoard (``run --tensorboard DIR``) and MLflow (``export SWEEP --to mlflow``), with the real packages: the
event files are read back with TensorBoard's own reader, the MLflow runs with MLflow's client from a local store.

One tiny real sweep (2 trials of a narrow LeNet-5-3, 2 epochs on 300 MNIST images) is shared by the module.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli, epoch_metrics, rows, write_sweep

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

SWEEP = "tracked"
EPOCH_TAGS = {
    "loss/train": 0,
    "accuracy/train": 1,
    "loss/val": 2,
    "accuracy/val": 3,
    "lr": 4,
}
"""TensorBoard tag -> index in conftest's ``epoch_metrics`` tuple (train_loss, train_acc, val_loss, val_acc, lr)."""


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A folder with ``results.db`` of the tiny sweep, run with ``--tensorboard tb``."""
    folder = tmp_path_factory.mktemp("tracked")
    sweep = write_sweep(
        folder,
        name=SWEEP,
        dataset={"train_size": 300, "val_size": 200, "test_size": 200},
        params={"epochs": 2, "batch_size": 50, "hidden": 16, "patience": 5},
        grid={"lr": [0.02, 0.08]},
    )
    cli("run", str(sweep), "--db", "results.db", "--tensorboard", "tb", cwd=folder, data_dir=data_dir, check=True)
    return folder


def _accumulator(folder: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def _trials(db: Path) -> dict[str, tuple]:
    return {
        key: (json.loads(config), best_epoch, val_accuracy, val_loss)
        for key, config, best_epoch, val_accuracy, val_loss in rows(
            db, "SELECT key, config, best_epoch, val_accuracy, val_loss FROM trials"
        )
    }


def test_tensorboard_writes_each_trials_epochs_as_scalars(tracked: Path):
    """One run folder per trial, named by its key and gridded params, holding each recorded epoch once: the
    stored train/val loss and accuracy and lr at step = epoch."""
    trials = _trials(tracked / "results.db")
    metrics = epoch_metrics(tracked / "results.db")
    folders = sorted(path.name for path in (tracked / "tb" / SWEEP).iterdir())
    assert folders == sorted(f"{key}_lr={config['params']['lr']:g}" for key, (config, *_) in trials.items())
    for key, (config, *_) in trials.items():
        accumulator = _accumulator(tracked / "tb" / SWEEP / f"{key}_lr={config['params']['lr']:g}")
        assert set(EPOCH_TAGS) <= set(accumulator.Tags()["scalars"])
        for tag, index in EPOCH_TAGS.items():
            events = accumulator.Scalars(tag)
            assert [event.step for event in events] == [0, 1]
            expected = [metrics[(key, step)][index] for step in (0, 1)]
            assert [event.value for event in events] == pytest.approx(expected, rel=1e-6)


def test_tensorboard_after_the_trials_are_trained_says_so_and_export_writes_them_from_the_database(
    tracked: Path, data_dir: Path
):
    """docs/results.md's TensorBoard example after the set-up sweep: ``run --tensorboard`` over trained trials
    trains nothing, so it says in one line why nothing was written and how to write them; that command writes the
    same folders and scalars as a live run, from the database alone."""
    again = cli(
        "run", "sweep.yaml", "--db", "results.db", "--tensorboard", "later", cwd=tracked, data_dir=data_dir, check=True
    )
    [line] = [line for line in again.stderr.splitlines() if line.startswith("tensorboard:")]
    command = f"gridsearch export {SWEEP} --to tensorboard --logdir later"
    assert line == (
        f"tensorboard: 2 of 2 trials of {SWEEP} did not train in this run, so nothing was written for them; "
        f"write the logs of every trained trial from the database with: {command}"
    )
    assert not (tracked / "later" / SWEEP).exists() or not any((tracked / "later" / SWEEP).iterdir())
    exported = cli(*command.split()[1:], "--db", "results.db", cwd=tracked, check=True)
    assert exported.stdout.strip() == f"sweep {SWEEP} -> TensorBoard logs of 2 trials under later/{SWEEP}"
    live, written = tracked / "tb" / SWEEP, tracked / "later" / SWEEP
    assert sorted(p.name for p in written.iterdir()) == sorted(p.name for p in live.iterdir())
    for folder in live.iterdir():
        before, after = _accumulator(folder), _accumulator(written / folder.name)
        for tag in [*EPOCH_TAGS, "hparams/val_accuracy", "hparams/val_loss"]:
            assert [(e.step, e.value) for e in after.Scalars(tag)] == [(e.step, e.value) for e in before.Scalars(tag)]
        assert set(after.PluginTagToContent("hparams")) == set(before.PluginTagToContent("hparams"))


def test_tensorboard_hparams_hold_gridded_params_and_best_epoch_metrics(tracked: Path):
    """The HParams plugin data of each trial: the experiment lists the gridded param with its grid values and
    the metrics; the session's hparams are the trial's; the metric scalars are its scores at its best epoch."""
    for key, (config, best_epoch, val_accuracy, val_loss) in _trials(tracked / "results.db").items():
        accumulator = _accumulator(tracked / "tb" / SWEEP / f"{key}_lr={config['params']['lr']:g}")
        content = accumulator.PluginTagToContent("hparams")
        data = {tag: plugin_data_pb2.HParamsPluginData.FromString(raw) for tag, raw in content.items()}
        experiment = data["_hparams_/experiment"].experiment
        assert [info.name for info in experiment.hparam_infos] == ["lr"]
        assert [value.number_value for value in experiment.hparam_infos[0].domain_discrete.values] == [0.02, 0.08]
        assert {info.name.tag for info in experiment.metric_infos} == {
            "hparams/val_accuracy",
            "hparams/val_loss",
            "hparams/best_epoch",
        }
        start = data["_hparams_/session_start_info"].session_start_info
        assert dict(start.hparams)["lr"].number_value == config["params"]["lr"]
        assert data["_hparams_/session_end_info"].session_end_info.status == 1  # STATUS_SUCCESS
        for tag, expected in (("hparams/val_accuracy", val_accuracy), ("hparams/val_loss", val_loss)):
            (event,) = accumulator.Scalars(tag)
            assert (event.step, event.value) == (best_epoch, pytest.approx(expected, rel=1e-6))


def test_tensorboard_folder_is_rewritten_when_a_trial_resumes(tracked: Path, tmp_path: Path):
    """A trial's worker starting again (a resume, a further rung) replays its past epochs: the folder is
    written afresh, so it holds one event file and each epoch once, whatever was written or delivered twice."""
    from gridsearch.engine.tensorboard import TensorBoardLog
    from gridsearch.spec.sweep import load_sweep

    sweep = load_sweep(tracked / "sweep.yaml", 10)
    configs = {trial.key: trial.config() for trial in sweep.trials()}
    key = next(iter(configs))
    log = TensorBoardLog(tmp_path, sweep, configs)

    def epoch(step: int, **extra: object) -> dict:
        values = {"train_loss": 1.0 + step, "train_accuracy": 0.5, "val_loss": 2.0, "val_accuracy": 0.25 * step}
        return {"event": "epoch", "epoch": step, "lr": 0.1, "seconds": 1.0, **values, **extra}

    log.record(key, {"event": "hello", "pid": 1, "device": "cpu", "torch_version": "x"})
    log.record(key, epoch(0))
    log.record(key, epoch(1))  # then the worker is killed: no 'done'
    log.record(key, {"event": "hello", "pid": 2, "device": "cpu", "torch_version": "x"})
    for step in (0, 1):
        log.record(key, epoch(step, replayed=True))
    log.record(key, epoch(2))
    log.record(key, epoch(2, replayed=True))  # Dask delivers a task's epochs again
    summary = {"best_epoch": 2, "val_accuracy": 0.5, "val_loss": 2.0, "epochs_run": 3, "train_seconds": 3.0}
    log.record(key, {"event": "done", "finished": True, **summary})
    log.close()
    folder = log.run_folder(key)
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1
    accumulator = _accumulator(folder)
    assert [(e.step, e.value) for e in accumulator.Scalars("accuracy/val")] == [(0, 0.0), (1, 0.25), (2, 0.5)]
    assert [(e.step, e.value) for e in accumulator.Scalars("hparams/val_accuracy")] == [(2, 0.5)]


def test_mlflow_export_logs_every_trial_and_is_idempotent(tracked: Path, tmp_path: Path, monkeypatch):
    """Each trial is an MLflow run with its params, its epochs (step = epoch) and status; the selected one has
    its test evaluation. Exporting again changes nothing; a trial changed since is replaced, not duplicated.
    The database is only read."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps file stores behind this switch
    uri = (tmp_path / "mlruns").as_uri()
    db = tracked / "results.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    result = cli("export", SWEEP, "--to", "mlflow", "--db", "results.db", "--tracking-uri", uri, cwd=tracked)
    assert result.returncode == 0, result.stderr
    assert "2 runs logged, 0 replaced, 0 unchanged" in result.stdout
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(SWEEP)
    runs = {run.data.tags["gridsearch.trial_key"]: run for run in client.search_runs([experiment.experiment_id])}
    trials = _trials(db)
    metrics = epoch_metrics(db)
    ((selected,),) = rows(db, "SELECT selected_trial FROM sweeps")
    ((accuracy, errors, samples, confusion),) = rows(
        db, "SELECT accuracy, errors, samples, confusion FROM evaluations WHERE name = 'test'"
    )
    assert set(runs) == set(trials)
    for key, (config, best_epoch, val_accuracy, _) in trials.items():
        run = runs[key]
        assert run.info.run_name == f"{key} lr={config['params']['lr']:g}"
        assert run.info.status == "FINISHED"
        assert run.data.tags["gridsearch.status"] == "done"
        assert float(run.data.params["lr"]) == config["params"]["lr"]
        assert run.data.params["architecture"] == "lenet53"
        assert run.data.params["dataset.train_size"] == "300"
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [(m.step, m.value) for m in history] == [(step, metrics[(key, step)][3]) for step in (0, 1)]
        assert run.data.metrics["best_val_accuracy"] == val_accuracy
        assert run.data.metrics["best_epoch"] == best_epoch
        assert run.data.tags["gridsearch.selected"] == str(key == selected).lower()
    test_run = runs[selected]
    assert test_run.data.metrics["test_accuracy"] == accuracy
    assert (test_run.data.metrics["test_errors"], test_run.data.metrics["test_samples"]) == (errors, samples)
    artifact = client.download_artifacts(test_run.info.run_id, "test_evaluation.json", str(tmp_path))
    assert json.loads(Path(artifact).read_text())["confusion"] == json.loads(confusion)
    assert all("test_accuracy" not in run.data.metrics for key, run in runs.items() if key != selected)

    again = cli("export", SWEEP, "--to", "mlflow", "--db", "results.db", "--tracking-uri", uri, cwd=tracked)
    assert "0 runs logged, 0 replaced, 2 unchanged" in again.stdout
    assert len(client.search_runs([experiment.experiment_id])) == 2

    changed = tmp_path / "changed.db"  # a copy in which the sweep has no selected trial (yet)
    shutil.copy(db, changed)
    with sqlite3.connect(changed) as connection:
        connection.execute("UPDATE sweeps SET selected_trial = NULL")
    third = cli("export", SWEEP, "--to", "mlflow", "--db", str(changed), "--tracking-uri", uri, cwd=tracked)
    assert "0 runs logged, 1 replaced, 1 unchanged" in third.stdout
    now = {run.data.tags["gridsearch.trial_key"]: run for run in client.search_runs([experiment.experiment_id])}
    assert set(now) == set(trials) and "test_accuracy" not in now[selected].data.metrics


def test_missing_packages_give_one_error_line_naming_the_extra(tracked: Path, monkeypatch):
    """Without tensorboard or mlflow installed, the option fails before anything runs: exit 2, one line."""
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # importing it now raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow", None)
    result = cli("run", "sweep.yaml", "--db", "results.db", "--tensorboard", "tb2", cwd=tracked)
    assert (result.returncode, result.stderr) == (2, "error: " + _missing("tensorboard") + "\n")
    assert not (tracked / "tb2").exists()
    result = cli("export", SWEEP, "--to", "mlflow", "--db", "results.db", cwd=tracked)
    assert (result.returncode, result.stderr) == (2, "error: " + _missing("mlflow", "export --to mlflow") + "\n")


def _missing(package: str, what: str = "--tensorboard") -> str:
    return f"{what} needs the {package} package: pip install 'gridsearch[{package}]'"


def test_gridsearch_imports_neither_package_until_asked():
    """``import gridsearch`` and the command line's modules load without tensorboard or mlflow."""
    code = (
        "import sys, gridsearch, gridsearch.cli, gridsearch.engine.recorder, gridsearch.analysis.mlflow_export\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('mlflow', 'tensorboard')]\n"
        "assert not loaded and 'torch.utils.tensorboard' not in sys.modules, loaded"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
