"""The schema version of a results database: creating the tables, and upgrading an older database.

As in Optuna, an upgrade is explicit: ``gridsearch db upgrade`` (or ``run``, which writes anyway) brings
an older database to ``SCHEMA_VERSION``; read-only opens never write, and refuse a database they cannot
read as it is. Hand-written rather than with Alembic: each upgrade is a few ALTER TABLEs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, insert, inspect, select, update
from sqlalchemy.exc import DBAPIError

from gridsearch.errors import UserError
from gridsearch.store.models import SCHEMA_VERSION, Base, Meta

DATABASE_ID = "database_id"
"""The ``meta`` key of the database's id: a random hex string given once, when its tables are created."""

_JSON_COLUMNS = {
    "sweeps": ("gridded_params", "search"),
    "trials": ("config",),
    "trial_params": ("value",),
    "evaluations": ("confusion", "predictions"),
}
"""The columns of SQLAlchemy's JSON type (TEXT before version 3)."""


@dataclass(frozen=True)
class Upgrade:
    """The statements that bring a database of one schema version to the next."""

    everywhere: tuple[str, ...] = ()
    postgresql: tuple[str, ...] = ()
    """Only on PostgreSQL, where JSON is a column type of its own (SQLite stores JSON as TEXT)."""
    tables: tuple[str, ...] = ()
    """New tables, made as a new database makes them; readers do without them until a writer upgrades."""

    def statements(self, dialect: str) -> tuple[str, ...]:
        return self.everywhere + (self.postgresql if dialect == "postgresql" else ())


UPGRADES: dict[int, Upgrade] = {
    1: Upgrade(
        everywhere=(
            'ALTER TABLE sweeps ADD COLUMN search TEXT NOT NULL DEFAULT \'{"strategy": "grid"}\'',
            "ALTER TABLE sweep_trials ADD COLUMN rung INTEGER",
        )
    ),
    2: Upgrade(
        postgresql=(
            "ALTER TABLE sweeps ALTER COLUMN search DROP DEFAULT",
            *(
                f"ALTER TABLE {table} "
                + ", ".join(f"ALTER COLUMN {column} TYPE JSON USING {column}::json" for column in columns)
                for table, columns in _JSON_COLUMNS.items()
            ),
            'ALTER TABLE sweeps ALTER COLUMN search SET DEFAULT \'{"strategy": "grid"}\'',
        )
    ),
    3: Upgrade(tables=("measurements", "fronts")),
}
"""Schema version -> how a database of that version is brought to the next one."""


def open_schema(engine: Engine, where: str, *, create: bool, upgrade: bool) -> int | None:
    """Check the schema of the database behind ``engine`` (``where`` names it in messages). An empty one
    gets the tables if ``create``; an older one is upgraded if ``upgrade``, else used as it is when this
    version's tables read it unchanged (a version-2 SQLite file; a version-3 one, whose readers do without the
    tables version 4 adds), else refused with a hint. Returns the
    version it was upgraded from, or None."""
    tables = set(inspect(engine).get_table_names())
    if not tables:
        if not create:
            raise UserError(f"--db {where}: the database is empty (run a sweep first)")
        with engine.begin() as connection:  # tables and version in one transaction: a
            Base.metadata.create_all(connection)  # concurrent opener sees both or neither
            if _version(connection) is None:
                connection.execute(insert(Meta).values(key="schema_version", value=str(SCHEMA_VERSION)))
                connection.execute(insert(Meta).values(key=DATABASE_ID, value=uuid.uuid4().hex))
        return None
    if "meta" not in tables:
        raise UserError(f"--db {where}: not a gridsearch database (it has no meta table)")
    with engine.connect() as connection:
        found = _version(connection) or "0"
    if found == str(SCHEMA_VERSION):
        return None
    if not (found.isdigit() and int(found) in UPGRADES):
        raise UserError(
            f"--db {where}: schema version {found}, but this gridsearch reads version "
            f"{SCHEMA_VERSION}; use the gridsearch version that made it"
        )
    if upgrade:
        return _upgrade(engine, where)
    if _pending(int(found), engine.dialect.name):
        raise UserError(
            f"--db {where}: schema version {found} is older than this gridsearch's {SCHEMA_VERSION}; "
            f"upgrade it first with: gridsearch db upgrade --db {where}"
        )
    return None


def _upgrade(engine: Engine, where: str) -> int | None:
    """Bring the database to SCHEMA_VERSION in place, in one transaction, its rows kept as they are."""
    try:
        with engine.begin() as connection:
            found = int(  # re-read under the lock: another process may have upgraded it meanwhile
                connection.scalar(select(Meta.value).where(Meta.key == "schema_version").with_for_update()) or 0
            )
            if found == SCHEMA_VERSION:
                return None
            for statement in _pending(found, engine.dialect.name):
                connection.exec_driver_sql(statement)
            tables = [name for step in range(found, SCHEMA_VERSION) for name in UPGRADES[step].tables]
            Base.metadata.create_all(connection, tables=[Base.metadata.tables[name] for name in tables])
            connection.execute(update(Meta).where(Meta.key == "schema_version").values(value=str(SCHEMA_VERSION)))
            return found
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0]
        raise UserError(
            f"--db {where}: cannot upgrade the database to schema version {SCHEMA_VERSION} ({reason})"
        ) from None


def _pending(version: int, dialect: str) -> list[str]:
    """The statements that bring a database of ``version`` on ``dialect`` to SCHEMA_VERSION."""
    return [statement for step in range(version, SCHEMA_VERSION) for statement in UPGRADES[step].statements(dialect)]


def _version(connection: Connection) -> str | None:
    return connection.scalar(select(Meta.value).where(Meta.key == "schema_version"))


def database_id(engine: Engine) -> str | None:
    """The id the database was given when it was created (``meta``), or None for one created before ids were
    (its run folders are the shared ``runs/`` of old; see ``connection.artifacts_dir``)."""
    with engine.connect() as connection:
        return connection.scalar(select(Meta.value).where(Meta.key == DATABASE_ID))
