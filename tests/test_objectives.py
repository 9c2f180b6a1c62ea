"""Several objectives in real runs: bad specs refused in one line, one objective exactly today's sweep (the pre-change
fixtures), a grid sweep's front stored and selected from by its rule and tested on request, multi-objective halving
promoting by the recorded values, and tpe and nsga2 of several objectives giving the same points and numbers with
any workers, inline, and after a kill -9."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from gridsearch.spec.sweep import load_sweep
from tests.conftest import ROOT, cli, epoch_metrics, rows, write_sweep
from tests.test_faults import kill_9_at, start_run
from tests.test_pareto import brute_crowding, brute_ranks, dominates
from tests.test_strategies import POINTS, PRECHANGE
from tests.test_webapp import browser, page  # noqa: F401 (fixtures: headless Chromium, a page without JS errors)

CONVNET = {
    "architecture": "convnet",
    "dataset": {"train_size": 300, "val_size": 200, "test_size": 200},
    "params": {"epochs": 2, "batch_size": 50},
}
ACCURACY_SIZE = [{"metric": "val_accuracy", "direction": "max"}, {"metric": "parameters", "direction": "min"}]

# -- bad specs --------------------------------------------------------------------------------------------------------

GOOD = """name: bad
architecture: convnet
grid: {channels: [2, 4]}
objectives:
  - {metric: val_accuracy, direction: max}
  - {metric: parameters, direction: min}
"""


@pytest.mark.parametrize(
    "change, line, message",
    [
        (
            ("val_accuracy, direction: max", "val_acc, direction: max"),
            5,
            "objectives[0].metric: unknown metric 'val_acc' (did you mean 'val_accuracy'?)",
        ),
        (
            ("parameters, direction: min}", "parameters}"),
            6,
            "objectives[1]: missing 'direction' (max or min; parameters is better min)",
        ),
        (
            ("parameters, direction: min", "parameters, direction: max"),
            6,
            "objectives[1].direction: parameters is better min: direction must be min",
        ),
        (
            ("parameters, direction: min", "val_accuracy, direction: max"),
            6,
            "objectives[1].metric: val_accuracy is listed twice",
        ),
        (
            ("val_accuracy, direction: max", "inference_ms, direction: min"),
            5,
            "objectives: needs a validation metric (val_accuracy or val_loss)",
        ),
        (
            (
                GOOD,
                GOOD + "select: {rule: smallest_within, metric: val_accuracy, tolerance: 0.1, then: inference_ms}\n",
            ),
            7,
            "select.then: 'inference_ms' is not one of the objectives (val_accuracy, parameters)",
        ),
        (
            (GOOD, GOOD + "select: {rule: best, metric: epoch_seconds}\n"),
            7,
            "select.metric: 'epoch_seconds' is not one of the objectives (val_accuracy, parameters)",
        ),
        (
            (GOOD, GOOD + "select:\n  rule: weighted\n  weights: {val_loss: 1}\n"),
            9,
            "select.weights.val_loss: 'val_loss' is not one of the objectives (val_accuracy, parameters)",
        ),
        (
            (GOOD, GOOD + "select: {rule: smallest}\n"),
            7,
            "select.rule: unknown rule 'smallest' (did you mean 'smallest_within'?)",
        ),
        (
            (GOOD, GOOD + "select: {rule: smallest_within, then: parameters}\n"),
            7,
            "select: rule smallest_within needs 'tolerance'",
        ),
        (
            (GOOD, GOOD + "select: {rule: best, tolerance: 1}\n"),
            7,
            "select.tolerance: only used by rule smallest_within",
        ),
        ((GOOD, GOOD + "select: val_accuracy\n"), 7, "select: with objectives, select names a rule"),
        (
            (GOOD, GOOD + "seeds: [0, 1]\nsearch: {strategy: halving}\n"),
            7,
            "seeds: objectives score a configuration by the mean over its seeds, but halving promotes single trials",
        ),
    ],
)
def test_a_bad_objective_spec_is_one_error_line_naming_the_files_line_and_nothing_is_stored(
    tmp_path, capsys, change, line, message
):
    old, new = change
    assert old in GOOD
    sweep = tmp_path / "bad.yaml"
    sweep.write_text(GOOD.replace(old, new, 1))
    result = cli("run", str(sweep), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {sweep}:{line}: {message}"), result.stderr
    assert not (tmp_path / "results.db").exists()


def test_gp_searches_one_objective(tmp_path):
    sweep = tmp_path / "gp.yaml"
    sweep.write_text(
        GOOD.replace("grid: {channels: [2, 4]}", "grid: {channels: [2, 4], lr: {loguniform: [0.01, 0.1]}}")
        + "search: {strategy: gp, trials: 4}\n"
    )
    result = cli("plan", str(sweep), cwd=tmp_path)
    assert result.returncode == 2 and "search.strategy: gp searches one objective; use tpe or nsga2" in result.stderr


# -- one objective: today's sweep ----------------------------------------------------------------------------------


def test_one_objective_is_todays_sweep_with_its_keys_selection_and_numbers(tmp_path, data_dir):
    """The pre-change fixtures with ``objectives: [{metric: val_accuracy, direction: max}]`` instead of the default
    ``select``: the same trial keys and records, and run on the pre-change database nothing trains, nothing is
    measured and every sweep keeps its selected trial and its test numbers."""
    files = []
    for name in ("grid", "halving", "random", "sobol"):
        document = yaml.safe_load((PRECHANGE / f"{name}.yaml").read_text())
        document["objectives"] = [{"metric": "val_accuracy", "direction": "max"}]
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        files.append(str(path))
        before, after = load_sweep(PRECHANGE / f"{name}.yaml"), load_sweep(path)
        assert [t.key for t in after.trials()] == [t.key for t in before.trials()]
        assert (after.select, after.over_seeds, after.objectives) == (before.select, before.over_seeds, ())
        assert after.search_record() == before.search_record()
    db = tmp_path / "old.db"
    shutil.copy(PRECHANGE / "results.sqlite3", db)
    links = (
        "SELECT s.name, m.trial_key, m.position FROM sweep_trials m JOIN sweeps s ON s.id = m.sweep_id ORDER BY 1, 3"
    )
    tested = (
        "SELECT s.name, s.selected_trial, e.accuracy, e.loss, e.errors, e.predictions FROM sweeps s "
        "JOIN evaluations e ON e.trial_key = s.selected_trial AND e.name = 'test' ORDER BY 1"
    )
    before = rows(db, links), rows(db, tested), epoch_metrics(db)
    result = cli("run", *files, "--db", str(db), cwd=tmp_path, data_dir=data_dir, check=True)
    assert "started" not in result.stderr and "measuring" not in result.stderr  # nothing trains, nothing is timed
    assert (rows(db, links), rows(db, tested), epoch_metrics(db)) == before
    assert rows(db, "SELECT COUNT(*) FROM fronts") == [(0,)] and rows(db, "SELECT COUNT(*) FROM measurements") == [(0,)]


# -- a grid sweep of several objectives -------------------------------------------------------------------------------

GRID = {
    **CONVNET,
    "name": "trade",
    "grid": {"channels": [2, 4, 8], "lr": [0.03, 0.1]},
    "objectives": [*ACCURACY_SIZE, {"metric": "inference_ms", "direction": "min"}],
    "select": {"rule": "smallest_within", "metric": "val_accuracy", "tolerance": 3, "then": "parameters"},
}


@pytest.fixture(scope="module")
def traded(tmp_path_factory, data_dir) -> Path:
    """The grid sweep of three objectives, run once (inline); its folder."""
    folder = tmp_path_factory.mktemp("trade")
    cli("run", str(write_sweep(folder, **GRID)), cwd=folder, data_dir=data_dir, check=True)
    return folder


def values_by_trial(db: Path) -> dict[str, tuple[float, float, float]]:
    found = rows(
        db,
        "SELECT t.key, t.val_accuracy, t.parameter_count, m.value FROM trials t "
        "JOIN measurements m ON m.trial_key = t.key AND m.name = 'inference_ms'",
    )
    return {key: (accuracy, size, ms) for key, accuracy, size, ms in found}


def test_the_front_is_stored_and_the_rule_selects_from_it(traded):
    db = traded / "results.db"
    assert rows(db, "SELECT COUNT(*), MIN(value) > 0, MIN(device) FROM measurements") == [(6, 1, "cpu")]
    values = values_by_trial(db)
    assert len(values) == 6
    losses = {key: (-a, p, ms) for key, (a, p, ms) in values.items()}
    expected = {key for key, v in losses.items() if not any(dominates(w, v) for w in losses.values())}
    stored = rows(db, 'SELECT trial_key, position, "values" FROM fronts ORDER BY position')
    assert {key for key, _, _ in stored} == expected
    assert [position for _, position, _ in stored] == list(range(len(stored)))
    accuracies = [json.loads(v)["val_accuracy"] for _, _, v in stored]
    assert accuracies == sorted(accuracies, reverse=True)  # best first by the first objective
    for key, _, stored_values in stored:
        assert json.loads(stored_values) == dict(zip(("val_accuracy", "parameters", "inference_ms"), values[key]))
    best = max(values[key][0] for key in expected)  # smallest network within 3 points of the best accuracy
    within = [key for key in expected if values[key][0] >= best - 0.03 - 1e-12]
    smallest = min(within, key=lambda key: (values[key][1], -values[key][0], values[key][2], key))
    assert rows(db, "SELECT selected_trial FROM sweeps") == [(smallest,)]
    assert rows(db, "SELECT trial_key FROM evaluations WHERE name = 'test'") == [(smallest,)]  # tested once
    record = json.loads(rows(db, "SELECT search FROM sweeps")[0][0])
    assert record["rule"] == {"rule": "smallest_within", "metric": "val_accuracy", "tolerance": 3, "then": "parameters"}
    assert [o["metric"] for o in record["objectives"]] == ["val_accuracy", "parameters", "inference_ms"]


def test_run_again_trains_and_measures_nothing_and_evaluate_front_tests_every_member(traded, data_dir):
    db = traded / "results.db"
    measured = rows(db, "SELECT * FROM measurements ORDER BY trial_key")
    selection = rows(db, "SELECT selected_trial FROM sweeps")
    result = cli("run", str(traded / "sweep.yaml"), cwd=traded, data_dir=data_dir, check=True)
    assert "started" not in result.stderr and "measuring" not in result.stderr
    assert rows(db, "SELECT * FROM measurements ORDER BY trial_key") == measured
    front = [key for (key,) in rows(db, "SELECT trial_key FROM fronts ORDER BY position")]
    answer = cli("evaluate", "trade", "--front", "--data-dir", str(data_dir), cwd=traded, check=True)
    assert f"{len(front)} front members of trade" in answer.stdout
    tested = dict(rows(db, "SELECT trial_key, samples FROM evaluations WHERE name = 'test'"))
    assert set(tested) == set(front) and set(tested.values()) == {200}
    assert rows(db, "SELECT selected_trial FROM sweeps") == selection  # never used to select
    again = cli("evaluate", "trade", "--front", "--data-dir", str(data_dir), cwd=traded, check=True)
    assert "0 trial(s) tested now" in again.stdout
    # the selected trial's test, by the coordinator's worker, and the others' in this process: one way of testing
    (selected,) = selection[0]
    [(predictions,)] = rows(db, "SELECT predictions FROM evaluations WHERE trial_key = ? AND name = 'test'", selected)
    assert len(json.loads(predictions)) == 200


def test_the_report_and_the_web_page_draw_the_front(traded, data_dir):
    from gridsearch.store.storage import Storage
    from gridsearch.web.app import create_app

    db = traded / "results.db"
    front = [key for (key,) in rows(db, "SELECT trial_key FROM fronts ORDER BY position")]
    out = traded / "report"
    cli("report", "trade", "--out", str(out), "--data-dir", str(data_dir), cwd=traded, check=True)
    html = (out / "index.html").read_text()
    assert "Trade-offs: the Pareto front" in html and "smallest_within" in html
    for pair in ("parameters_val_accuracy", "inference_ms_val_accuracy", "inference_ms_parameters"):
        assert (out / f"front_trade_{pair}.png").stat().st_size > 5000
    with open(out / "front_trade.csv") as file:
        table = [line.split(",")[1] for line in file.read().splitlines()[1:]]
    assert table == front
    with Storage(str(db), readonly=True) as storage:
        app = create_app(storage, traded / "runs", data_dir)
        client, live = app.test_client(), app.extensions["gridsearch.live"]

        def get(url):
            answer = client.get(url)
            while answer.status_code == 202:  # drawn in the background
                live.wait_computed()
                answer = client.get(url)
            return answer

        answer = get("/api/sweeps/trade/front").get_json()
        assert [p["key"] for p in answer["front"]] == front and answer["points"] == 6
        assert [p["selected"] for p in answer["front"]].count(True) == 1
        assert [o["metric"] for o in answer["objectives"]] == ["val_accuracy", "parameters", "inference_ms"]
        figure = get("/sweeps/trade/front.png?x=parameters&y=val_accuracy")
        assert figure.status_code == 200 and figure.data[:4] == b"\x89PNG"
        assert get("/sweeps/trade/front.png?x=parameters&y=parameters").status_code == 404
        assert 'id="front-section"' in client.get("/sweeps/trade").get_data(as_text=True)


# -- successive halving with several objectives ------------------------------------------------------------------------


def test_multi_objective_halving_promotes_each_rung_by_the_recorded_values(tmp_path, data_dir):
    """6 trials, epochs 4, factor 2: rungs of 1, 2 and 4 epochs (6, 3 and 2 trials). Each rung's promotions are
    recomputed here from the recorded epochs and parameter counts by the brute-force rank and crowding distance."""
    sweep = write_sweep(
        tmp_path,
        **{**CONVNET, "params": {"epochs": 4, "batch_size": 50}},
        name="mohalving",
        grid={"channels": [2, 4, 8], "lr": [0.03, 0.1]},
        objectives=ACCURACY_SIZE,
        search={"strategy": "halving", "factor": 2, "min_epochs": 1},
    )
    cli("run", str(sweep), cwd=tmp_path, data_dir=data_dir, check=True)
    db = tmp_path / "results.db"
    size = dict(rows(db, "SELECT key, parameter_count FROM trials"))
    accuracies: dict[str, list[float]] = {}
    for key, accuracy in rows(db, "SELECT trial_key, val_accuracy FROM epochs ORDER BY trial_key, epoch"):
        accuracies.setdefault(key, []).append(accuracy)
    candidates = sorted(size)
    for rung, (budget, keep) in enumerate([(1, 3), (2, 2)]):
        points = [(-max(accuracies[key][:budget]), size[key]) for key in candidates]
        rank = brute_ranks(points)
        distance = {}
        for value in set(rank):
            members = [i for i in range(len(points)) if rank[i] == value]
            for i, d in zip(members, brute_crowding([points[i] for i in members])):
                distance[i] = d
        order = sorted(range(len(points)), key=lambda i: (rank[i], -distance[i], candidates[i]))
        promoted = sorted(candidates[i] for i in order[:keep])
        reached = sorted(key for key, r in rows(db, "SELECT trial_key, rung FROM sweep_trials") if r > rung)
        assert reached == promoted, rung
        candidates = promoted
    assert sorted(key for (key,) in rows(db, "SELECT key FROM trials WHERE status = 'done'")) == candidates
    # the front: every scored trial (done, or stopped at its rung) at its best epoch
    scored = rows(db, "SELECT key, val_accuracy, parameter_count FROM trials WHERE status IN ('done', 'stopped')")
    losses = {key: (-accuracy, parameters) for key, accuracy, parameters in scored}
    expected = {key for key, v in losses.items() if not any(dominates(w, v) for w in losses.values())}
    assert {key for (key,) in rows(db, "SELECT trial_key FROM fronts")} == expected
    assert rows(db, "SELECT selected_trial FROM sweeps")[0][0] in expected


# -- tpe and nsga2 with several objectives --------------------------------------------------------------------------


def asking(strategy: str) -> dict:
    return {
        **CONVNET,
        "params": {"epochs": 1, "batch_size": 50},
        "name": f"mo{strategy}",
        "grid": {"lr": {"loguniform": [0.005, 0.2]}, "channels": [2, 4, 8], "momentum": [0.5, 0.9]},
        "objectives": ACCURACY_SIZE,
        "search": {"strategy": strategy, "trials": 8, "batch": 2, "seed": 5}
        | ({"population": 4} if strategy == "nsga2" else {}),
    }


@pytest.mark.parametrize("strategy", ["tpe", "nsga2"])
def test_several_objectives_give_the_same_points_and_numbers_with_any_workers_inline_and_after_a_kill_9(
    tmp_path, data_dir, strategy
):
    sweep = asking(strategy)
    reference = tmp_path / "inline"
    reference.mkdir()
    cli("run", str(write_sweep(reference, **sweep)), cwd=reference, data_dir=data_dir, check=True)
    expected, numbers = rows(reference / "results.db", POINTS), epoch_metrics(reference / "results.db")
    assert len(expected) >= 6  # of 8 proposals (a point proposed twice is one trial)
    front = rows(reference / "results.db", 'SELECT trial_key, position, "values" FROM fronts ORDER BY position')
    assert front
    for name, options in {"one": ("--workers", "1"), "two": ("--workers", "2")}.items():
        folder = tmp_path / name
        folder.mkdir()
        cli("run", str(write_sweep(folder, **sweep)), *options, cwd=folder, data_dir=data_dir, check=True)
        assert rows(folder / "results.db", POINTS) == expected, name
        assert epoch_metrics(folder / "results.db") == numbers, name
        assert (
            rows(folder / "results.db", 'SELECT trial_key, position, "values" FROM fronts ORDER BY position') == front
        )
    killed = tmp_path / "killed"
    killed.mkdir()
    write_sweep(killed, **sweep)
    db = killed / "results.db"
    coordinator = start_run(killed, data_dir, "--workers", "2")
    kill_9_at(  # batch 2 (of 4) proposed, the last not yet done
        db,
        "SELECT (SELECT COUNT(*) FROM sweep_trials) >= 3 AND "
        f"(SELECT COUNT(*) FROM trials WHERE status = 'done') < {len(expected)}",
        coordinator,
    )
    assert len(rows(db, POINTS)) < len(expected)
    cli("run", str(killed / "sweep.yaml"), cwd=killed, data_dir=data_dir, check=True)
    assert rows(db, POINTS) == expected and epoch_metrics(db) == numbers
    # the proposals are a search, not a random draw: a later batch depends on the earlier batches' values
    configs = [json.loads(config)["params"] for _, config in expected]
    assert len({(c["lr"], c["channels"], c["momentum"]) for c in configs}) > 1
    assert np.isfinite([c["lr"] for c in configs]).all()


def test_nsga2_breeds_each_generation_from_the_one_before(tmp_path):
    """Told again with the generation the sampler gave each point, NSGA-II breeds generation 1 from generation 0
    (uniform crossover takes each value from a parent; mutation rarely redraws one): most of generation 1's learning
    rates are generation 0's. Without that bookkeeping every point would be a fresh random draw."""
    from gridsearch.engine.strategies import strategy_for
    from gridsearch.spec import halving

    sweep = load_sweep(
        write_sweep(tmp_path, **{**asking("nsga2"), "search": {"strategy": "nsga2", "trials": 16, "batch": 4}}),
        build=False,
    )
    assert sweep.search.population == 4
    batches: list[list[float]] = []

    def evaluate(trials, budget):
        batches.append([trial.params["lr"] for trial in trials])
        return [
            halving.Standing(t.key, t.params["lr"], 1.0, (t.params["lr"], float(t.params["channels"]))) for t in trials
        ]

    strategy_for(sweep).search(evaluate)
    inherited = [sum(lr in set(batches[b - 1]) | set(batches[0]) for lr in batches[b]) for b in (1, 2, 3)]
    assert sum(inherited) >= 6, (batches, inherited)


def test_with_several_seeds_a_point_is_a_configuration_scored_by_the_mean_of_its_seeds(tmp_path, data_dir):
    """Objectives val_loss and epoch_seconds over seeds 0 and 1: each stored front member's values are its
    configuration's means (epoch_seconds: each trial's train_seconds / epochs_run); every seed of the chosen
    configuration is tested, and the selected trial is its best seed by val_loss."""
    sweep = write_sweep(
        tmp_path,
        **{**CONVNET, "params": {"epochs": 1, "batch_size": 50}},
        name="seeded",
        grid={"channels": [2, 4], "lr": [0.03, 0.1]},
        seeds=[0, 1],
        objectives=[{"metric": "val_loss", "direction": "min"}, {"metric": "epoch_seconds", "direction": "min"}],
    )
    plan = cli("plan", str(sweep), cwd=tmp_path, check=True)
    assert (
        "objectives: val_loss (min), epoch_seconds (min); the front's trial selected: the best val_loss" in plan.stdout
    )
    cli("run", str(sweep), cwd=tmp_path, data_dir=data_dir, check=True)
    db = tmp_path / "results.db"
    trials = rows(db, "SELECT key, config, val_loss, train_seconds, epochs_run FROM trials")
    by_point: dict[str, list[tuple]] = {}
    for key, config, loss, seconds, epochs in trials:
        params = json.loads(config)["params"]
        by_point.setdefault(f"{params['channels']}-{params['lr']}", []).append((key, loss, seconds / epochs))
    assert all(len(seeds) == 2 for seeds in by_point.values()) and len(by_point) == 4
    means = {
        point: (np.mean([s[1] for s in seeds]), np.mean([s[2] for s in seeds])) for point, seeds in by_point.items()
    }
    stored = rows(db, 'SELECT trial_key, "values" FROM fronts ORDER BY position')
    expected = {p for p, v in means.items() if not any(dominates(w, v) for w in means.values())}
    assert len(stored) == len(expected)
    for key, values in stored:
        (point,) = [p for p, seeds in by_point.items() if key in {s[0] for s in seeds}]
        assert point in expected
        assert json.loads(values) == pytest.approx({"val_loss": means[point][0], "epoch_seconds": means[point][1]})
    chosen = min(expected, key=lambda p: means[p])  # the best val_loss
    tested = {key for (key,) in rows(db, "SELECT trial_key FROM evaluations WHERE name = 'test'")}
    assert tested == {s[0] for s in by_point[chosen]}
    best_seed = min(by_point[chosen], key=lambda s: s[1])[0]
    assert rows(db, "SELECT selected_trial FROM sweeps") == [(best_seed,)]


def test_the_sweep_page_shows_the_front_in_a_browser(traded, data_dir, page):  # noqa: F811
    """Headless Chromium on ``serve``: the trade-offs section appears for a sweep of several objectives, with a row
    per front member (the selected one marked) and the scatter of the two objectives chosen in its menus."""
    front = [key for (key,) in rows(traded / "results.db", "SELECT trial_key FROM fronts ORDER BY position")]
    process = subprocess.Popen(
        [sys.executable, "-m", "gridsearch", "serve", "--port", "0"],
        cwd=traded,
        env={**os.environ, "PYTHONPATH": str(ROOT), "GRIDSEARCH_DATA": str(data_dir)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+", process.stdout.readline()).group(0)  # type: ignore[union-attr]
        page.goto(f"{url}/sweeps/trade")
        page.wait_for_selector("#front-section:not([hidden]) #front-table tbody tr")
        assert page.locator("#front-table tbody tr").count() == len(front)
        assert page.locator("#front-table tbody tr.selected").count() == 1
        assert page.locator("#front-table tbody tr td.key").all_inner_texts() == front
        page.wait_for_function("document.getElementById('front').naturalWidth > 0")
        first = page.get_attribute("#front", "data-url")
        assert "x=inference_ms" in first and "y=val_accuracy" in first
        page.select_option("#front-x", "parameters")
        page.wait_for_function("(document.getElementById('front').dataset.url || '').includes('x=parameters')")
    finally:
        process.terminate()
        process.wait(timeout=10)
