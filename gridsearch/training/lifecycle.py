"""One trial's life in a worker, whichever way it trains: alone (``loop.py``) or as a member of a stack
(``fused.py``). Both trainers drive the same :class:`Training` through the same steps:

1. **start**: its network built from its seed, its optimizer and schedule, then resumed from its run folder's
   newest intact ``last.pt`` (a finished trial's history alone is replayed; nothing is left to train), or
   warm-started (``init_from``);
2. **begin**: the ``started`` event, a warning if the resumed epochs were trained the other way, the past epochs
   replayed;
3. **epochs**, while :meth:`Training.trains_on` (epochs and budget left, patience not run out): the trainer trains
   one, :meth:`Training.check` stops a diverged trial, :meth:`Training.record` steps its schedule and writes
   ``best.pt`` and ``last.pt``, :meth:`Training.report` sends the ``epoch`` event;
4. **end**: a finished trial's ``last.pt`` shrinks to its history alone, and ``done`` carries its summary
   (or ``error``, :meth:`Training.fail`, for a member that diverged).

Checkpoints have one format whichever way a trial trained: ``last.pt`` holds the single model, its
``torch.optim`` optimizer and schedule, the random states and the history (plus ``execution`` when it was not
trained per-trial), so any trial resumes either way from it.
"""

from __future__ import annotations

import math
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import architectures
from gridsearch.spec.config import TrialConfig
from gridsearch.spec.halving import best_epoch
from gridsearch.store.records import EpochMetrics, TrialSummary
from gridsearch.training import data
from gridsearch.training.checkpoints import is_history_only, keep_history_only, resume_state, save_atomically
from gridsearch.training.events import Emit
from gridsearch.training.models import build_model, make_optimizer, make_schedule, warm_start
from gridsearch.vocabulary import Execution, Metric, metric


def training_splits(config: TrialConfig, data_dir: Path, device: torch.device) -> tuple[data.Split, data.Split]:
    """The trial's training and validation images, on ``device``."""
    split = config["dataset"]
    train, val = data.training_splits(data_dir, split["train_size"], split["val_size"], split)
    return train.to(device), val.to(device)


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class Randomness:
    """The random state a trial goes on from after an epoch (what ``last.pt`` keeps)."""

    cpu: torch.Tensor
    """The CPU's default generator: dropout on the CPU."""
    cuda: torch.Tensor | None
    """The device's default CUDA generator, dropout on a GPU; None on the CPU."""
    batches: torch.Tensor | None
    """The batch generator (order, augmentation); None before the first epoch: seeded with the trial's seed."""

    @classmethod
    def now(cls, device: torch.device, batches: torch.Generator | None = None) -> Randomness:
        """The default generators' states now (and ``batches``')."""
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda, None if batches is None else batches.get_state())

    @property
    def dropout(self) -> torch.Tensor:
        """The state of the generator dropout draws from on the trial's device."""
        return self.cpu if self.cuda is None else self.cuda

    def after(self, dropout: torch.Tensor, batches: torch.Generator) -> Randomness:
        """This state with the dropout generator at ``dropout`` and the batch generator at ``batches``."""
        if self.cuda is None:
            return Randomness(dropout, None, batches.get_state())
        return Randomness(self.cpu, dropout, batches.get_state())

    def take_up(self, seed: int, device: torch.device) -> torch.Generator:
        """Set the default generators to this state; the batch generator it holds (seeded with ``seed`` if new)."""
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, device)
        return self.batch_generator(seed, device)

    def batch_generator(self, seed: int, device: torch.device) -> torch.Generator:
        generator = torch.Generator(device).manual_seed(seed)
        if self.batches is not None:
            generator.set_state(self.batches)
        return generator


@dataclass
class Training:
    """One trial in training: its single model with its ``torch.optim`` optimizer and schedule (which hold its
    hyperparameters and are what its checkpoints record), its history, and where it stands."""

    config: TrialConfig
    run_dir: Path
    """Its run folder, named by its key."""
    emit: Emit
    """Its events channel."""
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    rng: Randomness
    history: list[EpochMetrics] = field(default_factory=list)
    execution: Execution = Execution.PER_TRIAL
    """How its past epochs were trained, then (from :meth:`begin`) how it trains now."""
    best: EpochMetrics | None = None
    ended: bool = False

    @classmethod
    def start(cls, config: TrialConfig, run_dir: Path, emit: Emit, device: torch.device) -> Training:
        """Build the trial's network from its seed, exactly as every way of training does, then resume it from
        its run folder ``run_dir`` or warm-start it; ``emit``: its events channel."""
        params = config["params"]
        torch.manual_seed(config["seed"])
        model = build_model(config).to(device)
        optimizer = make_optimizer(model, params)
        schedule = make_schedule(optimizer, params)
        training = cls(config, run_dir, emit, model, optimizer, schedule, Randomness.now(device))
        state = resume_state(run_dir, training.warn)
        if state is not None and is_history_only(state) and not over(state["history"], config):
            training.warn(
                "last.pt holds only the history of a trial that finished before this one's end; "
                "restarting the trial from scratch"
            )
            state = None
        if state is not None:
            training.resume(state, device)
        elif params["init_from"]:
            loaded, fresh = warm_start(model, params["init_from"], run_dir)
            print(
                f"trial {run_dir.name}: warm start from {params['init_from']}: {loaded} tensors loaded, {fresh} fresh",
                file=sys.stderr,
            )
        return training

    def resume(self, state: dict[str, Any], device: torch.device) -> None:
        """Take up a resume checkpoint: the history alone, or also the weights, optimizer, schedule and RNG."""
        self.history = state["history"]
        self.best = best_epoch(self.history, self.select.name)
        self.execution = Execution(state.get("execution", Execution.PER_TRIAL))
        if is_history_only(state):
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        cuda = state.get("cuda_rng", self.rng.cuda) if device.type == "cuda" else None
        self.rng = Randomness(state["cpu_rng"], cuda, state["generator"])

    @property
    def params(self) -> dict[str, Any]:
        return self.config["params"]

    @property
    def select(self) -> Metric:
        return metric(self.config["select"])

    @property
    def lr(self) -> float:
        """The learning rate of its next epoch."""
        return self.optimizer.param_groups[0]["lr"]

    def warn(self, message: str) -> None:
        print(f"trial {self.run_dir.name}: warning: {message}", file=sys.stderr, flush=True)
        self.emit({"event": "warning", "message": message})

    def finished(self) -> bool:
        """Whether it is over (all its epochs trained, or out of patience), not just at a budget."""
        return over(self.history, self.config, self.best)

    def trains_on(self, budget: int | None) -> bool:
        """Whether it trains another epoch: not ended, not over, below ``budget`` epochs (None: no budget)."""
        below = budget is None or len(self.history) < budget
        return not self.ended and below and not self.finished()

    def begin(self, execution: Execution, cohort: str | None = None, size: int = 1) -> None:
        """Say how it trains now (``started``; a warning if its resumed epochs were trained otherwise), then replay
        its past epochs."""
        done = len(self.history)
        if done and self.execution != execution:
            self.warn(f"epochs 0-{done - 1} were trained {self.execution}; the rest is trained {execution}")
        self.execution = execution
        self.emit(
            {
                "event": "started",
                "parameter_count": architectures.count_parameters(self.model),
                "resumed_from_epoch": done,
                "execution": execution,
                "cohort_size": size,
                **({"cohort": cohort} if cohort is not None else {}),  # type: ignore[typeddict-item]
            }
        )
        for metrics in self.history:
            self.emit({"event": "epoch", "replayed": True, **metrics})

    def check(self, train_loss: float, lr: float) -> None:
        """:class:`Diverged` if the epoch it just trained (at ``lr``) has a loss that is not finite."""
        if not math.isfinite(train_loss):
            raise Diverged(f"training loss is {train_loss} at epoch {len(self.history) + 1} (lr {lr:g})")

    def record(self, metrics: EpochMetrics, rng: Randomness) -> None:
        """An epoch trained (its model and optimizer hold its end; ``rng``, the random state after it): step the
        schedule, keep the weights in ``best.pt`` if it is the best so far, and the resume state in ``last.pt``."""
        with warnings.catch_warnings():  # a stack's member steps the stack's optimizer, not its own
            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))
            self.schedule.step()
        self.history.append(metrics)
        self.rng = rng
        select = self.select.name
        if self.best is None or self.select.better(metrics[select], self.best[select]):  # type: ignore[literal-required]
            self.best = metrics
            save_atomically({"model": self.model.state_dict(), "epoch": metrics["epoch"]}, self.run_dir / "best.pt")
        save_atomically(self.checkpoint(), self.run_dir / "last.pt", keep_previous=True)

    def checkpoint(self) -> dict[str, Any]:
        """The resume state ``last.pt`` holds."""
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "cpu_rng": self.rng.cpu,
            "generator": self.rng.batches,
            "history": self.history,
        }
        if self.rng.cuda is not None:
            state["cuda_rng"] = self.rng.cuda
        if self.execution != Execution.PER_TRIAL:
            state["execution"] = self.execution.value
        return state

    def report(self) -> None:
        """The ``epoch`` event of its last epoch (sent once its checkpoints are written)."""
        self.emit({"event": "epoch", **self.history[-1]})

    def end(self) -> tuple[TrialSummary, bool]:
        """Report it ``done``: over (its ``last.pt`` then keeps only its history) or stopped at a budget. Returns
        its summary and whether it is over."""
        assert self.best is not None, "a trial trains at least one epoch"
        finished = self.finished()
        if finished:
            keep_history_only(self.run_dir, self.history, self.execution)
        summary = TrialSummary(
            best_epoch=self.best["epoch"],
            val_accuracy=self.best["val_accuracy"],
            val_loss=self.best["val_loss"],
            epochs_run=len(self.history),
            train_seconds=sum(m["seconds"] for m in self.history),
        )
        self.emit({"event": "done", **summary, "finished": finished})
        self.ended = True
        return summary, finished

    def fail(self, exc: Exception) -> None:
        """Report it failed (a member whose stack trains on without it)."""
        self.emit({"event": "error", "error": f"{type(exc).__name__}: {exc}", "infrastructure": False})
        self.ended = True


def over(history: list[EpochMetrics], config: TrialConfig, best: EpochMetrics | None = None) -> bool:
    """Whether a trial with ``history`` (``best``: its best epoch, if known) is over: all its epochs trained, or
    early-stopped because its next epoch comes more than ``patience`` epochs after its best."""
    params = config["params"]
    if len(history) >= params["epochs"]:
        return True
    best = best or best_epoch(history, config["select"])
    return best is not None and len(history) - best["epoch"] > params["patience"]
