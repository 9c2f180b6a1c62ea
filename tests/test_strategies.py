"""Strategies that ask: the search as ask and tell, Hyperband's brackets against the paper's table, TPE and GP
proposals that are the same whatever the workers, the executor or a kill -9, and sweeps made by the code before
this change, whose keys and epochs the new code reproduces."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gridsearch.engine.strategies import SearchCallbacks, strategy_for
from gridsearch.errors import UserError
from gridsearch.spec import halving
from gridsearch.spec.search import STRATEGIES, Search
from gridsearch.spec.sweep import load_sweep
from tests.conftest import cli, epoch_metrics, rows, write_sweep
from tests.test_faults import kill_9_at, start_run

PRECHANGE = Path(__file__).parent / "fixtures" / "prechange"
MLP = {
    "architecture": "mlp",
    "dataset": {"train_size": 300, "val_size": 200, "test_size": 200},
    "params": {"epochs": 1, "batch_size": 50},
}
SPACE = {"lr": {"loguniform": [0.005, 0.1]}, "momentum": [0.5, 0.7, 0.9], "lr_step": {"int": [1, 4]}}
TPE = {**MLP, "name": "tpe", "grid": SPACE, "search": {"strategy": "tpe", "trials": 6, "batch": 2, "seed": 3}}

# -- Hyperband's schedule -----------------------------------------------------------------------------


def test_hyperband_brackets_are_the_papers_table_1():
    """Li et al. 2018, Table 1: R = 81, eta = 3; n_i trials at r_i epochs in each rung of each bracket."""
    paper = {
        4: [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
        3: [(34, 3), (11, 9), (3, 27), (1, 81)],
        2: [(15, 9), (5, 27), (1, 81)],
        1: [(8, 27), (2, 81)],
        0: [(5, 81)],
    }
    brackets = halving.hyperband_brackets(1, 3, 81)
    assert [bracket.s for bracket in brackets] == [4, 3, 2, 1, 0]
    for bracket in brackets:
        assert list(zip(bracket.sizes(3), bracket.budgets)) == paper[bracket.s]
    # min_epochs is the smallest budget: R / r_min = 25 gives s_max = 2 (budgets rounded down)
    assert [(b.n, b.budgets) for b in halving.hyperband_brackets(4, 3, 100)] == [
        (9, [11, 33, 100]),
        (5, [33, 100]),
        (3, [100]),
    ]
    assert [b.sizes(3, 6) for b in halving.hyperband_brackets(1, 3, 9)] == [[6, 3, 1], [5, 1], [3]]
    search = Search("hyperband", factor=3, min_epochs=1, epochs=81)
    assert search.rung_epochs == [1, 3, 9, 27, 81] and search.first_budget == 1 and search.describes_rungs


def test_hyperband_over_a_small_grid_trains_each_shared_trial_once(tmp_path, data_dir, monkeypatch):
    """epochs 4, factor 2: brackets s=2 (4 trials at 1, 2 at 2, 1 at 4 epochs), s=1 (3 at 2, 1 at 4) and s=0
    (3 at 4) over a grid of 4 points: 4 trials in all, and no epoch of any trains twice."""
    from gridsearch.training import loop

    trained: list[int] = []
    train_epoch = loop.train_epoch

    def counted(*args, **kwargs):
        trained.append(1)
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "train_epoch", counted)
    sweep = write_sweep(
        tmp_path,
        **{**MLP, "params": {"epochs": 4, "batch_size": 50}},
        name="hb",
        grid={"lr": [0.02, 0.08], "momentum": [0.5, 0.9]},
        search={"strategy": "hyperband", "factor": 2, "min_epochs": 1, "seed": 0},
    )
    result = cli("run", str(sweep), cwd=tmp_path, data_dir=data_dir, check=True)
    assert "bracket s=2: 4 trials from 1 epochs, rungs of [4, 2, 1] trials" in result.stderr
    assert "bracket s=1: 3 trials from 2 epochs, rungs of [3, 1] trials" in result.stderr
    assert "bracket s=0: 3 trials from 4 epochs, rungs of [3] trials" in result.stderr
    db = tmp_path / "results.db"
    epochs_run = dict(rows(db, "SELECT key, epochs_run FROM trials"))
    assert len(epochs_run) == 4  # 10 bracket places, 4 points: one trial each
    assert len(trained) == sum(epochs_run.values()) == len(epoch_metrics(db))
    reached = dict(rows(db, "SELECT trial_key, rung FROM sweep_trials"))
    assert all({0: 1, 1: 2, 2: 4}[reached[key]] == epochs for key, epochs in epochs_run.items())
    ((search,),) = rows(db, "SELECT search FROM sweeps")
    assert '"rung_epochs": [1, 2, 4]' in search and '"strategy": "hyperband"' in search
    (selected,) = rows(db, "SELECT selected_trial FROM sweeps")
    assert epochs_run[selected[0]] == 4


# -- strategies that ask ------------------------------------------------------------------------------


def test_a_strategy_asks_batch_by_batch_and_is_told_the_standings(tmp_path):
    """Batch b is proposed from the standings of batches 0..b-1 alone: the same history, the same batch."""
    sweep = load_sweep(write_sweep(tmp_path, **TPE))
    asked: list[list[str]] = []

    def evaluate(trials, budget):
        assert budget is None
        asked.append([trial.key for trial in trials])
        return [halving.Standing(trial.key, 0.1 * len(asked), 1.0) for trial in trials]

    finalists = strategy_for(sweep, SearchCallbacks()).search(evaluate)
    assert [len(batch) for batch in asked] == [2, 2, 2] and finalists == [k for batch in asked for k in batch]
    again: list[list[str]] = []

    def evaluate_again(trials, budget):
        again.append([trial.key for trial in trials])
        return [halving.Standing(trial.key, 0.1 * len(again), 1.0) for trial in trials]

    strategy_for(sweep).search(evaluate_again)
    assert again == asked
    assert [trial.key for trial in strategy_for(sweep).first_batch()] == asked[0]
    # other results, other later batches (the first is drawn before any result)
    other: list[list[str]] = []

    def evaluate_other(trials, budget):
        other.append([trial.key for trial in trials])
        return [halving.Standing(trial.key, 1.0 / len(other), 1.0) for trial in trials]

    strategy_for(sweep).search(evaluate_other)
    assert other[0] == asked[0] and other[1:] != asked[1:]


@pytest.mark.parametrize("strategy", ["tpe", "gp"])
def test_proposed_points_are_rounded_like_draws_and_lie_in_the_space(tmp_path, strategy):
    sweep = load_sweep(write_sweep(tmp_path, **{**TPE, "search": {"strategy": strategy, "trials": 8, "batch": 4}}))
    points = []

    def evaluate(trials, budget):
        points.extend(trial.params for trial in trials)
        return [halving.Standing(trial.key, trial.params["lr"], 1.0) for trial in trials]

    strategy_for(sweep).search(evaluate)
    assert len(points) == 8
    for params in points:
        assert 0.005 <= params["lr"] <= 0.1 and float(f"{params['lr']:.4g}") == params["lr"]
        assert params["momentum"] in (0.5, 0.7, 0.9) and params["lr_step"] in (1, 2, 3, 4)


def test_the_search_file_names_batch_and_trials_for_strategies_that_ask(tmp_path):
    def refused(search):
        with pytest.raises(UserError) as error:
            load_sweep(write_sweep(tmp_path, **{**TPE, "search": search}))
        return str(error.value)

    assert "search: tpe search needs 'trials'" in refused({"strategy": "tpe"})
    assert "search.batch: must be between 1 and trials (4), got 5" in refused(
        {"strategy": "gp", "trials": 4, "batch": 5}
    )
    assert "search.factor: only used by strategies halving, hyperband" in refused(
        {"strategy": "tpe", "trials": 4, "factor": 3}
    )
    assert "search.batch: only used by strategies tpe, nsga2, gp" in refused(
        {"strategy": "random", "trials": 4, "batch": 2}
    )
    assert "search.population: only used by strategy nsga2" in refused(
        {"strategy": "tpe", "trials": 4, "population": 2}
    )
    sweep = load_sweep(write_sweep(tmp_path, **TPE))
    assert len(sweep) == 6 and sweep.gridded_params == ["lr", "momentum", "lr_step"] and not list(sweep.trials())
    assert sweep.search_record() == {"strategy": "tpe", "trials": 6, "batch": 2, "seed": 3}
    assert Search.from_record(sweep.search_record()) == sweep.search
    assert set(STRATEGIES) == {"grid", "random", "sobol", "halving", "hyperband", "tpe", "nsga2", "gp"}


def test_plan_of_a_tpe_sweep_shows_its_first_batch_and_says_the_rest_depend_on_results(tmp_path, data_dir):
    sweep = write_sweep(tmp_path, **TPE)
    first = [trial.key for trial in strategy_for(load_sweep(sweep)).first_batch()]
    result = cli("plan", str(sweep), cwd=tmp_path, check=True)
    assert all(key in result.stdout for key in first)
    assert "the table is batch 1 of 3; the other 4 points are proposed from the results" in result.stdout


def tpe_run(folder: Path, data_dir: Path, *options: str) -> Path:
    write_sweep(folder, **TPE)
    cli("run", str(folder / "sweep.yaml"), *options, cwd=folder, data_dir=data_dir, check=True)
    return folder / "results.db"


POINTS = "SELECT t.key, t.config FROM sweep_trials m JOIN trials t ON t.key = m.trial_key ORDER BY m.position"


def test_tpe_gives_the_same_points_and_numbers_with_any_workers_executor_or_a_kill_9(tmp_path, data_dir):
    reference = tmp_path / "inline"
    reference.mkdir()
    write_sweep(reference, **TPE)
    cli("run", str(reference / "sweep.yaml"), cwd=reference, data_dir=data_dir, check=True)
    expected = rows(reference / "results.db", POINTS)
    assert len(expected) == 6
    for name, options in {"one": ("--workers", "1"), "two": ("--workers", "2")}.items():
        folder = tmp_path / name
        folder.mkdir()
        db = tpe_run(folder, data_dir, *options)
        assert rows(db, POINTS) == expected, name
        assert epoch_metrics(db) == epoch_metrics(reference / "results.db"), name
    killed = tmp_path / "killed"
    killed.mkdir()
    write_sweep(killed, **TPE)
    db = killed / "results.db"
    coordinator = start_run(killed, data_dir, "--workers", "2")
    kill_9_at(  # batch 1 (of 0-2) proposed, the last batch not yet done
        db,
        "SELECT (SELECT COUNT(*) FROM sweep_trials) >= 3 AND (SELECT COUNT(*) FROM trials WHERE status = 'done') < 6",
        coordinator,
    )
    assert len(rows(db, POINTS)) < 6
    cli("run", str(killed / "sweep.yaml"), cwd=killed, data_dir=data_dir, check=True)
    assert rows(db, POINTS) == expected
    assert epoch_metrics(db) == epoch_metrics(reference / "results.db")


# -- sweeps made before this change -------------------------------------------------------------------


def test_sweeps_made_by_the_pre_change_code_keep_their_keys_and_train_to_identical_epochs(tmp_path, data_dir):
    """``tests/fixtures/prechange``: a grid, a halving, a random and a sobol sweep run by the code before
    strategies asked and trials came in cohorts (inline executor). The new code finds every trial done and
    selects the same ones; run from scratch (in cohorts of 3), it records the same epochs, seconds aside."""
    files = [str(tmp_path / f"{name}.yaml") for name in ("grid", "halving", "random", "sobol")]
    for name in ("grid", "halving", "random", "sobol"):
        shutil.copy(PRECHANGE / f"{name}.yaml", tmp_path)
    old = tmp_path / "old.db"
    shutil.copy(PRECHANGE / "results.sqlite3", old)
    links = "SELECT s.name, m.trial_key, m.position FROM sweep_trials m JOIN sweeps s ON s.id = m.sweep_id"
    before = rows(old, links + " ORDER BY s.name, m.position")
    selected = rows(old, "SELECT name, selected_trial FROM sweeps ORDER BY name")
    result = cli("run", *files, "--db", str(old), cwd=tmp_path, data_dir=data_dir, check=True)
    assert "started" not in result.stderr  # nothing left to train
    assert rows(old, links + " ORDER BY s.name, m.position") == before
    assert rows(old, "SELECT name, selected_trial FROM sweeps ORDER BY name") == selected
    fresh = tmp_path / "fresh.db"
    cli("run", *files, "--db", str(fresh), "--fuse", "3", "--in-turn", cwd=tmp_path, data_dir=data_dir, check=True)
    # exact on the CPU that recorded the fixture (Intel); on another (an AMD EPYC: oneDNN picks other kernels)
    # the same to float rounding (seen: 7e-8 relative)
    recorded = epoch_metrics(PRECHANGE / "results.sqlite3")
    assert epoch_metrics(fresh).keys() == recorded.keys()
    assert epoch_metrics(fresh) == {key: pytest.approx(values, rel=1e-5) for key, values in recorded.items()}
    assert rows(fresh, "SELECT name, selected_trial FROM sweeps ORDER BY name") == selected
