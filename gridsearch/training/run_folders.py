"""Who made a run folder: the database and the code version that trained its checkpoints.

Each trial's run folder records, in ``made_by.json``, the id of the database whose run made it and the code that
trained it (gridsearch's version and, in a git checkout, the commit). A folder is reused by another database or
code version only on purpose (``--artifacts`` pointing at another database's folders): :func:`claim` then says so,
and the record keeps naming the first maker, whose checkpoints the trial resumes from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypedDict

RECORD = "made_by.json"


class Maker(TypedDict):
    """A run of gridsearch as a run folder records it."""

    database_id: str | None
    """The ``database_id`` in the database's meta table (None: a database made before ids)."""
    gridsearch: str
    """The package version."""
    code: str
    """The git commit of the code (``+dirty`` with local changes), else the package version."""


def describe(maker: Maker) -> str:
    """``maker`` in words, for one line."""
    code = "" if maker["code"] == maker["gridsearch"] else f", code {maker['code']}"
    return (
        f"database {maker['database_id'] or '(made before database ids)'} with gridsearch {maker['gridsearch']}{code}"
    )


def recorded(run_dir: Path) -> Maker | None:
    """The maker ``run_dir`` records (None: none, or an unreadable record)."""
    try:
        found = json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(found, dict) and set(Maker.__annotations__) <= set(found)):
        return None
    return Maker(database_id=found["database_id"], gridsearch=found["gridsearch"], code=found["code"])


def claim(run_dir: Path, maker: Maker) -> Maker | None:
    """Record ``maker`` as the maker of run folder ``run_dir`` unless it records one already; the recorded maker
    when it is another database or code version (None: this one, or a folder it had none)."""
    before = recorded(run_dir)
    if before is None:
        tmp = run_dir / f"{RECORD}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(maker, sort_keys=True) + "\n")
        os.replace(tmp, run_dir / RECORD)  # atomic: a reader never sees half a record
        return None
    return None if before == maker else before
