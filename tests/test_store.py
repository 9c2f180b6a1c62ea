"""The results database on real SQLite files: databases made by older gridsearch versions, read-only opens
that write nothing, ``db upgrade``, ``query`` that can only read, and URLs whose password is never shown.

Fixtures: ``results-v1.sql`` (a ``.dump`` of a version-1 database) and ``results-v2.sqlite3``, the file
itself as the code before schema version 3 (commit 67b2891) left it after running a grid sweep ``old``
and a successive-halving sweep ``oldhalving`` (select: val_loss).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from gridsearch import cli
from gridsearch.errors import UserError
from gridsearch.store import views
from gridsearch.store.models import SCHEMA_VERSION
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import SHORT_KEY, TrialStatus
from tests.conftest import ROOT, rows, write_sweep

FIXTURES = ROOT / "tests" / "fixtures"
TABLES = ("meta", "sweeps", "trials", "sweep_trials", "trial_params", "epochs", "evaluations")


def main(*args: str, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """``gridsearch ARGS`` in this process: exit code, stdout, stderr."""
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def untouched(db: Path, before: str) -> bool:
    """Whether the file ``db`` is byte for byte as it was (``before``: its digest), with no -wal or -shm file
    left beside it."""
    return digest(db) == before and not [p for p in db.parent.iterdir() if p.name.endswith(("-wal", "-shm"))]


def files(folder: Path) -> list[str]:
    """The files in ``folder``."""
    return sorted(path.name for path in folder.iterdir())


def dump(db: Path) -> dict[str, list[tuple]]:
    return {table: rows(db, f"SELECT * FROM {table} ORDER BY 1, 2") for table in TABLES}


@pytest.fixture
def v2(tmp_path: Path) -> Path:
    """A copy of the version-2 database, with its sweep files beside it."""
    db = tmp_path / "results.db"
    shutil.copyfile(FIXTURES / "results-v2.sqlite3", db)
    for name, source in rows(db, "SELECT name, source FROM sweeps"):
        (tmp_path / f"{name}.yaml").write_text(source)
    return db


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    db = tmp_path / "results.db"
    with sqlite3.connect(db) as connection:
        connection.executescript((FIXTURES / "results-v1.sql").read_text())
    connection.close()
    return db


def read_only_commands(db: Path) -> list[list[str]]:
    return [
        ["status"],
        ["trials", "old"],
        ["trials", "oldhalving", "--format", "json"],
        ["best", "old"],
        ["best", "oldhalving", "--format", "json"],
        ["query", "SELECT key, status, config FROM trials ORDER BY key"],
        ["plan", str(db.parent / "old.yaml")],
    ]


# -- databases of older versions -------------------------------------------------------------------


def test_a_version_2_database_reads_unchanged_by_every_read_only_command_and_is_not_written(v2, capsys):
    before, content = digest(v2), dump(v2)
    outputs = {}
    for args in read_only_commands(v2):
        code, out, err = main(*args, "--db", str(v2), capsys=capsys)
        assert code == 0 and err == "", (args, err)
        outputs[args[0] + (args[1] if args[0] in ("trials", "best") else "")] = out
    selected = dict(rows(v2, "SELECT name, selected_trial FROM sweeps"))
    assert all(key[:SHORT_KEY] in outputs["status"] for key in selected.values())
    assert "done" in outputs["trialsold"] and selected["old"] in outputs["bestold"]
    # the halving sweep selects by val_loss: its last rung first, then the lowest loss
    trials = json.loads(outputs["trialsoldhalving"])
    assert [t["rung"] for t in trials] == [1, 0, 0] and trials[0]["key"] == selected["oldhalving"]
    assert trials[1]["val_loss"] <= trials[2]["val_loss"]
    best = json.loads(outputs["bestoldhalving"])
    ((accuracy, confusion),) = rows(
        v2, "SELECT accuracy, confusion FROM evaluations WHERE trial_key = ? AND name = 'test'", best["trial"]
    )
    assert best["test"]["accuracy"] == accuracy and best["test"]["confusion"] == json.loads(confusion)
    assert all(key in outputs["query"] for key in selected.values()) and "2 done" in outputs["plan"]
    # the web app reads it too
    from gridsearch.web.app import create_app

    with Storage(str(v2), readonly=True) as storage:
        client = create_app(storage, v2.parent / "runs").test_client()
        sweeps = client.get("/api/sweeps").get_json()["sweeps"]
        assert {s["name"]: s["selected_trial"] for s in sweeps} == selected
        assert client.get("/api/sweeps/oldhalving/trials").get_json()["trials"][0]["key"] == best["trial"]
    assert untouched(v2, before) and dump(v2) == content
    assert rows(v2, "SELECT value FROM meta") == [("2",)]


def test_storage_reads_a_version_2_database_as_typed_rows(v2):
    storage = Storage(str(v2), readonly=True)
    assert storage.upgraded_from is None
    row = storage.sweep("oldhalving")
    assert row.gridded_params == ["lr"] and row.search["strategy"] == "halving"
    trials = storage.trials("oldhalving")
    assert {t.status for t in trials} == {TrialStatus.DONE, TrialStatus.STOPPED}
    assert all(isinstance(t.config, dict) and t.config["select"] == "val_loss" for t in trials)
    of_sweep = (
        "SELECT {} FROM trials t JOIN sweep_trials st ON st.trial_key = t.key JOIN sweeps s ON s.id = st.sweep_id "
        "WHERE s.name = ? AND t.status = 'done'"
    )
    best = views.best_scores(storage)  # each sweep's best by the direction of its own metric
    assert best["oldhalving"] == ("val_loss", rows(v2, of_sweep.format("MIN(val_loss)"), "oldhalving")[0][0])
    assert best["old"] == ("val_accuracy", rows(v2, of_sweep.format("MAX(val_accuracy)"), "old")[0][0])
    evaluation = storage.evaluation(row.selected_trial, "test")
    assert evaluation is not None and len(evaluation.predictions) == evaluation.samples == 20


def test_a_short_key_finds_its_one_trial_and_a_prefix_of_several_finds_them_all(v2):
    storage = Storage(str(v2), readonly=True)
    keys = sorted(key for (key,) in rows(v2, "SELECT key FROM trials"))
    assert [row.key for row in storage.trials_starting(keys[0][:SHORT_KEY])] == [keys[0]]
    assert [row.key for row in storage.trials_starting("", limit=len(keys) + 1)] == keys
    assert storage.trials_starting("%") == [] and storage.trials_starting("zz") == []


def test_a_new_sqlite_database_has_the_tables_of_version_2_and_stores_json_as_the_same_text(v2, tmp_path):
    from gridsearch.spec.sweep import load_sweep

    db = tmp_path / "new.db"
    storage = Storage(str(db))
    for name in ("old", "oldhalving"):
        sweep = load_sweep(tmp_path / f"{name}.yaml")
        storage.save_sweep(sweep, list(sweep.trials()))
    schema = "SELECT type, name, sql FROM sqlite_master WHERE tbl_name NOT IN ('fronts', 'measurements') ORDER BY name"
    assert rows(db, schema) == rows(v2, schema)  # on SQLite version 3 changes nothing (JSON columns are TEXT),
    assert {name for (name,) in rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'")} == {  # 4 adds two
        *TABLES,
        "fronts",
        "measurements",
    }
    assert rows(db, "SELECT key FROM meta ORDER BY key") == [("database_id",), ("schema_version",)]
    assert rows(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    same = "SELECT trial_key, name, value, typeof(value) FROM trial_params ORDER BY 1, 2"
    assert rows(db, same) == rows(v2, same)  # e.g. lr_step 5.0 stays the text '5.0', not the integer 5
    same = "SELECT key, config, status FROM trials ORDER BY key"
    assert [row[:2] + ("pending",) for row in rows(v2, same)] == rows(db, same)


def test_a_version_3_database_is_read_as_it_is_and_db_upgrade_adds_the_tables_of_version_4(v2, tmp_path, capsys):
    """Version 4 only adds tables (a sweep's measurements and front): readers of a version-3 database do without
    them, untouched; ``db upgrade`` makes them exactly as a new database has them."""
    with sqlite3.connect(v2) as connection:  # on SQLite a version-2 file is a version-3 one (3 changed PostgreSQL)
        connection.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    connection.close()
    before = digest(v2)
    for args in read_only_commands(v2):
        code, _, err = main(*args, "--db", str(v2), capsys=capsys)
        assert code == 0 and err == "", (args, err)
    with Storage(str(v2), readonly=True) as storage:
        assert storage.front("old") == [] and storage.measurements(["x"], "inference_ms") == {}
    assert untouched(v2, before)
    assert main("db", "upgrade", "--db", str(v2), capsys=capsys)[0] == 0
    fresh = tmp_path / "fresh.db"
    Storage(str(fresh)).close()
    schema = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
    assert rows(v2, schema) == rows(fresh, schema)
    assert rows(v2, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(SCHEMA_VERSION),)]


def test_a_version_1_database_is_refused_by_read_only_commands_with_a_hint_and_left_alone(v1, capsys):
    before = digest(v1)
    (v1.parent / "old.yaml").write_text(rows(v1, "SELECT source FROM sweeps")[0][0])
    for args in read_only_commands(v1):
        code, out, err = main(*args, "--db", str(v1), capsys=capsys)
        assert code == 2 and err.count("\n") == 1 and out == "", (args, err)
        assert err == (
            f"error: --db {v1}: schema version 1 is older than this gridsearch's {SCHEMA_VERSION}; "
            f"upgrade it first with: gridsearch db upgrade --db {v1}\n"
        )
    assert untouched(v1, before) and rows(v1, "SELECT value FROM meta") == [("1",)]
    with pytest.raises(UserError, match="gridsearch db upgrade"):
        Storage(str(v1))  # a writer that does not upgrade is refused too


def test_db_upgrade_brings_a_version_1_database_to_this_version_with_every_row_kept(v1, capsys):
    before = {table: rows(v1, f"SELECT * FROM {table}") for table in TABLES[1:]}
    code, out, err = main("db", "upgrade", "--db", str(v1), capsys=capsys)
    assert (code, out, err) == (0, f"upgraded {v1} from schema version 1 to {SCHEMA_VERSION}\n", "")
    assert rows(v1, "SELECT value FROM meta") == [(str(SCHEMA_VERSION),)]
    for table, old in before.items():  # every row as it was; new columns come last
        assert [row[: len(old[0])] for row in rows(v1, f"SELECT * FROM {table}")] == old, table
    assert rows(v1, "SELECT search FROM sweeps") == [('{"strategy": "grid"}',)]
    assert rows(v1, "SELECT rung FROM sweep_trials") == [(None,), (None,)]
    upgraded = digest(v1)
    assert main("db", "upgrade", "--db", str(v1), capsys=capsys) == (
        0,
        f"{v1} is at schema version {SCHEMA_VERSION}: nothing to upgrade\n",
        "",
    )
    assert main("trials", "old", "--db", str(v1), capsys=capsys)[0] == 0
    assert digest(v1) == upgraded


def test_run_upgrades_an_older_database_and_says_so_in_one_line(v2, capsys, data_dir):
    code, _, err = main(
        "run",
        str(v2.parent / "old.yaml"),
        "--db",
        str(v2),
        "--data-dir",
        str(data_dir),
        "--artifacts",
        str(v2.parent / "runs"),
        "--plain",
        capsys=capsys,
    )
    assert code == 0, err
    upgraded = [line for line in err.splitlines() if "schema version" in line]
    assert upgraded == [f"upgraded {v2} from schema version 2 to {SCHEMA_VERSION}"]
    assert " started" not in err and "testing" not in err  # done and tested: nothing trains
    assert rows(v2, "SELECT value FROM meta") == [(str(SCHEMA_VERSION),)]


@pytest.mark.parametrize(
    "make, message",
    [
        ("UPDATE meta SET value = '0' WHERE key = 'schema_version'", "schema version 0, but this gridsearch reads"),
        ("DELETE FROM meta", "schema version 0, but this gridsearch reads"),
        ("UPDATE meta SET value = 'x.y' WHERE key = 'schema_version'", "schema version x.y, but"),
        ("UPDATE meta SET value = '99' WHERE key = 'schema_version'", "schema version 99, but this gridsearch reads"),
        ("DROP TABLE meta", "not a gridsearch database (it has no meta table)"),
    ],
)
def test_a_database_of_another_version_is_refused_and_left_alone(tmp_path, capsys, make, message):
    db = tmp_path / "results.db"
    Storage(str(db)).engine.dispose()
    with sqlite3.connect(db) as connection:
        connection.execute(make)
    connection.close()
    before = digest(db)
    sweep = write_sweep(tmp_path, name="tiny")
    for args in (
        ["status"],
        ["trials", "tiny"],
        ["query", "SELECT 1"],
        ["plan", str(sweep)],
        ["db", "upgrade"],
        ["run", str(sweep), "--artifacts", str(tmp_path / "runs")],
    ):
        code, _, err = main(*args, "--db", str(db), capsys=capsys)
        assert code == 2 and err.count("\n") == 1 and message in err, (args, err)
    assert untouched(db, before)


def test_read_only_opens_find_files_whose_path_has_uri_characters(v2, tmp_path, capsys):
    folder = tmp_path / "a#b?c%41 d"
    folder.mkdir()
    db = folder / "results.db"
    shutil.copyfile(v2, db)
    code, out, err = main("status", "--db", str(db), capsys=capsys)
    assert code == 0 and "oldhalving" in out, err
    assert not (tmp_path / "a").exists()


# -- query reads, and only reads --------------------------------------------------------------------

WRITES = [
    "ATTACH DATABASE '{folder}/attached.db' AS x",
    "VACUUM INTO '{folder}/copy.db'",
    "VACUUM",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA user_version = 7",
    "INSERT INTO meta VALUES ('x', 'y')",
    "UPDATE trials SET status = 'pending'",
    "CREATE TABLE x (y)",
    "DROP TABLE epochs",
]


@pytest.mark.parametrize("sql", WRITES)
def test_query_cannot_write_nor_create_a_file(v2, tmp_path, capsys, sql):
    before, present = digest(v2), files(tmp_path)
    code, out, err = main("query", sql.format(folder=tmp_path), "--db", str(v2), capsys=capsys)
    assert code == 2 and out == "" and err.startswith("error: query: ") and err.count("\n") == 1, err
    assert untouched(v2, before) and files(tmp_path) == present


def test_query_runs_the_sql_as_written(v2, capsys):
    code, out, err = main(
        "query", "SELECT 'at :00' AS x, '100%' AS y", "--format", "json", "--db", str(v2), capsys=capsys
    )
    assert code == 0 and json.loads(out) == [{"x": "at :00", "y": "100%"}], err
    pragma = main("query", "PRAGMA table_info(trials)", "--db", str(v2), capsys=capsys)
    assert pragma[0] == 0 and "config" in pragma[1]
    code, out, err = main("query", "SELECT ?", "--db", str(v2), capsys=capsys)
    assert code == 2 and err.startswith("error: query: ") and err.count("\n") == 1


# -- passwords ---------------------------------------------------------------------------------------

SECRET_URLS = [
    "postgresql+psycopg://user:secret@127.0.0.1:1/x",  # nothing listens there
    "postgresql+psycopg://user:secret@127.0.0.1:notaport/x",  # does not parse
]


@pytest.mark.parametrize("url", SECRET_URLS)
def test_a_database_password_is_never_printed(tmp_path, capsys, url):
    sweep = write_sweep(tmp_path)
    for args in (
        ["run", str(sweep), "--artifacts", str(tmp_path / "runs")],
        ["plan", str(sweep)],
        ["status"],
        ["trials", "small"],
        ["best", "small"],
        ["query", "SELECT 1"],
        ["db", "upgrade"],
    ):
        code, out, err = main(*args, "--db", url, capsys=capsys)
        assert code == 2 and err.startswith("error: --db postgresql+psycopg://user:***@") and err.count("\n") == 1
        assert "secret" not in out + err, (args, err)
