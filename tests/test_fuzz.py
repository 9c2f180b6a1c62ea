"""Property-based bad input: random and mutated sweep files thrown at ``plan`` and ``run``.

Every file is either accepted and valid, or refused with exit code 2 and one ``error:`` line; never a
traceback, never a sweep half-written into the database. The command line runs in this process; one
test runs it as a real program, for what only a process shows (its exit code, stderr, no traceback).
"""

import json
import math
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gridsearch.errors import UserError
from gridsearch.spec.sweep import load_sweep
from gridsearch.store.storage import Storage
from tests.conftest import cli, gridsearch

BASE = {
    "name": "fuzz",
    "architecture": "lenet53",
    "dataset": {"train_size": 300, "val_size": 200, "test_size": 100},
    "params": {"epochs": 1, "batch_size": 50, "hidden": 8},
    "grid": {"lr": [0.05, 0.1]},
    "seeds": [0],
}
BOMB = (
    "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
    "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nname: x\ngrid: {lr: *e}\n"
)
HEAD = "name: fuzz\narchitecture: lenet53\n"
TEN_BY_FIFTY = "".join(
    f"  {name}: {[round(0.01 * i, 2) for i in range(1, 51)]}\n"
    for name in ("lr", "momentum", "weight_decay", "lr_gamma", "lr_min", "dropout")
) + "".join(f"  {name}: {list(range(1, 51))}\n" for name in ("lr_step", "patience", "hidden", "batch_size"))
HOSTILE_TEXTS = {
    "lists nested 800 deep": HEAD + "grid: {lr: [0.1]}\ndescription: " + "[" * 800 + "]" * 800 + "\n",
    "mappings nested 1000 deep": HEAD + "grid: {lr: [0.1]}\nparams: " + "{a: " * 1000 + "1" + "}" * 1000 + "\n",
    "a 5,000-digit integer": HEAD + "grid: {lr: [0.1]}\nparams: {epochs: " + "9" * 5000 + "}\n",
    "a list as a key": HEAD + "grid: {lr: [0.1]}\nparams: {[1, 2]: 3}\n",
    "a mapping as a key": HEAD + "grid: {lr: [0.1]}\n? {a: 1}\n: 3\n",
    "10 params x 50 values": HEAD + "grid:\n" + TEN_BY_FIFTY,
    "a 99,990-point list": HEAD + "grid:\n  lr: [" + ", ".join(f"{0.00001 * i:.5f}" for i in range(1, 99991)) + "]\n",
    "a month 13": HEAD + "grid: {lr: [0.1]}\ndescription: 2026-13-01\n",
}
"""Files that once got a traceback, or hung ``plan`` and ``run``: each must be refused in one line, at once."""
SPECIAL_TEXTS = [
    *HOSTILE_TEXTS.values(),
    BOMB,
    yaml.safe_dump({**BASE, "grid": {"lr": [0.001 * i for i in range(1, 101)], "lr_step": list(range(1, 101))}}),
    "name: fuzz\nname: again\narchitecture: lenet53\ngrid: {lr: [0.1]}\n",
    'name: "fuzz\'; DROP TABLE sweeps; --"\narchitecture: lenet53\ngrid: {lr: [0.1]}\n',
    "name: fuzz\narchitecture: lenet53\ngrid: {lr: [.inf, -.inf, .nan]}\n",
    "name: fuzz\narchitecture: lenet53\nparams: {hidden: 1000000000000}\ngrid: {lr: [0.1]}\n",
    "name: fuzz\narchitecture: lenet53\ngrid: {lr: [!!python/object/apply:os.system [echo hacked]]}\n",
    "name: fuzz\narchitecture: lenet53\ngrid: {lr: [0.1]}\ntimeout: .nan\n",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.integers(-3, 1000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e308, 5e-324, 0.5]),
    st.text(max_size=20),
    st.sampled_from(
        [
            "'; DROP TABLE trials; --",
            '" OR 1=1 --',
            "best:fuzz",
            "trial:x",
            "../../etc/passwd",
            "lenet53",
            "adam",
            "val_loss",
            "%s",
            "\x00",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)
KEYS = [
    "name",
    "architecture",
    "dataset",
    "params",
    "grid",
    "seeds",
    "select",
    "threads",
    "timeout",
    "description",
    "train_size",
    "val_size",
    "test_size",
    "epochs",
    "lr",
    "hidden",
    "dropout",
    "momentum",
    "init_from",
    "optimizer",
    "zoom",
    "nesterov",
    "bogus",
]


@st.composite
def sweep_texts(draw) -> bytes:
    """A sweep file: the base document with values replaced, keys added or removed, or bytes mangled."""
    document = json.loads(json.dumps(BASE))
    for _ in range(draw(st.integers(0, 4))):
        target = document
        while isinstance(target, dict) and target and draw(st.booleans()):
            child = target[draw(st.sampled_from(sorted(target)))]
            if not isinstance(child, dict):
                break
            target = child
        action = draw(st.sampled_from(["set", "set", "delete", "list"]))
        key = draw(st.sampled_from(KEYS + sorted(target)))
        if action == "delete":
            target.pop(key, None)
        elif action == "list":
            target[key] = draw(st.lists(values, min_size=0, max_size=3))
        else:
            target[key] = draw(values)
    text = yaml.safe_dump(document, allow_unicode=draw(st.booleans())).encode()
    mangle = draw(st.sampled_from(["none", "none", "insert", "truncate", "duplicate", "special"]))
    if mangle == "insert":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.binary(min_size=1, max_size=6)) + text[at:]
    elif mangle == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    elif mangle == "duplicate":
        lines = text.splitlines(keepends=True)
        index = draw(st.integers(0, len(lines) - 1))
        text = b"".join(lines[: index + 1] + [lines[index]] + lines[index + 1 :])
    elif mangle == "special":
        text = draw(st.sampled_from(SPECIAL_TEXTS)).encode()
    return text


def check_accepted_or_refused(text: bytes, folder: Path) -> bool:
    """Plan ``text``; True if accepted. An accepted sweep is stored whole and read back intact."""
    path, db = folder / "sweep.yaml", folder / "results.db"
    path.write_bytes(text)
    result = cli("plan", str(path), "--db", str(db), "--max-trials", "500", cwd=folder)
    assert not db.exists()  # plan writes nothing
    if result.returncode == 2:
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
        return False
    assert result.returncode == 0 and result.stderr == "", result.stderr
    sweep = load_sweep(path, 500, build=False)  # as plan reads it: without building the networks (torch)
    trials = list(sweep.trials())
    assert 1 <= len(trials) <= 500 and f"{sweep.name}: {len(trials)} trials" in result.stdout
    for trial in trials:
        assert all(not isinstance(v, float) or math.isfinite(v) for v in trial.params.values())
    storage = Storage(str(db))
    storage.save_sweep(sweep, trials)
    stored = {row.key: row.config for row in storage.trials(sweep.name)}
    assert stored == {trial.key: json.loads(json.dumps(trial.config(), sort_keys=True)) for trial in trials}
    storage.close()
    db.unlink()
    return True


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sweep_texts())
def test_plan_accepts_valid_sweeps_and_refuses_the_rest_in_one_line(text):
    with tempfile.TemporaryDirectory() as folder:
        check_accepted_or_refused(text, Path(folder))


def test_special_inputs_are_refused_in_one_line(tmp_path):
    for text in SPECIAL_TEXTS:
        if check_accepted_or_refused(text.encode(), tmp_path):
            assert "hidden: 1000000000000" in text  # large but valid: accepted without building it for real
    assert check_accepted_or_refused("name: café\n".encode("latin-1"), tmp_path) is False


@pytest.mark.timeout(120)  # the 10 x 50 grid hung plan for hours, walking all of its points
@pytest.mark.parametrize("kind", HOSTILE_TEXTS)
def test_hostile_files_are_refused_in_one_line_before_anything_is_expanded(tmp_path, kind):
    text = HOSTILE_TEXTS[kind]
    assert check_accepted_or_refused(text.encode(), tmp_path) is False
    path = tmp_path / "sweep.yaml"
    with pytest.raises(UserError):  # the Python API: UserError, never TypeError, ValueError or RecursionError
        load_sweep(path, 10_000)


def test_max_trials_is_checked_from_the_lengths_of_the_lists(tmp_path):
    """The limit counts trials from the grid's list lengths and seeds: a grid just within it is accepted,
    one trial more is refused, and a list longer than the limit is refused before it is read."""
    path = tmp_path / "sweep.yaml"
    grid = [{"lr": [0.01 * i for i in range(1, 11)], "lr_step": [1, 2, 3]}, {"lr": [0.5], "dropout": [0.1, 0.2]}]
    path.write_text(yaml.safe_dump({**BASE, "grid": grid, "seeds": [0, 1]}))  # (30 + 2) x 2 = 64 trials
    assert len(load_sweep(path, 64)) == 64
    with pytest.raises(UserError, match="expands to 64 trials, more than --max-trials 63"):
        load_sweep(path, 63)
    with pytest.raises(UserError, match=r"sweep.yaml:\d+: a list of more than 9 values"):
        load_sweep(path, 9)


def stored_sweep(folder: Path) -> tuple[Path, Path]:
    """A good sweep file, and a database holding it (closed, so its file holds everything)."""
    db, good = folder / "results.db", folder / "good.yaml"
    good.write_text(yaml.safe_dump(BASE))
    storage = Storage(str(db))
    storage.save_sweep(load_sweep(good), list(load_sweep(good).trials()))
    storage.close()
    return good, db


def test_run_refuses_bad_files_before_touching_the_database(tmp_path):
    """Mutated files through ``run``, with valid ones, against a database with a sweep in it."""
    good, db = stored_sweep(tmp_path)
    before = db.read_bytes()
    bad = [
        SPECIAL_TEXTS[0],
        SPECIAL_TEXTS[2],
        b"name: fuzz\n\xff\xfe: 1\n",
        yaml.safe_dump({**BASE, "grid": {"lr": [0.1, "0.2'); DROP TABLE trials; --"]}}),
    ]
    files = []
    for index, text in enumerate(bad):
        files.append(tmp_path / f"bad{index}.yaml")
        files[-1].write_bytes(text if isinstance(text, bytes) else text.encode())
    for text in HOSTILE_TEXTS.values():
        files.append(tmp_path / f"bad{len(files)}.yaml")
        files[-1].write_text(text)
    runs = [[files[0]], [good, files[3], files[1]], [good, files[2]], *([good, file] for file in files[len(bad) :])]
    for args in runs:  # nothing runs unless all are valid
        result = cli("run", *map(str, args), "--db", str(db), cwd=tmp_path)
        bad_file = next(path for path in args if path != good)
        assert result.returncode == 2 and result.stderr.startswith(f"error: {bad_file}"), result.stderr
        assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert db.read_bytes() == before


def test_the_program_refuses_a_bad_file_in_one_line(tmp_path):
    """``python -m gridsearch run``, a real process: exit code 2, one ``error:`` line, no traceback, and
    nothing stored changed."""
    good, db = stored_sweep(tmp_path)
    before = db.read_bytes()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**BASE, "params": {**BASE["params"], "epochs": "ten"}}))
    result = gridsearch("run", str(good), str(bad), "--db", str(db), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: {bad}:") and "params.epochs: must be int" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert db.read_bytes() == before
