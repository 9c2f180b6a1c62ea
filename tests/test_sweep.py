"""Sweep files: expansion, stable trial keys and validation (no training here)."""

from pathlib import Path

import pytest
import yaml

import architectures
from gridsearch.errors import UserError
from gridsearch.spec.sweep import EXTRA_PARAMS, grid_points, load_sweep, resolve_warm_starts, trial_key
from tests.conftest import ROOT, write_sweep


def keys(path: Path) -> list[str]:
    return [trial.key for trial in load_sweep(path).trials()]


@pytest.mark.parametrize(
    "part",
    [{"lr": [0.1, 0.2], "architecture": ["mlp", "lenet53"], "batch_size": [10, 20, 30]}, {"lr": [0.1]}, {}],
    ids=["three names", "one point", "empty"],
)
def test_grid_points_are_scikit_learns_parameter_grid(part):
    from sklearn.model_selection import ParameterGrid

    assert list(grid_points(part)) == list(ParameterGrid(part))


def test_lenet53_grid_is_the_studys_25_trials():
    sweep = load_sweep(ROOT / "grids" / "lenet53.yaml")
    trials = list(sweep.trials())
    assert len(trials) == len(sweep) == 25
    assert len({t.key for t in trials}) == 25
    assert sorted({t.params["lr"] for t in trials}) == [0.04, 0.05, 0.06, 0.07, 0.08]
    assert sorted({t.params["lr_step"] for t in trials}) == [3, 4, 5, 6, 7]
    first = trials[0].params
    assert (first["epochs"], first["batch_size"], first["patience"], first["momentum"]) == (100, 86, 40, 0.9)
    assert sweep.dataset.train_size == 50000 and sweep.dataset.val_size == 10000


KNOWN_KEYS = {
    "baselines.yaml": ("af7800d042368335", "59f7909f81c0f67c"),
    "lenet53.yaml": ("91847b6dabcddcd9", "78a623d7c5cc8b94"),
    "lenet53_augmented.yaml": ("b316f7a4ab6261fc", "c9e5d46e3d1263d0"),
    "lenet53_halving.yaml": ("91847b6dabcddcd9", "78a623d7c5cc8b94"),
    "quick.yaml": ("1d3a34477687ec74", "aa015bc28ab93ac2"),
    "stn.yaml": ("52d19e2baf0db9ea", "a2d2fb7fc851eafb"),
    "tps.yaml": ("fe50731422cd5718", "172604e2c426f707"),
}
"""The first and last trial keys of every sweep file in grids/ ('init_from: best:lenet53' unresolved)."""


@pytest.mark.parametrize("filename", sorted(KNOWN_KEYS))
def test_trial_keys_never_change(filename):
    """Keys name stored trials and their run folders: a change of code must not change them."""
    found = keys(ROOT / "grids" / filename)
    assert (found[0], found[-1]) == KNOWN_KEYS[filename]


def test_keys_with_warm_starts_and_speed_params_never_change(tmp_path):
    stn = resolve_warm_starts(load_sweep(ROOT / "grids" / "stn.yaml"), lambda name: "0123456789abcdef")
    assert next(stn.trials()).key == "6ec898985bebc675"
    quick = yaml.safe_load((ROOT / "grids" / "quick.yaml").read_text())
    quick["params"].update(amp="bf16", channels_last=True)
    (tmp_path / "fast.yaml").write_text(yaml.safe_dump(quick))
    assert keys(tmp_path / "fast.yaml")[0] == "4e78eff45b3c4df5"


def test_every_extra_an_architecture_may_name_has_its_params():
    assert set(EXTRA_PARAMS) == architectures.EXTRAS
    trial = next(load_sweep(ROOT / "grids" / "stn.yaml").trials())
    assert {"aug_p", "zoom", "elastic_sigma", "transformer_lr_scale"} <= set(trial.params)


def test_key_is_a_hash_of_the_resolved_config(tmp_path):
    trial = next(load_sweep(write_sweep(tmp_path)).trials())
    assert trial.key == trial_key(trial.config())
    assert len(trial.key) == 16 and int(trial.key, 16) >= 0


def test_same_point_in_two_files_is_the_same_trial(tmp_path):
    a = write_sweep(tmp_path, "a.yaml")
    # Another name, explicit defaults, keys reordered, ints written as floats: same resolved configs.
    b = write_sweep(
        tmp_path,
        "b.yaml",
        name="other",
        params={"hidden": 32, "epochs": 2, "patience": 5, "batch_size": 50, "momentum": 0.9, "dropout": 0.25},
        grid={"lr_step": [3.0, 1], "lr": [0.08, 0.02]},
    )
    assert sorted(keys(a)) == sorted(keys(b))


def test_changing_a_fixed_param_changes_every_key(tmp_path):
    a = keys(write_sweep(tmp_path, "a.yaml"))
    b = keys(
        write_sweep(
            tmp_path,
            "b.yaml",
            params={**yaml.safe_load(write_sweep(tmp_path).read_text())["params"], "weight_decay": 0.001},
        )
    )
    assert not set(a) & set(b)


def test_adding_grid_values_keeps_the_old_keys(tmp_path):
    old = keys(write_sweep(tmp_path, "a.yaml"))
    new = keys(write_sweep(tmp_path, "b.yaml", grid={"lr": [0.02, 0.08, 0.1], "lr_step": [1, 3]}))
    assert set(old) < set(new) and len(new) == 6


def test_list_of_dicts_grid_and_seeds(tmp_path):
    sweep = load_sweep(
        write_sweep(
            tmp_path,
            grid=[{"lr": [0.01], "optimizer": ["adam"]}, {"lr": [0.05, 0.1], "momentum": [0.5, 0.9]}],
            seeds=[0, 1],
        )
    )
    trials = list(sweep.trials())
    assert len(trials) == (1 + 4) * 2
    assert {t.seed for t in trials} == {0, 1}
    assert sweep.gridded_params == ["lr", "optimizer", "momentum"]


BAD_INPUTS = [
    ("name: [unclosed", "malformed YAML"),
    ("- just\n- a list\n", "must be a mapping"),
    ("name: x\narchitecture: lenet53\ngrid: {lr: [0.1]}\nextra: 1\n", "extra: unknown key"),
    (
        "name: x\narchitecture: lenet53\ngrid: {lr: [0.1]}\nparams: {optimiser: sgd}\n",
        "params.optimiser: unknown parameter for architecture 'lenet53' (did you mean 'optimizer'?)",
    ),
    ("name: x\narchitecture: lenet54\ngrid: {lr: [0.1]}\n", "unknown architecture 'lenet54'"),
    (
        "name: x\narchitecture: lenet53\ngrid: {lr: [0.1]}\nparams: {optimizer: rmsprop}\n",
        "params.optimizer: must be one of sgd, adam",
    ),
    (
        "name: x\narchitecture: lenet53\ngrid: {lr: [0.1]}\nselect: test_accuracy\n",
        "select: unknown metric 'test_accuracy' (known: val_accuracy, val_loss)",
    ),
    (
        "name: x\narchitecture: lenet53_augmented\ngrid: {lr: [0.1]}\nparams: {rotate: 200}\n",
        "params.rotate: must be in [0, 180] (degrees), got 200.0",
    ),
    (
        "name: x\narchitecture: lenet53_augmented\ngrid: {lr: [0.1], zoom: [[0.9, 1.1], [0, 1]]}\n",
        "grid.zoom[1]: must be a [low, high] pair in [0.1, 10] (magnification factors), got [0.0, 1.0]",
    ),
    ("name: x\narchitecture: lenet53\ngrid: {lr: [0.1]}\nparams: {rotate: 5}\n", "params.rotate: unknown parameter"),
    ("name: x\narchitecture: lenet53\ngrid: {lr: [0.1]}\nparams: {epochs: -3}\n", "params.epochs: must be > 0"),
    ("name: x\narchitecture: lenet53\ngrid: {lr: [0.1, 0]}\n", "grid.lr[1]: must be > 0"),
    ("name: x\narchitecture: lenet53\ngrid: {lr: [0.1]}\nparams: {epochs: ten}\n", "params.epochs: must be int"),
    ("name: x\narchitecture: lenet53\ngrid: {lr: [.nan]}\n", "must be a finite number"),
    (
        "name: x\narchitecture: lenet53\ngrid: {lr: [0.1]}\ndataset: {train_size: 55000, val_size: 10000}\n",
        "train_size + val_size = 65000",
    ),
    ("name: x\narchitecture: lenet53\ngrid: {}\n", "the grid is empty"),
    ("name: x\narchitecture: lenet53\ngrid: {lr: []}\n", "the grid is empty"),
    ("name: x\narchitecture: lenet53\ngrid: []\n", "the grid is empty"),
    ("name: x\narchitecture: lenet53\ngrid: {lr: 0.1}\n", "grid.lr: must be a list of values"),
    (
        "name: x\narchitecture: lenet53\ngrid: {architecture: null, lr: [0.1]}\n",
        "grid.architecture: must be a non-empty list of architecture names",
    ),
    ("name: x\narchitecture: lenet53\ngrid: {lr: [0.1]}\nparams: {lr: 0.1}\n", "set both in params and in grid"),
    ("name: x\narchitecture: lenet53\ngrid: {lr: [0.1], lr: [0.2]}\n", "grid.lr: duplicate key"),
    ("name: x\narchitecture: lenet53\ngrid: {lr: [0.1]}\nparams: {dropout: 1.5}\n", "cannot be built"),
    ("name: x\narchitecture: lenet53\ngrid: {lr: [0.1]}\nparams: {hidden: 64.5}\n", "params.hidden: must be int"),
    ('name: "x\'; DROP TABLE trials; --"\narchitecture: lenet53\ngrid: {lr: [0.1]}\n', "name: must be 1-100"),
    ("architecture: lenet53\ngrid: {lr: [0.1]}\n", "missing required key 'name'"),
    (
        "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
        "alias bomb",
    ),
]


@pytest.mark.parametrize("text, message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_sweep_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as error:
        load_sweep(path)
    assert message in str(error.value)
    assert str(error.value).startswith(str(path))
    assert "\n" not in str(error.value)


def test_errors_point_at_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\narchitecture: lenet53\nparams:\n  epochs: 2\n  optimiser: sgd\ngrid: {lr: [0.1]}\n")
    with pytest.raises(UserError, match=r"bad.yaml:5: params.optimiser"):
        load_sweep(path)


def test_non_utf8_and_missing_files(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        load_sweep(path)
    with pytest.raises(UserError, match="no such sweep file"):
        load_sweep(tmp_path / "missing.yaml")


def test_max_trials_guard(tmp_path):
    path = write_sweep(tmp_path, grid={"lr": [0.01 * i for i in range(1, 101)], "lr_step": list(range(1, 101))})
    with pytest.raises(UserError, match="10,000 trials, more than --max-trials 500"):
        load_sweep(path, max_trials=500)
