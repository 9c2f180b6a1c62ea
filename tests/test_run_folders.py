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
    assert "resumed" not in fresh.stderr  # it was "resumed after epoch 2", and nothing trained
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


def test_each_run_folder_records_its_maker_and_a_reuse_on_purpose_says_whose_checkpoints_it_resumes(tmp_path, data_dir):
    from gridsearch import __version__
    from gridsearch.engine.devices import code_version
    from gridsearch.training.run_folders import RECORD, recorded

    sweep = write_sweep(tmp_path, **TINY)
    cli("run", str(sweep), cwd=tmp_path, data_dir=data_dir, check=True)
    maker = Storage(str(tmp_path / "results.db"), readonly=True).database_id
    keys = [key for (key,) in rows(tmp_path / "results.db", "SELECT key FROM trials")]
    made = {key: recorded(tmp_path / "runs" / key) for key in keys}
    assert made == {key: {"database_id": maker, "gridsearch": __version__, "code": code_version()} for key in keys}

    again = cli("run", str(sweep), cwd=tmp_path, data_dir=data_dir, check=True)  # its own folders: nothing said
    assert "made by" not in again.stdout + again.stderr

    borrowed = cli(  # another database pointed at the first one's run folders, on purpose
        "run", str(sweep), "--db", "other.db", "--artifacts", "runs", cwd=tmp_path, data_dir=data_dir, check=True
    )
    other = Storage(str(tmp_path / "other.db"), readonly=True).database_id
    assert other != maker
    said = [line.split("] ", 1)[1] for line in borrowed.stderr.splitlines() if "made by" in line]
    by = f"made by database {maker} with gridsearch {__version__}"
    by += "" if code_version() == __version__ else f", code {code_version()}"
    selected = Storage(str(tmp_path / "other.db"), readonly=True).selected_trial("small")
    assert sorted(said) == sorted(
        [
            *(f"trial {key} resumed after epoch 2, from checkpoints {by}" for key in keys),
            f"trial {selected}: testing the weights {by}",
        ]
    ), borrowed.stderr
    assert all(recorded(tmp_path / "runs" / key) == made[key] for key in keys)  # the first maker stays recorded
    assert not (tmp_path / "runs" / "other").exists() and (tmp_path / "runs" / keys[0] / RECORD).exists()
