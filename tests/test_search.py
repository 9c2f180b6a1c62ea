"""Random and sobol search: the unit points against numpy and scipy, the distributions' values, the sweep
file's ``search`` and distributions (errors with file, line and key), stable ordinary trial keys, halving
over drawn points, and a real random sweep through ``run``, ``plan``, ``trials`` and ``best``."""

import json
import math

import numpy as np
import pytest
from scipy.stats import qmc

from gridsearch.errors import UserError
from gridsearch.spec import sampling
from gridsearch.spec.sampling import Distribution, choose, round_significant, unit_points
from gridsearch.spec.sweep import load_sweep
from tests.conftest import cli, rows, write_sweep

SPACE = {"lr": {"loguniform": [0.001, 0.1]}, "lr_step": {"int": [1, 4]}, "dropout": [0.1, 0.25, 0.5]}

# -- the points and the values ------------------------------------------------------------------------


def test_unit_points_are_numpys_generator_and_scipys_scrambled_sobol():
    assert np.array_equal(unit_points("random", 6, 3, 7), np.random.default_rng(7).random((6, 3)))
    assert np.array_equal(unit_points("sobol", 8, 3, 7), qmc.Sobol(d=3, scramble=True, seed=7).random(8))
    first = unit_points("sobol", 5, 2, 7)  # any count; the first points are those of a longer draw
    assert np.array_equal(first, unit_points("sobol", 8, 2, 7)[:5])
    assert not np.array_equal(unit_points("sobol", 8, 3, 8), unit_points("sobol", 8, 3, 7))
    # sobol's balance: 8 points put exactly 4 in each half of every axis
    assert ((unit_points("sobol", 8, 3, 7) < 0.5).sum(axis=0) == 4).all()


def test_distributions_map_the_unit_interval_exactly():
    uniform, log = Distribution("uniform", 0.1, 0.3), Distribution("loguniform", 0.001, 0.1)
    assert uniform.value(0.0) == 0.1 and uniform.value(0.5) == 0.2 and uniform.value(0.123456) == 0.1247
    assert log.value(0.5) == 0.01 and log.value(0.0) == 0.001
    assert log.value(0.3) == round_significant(math.exp(math.log(0.001) + 0.3 * math.log(100))) == 0.003981
    integer = Distribution("int", 1, 4)
    assert [integer.value(u) for u in (0.0, 0.2499, 0.25, 0.5, 0.7499, 0.75, 0.999999)] == [1, 1, 2, 3, 3, 4, 4]
    assert Distribution("uniform", 0.12344, 1.0).value(0.0) == 0.12344  # rounded below low: clipped to low
    assert round_significant(0.0123456) == 0.01235 and round_significant(123456.0) == 123500.0
    assert [choose(["a", "b", "c"], u) for u in (0.0, 0.3333, 0.34, 0.999999)] == ["a", "a", "b", "c"]


def test_drawn_points_are_the_values_at_the_unit_points():
    space = {"lr": Distribution("loguniform", 0.001, 0.1), "lr_step": Distribution("int", 1, 4), "d": [0.1, 0.5]}
    units = qmc.Sobol(d=3, scramble=True, seed=3).random(4)
    expected = [
        {
            "lr": round_significant(math.exp(math.log(0.001) + u[0] * (math.log(0.1) - math.log(0.001)))),
            "lr_step": 1 + int(u[1] * 4),
            "d": [0.1, 0.5][int(u[2] * 2)],
        }
        for u in units
    ]
    assert sampling.draw_points(space, "sobol", 4, 3) == expected


# -- the sweep file -----------------------------------------------------------------------------------


def test_sampled_sweeps_are_ordinary_trials_with_stable_keys(tmp_path):
    sobol = load_sweep(write_sweep(tmp_path, "s.yaml", grid=SPACE, search={"strategy": "sobol", "trials": 5}))
    assert sobol.search_record() == {"strategy": "sobol", "trials": 5, "seed": 0}
    trials = list(sobol.trials())
    assert len(trials) == len(sobol) == 5 and sobol.gridded_params == ["lr", "lr_step", "dropout"]
    assert all(isinstance(t.params["lr_step"], float) and 0.001 <= t.params["lr"] <= 0.1 for t in trials)
    units = qmc.Sobol(d=3, scramble=True, seed=0).random(8)[:5]
    assert [t.params["dropout"] for t in trials] == [[0.1, 0.25, 0.5][int(u * 3)] for u in units[:, 2]]
    again = load_sweep(write_sweep(tmp_path, "again.yaml", grid=SPACE, search={"strategy": "sobol", "trials": 5}))
    assert [t.key for t in again.trials()] == [t.key for t in trials]
    # the drawn values, written out as a grid, are the same trials: ordinary keys, stable through YAML
    listed = [{name: [t.params[name]] for name in SPACE} for t in trials]
    grid = load_sweep(write_sweep(tmp_path, "grid.yaml", grid=listed))
    assert [t.key for t in grid.trials()] == [t.key for t in trials]
    other_seed = load_sweep(
        write_sweep(tmp_path, "o.yaml", grid=SPACE, search={"strategy": "sobol", "trials": 5, "seed": 1})
    )
    assert not {t.key for t in other_seed.trials()} & {t.key for t in trials}
    random = load_sweep(
        write_sweep(tmp_path, "r.yaml", grid=SPACE, search={"strategy": "random", "trials": 5}, seeds=[0, 1])
    )
    assert len(random) == 10 and [t.seed for t in random.trials()][:2] == [0, 1]
    units = np.random.default_rng(0).random((5, 3))
    assert [t.params["lr_step"] for t in random.trials()][::2] == [float(1 + int(u * 4)) for u in units[:, 1]]


def test_halving_over_drawn_points(tmp_path):
    search = {"strategy": "halving", "sample": "random", "trials": 9, "seed": 4, "min_epochs": 1}
    halved = load_sweep(
        write_sweep(tmp_path, "h.yaml", params={"epochs": 3, "batch_size": 50}, grid=SPACE, search=search)
    )
    plain = load_sweep(
        write_sweep(
            tmp_path,
            "p.yaml",
            params={"epochs": 3, "batch_size": 50},
            grid=SPACE,
            search={"strategy": "random", "trials": 9, "seed": 4},
        )
    )
    assert halved.rung_epochs == [1, 3] and [t.key for t in halved.trials()] == [t.key for t in plain.trials()]
    assert halved.search_record() == {
        "strategy": "halving",
        "factor": 3,
        "min_epochs": 1,
        "rung_epochs": [1, 3],
        "sample": "random",
        "trials": 9,
        "seed": 4,
    }


SOBOL = {"strategy": "sobol", "trials": 4}
BAD = [
    ({"lr": {"uniform": [0.01, 0.1]}}, None, "grid.lr: a distribution needs search strategy random or sobol"),
    ({"lr": {"normal": [0.01, 0.1]}}, SOBOL, "grid.lr: a distribution is one of {uniform: [low, high]}"),
    ({"lr": {"uniform": [0.1, 0.01]}}, SOBOL, "grid.lr.uniform: low must be below high, got [0.1, 0.01]"),
    ({"lr": {"uniform": [0, 0.1]}}, SOBOL, "grid.lr.uniform: must be > 0, got 0.0"),
    ({"lr": {"uniform": [0.1]}}, SOBOL, "grid.lr.uniform: must be a [low, high] pair of numbers"),
    ({"momentum": {"uniform": [0.5, 1]}}, SOBOL, "grid.momentum.uniform: must be in [0, 1), got 1.0"),
    ({"hidden": {"uniform": [8, 64]}}, SOBOL, "grid.hidden.uniform: an integer param takes {int: [low, high]}"),
    ({"hidden": {"int": [8, 64.5]}}, SOBOL, "grid.hidden.int: must be int, got float 64.5"),
    ({"optimizer": {"int": [1, 2]}}, SOBOL, "grid.optimizer.int: only numeric params take a distribution"),
    ({"lr": [0.1]}, {"strategy": "random"}, "search: random search needs 'trials'"),
    ({"lr": [0.1]}, {"strategy": "random", "trials": 0}, "search.trials: must be between 1 and 100,000, got 0"),
    ({"lr": [0.1]}, {"strategy": "sobol", "trials": 2, "seed": -1}, "search.seed: must be an integer in [0, 2**32)"),
    (
        {"lr": [0.1]},
        {"strategy": "grid", "trials": 2},
        "search.trials: only used by strategies random, sobol, halving, hyperband, tpe, nsga2, gp",
    ),
    (
        {"lr": [0.1]},
        {"strategy": "sobol", "trials": 2, "factor": 3},
        "search.factor: only used by strategies halving, hyperband",
    ),
    (
        {"lr": [0.1]},
        {"strategy": "sobol", "trials": 2, "sample": "grid"},
        "search.sample: only used by strategies halving, hyperband",
    ),
    ({"lr": [0.1]}, {"strategy": "halving", "sample": "latin"}, "search.sample: unknown sample 'latin'"),
    (
        {"lr": [0.1]},
        {"strategy": "sobel", "trials": 2},
        "search.strategy: unknown strategy 'sobel' (did you mean 'sobol'?)",
    ),
]


@pytest.mark.parametrize("grid, search, message", BAD, ids=[m for _, _, m in BAD])
def test_bad_distributions_and_searches_name_file_line_and_key(tmp_path, grid, search, message):
    changes = {"grid": grid} if search is None else {"grid": grid, "search": search}
    path = write_sweep(tmp_path, params={"epochs": 2, "batch_size": 50}, **changes)
    with pytest.raises(UserError) as error:
        load_sweep(path)
    where, rest = str(error.value).split(": ", 1)
    assert where.startswith(f"{path}:") and rest.startswith(message) and "\n" not in rest
    key = rest.split(":", 1)[0].split("[")[0].rsplit(".", 1)[-1]
    line = int(where.rsplit(":", 1)[1])
    text = path.read_text().splitlines()
    assert f"{key}:" in text[line - 1] or f"{key}:" in text[line - 2]  # the key at fault, or its value below it


def test_a_sampled_search_draws_from_one_grid_mapping(tmp_path):
    path = write_sweep(tmp_path, grid=[{"lr": [0.1]}, {"lr": [0.2]}], search=SOBOL)
    with pytest.raises(UserError, match=r":\d+: grid: sobol search draws from one grid mapping, not a list of 2"):
        load_sweep(path)


# -- a real random sweep ---------------------------------------------------------------------------------


def test_a_random_sweep_runs_plans_and_selects_like_a_grid(tmp_path, data_dir):
    path = write_sweep(
        tmp_path,
        dataset={"train_size": 300, "val_size": 200, "test_size": 200},
        params={"epochs": 1, "batch_size": 50, "hidden": 16},
        grid={"lr": {"loguniform": [0.03, 0.3]}, "lr_step": [1, 2]},
        search={"strategy": "random", "trials": 3, "seed": 11},
    )
    keys = [t.key for t in load_sweep(path).trials()]
    plan = json.loads(cli("plan", str(path), "--format", "json", cwd=tmp_path, check=True).stdout)
    assert [(t["key"], t["status"]) for t in plan] == [(key, "new") for key in keys]
    cli("run", str(path), cwd=tmp_path, data_dir=data_dir, check=True)
    db = tmp_path / "results.db"
    assert sorted(rows(db, "SELECT key, status FROM trials")) == sorted((key, "done") for key in keys)
    assert [json.loads(search) for (search,) in rows(db, "SELECT search FROM sweeps")] == [
        {"strategy": "random", "trials": 3, "seed": 11}
    ]
    plan = json.loads(cli("plan", str(path), "--format", "json", cwd=tmp_path, check=True).stdout)
    assert [(t["key"], t["status"]) for t in plan] == [(key, "done") for key in keys]
    listed = cli("trials", "small", "--format", "json", cwd=tmp_path, check=True)
    assert sorted(t["key"] for t in json.loads(listed.stdout)) == sorted(keys)
    best = cli("best", "small", cwd=tmp_path, check=True).stdout
    assert "selected trial" in best and "test" in best
