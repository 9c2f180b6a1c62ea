"""A worker that stops without dying (SIGSTOP here; a hung file read or a deadlocked library alike) no longer hangs
the run: its heartbeat stops counting progress, the coordinator kills it once its bound is past (``--stall-after``,
else 3 x its trials' longest recorded epoch, 60 s at least) and trains its trial again from its checkpoint, saying
so in one line; the sweep ends as undisturbed. Real processes, a real MNIST subset."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from gridsearch.engine.heartbeat import failure_stage
from gridsearch.training import checkpoints
from gridsearch.vocabulary import Stage
from tests.conftest import cli, rows, write_sweep
from tests.test_faults import TINY, wait_for
from tests.test_outages import LONGER, contents, launch, sqlite_url

SLOW = {**LONGER, "name": "slow", "params": {**LONGER["params"], "epochs": 6}, "grid": {"lr": [0.05, 0.1]}}
"""Two trials of six epochs: stopped after its first epoch, a trial has five to go."""
STOPPABLE = "SELECT worker_pid FROM trials WHERE status = 'running' AND epochs_run BETWEEN 1 AND 3"


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory, data_dir) -> Path:
    """SLOW run once, undisturbed, in this process (no worker, no heartbeat); its results.db."""
    folder = tmp_path_factory.mktemp("slow")
    cli("run", str(write_sweep(folder, **SLOW)), cwd=folder, data_dir=data_dir, check=True)
    return folder / "results.db"


def stop_a_worker(db: Path, run) -> int:
    """SIGSTOP the worker of a trial that has trained an epoch (and has more to go); its pid."""
    wait_for(db, STOPPABLE, run.process)
    ((pid,),) = rows(db, STOPPABLE)
    os.kill(pid, signal.SIGSTOP)
    return pid


@pytest.mark.faults
def test_a_stopped_worker_is_killed_after_stall_after_and_its_trial_trained_again(slow_reference, tmp_path, data_dir):
    write_sweep(tmp_path, **SLOW)
    db = tmp_path / "results.db"
    run = launch(tmp_path, data_dir, "--stall-after", "3")
    stop_a_worker(db, run)  # before: the run hung until the sweep's timeout, or forever without one
    line = run.wait_for("made no progress for")
    assert re.search(r"interrupted: worker made no progress for \d+ s \(its bound: --stall-after 3 s\); killed", line)
    assert "(stage: training)" in line and "stalled, not the trial: training it again from its checkpoint" in line
    code, err = run.finish()
    assert code == 0, err
    assert contents(sqlite_url(db)) == contents(sqlite_url(slow_reference))


@pytest.mark.slow
def test_a_stopped_worker_is_found_from_its_epoch_times_within_two_minutes(slow_reference, tmp_path, data_dir):
    write_sweep(tmp_path, **SLOW)
    db = tmp_path / "results.db"
    run = launch(tmp_path, data_dir)
    stop_a_worker(db, run)
    stopped = time.monotonic()
    line = run.wait_for("made no progress for", timeout=600)
    assert time.monotonic() - stopped < 120
    assert re.search(r"its bound: 60 s: 3 x its longest epoch \(\d+\.\d s\), 60 s at least\); killed", line), line
    code, err = run.finish()
    assert code == 0, err
    assert contents(sqlite_url(db)) == contents(sqlite_url(slow_reference))


def test_bad_stall_after_values_are_refused(tmp_path, data_dir):
    import gridsearch
    from gridsearch.errors import UserError

    write_sweep(tmp_path, **TINY)
    for value in ("-1", "soon"):
        result = cli("run", str(tmp_path / "sweep.yaml"), "--stall-after", value, cwd=tmp_path, data_dir=data_dir)
        assert result.returncode == 2 and result.stderr.splitlines()[-1].startswith(
            "gridsearch run: error: argument --stall-after: expected a number of seconds"
        )
    with pytest.raises(UserError, match=r"^stall_after: expected a number of seconds >= 0, got -1$"):
        gridsearch.run(tmp_path / "sweep.yaml", db=str(tmp_path / "none.db"), stall_after=-1)
    assert not (tmp_path / "none.db").exists()


def test_the_stage_of_a_failure_is_read_from_its_traceback(tmp_path):
    (tmp_path / "last.pt").mkdir()  # a folder where the checkpoint goes
    with pytest.raises(IsADirectoryError) as raised:
        checkpoints.save_atomically({"epoch": 0}, tmp_path / "last.pt")
    assert failure_stage(raised.tb, "train") == Stage.CHECKPOINT
    with pytest.raises(ZeroDivisionError) as raised:
        _ = 1 / 0
    assert failure_stage(raised.tb, "train") == Stage.TRAINING
    assert failure_stage(raised.tb, "evaluate") == Stage.TEST_EVALUATION
