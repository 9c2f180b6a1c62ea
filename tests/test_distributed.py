"""The distributed engine for real: a PostgreSQL server and a Dask cluster (a scheduler and two worker
processes) on loopback, started here; a Dask worker is killed mid-trial."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy

from tests.conftest import ROOT, cli, epoch_metrics, gridsearch, needs, rows, write_sweep

POSTGRES_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))  # Debian's layout


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class PostgresServer:
    """A throw-away PostgreSQL server on a free loopback port (run as user postgres when we are root)."""

    folder: Path
    binaries: Path
    port: int
    as_user: list[str]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://gridsearch@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str, check: bool = True) -> None:
        """Run ``pg_ctl`` on the server's data folder (``start`` and ``restart`` with its options)."""
        options = [
            "-l",
            str(self.folder / "log"),
            "-o",
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1",
        ]
        subprocess.run(
            [*self.as_user, str(self.binaries / "pg_ctl"), "-D", str(self.folder / "data"), "-w", *options, *args],
            check=check,
            capture_output=True,
        )


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A new :class:`PostgresServer`, started; stopped and removed at the end."""
    initdb = POSTGRES_BINS[-1] if POSTGRES_BINS else Path(shutil.which("initdb") or "/nonexistent")
    if not initdb.exists():
        needs("PostgreSQL", "apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        needs("psycopg", "pip install -e '.[test]'")
    folder = Path(tempfile.mkdtemp(prefix="gridsearch-pg-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(folder, "postgres")
    server = PostgresServer(folder, initdb.parent, _free_port(), as_user)
    subprocess.run(
        [*as_user, str(initdb), "-D", str(folder / "data"), "-U", "gridsearch", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    server.pg_ctl("start")
    try:
        yield server
    finally:
        server.pg_ctl("-m", "immediate", "stop", check=False)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """The URL of a throw-away PostgreSQL server's database."""
    with postgres_server() as server:
        yield server.url


@contextmanager
def local_dask_cluster(workers: int = 2, **env: str) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """A Dask scheduler and ``workers`` single-threaded worker processes (no nanny: a killed worker stays dead) on
    loopback, the workers' environment with ``env``; its address and the workers' processes."""
    pytest.importorskip("distributed")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    environment = dict(os.environ, PYTHONPATH=str(ROOT))
    dask = [sys.executable, "-c", "from dask.cli import run_cli; run_cli()"]
    processes = [
        subprocess.Popen(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            env=environment,
            stderr=subprocess.DEVNULL,
        )
    ]
    processes += [
        subprocess.Popen(
            [*dask, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", f"w{i}"],
            env=dict(environment, **env),
            stderr=subprocess.DEVNULL,
        )
        for i in range(workers)
    ]
    try:
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=60)
        yield address, processes[1:]
    finally:
        for process in processes:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """A Dask scheduler and two worker processes."""
    with local_dask_cluster() as cluster:
        yield cluster


def _parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.mark.faults
def test_dask_and_postgres_survive_a_killed_worker(
    tmp_path: Path, data_dir: Path, postgres_url: str, dask_cluster: tuple[str, list[subprocess.Popen]]
) -> None:
    address, dask_workers = dask_cluster
    sweep = write_sweep(
        tmp_path,
        dataset={"train_size": 600, "val_size": 200, "test_size": 200},
        params={"epochs": 3, "batch_size": 50, "hidden": 32, "patience": 5},
    )
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gridsearch",
            "run",
            str(sweep),
            "--executor",
            "dask",
            "--scheduler",
            address,
            "--db",
            postgres_url,
            "--artifacts",
            str(tmp_path / "runs"),
            "--data-dir",
            str(data_dir),
            "--plain",
        ],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    database = sqlalchemy.create_engine(postgres_url)
    dask_pids = {process.pid for process in dask_workers}
    killed = None
    deadline = time.monotonic() + 240
    while killed is None and time.monotonic() < deadline and run.poll() is None:
        try:
            with database.connect() as connection:
                running = connection.execute(
                    sqlalchemy.text(
                        "SELECT key, worker_pid FROM trials WHERE status = 'running' AND epochs_run = 1 "
                        "AND worker_pid IS NOT NULL"
                    )
                ).fetchall()
        except sqlalchemy.exc.ProgrammingError:  # the run has not created the tables yet
            running = []
        for key, pid in running:
            try:
                parent = _parent_pid(pid)
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if parent in dask_pids:  # the trial's subprocess runs under this Dask worker: kill the worker
                os.kill(parent, signal.SIGKILL)
                killed = key
                break
        time.sleep(0.2)
    output, _ = run.communicate(timeout=300)
    assert killed is not None, "no trial was caught mid-run:\n" + output
    assert run.returncode == 0, output
    with database.connect() as connection:
        trials = connection.execute(sqlalchemy.text("SELECT key, status, attempts, epochs_run FROM trials")).fetchall()
        epochs = connection.execute(
            sqlalchemy.text(
                "SELECT trial_key, epoch, train_loss, train_accuracy, val_loss, val_accuracy, lr FROM epochs"
            )
        ).fetchall()
        selected = connection.execute(sqlalchemy.text("SELECT selected_trial FROM sweeps")).scalar_one()
    database.dispose()
    assert len(trials) == 4 and {status for _, status, _, _ in trials} == {"done"}
    assert all(attempts == 1 and epochs_run == 3 for _, _, attempts, epochs_run in trials)  # once each
    assert len(epochs) == 4 * 3

    # The killed trial resumed from its checkpoint: every number equals a local, undisturbed run.
    local = tmp_path / "local.db"
    artifacts = str(tmp_path / "local")
    cli("run", str(sweep), "--db", str(local), "--artifacts", artifacts, cwd=tmp_path, data_dir=data_dir, check=True)
    assert {(key, epoch): list(rest) for key, epoch, *rest in epochs} == epoch_metrics(local)
    assert rows(local, "SELECT selected_trial FROM sweeps") == [(selected,)]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--executor", "dask", "--scheduler", "tcp://127.0.0.1:1"], "--scheduler tcp://127.0.0.1:1: cannot reach"),
        (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler needs --executor dask"),
        (["--db", "postgresql+psycopg://nobody@127.0.0.1:1/none"], "--db"),
    ],
)
def test_bad_cluster_or_database_addresses_are_one_line_errors(
    tmp_path: Path, data_dir: Path, args: list[str], message: str
) -> None:
    sweep = str(write_sweep(tmp_path))
    if args[0] == "--executor":  # a real process: Dask's own threads and logging must not add a line
        result = gridsearch("run", sweep, *args, cwd=tmp_path, data_dir=data_dir, timeout=120)
    else:
        result = cli("run", sweep, *args, "--executor", "local", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
