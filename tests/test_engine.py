"""The engine end to end: real MNIST subsets, a real SQLite file; trials run inline (in this process) where what is
recorded is the point, in real worker processes where isolation, kills and determinism across processes are."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli, epoch_metrics, rows, write_sweep
from tests.test_faults import kill_9_at, start_run, wait_for


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    """A small sweep run once to completion, inline."""
    folder = tmp_path_factory.mktemp("finished")
    sweep = write_sweep(folder)
    result = cli("run", str(sweep), cwd=folder, data_dir=data_dir, check=True)
    return folder, result


def test_sweep_completes_selects_and_tests_the_best(finished):
    folder, result = finished
    db = folder / "results.db"
    trials = rows(db, "SELECT key, status, val_accuracy, val_loss, best_epoch, epochs_run FROM trials")
    assert len(trials) == 4 and {t[1] for t in trials} == {"done"}
    assert all(t[5] == 2 for t in trials)
    (selected,) = rows(db, "SELECT selected_trial FROM sweeps WHERE name = 'small'")[0]
    best = max(trials, key=lambda t: (t[2], -t[3]))
    assert selected == best[0]
    evaluation = rows(
        db,
        "SELECT samples, accuracy, errors, confusion, predictions FROM evaluations "
        "WHERE trial_key = ? AND name = 'test'",
        selected,
    )
    assert len(evaluation) == 1
    samples, accuracy, errors, confusion, predictions = evaluation[0]
    confusion = json.loads(confusion)
    assert samples == 400 and len(json.loads(predictions)) == 400
    assert sum(map(sum, confusion)) == 400
    assert errors == 400 - sum(confusion[i][i] for i in range(10))
    assert accuracy == pytest.approx(1 - errors / 400)
    assert accuracy > 0.5  # far above chance after 2 epochs on 500 images
    assert f"selected trial {selected}" in result.stdout
    # every trial's best weights are in the run folder beside the database; done, it keeps no resume checkpoint
    for key, *_ in trials:
        assert (folder / "runs" / key / "best.pt").exists() and not (folder / "runs" / key / "last.prev.pt").exists()
        assert (folder / "runs" / key / "last.pt").stat().st_size < 10_000  # its epoch history alone


def test_trials_record_params_epochs_and_provenance(finished):
    folder, _ = finished
    db = folder / "results.db"
    assert len(rows(db, "SELECT * FROM epochs")) == 8
    lrs = rows(db, "SELECT DISTINCT number FROM trial_params WHERE name = 'lr' ORDER BY number")
    assert lrs == [(0.02,), (0.08,)]
    provenance = rows(db, "SELECT device, torch_version, code_version, parameter_count, threads FROM trials")
    assert all(p[0] == "cpu" and p[1] and p[2] and p[3] > 0 and p[4] == 1 for p in provenance)


def test_cli_reads_the_results(finished):
    folder, _ = finished
    status = cli("status", cwd=folder, check=True).stdout
    assert "small" in status and "lenet53" in status
    trials = json.loads(cli("trials", "small", "--format", "json", cwd=folder, check=True).stdout)
    assert [t["val_accuracy"] for t in trials] == sorted((t["val_accuracy"] for t in trials), reverse=True)
    assert len(cli("trials", "small", "--top", "2", "--format", "csv", cwd=folder).stdout.splitlines()) == 3
    # the table reads as the sweep file was written: lr_step 3, not 3.0; accuracies as percentages
    table = cli("trials", "small", cwd=folder, check=True).stdout.splitlines()
    header, first = table[0].split(), table[1].split()
    assert first[header.index("lr_step")] in ("1", "3") and first[header.index("val_accuracy")].endswith("%")
    assert "None" not in table[1]
    best = json.loads(cli("best", "small", "--format", "json", cwd=folder, check=True).stdout)
    assert best["trial"] == trials[0]["key"] and best["test"]["samples"] == 400
    plan = cli("plan", str(folder / "sweep.yaml"), cwd=folder, check=True).stdout
    assert "4 done" in plan
    count = cli("query", "SELECT COUNT(*) AS n FROM epochs", "--format", "json", cwd=folder, check=True)
    assert json.loads(count.stdout) == [{"n": 8}]


def test_query_is_read_only(finished):
    folder, _ = finished
    before = rows(folder / "results.db", "SELECT COUNT(*) FROM trials")
    for statement in ("DELETE FROM trials", "DROP TABLE epochs", "UPDATE trials SET status = 'x'"):
        result = cli("query", statement, cwd=folder)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.startswith("error: query: ") and result.stderr.count("\n") == 1
    assert rows(folder / "results.db", "SELECT COUNT(*) FROM trials") == before


def test_runs_are_deterministic_whatever_the_worker_count_and_executor(finished, tmp_path, data_dir):
    """Two worker processes at once give the numbers one trial at a time inline gave."""
    cli("run", str(write_sweep(tmp_path)), "--workers", "2", cwd=tmp_path, data_dir=data_dir, check=True)
    again = epoch_metrics(tmp_path / "results.db")
    assert again == epoch_metrics(finished[0] / "results.db")
    assert len(again) == 8


def test_running_again_runs_nothing_and_a_shared_point_is_trained_once(finished, data_dir):
    folder, _ = finished
    before = rows(folder / "results.db", "SELECT key, attempts, finished_at FROM trials ORDER BY key")
    result = cli("run", str(folder / "sweep.yaml"), cwd=folder, data_dir=data_dir, check=True)
    assert "started" not in result.stderr
    # the same points under another sweep name: no new training, its own selection
    other = write_sweep(folder, "other.yaml", name="other", grid={"lr_step": [3, 1], "lr": [0.08]})
    result = cli("run", str(other), cwd=folder, data_dir=data_dir, check=True)
    assert "started" not in result.stderr
    assert rows(folder / "results.db", "SELECT key, attempts, finished_at FROM trials ORDER BY key") == before
    assert rows(
        folder / "results.db",
        "SELECT COUNT(*) FROM sweep_trials s JOIN sweeps w ON w.id = s.sweep_id WHERE w.name = 'other'",
    ) == [(2,)]


def test_adding_grid_values_runs_only_the_new_points(tmp_path, data_dir):
    small = {"grid": {"lr": [0.05]}, "params": {"epochs": 1, "batch_size": 50, "hidden": 16}}
    cli("run", str(write_sweep(tmp_path, **small)), cwd=tmp_path, data_dir=data_dir, check=True)
    first = rows(tmp_path / "results.db", "SELECT key, finished_at FROM trials")
    small["grid"] = {"lr": [0.05, 0.1]}
    result = cli("run", str(write_sweep(tmp_path, **small)), cwd=tmp_path, data_dir=data_dir, check=True)
    assert result.stderr.count(" started") == 1
    after = dict(rows(tmp_path / "results.db", "SELECT key, finished_at FROM trials"))
    assert len(after) == 2 and after[first[0][0]] == first[0][1]


def test_failing_trials_are_recorded_and_the_sweep_goes_on(tmp_path, data_dir):
    sweep = write_sweep(
        tmp_path,
        grid={"lr": [0.05, 1e6]},
        params={"epochs": 2, "batch_size": 50, "hidden": 16, "momentum": 0.0, "nesterov": False},
    )
    result = cli("run", str(sweep), cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    db = tmp_path / "results.db"
    statuses = dict(rows(db, "SELECT json_extract(config, '$.params.lr'), status FROM trials"))
    assert statuses == {0.05: "done", 1e6: "failed"}
    (error,) = rows(db, "SELECT error FROM trials WHERE status = 'failed'")[0]
    assert error.startswith("Diverged: training loss is nan at epoch 1")
    assert rows(
        db, "SELECT json_extract(t.config, '$.params.lr') FROM sweeps s JOIN trials t ON t.key = s.selected_trial"
    ) == [(0.05,)]
    # --retry-failed runs it again (and it fails again, deterministically)
    result = cli("run", str(sweep), "--retry-failed", cwd=tmp_path, data_dir=data_dir)
    assert result.stderr.count(" started") == 1
    assert rows(db, "SELECT attempts FROM trials WHERE status = 'failed'") == [(2,)]


def _start_run(sweep: Path, folder: Path, data_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gridsearch", "run", str(sweep), "--plain", "--data-dir", str(data_dir)],
        cwd=folder,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.faults
def test_resume_after_kill_9_equals_an_uninterrupted_run(tmp_path, data_dir):
    changes = {
        "params": {"epochs": 3, "batch_size": 50, "hidden": 32, "patience": 5},
        "grid": {"lr": [0.02, 0.05, 0.08], "lr_step": [1, 3]},
    }
    reference = tmp_path / "reference"
    reference.mkdir()
    cli("run", str(write_sweep(reference, **changes)), cwd=reference, data_dir=data_dir, check=True)

    folder = tmp_path / "killed"
    folder.mkdir()
    sweep = write_sweep(folder, **changes)
    db = folder / "results.db"
    # 1) kill the coordinator while a trial is mid-way (one epoch done) with trials still to start, status
    #    polling meanwhile
    coordinator = _start_run(sweep, folder, data_dir)
    wait_for(db, "SELECT COUNT(*) FROM trials WHERE status = 'done'", coordinator)
    assert cli("status", cwd=folder).returncode == 0  # reading while it runs never blocks or fails
    kill_9_at(
        db,
        "SELECT COUNT(*) FROM trials WHERE status = 'running' AND epochs_run = 1 "  # 2 of its 3 epochs to go
        "AND (SELECT COUNT(*) FROM trials WHERE status = 'pending') > 0",
        coordinator,
    )
    interrupted = rows(db, "SELECT key, epochs_run FROM trials WHERE status = 'running'")
    assert len(interrupted) == 1 and interrupted[0][1] >= 1
    # 2) a new run takes over the dead coordinator's trial and resumes it from its checkpoint;
    #    kill -9 its worker mid-trial too: the coordinator restarts it from the last epoch
    coordinator = _start_run(sweep, folder, data_dir)
    wait_for(
        db,
        "SELECT worker_pid FROM trials WHERE status = 'running' AND epochs_run >= 1 "
        f"AND key != '{interrupted[0][0]}' AND owner LIKE '%:{coordinator.pid}'",
        coordinator,
    )
    (pid,) = rows(db, f"SELECT worker_pid FROM trials WHERE status = 'running' AND owner LIKE '%:{coordinator.pid}'")[0]
    os.kill(pid, signal.SIGKILL)
    _, log = coordinator.communicate(timeout=300)
    assert coordinator.returncode == 0, log
    assert f"trial {interrupted[0][0]} resumed after epoch" in log
    assert "killed by SIGKILL" in log and "restarting from its checkpoint" in log

    assert epoch_metrics(db) == epoch_metrics(reference / "results.db")
    same = (
        "SELECT s.selected_trial, e.accuracy, e.errors, e.predictions FROM sweeps s "
        "JOIN evaluations e ON e.trial_key = s.selected_trial"
    )
    assert rows(db, same) == rows(reference / "results.db", same)
    assert rows(db, "SELECT COUNT(*) FROM trials WHERE status = 'done'") == [(6,)]


def _dump(db: Path) -> list:
    tables = [name for (name,) in rows(db, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return [(table, sorted(map(repr, rows(db, f"SELECT * FROM {table}")))) for table in tables]


BAD_COMMANDS = [
    (["run", "{bad}"], "params.optimiser: unknown parameter"),
    (["run", "{missing}"], "no such sweep file"),
    (["run", "{sweep}", "--db", "nonsense://x"], "not a usable database URL"),
    (["run", "{sweep}", "--db", "/no/such/folder/results.db"], "folder /no/such/folder does not exist"),
    (["run", "{sweep}", "--db", "postgresql://nobody@127.0.0.1:1/x"], "--db postgresql://nobody@127.0.0.1:1/x"),
    (["status", "--db", "{notadb}"], "cannot open the database (file is not a database)"),
    (["trials", "nosuch"], "no sweep named 'nosuch'"),
    (["best", "nosuch"], "no sweep named 'nosuch'"),
    (["plan", "{bad}"], "params.optimiser"),
    (["query", "SELECT * FROM nosuch"], "no such table: nosuch"),
]


@pytest.mark.parametrize("args, message", BAD_COMMANDS, ids=[" ".join(a) for a, _ in BAD_COMMANDS])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(finished, args, message, tmp_path, data_dir):
    folder, _ = finished
    bad = folder / "bad.yaml"
    bad.write_text((folder / "sweep.yaml").read_text().replace("epochs:", "optimiser: sgd\n  epochs:"))
    (tmp_path / "notadb.db").write_text("hello")
    paths = {
        "bad": bad,
        "missing": folder / "missing.yaml",
        "sweep": folder / "sweep.yaml",
        "notadb": tmp_path / "notadb.db",
    }
    before = _dump(folder / "results.db")
    result = cli(*[a.format(**paths) for a in args], cwd=folder, data_dir=data_dir)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert _dump(folder / "results.db") == before


def _online() -> bool:
    try:
        socket.create_connection(("ossci-datasets.s3.amazonaws.com", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(_online(), reason="with a network, MNIST is simply downloaded")
def test_missing_mnist_offline_names_the_files(tmp_path):
    result = cli("run", str(write_sweep(tmp_path)), "--data-dir", str(tmp_path / "empty"), cwd=tmp_path)
    assert result.returncode == 2
    assert "train-images-idx3-ubyte.gz" in result.stderr and str(tmp_path / "empty") in result.stderr
    assert result.stderr.count("\n") == 1


def test_workers_end_at_once_when_the_coordinator_alone_is_killed(tmp_path, data_dir):
    """kill -9 of the coordinator's pid alone, as the OOM killer sends it (not its process group): its
    forkserver and its workers end within seconds, instead of training on to the end of their epoch."""
    import psutil

    write_sweep(tmp_path, dataset={"train_size": 30000, "val_size": 300, "test_size": 400}, grid={"lr": [0.02, 0.08]})
    db = tmp_path / "results.db"
    coordinator = start_run(tmp_path, data_dir, "--workers", "2")
    wait_for(db, "SELECT COUNT(*) = 2 FROM trials WHERE status = 'running' AND worker_pid IS NOT NULL", coordinator)
    descendants = psutil.Process(coordinator.pid).children(recursive=True)  # forkserver, workers, trackers
    workers = [pid for (pid,) in rows(db, "SELECT worker_pid FROM trials")]
    assert set(workers) <= {p.pid for p in descendants}
    os.kill(coordinator.pid, signal.SIGKILL)
    coordinator.wait()
    _, alive = psutil.wait_procs(descendants, timeout=120)  # an event; the bound only ends a hung test
    running = [p.pid for p in alive if _running(p)]  # a zombie has ended; it only waits to be reaped
    assert not running, f"still running 120 s after the coordinator died: {running}"
    # "at once", measured in training rather than seconds (which a busy machine stretches): no worker
    # finished the epoch it was in, whose end writes its checkpoint
    assert not list((tmp_path / "runs").rglob("last.pt"))


def _running(process) -> bool:
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
