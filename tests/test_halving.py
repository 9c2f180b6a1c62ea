"""Successive halving: the pure rung and promotion rules, the sweep file's ``search``, training that stops at
a budget and goes on later as if never stopped, and whole halving sweeps (real workers, real SQLite),
killed mid-rung and resumed."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from gridsearch.errors import UserError
from gridsearch.spec import halving
from gridsearch.spec.sweep import load_sweep
from gridsearch.training import loop as training
from tests.conftest import cli, epoch_metrics, rows, write_sweep
from tests.test_faults import kill_9_at, start_run, training_defaults

# -- the rules, without training ----------------------------------------------------------------------


def test_rung_epochs_multiply_by_the_factor_and_end_at_epochs():
    assert halving.rung_epochs(1, 3, 9) == [1, 3, 9]
    assert halving.rung_epochs(4, 3, 100) == [4, 12, 36, 100]
    assert halving.rung_epochs(12, 3, 100) == [12, 36, 100]
    assert halving.rung_epochs(2, 2, 7) == [2, 4, 7]
    assert halving.rung_epochs(5, 3, 5) == [5]  # one rung: a plain grid
    for bad in ((0, 3, 9), (10, 3, 9), (1, 1, 9)):
        with pytest.raises(ValueError):
            halving.rung_epochs(*bad)


def test_rung_sizes_and_planned_epochs():
    assert halving.rung_sizes(25, 3, 3) == [25, 9, 3]
    assert halving.rung_sizes(9, 3, 4) == [9, 3, 1, 1]
    assert halving.rung_sizes(4, 2, 3) == [4, 2, 1]
    assert halving.planned_epochs(25, 3, [12, 36, 100]) == [300, 216, 192]
    assert halving.planned_epochs(9, 3, [1, 3, 9]) == [9, 6, 6]


def epoch(number: int, accuracy: float, loss: float) -> dict:
    return {"epoch": number, "val_accuracy": accuracy, "val_loss": loss}


def test_best_epoch_looks_only_below_the_budget_and_keeps_the_first_of_equals():
    epochs = [epoch(2, 0.9, 0.1), epoch(0, 0.5, 1.0), epoch(1, 0.5, 0.8)]
    assert halving.best_epoch(epochs, "val_accuracy", 2)["epoch"] == 0  # the first of equal accuracies
    assert halving.best_epoch(epochs, "val_accuracy", 3)["epoch"] == 2
    assert halving.best_epoch(epochs, "val_accuracy")["epoch"] == 2  # no budget: every epoch
    assert halving.best_epoch(epochs, "val_loss", 2)["epoch"] == 1
    assert halving.best_epoch(epochs[:1], "val_accuracy", 2) is None
    assert halving.standing("k", epochs, 2, "val_accuracy") == halving.Standing("k", 0.5, 1.0)
    assert halving.standing("k", epochs, 2, "val_accuracy", failed=True) == halving.Standing("k", None, None)


def test_promote_keeps_the_best_third_with_ties_to_lower_loss_then_grid_order():
    standings = [
        halving.Standing(key, score, loss)
        for key, score, loss in [
            ("a", 0.80, 0.50),
            ("b", 0.90, 0.40),
            ("c", 0.90, 0.30),
            ("d", 0.70, 0.20),
            ("e", 0.90, 0.30),
            ("f", 0.60, 0.90),
            ("g", 0.85, 0.45),
        ]
    ]
    assert halving.promote(standings, 3, "val_accuracy") == ["c", "e", "b"]  # ceil(7 / 3) = 3
    assert halving.promote(standings, 2, "val_accuracy") == ["c", "e", "b", "g"]
    by_loss = [halving.Standing(s.key, s.val_loss, s.val_loss) for s in standings]
    assert halving.promote(by_loss, 3, "val_loss") == ["d", "c", "e"]
    assert halving.promote(standings[:1], 3, "val_accuracy") == ["a"]


def test_failed_trials_are_never_promoted_so_fewer_go_on():
    standings = [
        halving.Standing("a", None, None),
        halving.Standing("b", 0.5, 1.0),
        halving.Standing("c", None, None),
        halving.Standing("d", 0.4, 1.0),
    ]
    assert halving.promote(standings, 2, "val_accuracy") == ["b", "d"]
    assert halving.promote(standings, 3, "val_accuracy") == ["b", "d"]
    assert halving.promote([halving.Standing("a", None, None)], 3, "val_accuracy") == []


# -- the sweep file ------------------------------------------------------------------------------------

HALVING = {"strategy": "halving", "factor": 3, "min_epochs": 1}


def test_search_halving_is_parsed_and_leaves_trial_keys_alone(tmp_path):
    grid = load_sweep(write_sweep(tmp_path, "grid.yaml", params={"epochs": 9, "batch_size": 50}))
    halved = load_sweep(
        write_sweep(
            tmp_path,
            "halving.yaml",
            params={"epochs": 9, "batch_size": 50},
            search={"strategy": "halving", "min_epochs": 1},
        )
    )
    assert (halved.search.strategy, halved.search.factor, halved.search.min_epochs) == ("halving", 3, 1)
    assert halved.rung_epochs == [1, 3, 9] and grid.rung_epochs is None
    assert [t.key for t in halved.trials()] == [t.key for t in grid.trials()]
    assert halved.search_record() == {"strategy": "halving", "factor": 3, "min_epochs": 1, "rung_epochs": [1, 3, 9]}
    assert load_sweep(write_sweep(tmp_path, search={"strategy": "grid"})).search_record() == {"strategy": "grid"}


@pytest.mark.parametrize(
    "search, message",
    [
        ({"strategy": "halving", "factr": 3}, "search.factr: unknown key (did you mean 'factor'?)"),
        ({"strategy": "halfing"}, "search.strategy: unknown strategy 'halfing' (did you mean 'halving'?)"),
        ({"strategy": "halving", "factor": 1}, "search.factor: must be >= 2, got 1"),
        ({"strategy": "halving", "factor": 2.5}, "search.factor: must be int, got float 2.5"),
        ({"strategy": "halving", "min_epochs": 3}, "search.min_epochs: must be between 1 and epochs (2), got 3"),
        ({"strategy": "halving", "min_epochs": 0}, "search.min_epochs: must be between 1 and epochs (2), got 0"),
        ({"strategy": "grid", "factor": 3}, "search.factor: only used by strategies halving, hyperband"),
        ("halving", "search: must be a mapping: strategy and its settings"),
    ],
)
def test_bad_search_values_are_refused_with_file_line_and_key(tmp_path, search, message):
    path = write_sweep(tmp_path, search=search)
    with pytest.raises(UserError) as error:
        load_sweep(path)
    where, key, rest = str(error.value).split(": ", 2)
    assert where.startswith(f"{path}:") and f"{key}: {rest}".startswith(message)
    line = path.read_text().splitlines()[int(where.rsplit(":", 1)[1]) - 1]
    assert key.rsplit(".", 1)[-1] + ":" in line  # the line of the key at fault


def test_halving_refuses_gridded_epochs(tmp_path):
    with pytest.raises(UserError, match=r":\d+: grid.epochs: successive halving needs one 'epochs' for every trial"):
        load_sweep(
            write_sweep(tmp_path, search=HALVING, params={"batch_size": 50}, grid={"lr": [0.1], "epochs": [2, 4]})
        )


# -- stopping at a budget and going on -----------------------------------------------------------------


def train(run_dir: Path, data_dir: Path, budget: int | None) -> tuple[list[dict], dict]:
    """Train (or go on training) a tiny 4-epoch trial in ``run_dir`` up to ``budget``; the epochs it reported
    (seconds left out) and its summary."""
    config = {
        "architecture": "lenet53",
        "seed": 0,
        "threads": 1,
        "select": "val_accuracy",
        "dataset": {"name": "mnist", "train_size": 200, "val_size": 100},
        "params": {**training_defaults(), "epochs": 4, "batch_size": 50, "hidden": 8, "lr": 0.1, "lr_step": 1.0},
    }
    events: list[dict] = []
    run_dir.mkdir(exist_ok=True)
    summary, finished = training.train_trial(config, run_dir, data_dir, torch.device("cpu"), events.append, budget)
    epochs = [{k: v for k, v in e.items() if k not in ("seconds", "event")} for e in events if e["event"] == "epoch"]
    return epochs, {**summary, "finished": finished}


def test_stopping_at_a_budget_and_going_on_is_bit_identical_to_never_stopping(in_process_training, tmp_path, data_dir):
    straight, summary = train(tmp_path / "straight", data_dir, None)
    assert len(straight) == 4 and summary["finished"]
    run_dir = tmp_path / "halved"
    first, summary = train(run_dir, data_dir, 1)
    assert first == straight[:1] and not summary["finished"] and summary["epochs_run"] == 1
    again, summary = train(run_dir, data_dir, 1)  # already there: replays, trains nothing
    assert again == [{**first[0], "replayed": True}] and not summary["finished"]
    later, summary = train(run_dir, data_dir, 3)
    assert later[1:] == straight[1:3] and not summary["finished"]  # lr schedule, RNG and optimizer carried on
    rest, summary = train(run_dir, data_dir, None)
    assert [{k: v for k, v in e.items() if k != "replayed"} for e in rest] == straight and summary["finished"]
    kept, expected = (torch.load(path / "best.pt")["model"] for path in (run_dir, tmp_path / "straight"))
    assert all(torch.equal(kept[name], expected[name]) for name in expected)  # the same best weights


# -- whole sweeps --------------------------------------------------------------------------------------

HALVED = {"name": "halved", "params": {"epochs": 3, "batch_size": 50, "hidden": 32, "patience": 5}, "search": HALVING}
"""The small sweep's 4 trials (lr x lr_step, 500 images) by successive halving: rung 0 trains all 4 for
1 epoch, rung 1 takes the best ceil(4 / 3) = 2 on to 3 epochs."""
TRIALS = (
    "SELECT t.key, t.status, m.rung, t.best_epoch, t.epochs_run, t.val_accuracy, t.val_loss FROM trials t "
    "JOIN sweep_trials m ON m.trial_key = t.key JOIN sweeps s ON s.id = m.sweep_id AND s.name = 'halved' "
    "ORDER BY t.key"
)
SELECTION = (
    "SELECT s.selected_trial, e.accuracy, e.errors, e.predictions FROM sweeps s "
    "JOIN evaluations e ON e.trial_key = s.selected_trial AND e.name = 'test' WHERE s.name = 'halved'"
)


@pytest.fixture(scope="module")
def halved(tmp_path_factory, data_dir) -> tuple[Path, str]:
    """The halving sweep run once, undisturbed: its folder and the run's log."""
    folder = tmp_path_factory.mktemp("halved")
    result = cli("run", str(write_sweep(folder, **HALVED)), cwd=folder, data_dir=data_dir, check=True)
    return folder, result.stderr


def test_the_best_of_rung_0_go_on_from_their_checkpoints_and_the_rest_stop(halved):
    folder, log = halved
    db = folder / "results.db"
    trials = {key: rest for key, *rest in rows(db, TRIALS)}
    first = {key: metrics for (key, number), metrics in epoch_metrics(db).items() if number == 0}
    # promoted: the best 2 by epoch-0 val accuracy (ties: lower val loss)
    promoted = sorted(first, key=lambda key: (-first[key][3], first[key][2]))[:2]
    for key, (status, rung, _, epochs_run, *_) in trials.items():
        assert (status, rung, epochs_run) == (("done", 1, 3) if key in promoted else ("stopped", 0, 1))
    # every epoch trained once: 4 trials x 1 epoch, then 2 x 2 more, continuing from epoch 0's checkpoint
    assert sorted(rows(db, "SELECT trial_key, epoch FROM epochs")) == sorted(
        [(key, 0) for key in trials] + [(key, epoch) for key in promoted for epoch in (1, 2)]
    )
    assert dict(rows(db, "SELECT key, attempts FROM trials")) == {key: 2 if key in promoted else 1 for key in trials}
    for key in promoted:
        assert f"trial {key} resumed after epoch 1" in log
        assert f"trial {key} 1/1 epochs " in log and f"trial {key} 1/3 epochs " not in log  # epoch 0 not retrained
        assert f"trial {key} 3/3 epochs " in log
    # the selected trial: the best of the last rung, tested once
    ((selected, samples),) = rows(
        db, "SELECT s.selected_trial, e.samples FROM sweeps s JOIN evaluations e ON e.trial_key = s.selected_trial"
    )
    assert selected == max(promoted, key=lambda key: (trials[key][4], -trials[key][5])) and samples == 400
    assert json.loads(rows(db, "SELECT search FROM sweeps")[0][0]) == {**HALVING, "rung_epochs": [1, 3]}


def cli_output(*args: str, capsys: pytest.CaptureFixture) -> str:
    return cli(*args, cwd=Path.cwd(), check=True).stdout


def test_status_trials_and_plan_show_the_rungs(halved, capsys):
    db = str(halved[0] / "results.db")
    status = cli_output("status", "--db", db, capsys=capsys).splitlines()
    assert status[0].split()[:4] == ["sweep", "architecture", "done", "stopped"]  # all-zero status columns are left out
    assert status[1].split()[:4] == ["halved", "lenet53", "2", "2"]
    trials = json.loads(cli_output("trials", "halved", "--format", "json", "--db", db, capsys=capsys))
    assert [(t["status"], t["rung"]) for t in trials] == [("done", 1)] * 2 + [("stopped", 0)] * 2
    plan = cli_output("plan", str(halved[0] / "sweep.yaml"), "--db", db, capsys=capsys)
    assert "2 stopped, 2 done" in plan or "2 done, 2 stopped" in plan
    assert (
        "successive halving (factor 3; rungs of 1, 3 epochs):" in plan
        and "at most 8 epochs in all, 67% of the full grid's 12" in plan
    )


@pytest.mark.faults
def test_kill_9_mid_rung_then_run_again_equals_an_uninterrupted_run(halved, tmp_path, data_dir):
    reference = halved[0] / "results.db"
    write_sweep(tmp_path, **HALVED)
    db = tmp_path / "results.db"
    coordinator = start_run(tmp_path, data_dir, "--workers", "2")
    kill_9_at(
        db,
        "SELECT COUNT(*) FROM trials t JOIN sweep_trials m ON m.trial_key = t.key "
        "WHERE m.rung = 1 AND t.status = 'running' AND t.epochs_run < 3",
        coordinator,
    )  # rung 1, a trial promoted and not yet trained to its end (the window is its worker's start and 2 epochs)
    stopped_at_rung_0 = (
        "SELECT COUNT(*) FROM trials t JOIN sweep_trials m ON m.trial_key = t.key "
        "WHERE m.rung = 0 AND t.status = 'stopped'"
    )
    assert rows(db, stopped_at_rung_0) == [(2,)]  # rung 0's other two
    ((killed,),) = rows(
        db,
        "SELECT t.key FROM trials t JOIN sweep_trials m ON m.trial_key = t.key "
        "WHERE m.rung = 1 AND t.status = 'running' AND t.epochs_run < 3 LIMIT 1",
    )
    rung_0 = {k: v for k, v in epoch_metrics(db).items() if k[1] == 0}
    result = cli("run", str(tmp_path / "sweep.yaml"), "--workers", "2", cwd=tmp_path, data_dir=data_dir, check=True)
    # resumed from its last checkpoint: rung 0's, or one its worker wrote in rung 1 (perhaps after the kill,
    # before it noticed the coordinator had died)
    assert re.search(rf"trial {killed} resumed after epoch [123]\b", result.stderr), result.stderr
    assert rows(db, TRIALS) == rows(reference, TRIALS)
    assert epoch_metrics(db) == epoch_metrics(reference) and epoch_metrics(db).items() >= rung_0.items()
    assert rows(db, SELECTION) == rows(reference, SELECTION) and len(rows(db, SELECTION)) == 1


def test_a_grid_sweep_of_the_same_points_resumes_the_stopped_trials(halved, tmp_path, data_dir):
    folder = tmp_path / "copy"
    shutil.copytree(halved[0], folder)
    db = folder / "results.db"
    stopped = [key for (key,) in rows(db, "SELECT key FROM trials WHERE status = 'stopped'")]
    before = epoch_metrics(db)
    full = write_sweep(folder, "full.yaml", **{**HALVED, "name": "full", "search": {"strategy": "grid"}})
    result = cli("run", str(full), cwd=folder, data_dir=data_dir, check=True)
    assert result.stderr.count(" started") == len(stopped) == 2  # the 2 done trials are not touched
    assert all(f"trial {key} resumed after epoch 1" in result.stderr for key in stopped)
    assert rows(db, "SELECT COUNT(*) FROM trials WHERE status = 'done' AND epochs_run = 3") == [(4,)]
    assert epoch_metrics(db).items() >= before.items() and len(epoch_metrics(db)) == 12
    # the halving sweep again: nothing to train, the same decisions (they read only the epochs below each budget)
    again = cli("run", str(folder / "sweep.yaml"), cwd=folder, data_dir=data_dir, check=True)
    assert " started" not in again.stderr
    assert [row[:3] for row in rows(db, TRIALS)] == [
        (key, "done", rung) for key, _, rung, *_ in rows(halved[0] / "results.db", TRIALS)
    ]
    assert rows(db, SELECTION) == rows(halved[0] / "results.db", SELECTION)
