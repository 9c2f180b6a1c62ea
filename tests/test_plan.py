"""Cost up front: ``plan`` counts epochs and training samples (halving rungs included) and estimates the wall
time from epochs recorded in the same database; ``run``'s ETA is epoch-based, on the plain and the live display."""

import statistics
import subprocess
import sys

from gridsearch.engine.progress import SweepProgress, format_duration
from gridsearch.spec import halving
from tests.conftest import ROOT, cli, rows, write_sweep

TINY = {
    "dataset": {"train_size": 300, "val_size": 200, "test_size": 200},
    "params": {"epochs": 2, "batch_size": 50, "hidden": 8, "patience": 5},
    "grid": {"lr": [0.05, 0.1]},
}


def plan_lines(sweep, folder, *extra: str) -> list[str]:
    out = cli("plan", str(sweep), *extra, cwd=folder, check=True).stdout
    return [line for line in out.splitlines() if line.startswith(("cost:", "estimate:"))]


def test_plan_counts_the_cost_and_estimates_it_from_recorded_epochs(tmp_path, data_dir):
    first = write_sweep(tmp_path, "first.yaml", name="first", **TINY)
    more = write_sweep(tmp_path, "more.yaml", name="more", **{**TINY, "grid": {"lr": [0.02, 0.03, 0.04]}})
    assert plan_lines(first, tmp_path) == [
        "cost: 4 epochs, 1,200 training samples (300 per epoch); 4 epochs (1,200 samples) still to train",
        "estimate: nothing to go on: there is no database yet (run a few trials, then plan again)",
    ]
    run = cli("run", str(first), cwd=tmp_path, data_dir=data_dir, check=True)
    # the ETA moves with every epoch, before any trial has finished
    epoch_lines = [line for line in run.stderr.splitlines() if "] trial " in line and " · val accuracy " in line]
    assert len(epoch_lines) == 4 and all(" · ETA " in line for line in epoch_lines[:3])

    assert plan_lines(first, tmp_path) == [
        "cost: 4 epochs, 1,200 training samples (300 per epoch); 0 epochs (0 samples) still to train",
        "estimate: nothing left to train",
    ]
    median = statistics.median(seconds for (seconds,) in rows(tmp_path / "results.db", "SELECT seconds FROM epochs"))
    # epochs of another setting (bf16 + channels_last) in the same database are never counted for fp32 ones
    fast = {
        **TINY,
        "params": {**TINY["params"], "epochs": 1, "amp": "bf16", "channels_last": True},
        "grid": {"lr": [0.05]},
    }
    cli(
        "run", str(write_sweep(tmp_path, "fast.yaml", name="fast", **fast)), cwd=tmp_path, data_dir=data_dir, check=True
    )
    assert len(rows(tmp_path / "results.db", "SELECT seconds FROM epochs")) == 5
    cost, estimate = plan_lines(more, tmp_path, "--workers", "3", "--device", "cpu")
    assert cost == "cost: 6 epochs, 1,800 training samples (300 per epoch); 6 epochs (1,800 samples) still to train"
    assert estimate == (  # the median epoch x 6 epochs over 3 workers, however slow this machine is today
        f"estimate: {format_duration(median * 6 / 3)} for 6 epochs, 3 workers, at {median:.2f} s per epoch of "
        "lenet53 at batch 50 on 1 thread (median of 4 recorded) on 300 training images on cpu"
    )
    more_fast = write_sweep(tmp_path, "more_fast.yaml", name="more_fast", **{**fast, "grid": {"lr": [0.5]}})
    assert (
        "s per epoch of lenet53 with bf16 and channels_last at batch 50 on 1 thread (median of 1 recorded)"
        in (plan_lines(more_fast, tmp_path)[1])
    )
    for changed in ({"params": {**TINY["params"], "batch_size": 25}}, {"threads": 2}):
        unlike = write_sweep(tmp_path, "unlike.yaml", name="unlike", **{**TINY, **changed})
        assert plan_lines(unlike, tmp_path)[1].startswith("estimate: nothing to go on: no epochs of lenet53 at batch")
    # another training split, or successive halving (its rungs' epochs at most)
    other = write_sweep(
        tmp_path, "other.yaml", name="other", **{**TINY, "dataset": {**TINY["dataset"], "train_size": 400}}
    )
    assert plan_lines(other, tmp_path)[1] == (
        "estimate: nothing to go on: no epochs of lenet53 at batch 50 on 1 thread on 400 training images on cpu "
        "are recorded in this "
        "database (run a few trials, then plan again)"
    )
    halving_sweep = write_sweep(
        tmp_path,
        "halving.yaml",
        name="halved",
        **{**TINY, "params": {**TINY["params"], "epochs": 9}, "grid": {"lr": [0.01, 0.02, 0.03, 0.04]}},
        search={"strategy": "halving", "factor": 3, "min_epochs": 1},
    )
    planned = sum(halving.planned_epochs(4, 3, [1, 3, 9]))
    assert planned == 4 + 2 * 2 + 1 * 6 < 4 * 9
    assert plan_lines(halving_sweep, tmp_path)[0] == (
        f"cost: at most {planned} epochs, {planned * 300:,} training samples (300 per epoch); "
        f"at most {planned} epochs ({planned * 300:,} samples) still to train"
    )


def test_the_eta_counts_epochs_down_on_the_plain_and_the_live_display(capsys):
    statuses = {"a": "pending", "b": "pending"}
    plain = SweepProgress("s", statuses, workers=2, live=False, epochs_to_do=10)
    plain.trial_started("a", "lr=1", 5)
    plain.trial_started("b", "lr=2", 5)
    epoch = {"epoch": 0, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5, "lr": 1.0}
    plain.epoch("a", {**epoch, "seconds": 4.0}, 5)  # 9 epochs left at 4 s, on 2 workers
    assert capsys.readouterr().err.rstrip().endswith("1/5 epochs · val accuracy 50.00% · train loss 1.0000 · ETA 0m18s")
    plain.trial_finished("a", "done", "stopped early")  # its 4 untrained epochs are off: 5 left, on 1 worker
    assert capsys.readouterr().err.rstrip().endswith("s: 1 done · 1 running · 0 pending · ETA 0m20s")

    live = SweepProgress("s", statuses, workers=1, live=True, epochs_to_do=3)
    live.trial_started("a", "lr=1", 3)
    live.epoch("a", {**epoch, "seconds": 30.0}, 3)
    live.close()
    assert live.bars.tasks[0].description == "s: 1 running · 1 pending · ETA 1m00s"


def test_the_eta_waits_for_an_epoch_of_every_setting_still_to_train(capsys):
    """Trials of two settings (fp32 and bf16): one's epochs say nothing about the other's."""
    statuses = {"a": "pending", "b": "pending"}
    progress = SweepProgress("s", statuses, workers=1, live=False, epochs_to_do={"fp32": 2, "bf16": 2})
    epoch = {"epoch": 0, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5, "lr": 1.0}
    progress.trial_started("a", "amp=off", 2, setting="fp32")
    progress.epoch("a", {**epoch, "seconds": 4.0}, 2)
    assert " · ETA " not in capsys.readouterr().err  # nothing to go on for the bf16 epochs
    progress.trial_started("b", "amp=bf16", 2, setting="bf16")
    progress.epoch("b", {**epoch, "seconds": 1.0}, 2)  # 1 fp32 epoch at 4 s + 1 bf16 epoch at 1 s
    assert capsys.readouterr().err.rstrip().endswith("ETA 0m05s")


def test_plan_reads_the_sweep_without_torch_and_run_builds_its_networks(tmp_path):
    """``plan`` imports neither torch nor scikit-learn (``-X importtime`` lists every module a process
    imports); a value the network's builder refuses is refused by ``run``, in one line, before anything is
    stored."""
    sweep = write_sweep(tmp_path, **TINY)
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "gridsearch", "plan", str(sweep), "--db", str(tmp_path / "r.db")],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "gridsearch.spec.sweep" in imported and "architectures" in imported
    assert {"torch", "sklearn", "scipy.stats"}.isdisjoint(imported)
    unbuildable = write_sweep(tmp_path, "unbuildable.yaml", **{**TINY, "params": {**TINY["params"], "dropout": 1.5}})
    assert cli("plan", str(unbuildable), "--db", str(tmp_path / "r.db"), cwd=tmp_path).returncode == 0
    result = cli("run", str(unbuildable), "--db", str(tmp_path / "r.db"), cwd=tmp_path)
    assert result.returncode == 2 and "cannot be built" in result.stderr and result.stderr.count("\n") == 1, (
        result.stderr
    )
    assert result.stderr.startswith(f"error: {unbuildable}")
    assert not (tmp_path / "r.db").exists()
