"""Faults a long sweep meets: kill -9 of the coordinator at several points, hung and failing workers,
damaged checkpoints, an unwritable run folder, two runs at once, an old database, hostile values.

Every fault ends with every trial recorded once and the same numbers and selection as an undisturbed
run (``reference``). Real processes, real files, tiny sweeps (two trials of a narrow LeNet-5-3).
"""

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from gridsearch import cli as gridsearch_cli
from gridsearch.training import checkpoints
from gridsearch.training import loop as training
from tests.conftest import ROOT, checkpoint_file, cli, epoch_metrics, gridsearch, rows, write_sweep

TINY = {
    "name": "tiny",
    "dataset": {"train_size": 300, "val_size": 200, "test_size": 200},
    "params": {"epochs": 2, "batch_size": 50, "hidden": 8, "patience": 5},
    "grid": {"lr": [0.05, 0.1]},
}
SELECTION = (
    "SELECT s.selected_trial, e.samples, e.accuracy, e.loss, e.errors, e.predictions FROM sweeps s "
    "JOIN evaluations e ON e.trial_key = s.selected_trial AND e.name = 'test'"
)
RESULTS = "SELECT key, status, best_epoch, epochs_run, val_accuracy, val_loss FROM trials ORDER BY key"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir) -> Path:
    """The tiny sweep run once, undisturbed; its results.db."""
    folder = tmp_path_factory.mktemp("reference")
    cli("run", str(write_sweep(folder, **TINY)), cwd=folder, data_dir=data_dir, check=True)
    return folder / "results.db"


def start_run(folder: Path, data_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gridsearch",
            "run",
            str(folder / "sweep.yaml"),
            "--plain",
            "--data-dir",
            str(data_dir),
            *extra,
        ],
        cwd=folder,
        env=dict(os.environ, PYTHONPATH=str(ROOT), GRIDSEARCH_DATA=str(data_dir)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(db: Path, sql: str, process: subprocess.Popen | None = None, deadline: float = 600) -> None:
    """Poll ``sql`` on ``db`` until its first value is truthy (fails if ``process`` exits first). The
    deadline only ends a hung test: a busy machine may take minutes to get there."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            if db.exists() and (result := rows(db, sql)) and result[0][0]:
                return
        except sqlite3.Error:  # the tables may not exist yet
            pass
        if process is not None and process.poll() is not None:
            raise AssertionError(f"run exited {process.returncode} before: {sql}\n{process.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {sql}")


def kill_9_at(db: Path, sql: str, process: subprocess.Popen) -> str:
    """``kill_9`` of the coordinator at the moment ``sql`` holds. Only the coordinator writes the database: it is
    stopped (SIGSTOP) once ``sql`` is seen to hold, and killed if ``sql`` still holds, so what the test reads after
    the kill is the state it waited for, however slowly a busy machine let it poll (else it goes on, and waits)."""
    while True:
        wait_for(db, sql, process)
        process.send_signal(signal.SIGSTOP)
        if (result := rows(db, sql)) and result[0][0]:
            return kill_9(process)
        process.send_signal(signal.SIGCONT)


def kill_9(process: subprocess.Popen) -> str:
    """SIGKILL to the coordinator alone; returns its stderr once it and every process it started (workers,
    which end on their own when it dies) are gone, so that nothing writes to its run folders after."""
    descendants = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGKILL)
    err = process.communicate()[1]
    _, alive = psutil.wait_procs(descendants, timeout=300)  # an event; the bound only ends a hung test
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE], alive
    return err


def assert_nothing_lost(db: Path, reference: Path) -> None:
    """What ``db`` holds so far is part of the reference: finished trials, epochs and the test evaluation."""
    expected = {row[0]: row for row in rows(reference, RESULTS)}
    for row in rows(db, RESULTS):
        if row[1] == "done":
            assert row == expected[row[0]]
    assert epoch_metrics(db).items() <= epoch_metrics(reference).items()
    assert set(rows(db, SELECTION)) <= set(rows(reference, SELECTION))
    assert rows(db, "SELECT COUNT(*), COUNT(DISTINCT trial_key) FROM sweep_trials") in ([(0, 0)], [(2, 2)])


def assert_same_as(db: Path, reference: Path) -> None:
    assert rows(db, RESULTS) == rows(reference, RESULTS)
    assert epoch_metrics(db) == epoch_metrics(reference) and len(epoch_metrics(db)) == 4
    assert rows(db, SELECTION) == rows(reference, SELECTION) and len(rows(db, SELECTION)) == 1
    assert rows(db, "SELECT COUNT(*) FROM evaluations") == [(1,)]


KILL_POINTS = {
    "start-up": "SELECT COUNT(*) FROM sweeps",
    "mid-trial": "SELECT COUNT(*) FROM trials WHERE status = 'running' AND epochs_run >= 1",
    "test evaluation": "SELECT COUNT(*) = 2 FROM trials WHERE status = 'done'",
}


@pytest.mark.faults
def test_kill_9_of_the_coordinator_again_and_again_loses_nothing(reference, tmp_path, data_dir):
    write_sweep(tmp_path, **TINY)
    db = tmp_path / "results.db"
    log = ""
    for point, sql in KILL_POINTS.items():
        coordinator = start_run(tmp_path, data_dir, "--workers", "2")
        log += kill_9_at(db, sql, coordinator)
        assert_nothing_lost(db, reference)
        if point == "mid-trial":  # and damage a checkpoint of a trial the next run resumes
            (key,) = rows(db, "SELECT key FROM trials WHERE status = 'running' AND epochs_run >= 1 LIMIT 1")[0]
            last = tmp_path / "runs" / key / "last.pt"
            last.write_bytes(last.read_bytes()[:1000])
    assert rows(db, "SELECT COUNT(*) FROM evaluations") == [(0,)]  # killed before it was stored
    coordinator = start_run(tmp_path, data_dir, "--workers", "2")
    _out, err = coordinator.communicate(timeout=300)
    assert coordinator.returncode == 0, err
    assert_same_as(db, reference)
    assert f"trial {key}: warning: last.pt is damaged" in log + err
    assert "warning: last.pt is damaged" in (tmp_path / "runs" / key / "worker.log").read_text()


@pytest.mark.slow
def test_kill_9_at_random_moments(reference, tmp_path, data_dir):
    write_sweep(tmp_path, **TINY)
    db = tmp_path / "results.db"
    generator = random.Random(6)
    for _ in range(12):
        coordinator = start_run(tmp_path, data_dir, "--workers", "2")
        time.sleep(generator.uniform(0.5, 12))
        if coordinator.poll() is not None:
            break
        kill_9(coordinator)
        assert_nothing_lost(db, reference)
    gridsearch("run", str(tmp_path / "sweep.yaml"), cwd=tmp_path, data_dir=data_dir, check=True)
    assert_same_as(db, reference)


@pytest.mark.faults
def test_two_runs_at_once_share_the_work_and_readers_never_block(reference, tmp_path, data_dir):
    write_sweep(tmp_path, **TINY)
    db = tmp_path / "results.db"
    runs = [start_run(tmp_path, data_dir), start_run(tmp_path, data_dir)]
    wait_for(db, "SELECT COUNT(*) FROM trials WHERE status = 'running'", runs[0])
    writer = sqlite3.connect(db, isolation_level=None, timeout=60)
    writer.execute("BEGIN IMMEDIATE")  # the write lock, as a coordinator holds it while it writes
    try:  # a reader that waited for it would fail after its busy timeout; none waits, whatever the load
        for command in (["status"], ["trials", "tiny"], ["query", "SELECT COUNT(*) FROM epochs"]):
            result = gridsearch(*command, cwd=tmp_path, timeout=300)
            assert result.returncode == 0, result.stderr
    finally:
        writer.rollback()
        writer.close()
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    assert_same_as(db, reference)
    assert rows(db, "SELECT attempts FROM trials") == [(1,), (1,)]  # no trial ran twice


@pytest.mark.faults
def test_hung_and_failing_workers_are_recorded_and_the_sweep_goes_on(tmp_path, data_dir):
    # a diverging trial warm-started from a checkpoint whose name is hostile SQL: the trial fails, the
    # database stays whole
    hostile = checkpoint_file(tmp_path / "o'brien\"; DROP TABLE trials; --.pt", hidden=8)
    write_sweep(
        tmp_path,
        **{
            **TINY,
            "params": {**TINY["params"], "epochs": 1},
            "timeout": 12,
            "description": "'); DELETE FROM sweeps; --",
            "grid": [{"lr": [0.1, 0.05]}, {"lr": [1e9], "init_from": [hostile.name]}],
        },
    )
    db = tmp_path / "results.db"
    coordinator = start_run(tmp_path, data_dir, "--workers", "2")
    wait_for(db, "SELECT worker_pid FROM trials WHERE json_extract(config, '$.params.lr') = 0.1", coordinator)
    (pid,) = rows(db, "SELECT worker_pid FROM trials WHERE json_extract(config, '$.params.lr') = 0.1")[0]
    os.kill(pid, signal.SIGSTOP)  # hangs: only the sweep's timeout ends it
    _, err = coordinator.communicate(timeout=300)
    assert coordinator.returncode == 0, err
    trials = rows(
        db,
        "SELECT json_extract(config, '$.params.lr'), json_extract(config, '$.params.init_from'), "
        "status, error FROM trials ORDER BY status",
    )
    assert [t[2] for t in trials] == ["done", "failed", "timeout"]
    assert trials[0][0] == 0.05 and trials[0][1] == ""
    reference = f"{hostile}#sha256={hashlib.sha256(hostile.read_bytes()).hexdigest()[:16]}"
    assert trials[1][1] == reference and trials[1][3].startswith("Diverged")
    assert trials[2][0] == 0.1 and trials[2][3].startswith("exceeded the sweep's timeout of 12 s during epoch")
    assert rows(db, "SELECT value FROM trial_params WHERE name = 'init_from' AND value != '\"\"'") == [
        (json.dumps(reference),)
    ]
    assert rows(db, "SELECT source FROM sweeps") == [((tmp_path / "sweep.yaml").read_text(),)]
    assert rows(db, "SELECT COUNT(*) FROM sweeps") == [(1,)]


# -- checkpoints -------------------------------------------------------------------------------------


def train(run_dir: Path, data_dir: Path, epochs: int, budget: int | None = None) -> tuple[list[dict], list[str]]:
    """Train a tiny trial of ``epochs`` epochs in ``run_dir`` (to ``budget`` of them, if given); its epoch
    metrics (seconds left out) and warnings."""
    config = {
        "architecture": "lenet53",
        "seed": 0,
        "threads": 1,
        "select": "val_accuracy",
        "dataset": {"name": "mnist", "train_size": 200, "val_size": 100},
        "params": {**training_defaults(), "epochs": epochs, "batch_size": 50, "hidden": 8, "lr": 0.1},
    }
    events: list[dict] = []
    run_dir.mkdir(exist_ok=True)
    training.train_trial(config, run_dir, data_dir, torch.device("cpu"), events.append, budget)
    epochs_ = [
        {k: v for k, v in e.items() if k not in ("seconds", "replayed", "event")}
        for e in events
        if e["event"] == "epoch"
    ]
    return epochs_, [e["message"] for e in events if e["event"] == "warning"]


def training_defaults() -> dict:
    from gridsearch.spec.sweep import resolved_defaults

    return resolved_defaults("lenet53")


def test_damaged_checkpoints_are_detected_and_the_trial_resumes_or_restarts(in_process_training, tmp_path, data_dir):
    expected, warnings = train(tmp_path / "undisturbed", data_dir, epochs=3)
    assert len(expected) == 3 and warnings == []
    run_dir = tmp_path / "damaged"

    def damage(*names: str) -> None:
        for name in names:
            data = bytearray((run_dir / name).read_bytes())
            data[len(data) // 2] ^= 0xFF
            (run_dir / name).write_bytes(data)

    def halfway(name: str) -> None:  # 2 of its 3 epochs: both resume checkpoints there
        nonlocal run_dir
        run_dir = tmp_path / name
        train(run_dir, data_dir, epochs=3, budget=2)

    # last.pt truncated: resumes from the checkpoint before it
    halfway("truncated")
    assert {p.name for p in run_dir.iterdir()} == {
        "best.pt",
        "best.pt.sha256",
        "last.pt",
        "last.pt.sha256",
        "last.prev.pt",
        "last.prev.pt.sha256",
    }
    (run_dir / "last.pt").write_bytes((run_dir / "last.pt").read_bytes()[:100])
    history, warnings = train(run_dir, data_dir, epochs=3)
    assert warnings == ["last.pt is damaged (its SHA-256 does not match last.pt.sha256); trying an earlier checkpoint"]
    assert history == expected  # epoch 0 replayed from last.prev.pt, epochs 1 and 2 trained again
    # both resume checkpoints damaged, or best.pt damaged: restarts from scratch, same numbers
    for names in (("last.pt", "last.prev.pt"), ("best.pt",)):
        halfway("_".join(names))
        damage(*names)
        history, warnings = train(run_dir, data_dir, epochs=3)
        assert history == expected and warnings[-1].endswith("restarting the trial from scratch")
    # a checksum file lost: treated as damaged
    halfway("checksum")
    (run_dir / "last.pt.sha256").unlink()
    assert train(run_dir, data_dir, epochs=3)[1][0].startswith("last.pt.sha256 is missing")
    with pytest.raises(checkpoints.CorruptCheckpoint, match=r"best\.pt is damaged"):
        damage("best.pt")
        checkpoints.load_verified(run_dir / "best.pt", "cpu")


# -- the disk -------------------------------------------------------------------------------------------


def run_in_process(*args: str, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    code = gridsearch_cli.main(list(args))
    return code, capsys.readouterr().err


def test_an_unwritable_run_folder_is_a_clear_error_before_anything_is_stored(tmp_path, capsys):
    sweep = write_sweep(tmp_path, **TINY)
    (tmp_path / "afile").write_text("a file where the run folder should be")
    for artifacts in ("afile", "afile/runs"):
        code, err = run_in_process(
            "run",
            str(sweep),
            "--db",
            str(tmp_path / "results.db"),
            "--artifacts",
            str(tmp_path / artifacts),
            capsys=capsys,
        )
        assert code == 2 and err.count("\n") == 1
        assert err.startswith(f"error: --artifacts {tmp_path / artifacts}: cannot write checkpoints there")
    assert rows(tmp_path / "results.db", "SELECT COUNT(*) FROM sweeps") == [(0,)]


# -- the database -------------------------------------------------------------------------------------


def test_init_from_cannot_leave_the_sweep_folder_unless_absolute(tmp_path, capsys):
    folder = tmp_path / "sweeps"
    folder.mkdir()
    outside = checkpoint_file(tmp_path / "outside.pt", hidden=8)
    checkpoint_file(folder / "inside.pt", hidden=8)
    (folder / "link.pt").symlink_to(outside)
    cases = {
        "../outside.pt": "leaves the sweep file's folder",
        "link.pt": "leaves the sweep file's folder",
        "trial:../../etc": "'trial:' must be followed by a 16-hex-digit trial key",
        "best:../x": "'best:' must be followed by a sweep name",
        str(outside): None,
        "inside.pt": None,
        "trial:0123456789abcdef": None,
    }
    for value, message in cases.items():
        sweep = write_sweep(folder, **{**TINY, "params": {**TINY["params"], "init_from": value}})
        code, err = run_in_process("plan", str(sweep), "--db", str(tmp_path / "none.db"), capsys=capsys)
        if message is None:
            assert code == 0, err
        else:
            assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "none.db").exists()


def test_init_from_must_be_a_checkpoint_that_fits(tmp_path):
    """A file that is not a checkpoint of weights, or fits none of the network's tensors, is refused when the
    sweep is read (one line, exit 2, nothing stored changed); one that fits says how much of it does."""
    from gridsearch.spec.sweep import load_sweep
    from gridsearch.store.storage import Storage

    db = tmp_path / "results.db"
    good = load_sweep(write_sweep(tmp_path, "good.yaml", **TINY))
    storage = Storage(str(db))
    storage.save_sweep(good, list(good.trials()))
    storage.close()  # its write-ahead log folded into the file
    before = db.read_bytes()
    checkpoint_file(tmp_path / "mlp.pt", "mlp")
    (tmp_path / "text.pt").write_bytes(b"not a checkpoint " * 10)
    torch.save({"epoch": 3, "note": "no weights"}, tmp_path / "no_tensors.pt")
    cases = {
        "text.pt": "not a PyTorch checkpoint of weights (torch.load with weights_only=True raises UnpicklingError)",
        "no_tensors.pt": "a PyTorch file, but it holds no named tensors",
        "mlp.pt": "fits none of the 32 tensors of lenet53 (by name and shape)",
    }
    for name, message in cases.items():
        sweep = write_sweep(tmp_path, **{**TINY, "params": {**TINY["params"], "init_from": name}})
        line = sweep.read_text().splitlines().index(f"  init_from: {name}") + 1
        for command in ("plan", "run"):
            result = cli(command, str(sweep), "--db", str(db), cwd=tmp_path)
            assert result.returncode == 2 and result.stdout == "", result.stderr
            assert result.stderr.startswith(f"error: {sweep}:{line}: params.init_from: {tmp_path / name}")
            assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert db.read_bytes() == before
    checkpoint_file(tmp_path / "lenet.pt", hidden=8)
    sweep = write_sweep(
        tmp_path, **{**TINY, "architecture": "stn", "params": {**TINY["params"], "init_from": "lenet.pt"}}
    )
    result = cli("plan", str(sweep), "--db", str(db), cwd=tmp_path, check=True)
    assert (
        f"init_from {tmp_path / 'lenet.pt'}: 32 of the 52 tensors of stn match by name and shape; "
        "the other 20 start fresh" in result.stdout.splitlines()
    )


def test_a_replaced_init_from_file_is_a_new_trial(tmp_path):
    """Trial keys hash the checkpoint's content, not only its path; a worker refuses a file replaced after the
    sweep was read, and loads the one its key names."""
    from gridsearch.spec.sweep import load_sweep
    from gridsearch.training.models import CheckpointChanged, build_model, warm_start

    path = checkpoint_file(tmp_path / "start.pt", seed=0, hidden=8)
    sweep = write_sweep(tmp_path, **{**TINY, "params": {**TINY["params"], "init_from": "start.pt"}})
    first = [trial.key for trial in load_sweep(sweep).trials()]
    assert [trial.key for trial in load_sweep(sweep).trials()] == first  # the same file: the same trials
    checkpoint_file(path, seed=1, hidden=8)  # other weights at the same path
    trials = list(load_sweep(sweep).trials())
    assert len(trials) == len(first) and not {trial.key for trial in trials} & set(first)
    named = path.read_bytes()
    checkpoint_file(path, seed=2, hidden=8)  # replaced once more, after the sweep was read
    model = build_model(trials[0].config())
    run_dir = tmp_path / "runs" / trials[0].key
    with pytest.raises(CheckpointChanged, match=f"init_from {path} changed after the sweep was read"):
        warm_start(model, trials[0].params["init_from"], run_dir)
    path.write_bytes(named)
    assert warm_start(model, trials[0].params["init_from"], run_dir) == (32, 0)
    weights = torch.load(path, weights_only=True)
    assert all(torch.equal(tensor, weights[name]) for name, tensor in model.state_dict().items())


def test_hostile_values_are_bound_not_formatted(tmp_path):
    from gridsearch.spec.sweep import load_sweep
    from gridsearch.store.storage import Storage

    names = ["x'); DROP TABLE trials; --", 'a"b\\c', "%s %(x)s {0} ?", "😀 ' OR '1'='1"]
    for name in names:
        checkpoint_file(tmp_path / name, hidden=8)
    sweep = load_sweep(
        write_sweep(tmp_path, **{**TINY, "description": "'; DELETE FROM sweeps; --", "grid": {"init_from": names}})
    )
    storage = Storage(str(tmp_path / "results.db"))
    storage.save_sweep(sweep, list(sweep.trials()))
    db = tmp_path / "results.db"
    stored = [json.loads(v) for (v,) in rows(db, "SELECT value FROM trial_params WHERE name = 'init_from'")]
    assert sorted(value.partition("#sha256=")[0] for value in stored) == sorted(str(tmp_path / name) for name in names)
    assert rows(db, "SELECT name, source FROM sweeps") == [("tiny", sweep.source)]
    assert {t.key: t.status for t in storage.trials("tiny")} == {t.key: "pending" for t in sweep.trials()}
