"""Cohorts: up to ``--fuse K`` trials that can train as one stack, handed to one worker; trained one after another
in it (``--in-turn``), the same numbers as one trial per worker, every member resumed after a kill -9, and a
member that fails alone; trials that cannot stack in separate cohorts, trained at once, as ``plan`` says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gridsearch.engine.jobs import cohort_signature
from gridsearch.spec.sweep import load_sweep
from tests.conftest import cli, epoch_metrics, rows, write_sweep
from tests.test_faults import kill_9_at, start_run

GRID = {
    "name": "cohorts",
    "architecture": "mlp",
    "dataset": {"train_size": 300, "val_size": 200, "test_size": 200},
    "params": {"epochs": 2, "batch_size": 50},
    "grid": {"lr": [0.02, 0.05, 0.08], "momentum": [0.5, 0.9]},
    "seeds": [0],
}
IN_TURN = ("--fuse", "3", "--in-turn", "--executor", "local")
"""Cohorts of 3 trained in turn, each by a worker process (the coordinator runs in this process)."""
MEMBER = re.compile(r"cohort (\w+): trial (\w+) is member (\d) of (\d), trained in turn by process (\d+)")


@pytest.fixture(scope="module")
def one_per_worker(tmp_path_factory, data_dir) -> Path:
    """The grid trained with --fuse 1 (one trial per worker), inline."""
    folder = tmp_path_factory.mktemp("fuse1")
    cli("run", str(write_sweep(folder, **GRID)), cwd=folder, data_dir=data_dir, check=True)
    return folder / "results.db"


def cohorts(folder: Path) -> dict[str, list[tuple[str, int, int, int]]]:
    """What each trial's worker.log says of its cohort: cohort id -> (trial, member, of, pid)."""
    found: dict[str, list[tuple[str, int, int, int]]] = {}
    for log in sorted((folder / "runs").glob("*/worker.log")):
        for cohort, key, member, size, pid in MEMBER.findall(log.read_text()):
            found.setdefault(cohort, []).append((key, int(member), int(size), int(pid)))
    return found


def test_cohort_signature_groups_trials_that_can_train_in_lockstep(tmp_path):
    grid = {**GRID, "params": {"epochs": 2}, "grid": {"lr": [0.02, 0.08], "batch_size": [50, 100]}}
    sweep = load_sweep(write_sweep(tmp_path, **grid))
    signatures = [cohort_signature(trial.config()) for trial in sweep.trials()]
    assert len(set(signatures)) == 2  # the batch size splits them; the learning rate does not


def test_cohorts_of_3_trained_in_turn_give_the_numbers_of_one_trial_per_worker(one_per_worker, tmp_path, data_dir):
    write_sweep(tmp_path, **GRID)
    cli("run", str(tmp_path / "sweep.yaml"), *IN_TURN, cwd=tmp_path, data_dir=data_dir, check=True)
    db = tmp_path / "results.db"
    assert epoch_metrics(db) == epoch_metrics(one_per_worker) and len(epoch_metrics(db)) == 12
    assert rows(db, "SELECT key, status, best_epoch FROM trials ORDER BY key") == rows(
        one_per_worker, "SELECT key, status, best_epoch FROM trials ORDER BY key"
    )
    found = cohorts(tmp_path)
    assert sorted(len(members) for members in found.values()) == [3, 3]  # 6 trials, 2 cohorts of 3
    for cohort, members in found.items():
        assert sorted(member for _, member, _, _ in members) == [1, 2, 3]
        assert len({pid for *_, pid in members}) == 1 and cohort in {key for key, *_ in members}


@pytest.mark.faults
def test_kill_9_mid_cohort_resumes_every_member(tmp_path, data_dir):
    # 30,000 images an epoch: a member's epoch lasts long enough for the kill to land between its epochs
    longer = {**GRID, "dataset": {"train_size": 30000, "val_size": 200, "test_size": 200}}
    reference = tmp_path / "reference"
    reference.mkdir()
    cli("run", str(write_sweep(reference, **longer)), cwd=reference, data_dir=data_dir, check=True)
    write_sweep(tmp_path, **longer)
    db = tmp_path / "results.db"
    coordinator = start_run(tmp_path, data_dir, "--fuse", "3", "--in-turn")
    # a member of the first cohort is between its epochs
    kill_9_at(db, "SELECT COUNT(*) FROM trials WHERE status = 'running' AND epochs_run = 1", coordinator)
    statuses = dict(rows(db, "SELECT status, COUNT(*) FROM trials GROUP BY status"))
    assert statuses.get("running", 0) >= 1
    result = cli("run", str(tmp_path / "sweep.yaml"), *IN_TURN, cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert "resumed after epoch" in result.stderr
    assert epoch_metrics(db) == epoch_metrics(reference / "results.db")
    assert rows(db, "SELECT status, COUNT(*) FROM trials GROUP BY status") == [("done", 6)]
    selected = "SELECT selected_trial FROM sweeps"
    assert rows(db, selected) == rows(reference / "results.db", selected)


def test_a_member_that_fails_does_not_fail_its_cohort_mates(one_per_worker, tmp_path, data_dir):
    """The middle member diverges (a learning rate of 1e9: NaN loss): it fails alone; the members before
    and after it train to the numbers they have on their own."""
    grid = {**GRID, "grid": {"lr": [0.02, 1e9, 0.08], "momentum": [0.5]}}
    write_sweep(tmp_path, **grid)
    result = cli("run", str(tmp_path / "sweep.yaml"), *IN_TURN, cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    db = tmp_path / "results.db"
    statuses = rows(
        db, "SELECT t.status, t.error FROM sweep_trials m JOIN trials t ON t.key = m.trial_key ORDER BY m.position"
    )
    assert [status for status, _ in statuses] == ["done", "failed", "done"]
    assert statuses[1][1].startswith("Diverged: training loss is")
    (members,) = cohorts(tmp_path).values()
    assert [member for _, member, _, _ in members] == [1, 2, 3] and len({pid for *_, pid in members}) == 1
    reference = epoch_metrics(one_per_worker)
    for key, epoch in epoch_metrics(db).keys() & reference.keys():
        assert epoch_metrics(db)[key, epoch] == reference[key, epoch]
    assert len(epoch_metrics(db).keys() & reference.keys()) == 4  # lr 0.02 and 0.08 at momentum 0.5


def test_a_fused_sweep_is_selected_evaluated_reported_and_served(tmp_path, data_dir):
    """``--fuse 3`` (one stacked model): every member is an ordinary trial afterwards — the selected one is
    tested, ``evaluate --ensemble`` and the report load the members' ``best.pt``, and the web app serves them."""
    from gridsearch.store.storage import Storage
    from gridsearch.web.app import create_app

    write_sweep(tmp_path, **{**GRID, "architecture": "lenet53", "params": {"epochs": 1, "batch_size": 50}})
    sweep = str(tmp_path / "sweep.yaml")
    result = cli("run", sweep, "--fuse", "3", "--executor", "local", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    db = tmp_path / "results.db"
    assert rows(db, "SELECT status, COUNT(*) FROM trials GROUP BY status") == [("done", 6)]
    logs = [log.read_text() for log in (tmp_path / "runs").glob("*/worker.log")]
    assert len(logs) == 6 and all("fused" in log for log in logs)  # each member's log says how it trained
    ((selected,),) = rows(db, "SELECT selected_trial FROM sweeps")
    assert rows(db, "SELECT COUNT(*) FROM evaluations WHERE trial_key = ? AND name = 'test'", selected) == [(1,)]
    cli("evaluate", "cohorts", "--ensemble", "3", "--data-dir", str(data_dir), cwd=tmp_path, check=True)
    assert rows(db, "SELECT COUNT(*) FROM evaluations WHERE name = 'ensemble/top3'") == [(1,)]
    cli("report", "--out", str(tmp_path / "report"), cwd=tmp_path, check=True)
    assert (tmp_path / "report" / "index.html").exists()
    client = create_app(Storage(str(db), readonly=True), tmp_path / "runs", data_dir).test_client()
    models = client.get("/api/models").get_json()
    assert models["default"] == selected
    for key in {key for (key,) in rows(db, "SELECT key FROM trials")}:
        answer = client.get(f"/api/models/{key}")
        assert answer.status_code == 200 and answer.get_json()["trial"] == key


STACKED = re.compile(
    r"cohort (\w+): trial (\w+) is member (\d) of (\d), trained fused as one stacked model by process (\d+)"
)


def test_trials_that_cannot_stack_form_separate_cohorts_trained_at_once_and_plan_says_which(tmp_path, data_dir):
    """``--fuse 4 --workers 2`` over 2 values of ``hidden`` (which shapes the network) x 2 learning rates: 2 cohorts
    of 2, said once by ``plan`` and ``run``, each trained as one stack by its own process, both at once."""
    grid = {
        **GRID,
        "architecture": "lenet53",
        "dataset": {"train_size": 1000, "val_size": 200, "test_size": 200},
        "grid": {"lr": [0.03, 0.06], "hidden": [16, 64]},
    }
    sweep = write_sweep(tmp_path, **grid)
    hidden = {trial.key: trial.config()["params"]["hidden"] for trial in load_sweep(sweep).trials()}
    said = "cohorts (--fuse 4, one stack each): 4 trials in 2 cohorts (2 of 2); trials that differ in hidden cannot "
    plan = cli("plan", str(sweep), "--fuse", "4", cwd=tmp_path, check=True).stdout
    planned = {
        line.split(": ")[1]: set(line.split(": ")[2].split(", ")) for line in plan.splitlines() if "  cohort" in line
    }
    assert said in plan and planned == {
        f"hidden={size}": {key for key, h in hidden.items() if h == size} for size in (16, 64)
    }
    result = cli("run", str(sweep), "--fuse", "4", "--workers", "2", cwd=tmp_path, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(said) == 1
    found: dict[str, dict[str, int]] = {}
    for log in (tmp_path / "runs").glob("*/worker.log"):
        for cohort, key, _, size, pid in STACKED.findall(log.read_text()):
            assert size == "2"
            found.setdefault(cohort, {})[key] = int(pid)
    assert sorted(map(set, found.values()), key=min) == sorted(planned.values(), key=min)
    pids = {cohort: set(members.values()) for cohort, members in found.items()}
    assert all(len(each) == 1 for each in pids.values()) and len(set.union(*pids.values())) == 2
    db = tmp_path / "results.db"
    ((last_start, first_end),) = rows(db, "SELECT MAX(started_at), MIN(finished_at) FROM trials")
    assert last_start < first_end  # every trial was claimed before any was finished: the two ran at once
    assert rows(db, "SELECT status, COUNT(*) FROM trials GROUP BY status") == [("done", 4)]
