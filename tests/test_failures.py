"""Failures that explain themselves: a worker that dies leaves its signal, traceback and log lines in its trial's
error; a run that selects nothing names the commonest error and the exact --retry-failed command; ``retries`` and
``--fail-fast``; a CUDA out-of-memory error is a failed trial with that reason. Real trials on MNIST subsets."""

import ctypes
import os
import signal
import threading
import time

import psutil
import pytest
import torch
from torch import nn

import architectures
from gridsearch.engine import worker
from gridsearch.engine.failures import exit_reason
from tests.conftest import cli, rows, write_sweep
from tests.test_faults import start_run, wait_for

TINY = {
    "dataset": {"train_size": 300, "val_size": 200, "test_size": 200},
    "params": {"epochs": 2, "batch_size": 50, "hidden": 8, "patience": 5},
}


def test_exit_reason_names_the_code_or_signal_the_traceback_and_the_last_log_lines(tmp_path):
    log = tmp_path / "worker.log"
    log.write_text("Traceback (most recent call last):\n  an earlier attempt's traceback\nValueError: old\n")
    offset = log.stat().st_size
    assert exit_reason(1, log, offset) == f"worker exited with code 1 before it reported anything; {log} is empty " + (
        "(a traceback from before it opened its log goes to the run's stderr)"
    )
    with log.open("a") as file:  # what this attempt printed: lines, then os._exit(3)
        file.write("".join(f"line {i}\n" for i in range(15)))
    reason = exit_reason(3, log, offset, reported=True)
    assert reason.splitlines() == [f"worker exited with code 3; the last lines of {log}:"] + [
        f"line {i}" for i in range(5, 15)
    ]
    with log.open("a") as file:  # ... and a crash in native code, dumped by faulthandler
        file.write(
            'Fatal Python error: Segmentation fault\n\nCurrent thread 0x1 (most recent call first):\n  File "x.py"'
        )
    reason = exit_reason(-signal.SIGSEGV, log, offset, reported=True)
    assert reason.startswith(f"worker killed by SIGSEGV; the end of {log}:\nFatal Python error: Segmentation fault")
    assert reason.endswith('File "x.py"') and "old" not in reason and "line 14" not in reason


SYS_TGKILL = 234
"""Linux x86-64's ``tgkill``: a signal to one thread of a process."""


def crash_main_thread(pid: int) -> None:
    """A segmentation fault in the main (training) thread of process ``pid``, as a crash in native code raises it.
    (``kill`` would let the kernel hand the signal to any of its threads: the heartbeat's too.)"""
    assert ctypes.CDLL(None, use_errno=True).syscall(SYS_TGKILL, pid, pid, signal.SIGSEGV) == 0


def test_a_worker_killed_mid_trial_leaves_its_traceback_and_run_names_the_error_and_the_retry_command(
    tmp_path, data_dir
):
    sweep = write_sweep(tmp_path, **{**TINY, "params": {**TINY["params"], "epochs": 40}, "grid": {"lr": [0.05]}})
    db = tmp_path / "results.db"

    def crash_the_worker() -> None:  # a segmentation fault in the worker, after its first epoch
        end = time.monotonic() + 120
        while time.monotonic() < end:
            try:
                found = rows(db, "SELECT worker_pid FROM trials WHERE epochs_run >= 1 AND worker_pid IS NOT NULL")
            except Exception:  # the tables may not exist yet
                found = []
            if found:
                crash_main_thread(found[0][0])
                return
            time.sleep(0.05)

    killer = threading.Thread(target=crash_the_worker)
    killer.start()
    result = cli("run", str(sweep), "--workers", "1", cwd=tmp_path, data_dir=data_dir)
    killer.join()
    assert result.returncode == 1, result.stderr
    ((status, error),) = rows(db, "SELECT status, error FROM trials")
    assert status == "failed"
    assert error.startswith(f"worker killed by SIGSEGV (stage: training); the end of {tmp_path / 'runs'}")
    assert "Fatal Python error: Segmentation fault" in error and "gridsearch/training/" in error  # where it was
    retry = f"python -m gridsearch run {sweep} --workers 1 --data-dir {data_dir} --plain --retry-failed"
    assert (
        "no trial finished, so none was selected: 1 of 1 trials failed, 1 of them with: worker killed by SIGSEGV"
        in (result.stdout)
    )
    assert result.stdout.rstrip().endswith(f"once fixed, run them again: {retry}")


@pytest.mark.faults
def test_a_test_evaluation_killed_keeps_its_reason_and_a_rerun_tests_the_trial(tmp_path, data_dir):
    """Before: "the test evaluation of trial ... failed (see .../worker.log)", an empty log and nothing recorded."""
    dataset = {**TINY["dataset"], "test_size": 10000}  # an evaluation of seconds, to be caught in
    sweep = write_sweep(tmp_path, **{**TINY, "dataset": dataset, "grid": {"lr": [0.05]}})
    db = tmp_path / "results.db"
    run = start_run(tmp_path, data_dir)
    wait_for(db, "SELECT COUNT(*) FROM trials WHERE status = 'done'", run)
    coordinator = psutil.Process(run.pid)
    while not (workers := [p for child in coordinator.children() for p in child.children()]):  # the forkserver's
        assert run.poll() is None, run.communicate()
        time.sleep(0.01)
    workers[0].kill()  # the test evaluation's worker
    out, err = run.communicate(timeout=300)
    ((key, error),) = rows(db, "SELECT key, error FROM trials")
    assert run.returncode == 1 and "Traceback" not in err, err
    killed = error.split(";")[0]  # it may be killed before it says hello: "... before it reported anything"
    assert killed.startswith("worker killed by SIGKILL") and killed.endswith("(stage: test evaluation)"), error
    note = f"the test evaluation of trial {key} failed: {error.splitlines()[0]} (its error in `gridsearch trials small`"
    assert note in out, out
    assert rows(db, "SELECT COUNT(*) FROM evaluations") == [(0,)]
    cli("run", str(sweep), cwd=tmp_path, data_dir=data_dir, check=True)
    assert rows(db, "SELECT status, error FROM trials") == [("done", None)]
    assert rows(db, "SELECT COUNT(*) FROM evaluations") == [(1,)]


def test_a_failed_checkpoint_names_its_stage(tmp_path, data_dir):
    sweep = write_sweep(tmp_path, **{**TINY, "grid": {"lr": [0.05]}})
    db = tmp_path / "results.db"
    key = cli("plan", str(sweep), "--format", "csv", cwd=tmp_path, check=True).stdout.splitlines()[1].split(",")[0]
    (tmp_path / "runs" / key / "best.pt").mkdir(parents=True)  # a folder where the best weights go
    result = cli("run", str(sweep), "--executor", "local", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 1
    ((error,),) = rows(db, "SELECT error FROM trials")
    assert error.startswith("IsADirectoryError: [Errno 21] Is a directory: ") and error.endswith("(stage: checkpoint)")


def test_retries_rerun_a_failed_trial_and_fail_fast_stops_the_sweep_resumably(tmp_path, data_dir):
    sweep = write_sweep(  # lr 1e9 diverges in its first epoch, every time
        tmp_path, **{**TINY, "params": {**TINY["params"], "epochs": 6}, "grid": {"lr": [0.05, 1e9]}, "retries": 1}
    )
    db = tmp_path / "results.db"
    result = cli("run", str(sweep), "--workers", "2", "--fail-fast", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 1, result.stderr
    assert "interrupted: Diverged" in result.stderr and "; retry 1 of 1, from its checkpoint" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("stopped at the first failed trial (--fail-fast): trial ")
    assert "(lr=1000000000) failed: Diverged" in last and "1 running trial(s) interrupted" in last
    assert last.endswith(" --retry-failed") and " --workers 2 --fail-fast " in last
    trials = dict(rows(db, "SELECT json_extract(config, '$.params.lr'), status || ' ' || attempts FROM trials"))
    assert trials == {0.05: "interrupted 1", 1e9: "failed 2"}  # retried once, then the sweep stopped
    assert rows(db, "SELECT selected_trial FROM sweeps") == [(None,)]
    # run again: the interrupted trial resumes; the failed one stays failed without --retry-failed
    again = cli("run", str(sweep), cwd=tmp_path, data_dir=data_dir, check=True)
    assert again.stderr.count(" started") == 1
    trials = dict(rows(db, "SELECT json_extract(config, '$.params.lr'), status || ' ' || attempts FROM trials"))
    assert trials == {0.05: "done 2", 1e9: "failed 2"}


@pytest.mark.parametrize(
    ("value", "message"),
    [(-1, "retries: must be between 0 and 100, got -1"), ("twice", "retries: must be int")],
)
def test_retries_are_validated_with_their_line(tmp_path, value, message):
    sweep = write_sweep(tmp_path, **TINY, retries=value)
    result = cli("plan", str(sweep), cwd=tmp_path)
    line = next(i for i, text in enumerate(sweep.read_text().splitlines(), 1) if text.startswith("retries"))
    assert result.returncode == 2 and result.stderr.startswith(f"error: {sweep}:{line}: {message}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_retries_are_not_part_of_the_trial_keys(tmp_path):
    keys = [
        cli("plan", str(write_sweep(tmp_path, **TINY, **extra)), "--format", "json", cwd=tmp_path, check=True).stdout
        for extra in ({}, {"retries": 3})
    ]
    assert keys[0] == keys[1]


class OutOfGpuMemory(nn.Module):
    """A network whose forward pass runs out of CUDA memory, as a too-large batch does on a full GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has 1.2 GiB free.")


@pytest.fixture
def out_of_gpu_memory():
    architectures.register("out_of_gpu_memory", OutOfGpuMemory, "raises CUDA out of memory in forward")
    yield "out_of_gpu_memory"
    del architectures.REGISTRY["out_of_gpu_memory"]


def test_cuda_out_of_memory_in_a_trial_is_an_error_event_with_a_clear_reason(
    out_of_gpu_memory, in_process_training, tmp_path, data_dir
):
    from gridsearch.spec.sweep import resolved_defaults

    config = {
        "architecture": out_of_gpu_memory,
        "params": {**resolved_defaults(out_of_gpu_memory), "epochs": 1, "batch_size": 50},
        "dataset": {"name": "mnist", "train_size": 100, "val_size": 50},
        "seed": 0,
        "threads": 1,
        "select": "val_accuracy",
    }
    job = {
        "task": "train",
        "cohort": "0" * 16,
        "members": [{"key": "0" * 16, "config": config, "run_dir": str(tmp_path / "run")}],
        "data_dir": str(data_dir),
        "device": "cpu",
        "visible_gpu": "1",
        "test_size": 100,
        "epoch_budget": None,
        "coordinator_pid": os.getpid(),
    }
    events: list[dict] = []
    assert worker.run_job(job, events.append) == 1
    assert events[-1] == {
        "event": "error",
        "key": "0" * 16,
        "error": "CUDA out of memory on GPU 1 (batch_size 50): CUDA out of memory. Tried to allocate 2.00 GiB. "
        "GPU 0 has 1.2 GiB free. (lower batch_size, or run fewer trials per GPU with --slots-per-gpu)",
        "infrastructure": False,
        "stage": "training",
        "disk_full": False,
    }
