"""A disk that fills mid-run, as an outage: the artifacts disk mid-epoch and mid-checkpoint, the database's disk
mid-write. No trial fails and none starts into the full disk; the run waits for space (``--db-wait``) and ends as
undisturbed once there is some, or stops in one line naming the folder and the space it needs, and the same
command run again ends as undisturbed.

Each disk is a small tmpfs (root only: these tests are slow, and ``.ci/run`` runs them), filled by a file the test
writes until the disk is full. Real processes, real files.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import rows, write_sweep
from tests.test_faults import wait_for
from tests.test_outages import LONGER, contents, launch, longer_reference, sqlite_url  # noqa: F401  (a fixture)

pytestmark = pytest.mark.slow

NOTHING_FAILED_OR_RUNNING = "SELECT COUNT(*) FROM trials WHERE status IN ('failed', 'running')"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str, int], Path]]:
    """``mount(name, megabytes)``: a tmpfs of that size at ``tmp_path / name`` (root only), unmounted after."""
    mounted: list[Path] = []

    def mount(name: str, megabytes: int) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)]
        if subprocess.run(command, capture_output=True).returncode != 0:
            if os.environ.get("CI"):
                pytest.fail("cannot mount a tmpfs: the full-disk tests need root")
            pytest.skip("cannot mount a small tmpfs here (needs root)")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` with one file until at most ``leave`` bytes are free; the file."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while (free := os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize) > leave:
            os.write(descriptor, b"\0" * min(free - leave, 1 << 16) if leave else b"\0" * (1 << 16))
    except OSError:  # full
        pass
    finally:
        os.close(descriptor)
    return filler


def test_an_artifacts_disk_that_fills_mid_epoch_is_waited_out_and_the_sweep_ends_as_undisturbed(
    longer_reference,  # noqa: F811
    small_disk,
    tmp_path,
    data_dir,
):
    """Before: every trial failed with ``OSError: [Errno 28]`` (the atomic write named no file), new trials kept
    starting into the full disk, and a rerun once space was back said "no trial finished"."""
    disk = small_disk("artifacts", 9)
    write_sweep(tmp_path, **LONGER)
    db = tmp_path / "results.db"
    run = launch(tmp_path, data_dir, "--artifacts", str(disk))
    wait_for(db, "SELECT COUNT(*) FROM epochs", run.process)
    filler = fill(disk)  # the trial is training its second epoch: its next checkpoint finds the disk full
    line = run.wait_for("is full")
    assert f"artifacts folder {disk} is full (" in line and "MB needed to go on); starting nothing new" in line
    assert rows(db, NOTHING_FAILED_OR_RUNNING) == [(0,)]  # interrupted, and nothing started into the full disk
    ((error,),) = rows(db, "SELECT error FROM trials WHERE status = 'interrupted'")
    assert "No space left on device" in error and "(stage: checkpoint)" in error and "\n" not in error
    filler.unlink()
    code, err = run.finish()
    assert code == 0, err
    assert f"artifacts folder {disk} has room again after" in err and "Traceback" not in err
    assert not list(disk.rglob("*.tmp"))
    assert contents(sqlite_url(db)) == contents(sqlite_url(longer_reference))


def test_an_artifacts_disk_full_mid_checkpoint_past_db_wait_stops_in_one_line_and_a_rerun_ends_as_undisturbed(
    longer_reference,  # noqa: F811
    small_disk,
    tmp_path,
    data_dir,
):
    disk = small_disk("artifacts", 9)
    write_sweep(tmp_path, **LONGER)
    db = tmp_path / "results.db"
    run = launch(tmp_path, data_dir, "--artifacts", str(disk), "--db-wait", "2")
    wait_for(db, "SELECT COUNT(*) FROM epochs", run.process)
    filler = fill(disk, leave=200_000)  # room for part of a checkpoint (a resume checkpoint is about 630 kB)
    code, err = run.finish()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and "Traceback" not in err, err
    assert len(errors) == 1 and errors[0].startswith(f"error: artifacts folder {disk} is full: "), errors
    assert "MB needed to go on" in errors[0] and "its trials are resumable" in errors[0]
    assert rows(db, NOTHING_FAILED_OR_RUNNING) == [(0,)]
    assert rows(db, "SELECT COUNT(*) FROM evaluations") == [(0,)]
    assert not list(disk.rglob("*.tmp"))  # the checkpoint that did not fit left nothing behind
    filler.unlink()
    code, err = launch(tmp_path, data_dir, "--artifacts", str(disk)).finish()
    assert code == 0, err
    assert contents(sqlite_url(db)) == contents(sqlite_url(longer_reference))


@pytest.mark.parametrize("db_wait", [None, "2"], ids=["waited-out", "past-db-wait"])
def test_a_database_disk_that_fills_mid_write_is_an_outage(
    longer_reference,  # noqa: F811
    small_disk,
    tmp_path,
    data_dir,
    db_wait,
):
    """Before: a 60-line traceback ending in "database or disk is full" (from a heartbeat write), exit 1."""
    disk = small_disk("database", 4)
    db = disk / "results.db"
    write_sweep(tmp_path, **LONGER)
    options = ["--db", str(db), "--artifacts", str(tmp_path / "runs")]
    run = launch(tmp_path, data_dir, *options, *(["--db-wait", db_wait] if db_wait else []))
    wait_for(db, "SELECT COUNT(*) FROM epochs", run.process)
    filler = fill(disk)  # the next epoch's record (or heartbeat) finds the disk full
    line = run.wait_for("unavailable")
    assert f"database {db} unavailable (its disk is full: " in line
    assert f"MB free in {disk}, about 4.1 MB needed" in line
    if db_wait is None:
        filler.unlink()
        code, err = run.finish()
        assert code == 0 and f"database {db} is back after" in err, err
    else:
        code, err = run.finish()
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 1 and len(errors) == 1 and "its disk is full" in errors[0], err
        assert "run the same command again once there is room on its disk" in errors[0]
        filler.unlink()
        code, err = launch(tmp_path, data_dir, *options).finish()
        assert code == 0, err
    assert "Traceback" not in err
    assert contents(sqlite_url(db)) == contents(sqlite_url(longer_reference))
