"""The store at scale, on real SQLite files: trials read in bulk, a sweep stored again writing only what
changed (its links to its trials upserted, not deleted and re-inserted), ``plan`` reading a sweep's
trials in a fixed number of queries whatever its size, and ``gridsearch.epochs`` reading some trials, some
columns, or the whole sweep a few trials at a time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import Engine, event

import gridsearch
import gridsearch.api
from gridsearch.errors import UserError
from gridsearch.spec.sweep import load_sweep
from gridsearch.store.records import EpochMetrics, TrialSummary
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import TrialStatus
from tests.conftest import cli, rows, write_sweep
from tests.test_distributed import postgres_url  # noqa: F401  (a fixture: a throw-away server)
from tests.test_store_postgres import new_database

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


def stored(folder: Path, name: str, lrs: list[float], db: str | None = None, **changes) -> Storage:
    """A database (``results.db`` in ``folder``, or ``db``) holding the sweep ``name`` over ``lrs``."""
    sweep = load_sweep(write_sweep(folder, f"{name}.yaml", name=name, grid={"lr": lrs}, **{**TINY, **changes}))
    storage = Storage(db or str(folder / "results.db"))
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


def recorded(folder: Path, lrs: list[float], epochs: int) -> tuple[Path, list[str]]:
    """A database whose sweep ``api`` over ``lrs`` has ``epochs`` epochs recorded per trial (through
    ``Storage``, as the coordinator records them); its keys, best first (val accuracy grows with lr)."""
    storage = stored(folder, "api", lrs)
    keys = [row.key for row in storage.trials("api")]
    for number, key in enumerate(keys):
        for epoch in range(epochs):
            score = 0.5 + 0.01 * number + 0.001 * epoch
            storage.record_epoch(
                key,
                EpochMetrics(
                    epoch=epoch,
                    train_loss=1.0 / (epoch + 1),
                    train_accuracy=score,
                    val_loss=2.0 / (epoch + 1),
                    val_accuracy=score,
                    lr=lrs[number],
                    seconds=0.25,
                ),
            )
        best = 0.5 + 0.01 * number + 0.001 * (epochs - 1)
        summary = TrialSummary(
            best_epoch=epochs - 1, val_accuracy=best, val_loss=2.0 / epochs, epochs_run=epochs, train_seconds=1.0
        )
        storage.finish(key, TrialStatus.DONE, summary)
    storage.close()
    return folder / "results.db", keys[::-1]


def test_epochs_reads_only_the_trials_and_columns_asked_for(tmp_path):
    db, best_first = recorded(tmp_path, [0.01, 0.02, 0.03, 0.04], epochs=3)
    whole = gridsearch.epochs(db, "api")
    assert list(whole.columns) == ["key", "lr", "seed", *gridsearch.api.EPOCH_COLUMNS]
    assert whole["key"].drop_duplicates().tolist() == best_first and len(whole) == 12

    some = gridsearch.epochs(db, "api", trials=[best_first[3], best_first[1]], columns=["val_accuracy"])
    assert list(some.columns) == ["key", "lr", "seed", "epoch", "val_accuracy"]
    assert some["key"].tolist() == [best_first[1]] * 3 + [best_first[3]] * 3  # best first, by epoch
    expected = whole[whole["key"].isin(best_first[1::2])][list(some.columns)].reset_index(drop=True)
    pd.testing.assert_frame_equal(some, expected)

    with statements() as seen:
        gridsearch.epochs(db, "api", trials=[best_first[0]], columns=["seconds"])
    [epoch_query] = [s for s in seen if "FROM epochs" in s]
    assert "val_accuracy" not in epoch_query.split("FROM")[0]  # only the columns asked for are read


def test_epochs_in_chunks_of_whole_trials_add_up_to_the_whole_table(tmp_path):
    db, best_first = recorded(tmp_path, [0.01 * i for i in range(1, 8)], epochs=4)
    chunks = gridsearch.epochs(db, "api", chunksize=10)
    assert not isinstance(chunks, pd.DataFrame)
    frames = list(chunks)
    assert [len(frame) for frame in frames] == [12, 12, 4]  # whole trials of 4 epochs, about 10 rows each
    pd.testing.assert_frame_equal(pd.concat(frames, ignore_index=True), gridsearch.epochs(db, "api"))
    assert [len(f) for f in gridsearch.epochs(db, "api", trials=best_first[:2], chunksize=1)] == [4, 4]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"columns": ["val_acc"]}, r"epochs: unknown columns 'val_acc' \(known: epoch, train_loss"),
        ({"trials": ["0123456789abcdef"]}, "epochs: sweep 'api' has no trial '0123456789abcdef'"),
        ({"chunksize": 0}, "chunksize: expected a positive integer, got 0"),
    ],
)
def test_epochs_refuses_unknown_columns_trials_and_chunk_sizes_at_once(tmp_path, options, message):
    db, _ = recorded(tmp_path, [0.01, 0.02], epochs=1)
    with pytest.raises(UserError, match=message):
        gridsearch.epochs(db, "api", **options)


def test_bulk_writes_and_reads_on_postgresql(postgres_url, tmp_path):  # noqa: F811
    url = new_database(postgres_url)
    storage = stored(tmp_path, "pg", [0.01, 0.02, 0.03], db=url)
    keys = [row.key for row in storage.trials("pg")]
    assert list(storage.trial_rows(reversed(keys))) == keys[::-1]
    edited = load_sweep(write_sweep(tmp_path, "pg.yaml", name="pg", grid={"lr": [0.04, 0.03, 0.02]}, **TINY))
    storage.save_sweep(edited, list(edited.trials()))
    assert [row.key for row in storage.trials("pg")] == [trial.key for trial in edited.trials()]
    assert storage.trial_rows([keys[2]])[keys[2]].config["params"]["lr"] == 0.03
    storage.record_epoch(
        keys[2],
        EpochMetrics(epoch=0, train_loss=1.0, train_accuracy=0.5, val_loss=1.0, val_accuracy=0.5, lr=0.03, seconds=1.0),
    )
    storage.close()
    read = gridsearch.epochs(url, "pg", trials=[keys[2]], columns=["val_accuracy"])
    assert read[["key", "lr", "epoch", "val_accuracy"]].values.tolist() == [[keys[2], 0.03, 0, 0.5]]
