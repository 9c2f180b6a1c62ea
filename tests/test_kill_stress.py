"""A stress run: 30 kill -9 of the coordinator at random moments of a 6-trial TPE sweep (two workers), each run
resumed by the next; every run that gets to the end ends identical to an undisturbed run (the same points, epochs,
selection and test), and no trial ever fails (a kill is not the trial's fault) or is left without a reason."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import cli, epoch_metrics, rows, write_sweep
from tests.test_faults import RESULTS, SELECTION, TINY, kill_9, start_run
from tests.test_strategies import POINTS, SPACE

pytestmark = pytest.mark.slow

STRESS = {**TINY, "name": "stress", "grid": SPACE, "search": {"strategy": "tpe", "trials": 6, "batch": 2, "seed": 3}}
KILLS = 30


def snapshot(db: Path) -> dict[str, object]:
    return {
        "results": rows(db, RESULTS),
        "epochs": epoch_metrics(db),
        "selection": rows(db, SELECTION),
        "points": rows(db, POINTS),
    }


def test_30_kill_9_at_random_moments_of_a_tpe_sweep(tmp_path, data_dir):
    reference = tmp_path / "reference"
    reference.mkdir()
    cli("run", str(write_sweep(reference, **STRESS)), cwd=reference, data_dir=data_dir, check=True)
    expected = snapshot(reference / "results.db")
    assert len(expected["points"]) == 6 and len(expected["selection"]) == 1

    generator = random.Random(34)
    folder, kills, finished, longest = tmp_path / "stress", 0, 0, 0.0
    while kills < KILLS:
        if not folder.exists():  # a fresh sweep
            folder.mkdir()
            write_sweep(folder, **STRESS)
        db = folder / "results.db"
        run = start_run(folder, data_dir, "--workers", "2")
        started = time.monotonic()
        deadline = started + generator.uniform(0.5, max(longest, 30.0))  # the moment, up to a whole run's length
        while run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if run.poll() is None:
            kill_9(run)
            kills += 1
            failed = "SELECT key, error FROM trials WHERE status IN ('failed', 'timeout')"
            assert not db.exists() or rows(db, failed) == [], rows(db, failed)
            continue
        longest = max(longest, time.monotonic() - started)
        finish(run, db, expected)
        finished += 1
        shutil.rmtree(folder)
    if folder.exists():  # the last one killed: resumed to its end
        finish(start_run(folder, data_dir, "--workers", "2"), folder / "results.db", expected)
        finished += 1
    print(f"{kills} kill -9, {finished} sweeps finished identical to the undisturbed run")


def finish(run, db: Path, expected: dict[str, object]) -> None:
    """Wait for ``run``: it must select and test (no failure at all) and end identical to ``expected``."""
    out, err = run.communicate(timeout=900)
    assert run.returncode == 0, f"{out}\n{err}"
    assert snapshot(db) == expected
