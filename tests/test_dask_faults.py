"""A Dask cluster lost mid-run: its scheduler killed, or its last worker. The run ends its tasks and their trial
processes within seconds, leaves no trial running and says so in one line (exit 1); run again against a new
cluster, it ends as undisturbed. An address where no scheduler listens is refused at once. Real ``dask scheduler``
and ``dask worker`` processes, a real SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, cli, rows, write_sweep
from tests.test_distributed import _free_port
from tests.test_faults import wait_for
from tests.test_outages import LONGER, contents, launch, longer_reference, sqlite_url  # noqa: F401  (a fixture)

pytestmark = pytest.mark.slow
RUNNING = "SELECT worker_pid FROM trials WHERE status = 'running' AND epochs_run >= 1 AND worker_pid IS NOT NULL"


@dataclass
class Cluster:
    address: str
    scheduler: subprocess.Popen
    workers: list[subprocess.Popen]


@contextmanager
def dask_cluster(workers: int = 1) -> Iterator[Cluster]:
    """A Dask scheduler and ``workers`` single-threaded worker processes (no nanny: a killed one stays dead)."""
    pytest.importorskip("distributed")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    dask = [sys.executable, "-c", "from dask.cli import run_cli; run_cli()"]
    scheduler = subprocess.Popen(
        [*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    started = [
        subprocess.Popen(
            [*dask, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", f"w{i}"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        for i in range(workers)
    ]
    from distributed import Client

    with Client(address, timeout=60) as client:
        client.wait_for_workers(workers, timeout=120)
    try:
        yield Cluster(address, scheduler, started)
    finally:
        for process in [scheduler, *started]:
            process.kill()
            process.wait()


def run_on(cluster: Cluster, folder: Path, data_dir: Path):
    return launch(
        folder, data_dir, "--executor", "dask", "--scheduler", cluster.address, "--artifacts", str(folder / "runs")
    )


def gone_within(pid: int, seconds: float) -> bool:
    """Whether process ``pid`` has ended (or is a zombie) within ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("lost", ["scheduler", "every worker"])
def test_a_lost_dask_cluster_ends_the_run_in_one_line_and_a_rerun_on_a_new_one_ends_as_undisturbed(
    longer_reference,  # noqa: F811
    tmp_path,
    data_dir,
    lost,
):
    write_sweep(tmp_path, **LONGER)
    db = tmp_path / "results.db"
    with dask_cluster() as cluster:
        run = run_on(cluster, tmp_path, data_dir)
        wait_for(db, RUNNING, run.process)
        ((trial_pid,),) = rows(db, RUNNING)
        killed = time.monotonic()
        (cluster.scheduler if lost == "scheduler" else cluster.workers[0]).send_signal(signal.SIGKILL)
        # before (the scheduler): the trial trained on for ~22 s, then a 40-line ClosedClientError traceback
        assert gone_within(trial_pid, 10)
        code, err = run.finish()
        ended = time.monotonic() - killed
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and "Traceback" not in err, err
    what = "the Dask scheduler " if lost == "scheduler" else "the Dask cluster at "
    assert len(errors) == 1 and errors[0].startswith(f"error: {what}{cluster.address}"), err
    assert "the run stopped, its trials are interrupted and resumable" in errors[0]
    assert ended < 30
    assert rows(db, "SELECT COUNT(*) FROM trials WHERE status = 'running'") == [(0,)]
    assert rows(db, "SELECT COUNT(*) FROM trials WHERE status = 'failed'") == [(0,)]
    with dask_cluster() as cluster:
        code, err = run_on(cluster, tmp_path, data_dir).finish()
    assert code == 0, err
    assert contents(sqlite_url(db)) == contents(sqlite_url(longer_reference))


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:1", "127.0.0.1:1"])
def test_an_unreachable_scheduler_is_refused_within_5_s(tmp_path, data_dir, address):
    """Before: 22 s (Dask's client retries until its timeout)."""
    started = time.monotonic()
    result = cli(
        "run", str(write_sweep(tmp_path)), "--executor", "dask", "--scheduler", address, cwd=tmp_path, data_dir=data_dir
    )
    assert time.monotonic() - started < 5
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: --scheduler {address}: cannot reach a Dask scheduler there (")
    assert not (tmp_path / "results.db").exists()
