"""Outages around a run: the database locked, stopped or restarted; the coordinator ended by an exception;
the artifacts folder removed or made unwritable while trials train.

A transient outage is ridden out and the sweep ends identical to an undisturbed run (``reference``); one
that lasts stops the run with one line and exit 1, and running the same command again ends identical too.
Real processes, a real PostgreSQL server, real files.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy

from gridsearch.training import checkpoints
from tests.conftest import cli, rows, write_sweep
from tests.test_distributed import PostgresServer, postgres_server
from tests.test_faults import (
    TINY,
    assert_same_as,
    reference,  # noqa: F401  (a fixture)
    start_run,
    wait_for,
)

pytestmark = pytest.mark.faults
LONGER = {**TINY, "name": "longer", "params": {**TINY["params"], "epochs": 4}, "grid": {"lr": [0.05, 0.1, 0.2]}}
"""Three trials of four epochs, one worker: a fault after the first epoch finds work left."""
RESULTS = "SELECT key, status, best_epoch, epochs_run, val_accuracy, val_loss FROM trials ORDER BY key"
EPOCHS = "SELECT trial_key, epoch, train_loss, val_loss, val_accuracy FROM epochs ORDER BY trial_key, epoch"
SELECTION = (
    "SELECT s.selected_trial, e.samples, e.accuracy, e.loss, e.errors FROM sweeps s "
    "JOIN evaluations e ON e.trial_key = s.selected_trial AND e.name = 'test'"
)


class Lines:
    """A run's standard error, read as it comes by a thread; wait for a line containing a text."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.lines.append("")  # end of the stream
            self.changed.notify_all()

    def wait_for(self, text: str, timeout: float = 300) -> str:
        """The first line containing ``text``; fails if the stream ends first."""
        with self.changed:
            found = self.changed.wait_for(lambda: any(text in line for line in self.lines) or "" in self.lines, timeout)
            match = next((line for line in self.lines if text in line), None)
        assert found and match is not None, f"the run never said {text!r}:\n{self.text()}"
        return match

    def finish(self, timeout: float = 300) -> tuple[int, str]:
        """The run's exit code and everything it wrote on standard error."""
        self.process.wait(timeout)
        self.thread.join(timeout)
        return self.process.returncode, self.text()

    def text(self) -> str:
        with self.changed:
            return "".join(self.lines)


def launch(folder: Path, data_dir: Path, *extra: str) -> Lines:
    process = start_run(folder, data_dir, *extra)
    threading.Thread(target=process.stdout.read, daemon=True).start()  # the summary table, unread
    return Lines(process)


@pytest.fixture(scope="module")
def longer_reference(tmp_path_factory, data_dir) -> Path:
    """LONGER run once, undisturbed; its results.db."""
    folder = tmp_path_factory.mktemp("longer")
    cli("run", str(write_sweep(folder, **LONGER)), cwd=folder, data_dir=data_dir, check=True)
    return folder / "results.db"


def contents(url: str) -> dict[str, list[tuple]]:
    """What a run leaves in the database at ``url`` that must not depend on outages."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                sql: [tuple(row) for row in connection.exec_driver_sql(sql)] for sql in (RESULTS, EPOCHS, SELECTION)
            }
    finally:
        engine.dispose()


def sqlite_url(db: Path) -> str:
    return f"sqlite:///{db}"


# -- SQLite's write lock ---------------------------------------------------------------------------


@pytest.fixture
def write_lock() -> Iterator[Callable]:
    """``take(db)`` holds SQLite's write lock on ``db`` (as another program would) until the test ends or
    ``release()``."""
    held: list[sqlite3.Connection] = []

    def take(db: Path) -> None:
        connection = sqlite3.connect(db, isolation_level=None, timeout=60)
        connection.execute("BEGIN IMMEDIATE")
        held.append(connection)

    def release() -> None:
        while held:
            connection = held.pop()
            connection.rollback()
            connection.close()

    take.release = release  # type: ignore[attr-defined]
    yield take
    release()


def test_a_held_sqlite_write_lock_is_waited_out_and_the_sweep_ends_as_undisturbed(
    reference,  # noqa: F811
    tmp_path,
    data_dir,
    write_lock,
):
    write_sweep(tmp_path, **TINY)
    db = tmp_path / "results.db"
    run = launch(tmp_path, data_dir)
    wait_for(db, "SELECT COUNT(*) FROM epochs", run.process)
    write_lock(db)
    line = run.wait_for("unavailable")  # before: "database is locked" and a traceback after 60 s
    assert f"database {db} unavailable (database is locked); waiting up to 300 s" in line
    write_lock.release()
    code, err = run.finish()
    assert code == 0, err
    assert f"database {db} is back after" in err and "Traceback" not in err
    assert_same_as(db, reference)


def test_a_lock_held_past_db_wait_stops_the_run_in_one_line_and_a_rerun_ends_as_undisturbed(
    reference,  # noqa: F811
    tmp_path,
    data_dir,
    write_lock,
):
    write_sweep(tmp_path, **TINY)
    db = tmp_path / "results.db"
    run = launch(tmp_path, data_dir, "--db-wait", "1")
    wait_for(db, "SELECT COUNT(*) FROM epochs", run.process)
    write_lock(db)
    code, err = run.finish()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and "Traceback" not in err, err
    assert len(errors) == 1 and errors[0].startswith(f"error: database {db} unavailable for ")
    assert "(database is locked); the run stopped, its trials are resumable" in errors[0]
    assert "--db-wait, now 1 s" in errors[0]
    write_lock.release()
    code, err = launch(tmp_path, data_dir).finish()
    assert code == 0, err
    assert_same_as(db, reference)


# -- a PostgreSQL server stopped and restarted -------------------------------------------------------


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    with postgres_server() as started:
        yield started


def test_postgresql_stopped_then_restarted_mid_run_is_ridden_out(longer_reference, server, tmp_path, data_dir):
    write_sweep(tmp_path, **LONGER)
    engine = sqlalchemy.create_engine(server.url)

    def recorded(sql: str) -> int:
        with engine.connect() as connection:
            return connection.exec_driver_sql(sql).scalar() or 0

    def wait_until(sql: str) -> None:
        while not _tries(recorded, sql):
            assert run.process.poll() is None, run.text()
            time.sleep(0.05)

    run = launch(tmp_path, data_dir, "--db", server.url)
    wait_until("SELECT COUNT(*) FROM epochs")
    server.pg_ctl("-m", "fast", "stop")  # stopped mid-trial; before: a traceback in record_epoch, exit 1
    run.wait_for("unavailable")
    server.pg_ctl("start")
    run.wait_for("is back after")
    wait_until("SELECT COUNT(*) FROM trials WHERE status = 'done'")
    server.pg_ctl("-m", "fast", "restart")  # restarted while the next trial trains
    code, err = run.finish()
    engine.dispose()
    assert code == 0, err
    assert "Traceback" not in err
    assert contents(server.url) == contents(sqlite_url(longer_reference))


def _tries(recorded, sql: str) -> int:
    """``recorded(sql)``, 0 while the server does not answer."""
    try:
        return recorded(sql)
    except sqlalchemy.exc.SQLAlchemyError:
        return 0


# -- an exception in the coordinator -----------------------------------------------------------------


def test_an_exception_in_the_coordinator_ends_its_worker_at_once(tmp_path, data_dir):
    epochs = 40
    write_sweep(tmp_path, **{**TINY, "params": {**TINY["params"], "epochs": epochs, "patience": epochs}})
    db = tmp_path / "results.db"
    run = launch(tmp_path, data_dir)
    wait_for(db, "SELECT COUNT(*) FROM epochs", run.process)
    (key, worker) = rows(db, "SELECT key, worker_pid FROM trials WHERE status = 'running'")[0]
    with sqlite3.connect(db, timeout=60) as connection:  # the coordinator's next epoch cannot be stored
        connection.execute("ALTER TABLE epochs RENAME TO epochs_aside")
    code, err = run.finish()
    assert code == 1 and "no such table: epochs" in err
    gone = time.monotonic() + 5  # the bound: the worker is gone within 5 s of the coordinator
    while Path(f"/proc/{worker}").exists() and time.monotonic() < gone:
        time.sleep(0.05)
    assert not Path(f"/proc/{worker}").exists()
    trained = len(checkpoints.load_verified(tmp_path / "runs" / key / "last.pt", "cpu")["history"])
    recorded = rows(db, "SELECT COUNT(*) FROM epochs_aside")[0][0]
    assert trained <= recorded + 2 < epochs  # before: the worker trained all 40 epochs, recording none


# -- the artifacts folder ------------------------------------------------------------------------------


def test_a_run_folder_removed_mid_trial_is_trained_again_and_the_right_trial_wins(longer_reference, tmp_path, data_dir):
    write_sweep(tmp_path, **LONGER)
    db = tmp_path / "results.db"
    ((best,),) = rows(longer_reference, "SELECT selected_trial FROM sweeps")
    run = launch(tmp_path, data_dir)
    wait_for(
        db, f"SELECT epochs_run BETWEEN 1 AND 2 FROM trials WHERE key = '{best}' AND status = 'running'", run.process
    )
    shutil.rmtree(tmp_path / "runs")  # before: the trial failed and another one was selected and tested
    code, err = run.finish()
    assert code == 0, err
    assert f"trial {best} interrupted: FileNotFoundError" in err and "its run folder failed, not the trial" in err
    assert contents(sqlite_url(db)) == contents(sqlite_url(longer_reference))


def test_an_artifacts_folder_made_unwritable_stops_the_run_in_one_line_and_a_rerun_ends_as_undisturbed(
    longer_reference, tmp_path, data_dir
):
    write_sweep(tmp_path, **LONGER)
    db = tmp_path / "results.db"
    run = launch(tmp_path, data_dir)
    wait_for(db, "SELECT COUNT(*) FROM epochs", run.process)
    runs, aside = tmp_path / "runs", tmp_path / "runs-aside"
    runs.rename(aside)  # a file where the folder was: unwritable, also for root (who ignores permissions)
    runs.write_text("not a folder")
    code, err = run.finish()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and "Traceback" not in err, err
    assert errors == [
        f"error: artifacts folder {runs} cannot be written (File exists); the run stopped, its trials are resumable: "
        "make the folder writable (or free space) and run the same command again"
    ]
    assert rows(db, "SELECT COUNT(*) FROM evaluations") == [(0,)] and rows(
        db, "SELECT COUNT(*) FROM trials WHERE status = 'failed'"
    ) == [(0,)]
    assert rows(db, "SELECT COUNT(*) FROM trials WHERE status = 'running'") == [(0,)]
    runs.unlink()
    aside.rename(runs)
    code, err = launch(tmp_path, data_dir).finish()
    assert code == 0, err
    assert contents(sqlite_url(db)) == contents(sqlite_url(longer_reference))


def test_selection_waits_for_a_trial_whose_run_folder_keeps_failing(reference, tmp_path, data_dir):  # noqa: F811
    """A run folder that fails on every attempt (a folder where its checkpoint goes) leaves its trial for
    the next run, which then ends as undisturbed; meanwhile nothing is selected."""
    write_sweep(tmp_path, **TINY)
    db = tmp_path / "results.db"
    ((best,),) = rows(reference, "SELECT selected_trial FROM sweeps")
    (tmp_path / "runs" / best / "last.pt" / "in-the-way").mkdir(parents=True)
    code, err = launch(tmp_path, data_dir).finish()
    assert code == 1 and "Traceback" not in err, err
    assert err.count(f"trial {best} interrupted: IsADirectoryError") == 3  # the first attempt, then 2 more
    assert "its run folder failed again: left for the next run (selection waits for it)" in err
    assert rows(db, "SELECT selected_trial FROM sweeps") == [(None,)]
    assert rows(db, "SELECT COUNT(*) FROM evaluations") == [(0,)]
    assert rows(db, f"SELECT status FROM trials WHERE key = '{best}'") == [("interrupted",)]
    shutil.rmtree(tmp_path / "runs" / best / "last.pt")
    code, err = launch(tmp_path, data_dir).finish()
    assert code == 0, err
    assert_same_as(db, reference)
