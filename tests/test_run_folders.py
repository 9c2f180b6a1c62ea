"""Run folders belong to a database (real runs on a real MNIST subset, real SQLite files): a fresh database
beside another database's run folders trains its own trials in a folder of its own, never resuming the other's
checkpoints; a database made before databases had ids keeps the shared ``runs/`` its checkpoints are in."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from gridsearch.store.connection import artifacts_dir
from gridsearch.store.storage import Storage
from tests.conftest import ROOT, cli, epoch_metrics, rows, write_sweep

TINY = {
    "architecture": "mlp",
    "dataset": {"train_size": 300, "val_size": 200, "test_size": 200},
    "params": {"epochs": 2, "batch_size": 50},
    "grid": {"lr": [0.05, 0.1]},
}


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.pt")}


def test_a_fresh_database_beside_another_databases_run_folders_trains_its_own(tmp_path, data_dir):
    sweep = write_sweep(tmp_path, **TINY)
    cli("run", str(sweep), cwd=tmp_path, data_dir=data_dir, check=True)
    keys = [key for (key,) in rows(tmp_path / "results.db", "SELECT key FROM trials")]
    before = digests(tmp_path / "runs")
    assert sorted({name.split("/")[0] for name in before}) == sorted(keys)

    fresh = cli("run", str(sweep), "--db", "other.db", cwd=tmp_path, data_dir=data_dir, check=True)
    assert "resumed" not in fresh.stderr  # it was "resumed after epoch 1", and nothing trained
    assert all((tmp_path / "runs" / "other" / key / "best.pt").exists() for key in keys)
    assert digests(tmp_path / "runs") == before | {f"other/{k}": v for k, v in digests(tmp_path / "runs/other").items()}
    assert epoch_metrics(tmp_path / "other.db") == epoch_metrics(tmp_path / "results.db")  # trained, same numbers
    assert rows(tmp_path / "other.db", "SELECT count(*) FROM epochs") == [(4,)]


def test_the_default_run_folder_is_named_after_the_database_unless_it_predates_database_ids(tmp_path):
    assert artifacts_dir(str(tmp_path / "results.db")) == tmp_path / "runs"
    assert artifacts_dir(str(tmp_path / "scale.db")) == tmp_path / "runs" / "scale"
    assert artifacts_dir(str(tmp_path / "scale.db"), "elsewhere") == Path("elsewhere").resolve()
    Storage(str(tmp_path / "new.db")).close()
    assert artifacts_dir(str(tmp_path / "new.db")) == tmp_path / "runs" / "new"
    assert Storage(str(tmp_path / "new.db"), readonly=True).database_id is not None
    old = tmp_path / "old.db"  # made by gridsearch before schema ids: its trials' folders are in runs/
    shutil.copy(ROOT / "tests" / "fixtures" / "results-v2.sqlite3", old)
    assert Storage(str(old), readonly=True).database_id is None
    assert artifacts_dir(str(old)) == tmp_path / "runs"
