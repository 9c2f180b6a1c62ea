"""Where a results database is and how it is opened.

Any SQLAlchemy URL works (PostgreSQL for several machines); a plain path means an SQLite file, opened in
WAL mode so that readers (``status``, reports) never block the coordinator that writes. A read-only
SQLite connection has an authorizer that lets it only read: no statement on it can write, attach a file or
``VACUUM INTO`` a new one; it leaves no -wal or -shm file behind.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from gridsearch.errors import UserError

DEFAULT_DB = "results.db"
BUSY_TIMEOUT_SECONDS = 60
"""How long a reader's statement waits for a lock (in WAL mode only a checkpoint can hold one up)."""
WRITER_BUSY_SECONDS = 5
"""How long a writer's statement waits for SQLite's write lock before its call says it waits and retries
(``store.faults``: the run waits out a lock held for minutes, and says so)."""

_INTROSPECTION_PRAGMAS = frozenset(
    {
        "collation_list",
        "compile_options",
        "database_list",
        "foreign_key_check",
        "foreign_key_list",
        "function_list",
        "index_info",
        "index_list",
        "index_xinfo",
        "integrity_check",
        "module_list",
        "pragma_list",
        "quick_check",
        "table_info",
        "table_list",
        "table_xinfo",
    }
)
"""PRAGMAs that only read, whatever their argument (a table or index name, a row limit)."""
_SETTING_PRAGMAS = frozenset(
    {
        "application_id",
        "busy_timeout",
        "data_version",
        "encoding",
        "foreign_keys",
        "freelist_count",
        "journal_mode",
        "page_count",
        "page_size",
        "query_only",
        "read_uncommitted",
        "schema_version",
        "user_version",
    }
)
"""PRAGMAs that read a setting when given no value (and change it when given one)."""
_READ_ACTIONS = frozenset(
    {
        sqlite3.SQLITE_SELECT,
        sqlite3.SQLITE_READ,
        sqlite3.SQLITE_FUNCTION,
        sqlite3.SQLITE_RECURSIVE,
        sqlite3.SQLITE_TRANSACTION,
        sqlite3.SQLITE_SAVEPOINT,
    }
)
NOT_READ_ONLY = frozenset({"not authorized", "authorization denied"})
"""SQLite's messages for a statement the read-only authorizer refused."""


def database_url(db: str) -> str:
    """An SQLAlchemy URL for ``db``: returned as is if it is a URL, else an SQLite file path."""
    if "://" in db:
        return db
    return URL.create("sqlite", database=str(Path(db).expanduser().resolve())).render_as_string()


def describe(url: str) -> str:
    """``url`` fit for messages: its password hidden, also when the URL cannot be parsed."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(://[^/@:]*:)[^@]*@", r"\1***@", url)


def location(url: str) -> str:
    """How messages name the database at ``url``: an SQLite file's path, else the URL without its password."""
    path = sqlite_path(url)
    return str(path) if path else describe(url)


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL, or None for other databases (and for URLs that do not parse)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


def artifacts_dir(db: str, artifacts: str | None = None) -> Path:
    """Where run folders go: ``artifacts`` if given, else ``runs/`` beside an SQLite file (here for a URL),
    and within it a folder named after any database but the default ``results.db``: ``runs/scale/`` for
    ``scale.db``, ``runs/<database>/`` for a URL. Two databases never share checkpoints unless told to
    (``--artifacts``). A database made before databases had ids (its ``meta`` has none) keeps ``runs/``,
    where its run folders are."""
    if artifacts:
        return Path(artifacts).expanduser().resolve()
    url = database_url(db)
    path = sqlite_path(url)
    runs = (path.parent if path else Path.cwd()) / "runs"
    if (path is not None and path.name == DEFAULT_DB) or _made_before_ids(url, path):
        return runs
    name = path.stem if path else (_url_database(url) or "database")
    return runs / re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _url_database(url: str) -> str | None:
    try:
        return make_url(url).database
    except (ArgumentError, ValueError):
        return None


def _made_before_ids(url: str, path: Path | None) -> bool:
    """Whether the database at ``url`` exists, has tables and has no id in ``meta`` (read only; a database
    that cannot be read counts as new)."""
    try:
        engine = _engine(url, readonly=True) if path is None or path.exists() else None
        if engine is None:
            return False
        try:
            with engine.connect() as connection:
                rows = connection.exec_driver_sql("SELECT key FROM meta").scalars().all()
        finally:
            engine.dispose()
    except (SQLAlchemyError, ImportError, OSError, sqlite3.Error):  # no meta table, driver or server: a new one
        return False
    return bool(rows) and "database_id" not in rows


def connect(url: str, where: str, *, readonly: bool, create: bool) -> Engine:
    """An engine on ``url``, connected once (``where`` names it in messages). ``create=False`` refuses an
    SQLite file that does not exist. Raises :class:`UserError`, or SQLAlchemy's errors of the connection."""
    path = sqlite_path(url)
    if path is not None:
        if not path.parent.is_dir():
            raise UserError(f"--db {path}: folder {path.parent} does not exist")
        if not create and not path.exists():
            raise UserError(f"--db {path}: no such database (run a sweep first)")
    try:
        engine = _engine(url, readonly)
        with engine.connect():
            pass
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise UserError(f"--db {where}: not a usable database URL ({exc})") from None
    return engine


def _engine(url: str, readonly: bool) -> Engine:
    """Writers on SQLite take the write lock at BEGIN (read-then-write is atomic across runs); readers on
    PostgreSQL start read-only transactions."""
    path = sqlite_path(url)
    if path is None:
        options = {"options": "-c default_transaction_read_only=on"} if readonly else {}
        return create_engine(url, connect_args=options, pool_pre_ping=True, json_serializer=canonical_json)
    if readonly:
        engine = create_engine(url, creator=lambda: _open_readonly(path), json_serializer=canonical_json)
    else:
        engine = create_engine(url, connect_args={"timeout": WRITER_BUSY_SECONDS}, json_serializer=canonical_json)
        event.listen(engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
    event.listen(engine, "connect", lambda connection, _record: _sqlite_pragmas(connection, readonly))
    return engine


def canonical_json(value: Any) -> str:
    """JSON columns as text with sorted keys, so a trial's stored config is its canonical form."""
    return json.dumps(value, sort_keys=True)


def _open_readonly(path: Path) -> sqlite3.Connection:
    """A connection that cannot change ``path``, nor create or attach any other file: only reading is
    authorized on it (``_sqlite_pragmas``).

    A WAL-mode file's readers create its -wal and -shm files, and only a connection that may write removes
    them, as the last one to close. So the connection is opened read-write where the file and its folder are
    writable and there is no -wal file yet, and leaves the folder as it found it. Beside a -wal file (a
    writer at work, or one that died) it is opened ``mode=ro``: closing it then never folds another's log
    into the file."""
    wal = path.with_name(path.name + "-wal")
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK) and not wal.exists()
    connection = sqlite3.connect(
        f"file:{quote(str(path))}?mode={'rw' if writable else 'ro'}",
        uri=True,
        timeout=BUSY_TIMEOUT_SECONDS,
        check_same_thread=False,
    )
    connection.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    return connection


def _sqlite_pragmas(connection: sqlite3.Connection, readonly: bool) -> None:
    cursor = connection.cursor()
    if readonly:
        cursor.execute("PRAGMA query_only = ON")
    else:
        connection.isolation_level = None  # transactions begin with the "begin" listener's BEGIN IMMEDIATE
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute(f"PRAGMA busy_timeout = {(BUSY_TIMEOUT_SECONDS if readonly else WRITER_BUSY_SECONDS) * 1000}")
    cursor.close()
    if readonly:  # last: the pragmas above set values
        connection.set_authorizer(_only_reads)


def _only_reads(action: int, name: str | None, value: str | None, _database: str | None, _trigger: str | None) -> int:
    """SQLite authorizer of read-only connections: reading is allowed, anything else refused (writes,
    ATTACH and VACUUM, which attach a file, and PRAGMAs that set a value)."""
    if action in _READ_ACTIONS:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_PRAGMA and (
        name in _INTROSPECTION_PRAGMAS or (name in _SETTING_PRAGMAS and value is None)
    ):
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY
