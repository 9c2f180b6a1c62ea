"""The study's four models and the baselines, trained through the engine on real MNIST."""

import json
import re

import pytest

from architectures import REGISTRY, count_parameters
from architectures.lenet53 import LeNet53
from tests.conftest import built_in_architectures, cli, gridsearch, rows, write_sweep

SUBSET = {"train_size": 2000, "val_size": 500, "test_size": 500}


def test_every_architecture_beats_chance_on_a_subset_with_warm_starts(tmp_path, data_dir):
    base = write_sweep(
        tmp_path, "base.yaml", name="base", dataset=SUBSET, grid={"lr": [0.05]}, params={"epochs": 1, "batch_size": 50}
    )
    built_in = built_in_architectures()
    warm = ["lenet53_augmented", "stn", "tps_stn"]
    others = sorted(built_in - set(warm))
    every = write_sweep(
        tmp_path,
        "every.yaml",
        name="every",
        dataset=SUBSET,
        params={"batch_size": 50},
        grid=[
            {"architecture": warm, "init_from": ["best:base"], "lr": [0.005], "epochs": [1]},
            {"architecture": others, "lr": [0.1], "epochs": [3]},
        ],
    )
    result = cli("run", str(base), str(every), "--workers", "2", cwd=tmp_path, data_dir=data_dir, check=True)
    db = tmp_path / "results.db"
    scores = dict(
        rows(
            db,
            "SELECT t.architecture, t.val_accuracy FROM trials t JOIN sweep_trials s "
            "ON s.trial_key = t.key JOIN sweeps w ON w.id = s.sweep_id WHERE w.name = 'every'",
        )
    )
    assert set(scores) == built_in
    assert min(scores.values()) > 0.5, f"{scores}"  # chance is 0.1
    # the warm-started trials name the exact trial they started from and loaded all of LeNet-5-3
    (base_key,) = rows(db, "SELECT selected_trial FROM sweeps WHERE name = 'base'")[0]
    configs = [
        json.loads(c)
        for (c,) in rows(db, "SELECT config FROM trials WHERE architecture IN ('stn', 'tps_stn', 'lenet53_augmented')")
    ]
    assert {c["params"]["init_from"] for c in configs} == {f"trial:{base_key}"}
    lenet_tensors = len(LeNet53().state_dict())
    for config in configs:
        key = next(
            k for (k,) in rows(db, "SELECT key FROM trials WHERE config = ?", json.dumps(config, sort_keys=True))
        )
        log = (tmp_path / "runs" / key / "worker.log").read_text()
        loaded = int(re.search(r"(\d+) tensors loaded", log).group(1))
        assert loaded == lenet_tensors, log
    assert "selected trial" in result.stdout


@pytest.mark.parametrize(
    "name, count", [("lenet53", 271_530), ("lenet53_augmented", 271_530), ("stn", 276_268), ("tps_stn", 281_656)]
)
def test_the_study_models_have_the_studys_parameter_counts(name, count):
    assert count_parameters(REGISTRY[name].build()) == count


@pytest.mark.slow
def test_three_epochs_of_lenet53_on_the_full_50k_reach_99_percent(tmp_path, data_dir):
    sweep = write_sweep(
        tmp_path,
        name="full",
        dataset={"train_size": 50000, "val_size": 10000},
        params={"epochs": 3, "batch_size": 86, "lr_step": 1},
        grid={"lr": [0.08]},
    )
    result = gridsearch("run", str(sweep), cwd=tmp_path, data_dir=data_dir, check=True, timeout=900)
    ((accuracy, samples),) = rows(tmp_path / "results.db", "SELECT accuracy, samples FROM evaluations")
    assert samples == 10000
    assert accuracy >= 0.99, result.stdout
