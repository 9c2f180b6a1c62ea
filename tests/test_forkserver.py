"""A forkserver that dies while starting (``EOFError: unexpected EOF`` where a worker is forked) is replaced and
the run goes on; one that keeps dying stops the run with one ``error:`` line, never a traceback. The forkserver
really dies: a ``sitecustomize`` on the path ends the process that ``multiprocessing`` starts as the forkserver,
before it preloads anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, rows, write_sweep

DYING_FORKSERVER = """
import os
import sys

if "multiprocessing.forkserver" in " ".join(sys.orig_argv):  # this process is the forkserver, starting
    marker = os.path.join({folder!r}, "forkserver-started")
    if {always!r} or not os.path.exists(marker):
        open(marker, "a").close()
        os._exit(1)
"""


def run_with_dying_forkserver(tmp_path: Path, data_dir: Path, always: bool) -> subprocess.CompletedProcess:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(DYING_FORKSERVER.format(folder=str(tmp_path), always=always))
    sweep = write_sweep(tmp_path, grid={"lr": [0.05]}, params={"epochs": 1, "batch_size": 50, "hidden": 8})
    command = [sys.executable, "-m", "gridsearch", "run", str(sweep), "--data-dir", str(data_dir), "--plain"]
    env = dict(os.environ, PYTHONPATH=f"{hook}{os.pathsep}{ROOT}")
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_a_forkserver_that_dies_once_is_replaced(tmp_path, data_dir):
    result = run_with_dying_forkserver(tmp_path, data_dir, always=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "forkserver-started").exists()  # it did die once
    assert rows(tmp_path / "results.db", "SELECT status FROM trials") == [("done",)]


def test_a_forkserver_that_keeps_dying_is_one_error_line(tmp_path, data_dir):
    result = run_with_dying_forkserver(tmp_path, data_dir, always=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "forkserver" in line and "died while starting" in line and "run the same command again" in line
