"""Live TensorBoard logs of a run (``run --tensorboard DIR``): scalars per epoch, and HParams per trial.

Each trial of a sweep gets a run folder ``DIR/<sweep>/<key>_<gridded params>``, e.g.
``DIR/quick/3f2a9c0d1e4b5a67_lr=0.05,lr_step=3``. While the trial trains, the
event recorder hands each epoch to :class:`TensorBoardLog`, which writes it as scalars (``loss/train``,
``loss/val``, ``accuracy/train``, ``accuracy/val``, ``lr``; step = epoch). When the trial's worker reports it
done, its hparams (the sweep's gridded params, and ``seed`` when the sweep has several) and its metrics at
its best epoch (``hparams/val_accuracy``, ``hparams/val_loss``, ``hparams/best_epoch``) go to the same folder
through the HParams plugin, so ``tensorboard --logdir DIR/<sweep>`` shows the sweep as an HParams table.

Every time a trial's worker starts (a resume, a further rung of successive halving) its folder is written
afresh: the old event files are removed and the worker's replay of the trial's past epochs writes them
again, so a folder always holds each epoch once. Trials a run does not train (trained by an earlier run) get
nothing from it, and it says so in one line; ``export SWEEP --to tensorboard`` (``export_trained``) writes
every trained trial's folder from the database alone. The ``tensorboard`` package is an optional extra,
imported only when a log is opened.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gridsearch.errors import UserError
from gridsearch.spec.config import TrialConfig, config_value
from gridsearch.store.records import EpochMetrics, TrialSummary
from gridsearch.training import events
from gridsearch.vocabulary import SCORED, format_value

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from gridsearch.spec.sweep import Sweep
    from gridsearch.store.models import TrialRow
    from gridsearch.store.storage import Storage

MISSING_PACKAGE = "--tensorboard needs the tensorboard package: pip install 'gridsearch[tensorboard]'"
SCALARS = {
    "loss/train": "train_loss",
    "loss/val": "val_loss",
    "accuracy/train": "train_accuracy",
    "accuracy/val": "val_accuracy",
    "lr": "lr",
}
"""TensorBoard tag -> epoch metric."""
HPARAM_METRICS = {
    "hparams/val_accuracy": "val_accuracy",
    "hparams/val_loss": "val_loss",
    "hparams/best_epoch": "best_epoch",
}
"""HParams metric tag -> trial summary field (at the trial's best epoch)."""
EVENT_FILES = "events.out.tfevents.*"
UNSAFE = re.compile(r"[^A-Za-z0-9=.,_+-]+")


def require_tensorboard() -> None:
    """:class:`UserError` naming the pip extra if ``torch.utils.tensorboard`` cannot be imported."""
    try:
        import torch.utils.tensorboard  # noqa: F401  (needs the tensorboard package)
    except ImportError:
        raise UserError(MISSING_PACKAGE) from None


def hparam_value(value: Any) -> bool | float | str:
    """A param value as TensorBoard's HParams take it: a bool, a float, or a string (JSON for the rest)."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return float(value)
    return json.dumps(value)


class TensorBoardLog:
    """The TensorBoard run folders of one sweep's trials, written while the sweep runs."""

    def __init__(self, folder: Path, sweep: Sweep, configs: Mapping[str, TrialConfig]):
        self._open(folder, sweep.name, list(sweep.gridded_params), len(sweep.seeds) > 1, configs)

    @classmethod
    def of_stored(cls, folder: Path, storage: Storage, sweep: str, trials: list[TrialRow]) -> TensorBoardLog:
        """The log of the stored ``sweep`` (its ``trials`` as read from ``storage``), for ``export_trained``."""
        log = cls.__new__(cls)
        configs = {trial.key: trial.config for trial in trials}
        several_seeds = len({trial.seed for trial in trials}) > 1
        log._open(folder, sweep, list(storage.sweep(sweep).gridded_params), several_seeds, configs)
        return log

    def _open(
        self, folder: Path, sweep: str, gridded: list[str], several_seeds: bool, configs: Mapping[str, TrialConfig]
    ) -> None:
        require_tensorboard()
        self.sweep = sweep
        self.folder = Path(folder)
        self.root = self.folder / sweep
        self.configs = configs
        self.names = gridded + (["seed"] if several_seeds else [])
        self.writers: dict[str, SummaryWriter] = {}
        self.written: dict[str, set[int]] = {}
        domains: dict[str, list[bool | float | str]] = {}
        for name in self.names:
            values = list(dict.fromkeys(hparam_value(self._value(config, name)) for config in configs.values()))
            if len({type(value) for value in values}) == 1:  # TensorBoard wants one type per domain
                domains[name] = sorted(values)
        self.domains = domains

    def record(self, key: str, event: events.Event) -> None:
        """What a training worker's event about trial ``key`` means for its folder (the recorder calls this)."""
        if event["event"] == "hello":
            self.trial_started(key)
        elif event["event"] == "epoch":
            self.epoch(key, event)
        elif event["event"] == "done":
            self.trial_done(key, event)
        elif event["event"] == "error":
            self.trial_ended(key)

    def run_folder(self, key: str) -> Path:
        """Trial ``key``'s run folder: ``<sweep>/<key>_<name>=<value>,...`` (other characters as ``_``)."""
        label = ",".join(f"{name}={format_value(self._value(self.configs[key], name))}" for name in self.names)
        return self.root / UNSAFE.sub("_", f"{key}_{label}" if label else key)

    def trial_started(self, key: str) -> None:
        """A worker of trial ``key`` started: open its folder afresh (its past epochs are replayed)."""
        from torch.utils.tensorboard import SummaryWriter

        self.trial_ended(key)
        folder = self.run_folder(key)
        for old in folder.glob(EVENT_FILES):
            old.unlink()
        self.writers[key] = SummaryWriter(str(folder), flush_secs=5)
        self.written[key] = set()

    def epoch(self, key: str, metrics: EpochMetrics) -> None:
        """Write one epoch of trial ``key`` as scalars (once per epoch, however often it is reported)."""
        writer = self.writers.get(key)
        if writer is None or metrics["epoch"] in self.written[key]:
            return
        for tag, name in SCALARS.items():
            writer.add_scalar(tag, metrics[name], metrics["epoch"])  # type: ignore[literal-required]
        writer.flush()
        self.written[key].add(metrics["epoch"])

    def trial_done(self, key: str, summary: TrialSummary) -> None:
        """Trial ``key``'s worker finished: write its hparams and its metrics at its best epoch, and close."""
        from torch.utils.tensorboard.summary import hparams

        writer = self.writers.get(key)
        if writer is None:
            return
        values = {name: hparam_value(self._value(self.configs[key], name)) for name in self.names}
        metrics = {tag: summary[name] for tag, name in HPARAM_METRICS.items()}  # type: ignore[literal-required]
        experiment, start, end = hparams(values, metrics, self.domains)
        file_writer = writer._get_file_writer()  # what torch's own add_hparams writes them with
        for each in (experiment, start, end):
            file_writer.add_summary(each)
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, summary["best_epoch"])
        self.trial_ended(key)

    def trial_ended(self, key: str) -> None:
        """Close trial ``key``'s writer, if open."""
        writer = self.writers.pop(key, None)
        if writer is not None:
            writer.close()

    def close(self) -> None:
        """Close every writer still open (trials interrupted or timed out), and say in one line which trials
        this run wrote nothing for (trained by an earlier run) and how to write them from the database."""
        for key in list(self.writers):
            self.trial_ended(key)
        if unwritten := len(set(self.configs) - set(self.written)):
            print(
                f"tensorboard: {unwritten} of {len(self.configs)} trials of {self.sweep} did not train in this run, "
                f"so nothing was written for them; write the logs of every trained trial from the database with: "
                f"gridsearch export {self.sweep} --to tensorboard --logdir {self.folder}",
                file=sys.stderr,
            )

    @staticmethod
    def _value(config: TrialConfig, name: str) -> Any:
        return config["seed"] if name == "seed" else config_value(config, name)


def export_trained(storage: Storage, sweep: str, folder: Path) -> int:
    """Write the TensorBoard logs of every trial of ``sweep`` with recorded epochs from the database alone (as
    ``run --tensorboard`` would have while training them): ``export SWEEP --to tensorboard``. Each trial's
    folder is written afresh, so exporting again rewrites it; returns how many trials were written."""
    from gridsearch.store import views

    trials = [trial for trial in storage.trials(sweep) if trial.epochs_run]
    log = TensorBoardLog.of_stored(folder, storage, sweep, trials)
    epochs = views.epochs(storage, [trial.key for trial in trials])
    by_trial = dict(tuple(epochs.groupby("trial_key"))) if not epochs.empty else {}
    for trial in trials:
        log.trial_started(trial.key)
        rows = by_trial.get(trial.key)
        for metrics in [] if rows is None else rows.drop(columns="trial_key").to_dict("records"):
            log.epoch(trial.key, metrics)
        if trial.status in SCORED and trial.best_epoch is not None:
            summary = TrialSummary(
                best_epoch=trial.best_epoch,
                val_accuracy=trial.val_accuracy or 0.0,
                val_loss=trial.val_loss or 0.0,
                epochs_run=trial.epochs_run,
                train_seconds=trial.train_seconds or 0.0,
            )
            log.trial_done(trial.key, summary)
        log.trial_ended(trial.key)
    return len(trials)
