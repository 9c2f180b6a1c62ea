"""A PostgreSQL results database made by the code before schema version 3 (JSON columns as TEXT), on a real
server: refused by read-only commands until ``gridsearch db upgrade`` turns those columns into JSON, then
read as before, with the very tables a new database gets.

``tests/fixtures/results-v2-postgresql.sql`` is that database, dumped by pg_dump.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import pytest
import sqlalchemy

from gridsearch import cli
from gridsearch.store.models import SCHEMA_VERSION
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import SHORT_KEY
from tests.conftest import ROOT
from tests.test_distributed import postgres_url  # noqa: F401  (a fixture: a throw-away server)

DUMP = ROOT / "tests" / "fixtures" / "results-v2-postgresql.sql"
JSON_COLUMNS = {
    ("sweeps", "gridded_params"),
    ("sweeps", "search"),
    ("trials", "config"),
    ("trial_params", "value"),
    ("evaluations", "confusion"),
    ("evaluations", "predictions"),
}
COLUMNS = (
    "SELECT table_name, column_name, data_type, column_default, is_nullable FROM information_schema.columns "
    "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
)
_names = itertools.count()


def new_database(server: str) -> str:
    """The URL of a new, empty database on the server at ``server``."""
    name = f"store_{next(_names)}"
    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return server.rsplit("/", 1)[0] + "/" + name


def fetch(url: str, sql: str) -> list[tuple]:
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        result = [tuple(row) for row in connection.exec_driver_sql(sql)]
    engine.dispose()
    return result


def contents(url: str) -> dict[str, list[tuple]]:
    """Every row of every table, as PostgreSQL writes it out (JSON and TEXT alike: their text)."""
    tables = [name for (name,) in fetch(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    return {table: fetch(url, f"SELECT t::text FROM {table} t ORDER BY 1") for table in sorted(tables)}


@pytest.fixture
def old_postgres(postgres_url: str) -> Iterator[str]:  # noqa: F811
    url = new_database(postgres_url)
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(DUMP.read_text())
    engine.dispose()
    yield url


def test_an_old_postgresql_database_is_refused_until_upgraded_then_reads_as_before(
    old_postgres: str,
    postgres_url: str,  # noqa: F811
    capsys: pytest.CaptureFixture,
) -> None:
    before = contents(old_postgres)
    assert {(table, column) for table, column, kind, *_ in fetch(old_postgres, COLUMNS) if kind == "text"} >= (
        JSON_COLUMNS
    )
    for args in (["status"], ["trials", "old"], ["best", "old"], ["query", "SELECT 1"]):
        assert cli.main([*args, "--db", old_postgres]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"schema version 2 is older than this gridsearch's {SCHEMA_VERSION}" in err
        assert f"gridsearch db upgrade --db {old_postgres}" in err
    assert contents(old_postgres) == before

    assert cli.main(["db", "upgrade", "--db", old_postgres]) == 0
    assert capsys.readouterr().out == f"upgraded {old_postgres} from schema version 2 to {SCHEMA_VERSION}\n"
    after = {**before, "meta": [(f"(schema_version,{SCHEMA_VERSION})",)], "fronts": [], "measurements": []}
    assert contents(old_postgres) == after  # every row kept; version 4's tables, empty
    fresh = new_database(postgres_url)
    Storage(fresh).close()
    assert fetch(old_postgres, COLUMNS) == fetch(fresh, COLUMNS)  # the tables of a new database, JSON typed
    json_typed = {(table, column) for table, column, kind, *_ in fetch(fresh, COLUMNS) if kind == "json"}
    assert json_typed == JSON_COLUMNS | {("fronts", "values")}

    storage = Storage(old_postgres, readonly=True)
    row = storage.sweep("oldhalving")
    assert row.gridded_params == ["lr"] and row.search["strategy"] == "halving"
    assert all(isinstance(trial.config, dict) for trial in storage.trials("oldhalving"))
    evaluation = storage.evaluation(row.selected_trial or "", "test")
    assert evaluation is not None and len(evaluation.confusion) == 10
    assert cli.main(["trials", "oldhalving", "--db", old_postgres]) == 0
    assert (row.selected_trial or "")[:SHORT_KEY] in capsys.readouterr().out.splitlines()[1]


def test_a_password_in_the_database_url_is_never_printed(
    postgres_url: str,  # noqa: F811
    capsys: pytest.CaptureFixture,
) -> None:
    url = new_database(postgres_url).replace("gridsearch@", "gridsearch:secret@")  # the server trusts any password
    Storage(url).close()
    for args, code in (
        (["status"], 0),
        (["db", "upgrade"], 0),
        (["trials", "nosuch"], 2),
        (["best", "nosuch"], 2),
        (["query", "SELECT * FROM nosuch"], 2),
        (["evaluate", "--trial", "0123456789abcdef", "--suite", "robustness"], 2),
    ):
        assert cli.main([*args, "--db", url]) == code, args
        out, err = capsys.readouterr()
        assert "secret" not in out + err and err.count("\n") == (code == 2), (args, out, err)


def test_query_runs_one_statement_that_cannot_write(
    postgres_url: str,  # noqa: F811
    capsys: pytest.CaptureFixture,
) -> None:
    url = new_database(postgres_url)
    Storage(url).close()
    for sql in (
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; COMMIT; INSERT INTO meta VALUES ('x', 'y'); SELECT 1",
        "INSERT INTO meta VALUES ('x', 'y')",
        "DROP TABLE epochs",
    ):
        assert cli.main(["query", sql, "--db", url]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: query: ") and err.count("\n") == 1, err
    assert fetch(url, "SELECT key FROM meta ORDER BY key") == [("database_id",), ("schema_version",)]  # nothing added
    assert fetch(url, "SELECT count(*) FROM pg_tables WHERE tablename = 'epochs'") == [(1,)]
    assert cli.main(["query", "SELECT '100%' AS p, 'at :00' AS c", "--format", "json", "--db", url]) == 0
    assert json.loads(capsys.readouterr().out) == [{"p": "100%", "c": "at :00"}]
