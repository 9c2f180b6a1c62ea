"""The store at scale, on real SQLite files: trials read in bulk, a sweep stored again writing only what
changed (its links to its trials upserted, not deleted and re-inserted), and ``plan`` reading a sweep's
trials in a fixed number of queries whatever its size."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, event

from gridsearch.spec.sweep import load_sweep
from gridsearch.store.storage import Storage
from tests.conftest import cli, rows, write_sweep

TINY = {"architecture": "mlp", "params": {"epochs": 2}}


@contextmanager
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine runs inside the block."""
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def stored(folder: Path, name: str, lrs: list[float], **changes) -> Storage:
    """A database in ``folder`` holding the sweep ``name`` over ``lrs``."""
    sweep = load_sweep(write_sweep(folder, f"{name}.yaml", name=name, grid={"lr": lrs}, **{**TINY, **changes}))
    storage = Storage(str(folder / "results.db"))
    storage.save_sweep(sweep, list(sweep.trials()))
    return storage


def links(db: Path) -> list[tuple]:
    """The sweep links with their SQLite rowids: a link deleted and inserted again gets a new rowid."""
    return rows(db, "SELECT rowid, trial_key, position, rung FROM sweep_trials ORDER BY position")


def test_trial_rows_reads_many_trials_in_one_query_and_leaves_unknown_keys_out(tmp_path):
    storage = stored(tmp_path, "bulk", [0.01 * i for i in range(1, 41)])
    keys = [row.key for row in storage.trials("bulk")]
    with statements() as seen:
        found = storage.trial_rows([*keys, "0123456789abcdef"])
    assert len([s for s in seen if s.lstrip().upper().startswith("SELECT")]) == 1
    assert list(found) == keys and all(found[key].key == key for key in keys)
    assert storage.trial_rows([]) == {}
    storage.close()


def test_storing_a_sweep_again_keeps_its_links_and_writes_only_what_changed(tmp_path):
    db = tmp_path / "results.db"
    storage = stored(tmp_path, "grid", [0.01, 0.02, 0.03], search={"strategy": "halving", "min_epochs": 1})
    first = links(db)
    storage.set_rung("grid", [first[0][1]], 1)
    sweep = load_sweep(tmp_path / "grid.yaml")
    with statements() as seen:
        storage.save_sweep(sweep, list(sweep.trials()))
    assert links(db) == [(*first[0][:3], 1), *first[1:]]  # same rows (rowids), the rung reached kept
    assert not [s for s in seen if s.lstrip().upper().startswith(("DELETE", "INSERT"))]

    # a point dropped, one added, the others moved: each link written once, the rest kept
    edited = write_sweep(tmp_path, "grid.yaml", name="grid", grid={"lr": [0.04, 0.03, 0.02]}, **TINY)
    sweep = load_sweep(edited)
    storage.save_sweep(sweep, list(sweep.trials()))
    now = links(db)
    assert [key for _, key, _, _ in now] == [trial.key for trial in sweep.trials()]
    kept = {key: rowid for rowid, key, _, _ in first}
    assert [rowid == kept.get(key) for rowid, key, _, _ in now] == [False, True, True]
    assert first[0][1] not in {key for _, key, _, _ in now}
    assert [rung for *_, rung in now] == [None, None, None]  # a grid sweep now: no rungs
    assert rows(db, "SELECT count(*), min(attempts), min(epochs_run) FROM trials") == [(4, 0, 0)]
    assert rows(db, "SELECT count(*) FROM trial_params WHERE name = 'lr'") == [(4,)]
    storage.close()


def test_plan_reads_the_trials_of_a_sweep_in_the_same_number_of_queries_whatever_its_size(tmp_path):
    def queries(name: str, size: int) -> int:
        folder = tmp_path / name
        folder.mkdir()
        stored(folder, name, [0.01 * i for i in range(1, size + 1)]).close()
        with statements() as seen:
            cli("plan", f"{name}.yaml", cwd=folder, check=True)
        return len(seen)

    assert queries("few", 2) == queries("many", 30)
