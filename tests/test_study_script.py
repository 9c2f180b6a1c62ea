"""study/run_study.py: the full study in resumable chunks, tried at a tiny size on the CPU."""

import json
import os
import subprocess
import sys
import tarfile

import pytest

from tests.conftest import ROOT, cli, epoch_metrics, rows, write_sweep

TINY = {"params": {"epochs": 3, "batch_size": 50, "hidden": 8}, "grid": {"lr": [0.05, 0.1]}}


@pytest.mark.slow
def test_chunks_of_a_few_seconds_end_with_the_numbers_of_one_uninterrupted_run(tmp_path, data_dir):
    sweep = write_sweep(tmp_path, **TINY)
    reference = tmp_path / "reference"
    reference.mkdir()
    cli("run", str(sweep), "--db", str(reference / "results.db"), cwd=reference, data_dir=data_dir, check=True)
    state = tmp_path / "state.tar.gz"
    command = [
        sys.executable,
        "study/run_study.py",
        "--state",
        str(state),
        "--chunk-seconds",
        "25",
        "--allow-dirty",
        "--grids",
        str(sweep),
        "--",
        "--data-dir",
        str(data_dir),
    ]
    codes = []
    while not codes or codes[-1] == 3:
        assert len(codes) < 10, codes
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ), timeout=300)
        codes.append(result.returncode)
        summary = json.loads(result.stdout.splitlines()[-1])
    assert codes[-1] == 0 and 3 in codes[:-1] and summary["finished"], (codes, result.stderr[-2000:])
    with tarfile.open(state) as archive:
        archive.extractall(tmp_path / "final", filter="data")
    db = tmp_path / "final" / "results.db"
    grid = rows(db, "SELECT key FROM trials t JOIN sweep_trials s ON s.trial_key = t.key WHERE s.sweep_id = 1")
    assert {k: v for k, v in epoch_metrics(db).items() if (k[0],) in grid} == epoch_metrics(reference / "results.db")
    selected_lr = rows(
        reference / "results.db",
        "SELECT json_extract(t.config, '$.params.lr') FROM sweeps s JOIN trials t ON t.key = s.selected_trial",
    )
    replicates = rows(
        db,
        "SELECT t.seed, json_extract(t.config, '$.params.lr'), t.status FROM trials t "
        "JOIN sweep_trials m ON m.trial_key = t.key JOIN sweeps s ON s.id = m.sweep_id "
        "WHERE s.name = 'small_seeds' ORDER BY t.seed",
    )
    assert replicates == [(seed, selected_lr[0][0], "done") for seed in (0, 1, 2, 3, 4)]  # seed 0: the grid's own trial
