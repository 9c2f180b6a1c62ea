"""A sweep's selected trial as a model again: its best weights loaded, and class probabilities on images.

Reports and the robustness suite need more than the stored predicted labels (confidence, ROC AUC,
transformed inputs), so they re-run the selected trial's ``best.pt`` on CPU, deterministically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gridsearch.errors import UserError
from gridsearch.store.models import TrialRow
from gridsearch.store.storage import Storage
from gridsearch.training.checkpoints import CorruptCheckpoint, load_verified
from gridsearch.training.loop import build_model, make_deterministic

BATCH_SIZE = 1000


@dataclass(frozen=True)
class Scores:
    """A model's output on a labelled set: class probabilities (N, 10), labels (N,) and the mean loss."""

    probabilities: torch.Tensor
    labels: torch.Tensor
    loss: float

    @property
    def predicted(self) -> torch.Tensor:
        return self.probabilities.argmax(1)

    @property
    def confidence(self) -> torch.Tensor:
        return self.probabilities.max(1).values


def selected_trial(storage: Storage, sweep: str) -> TrialRow:
    """The trial ``sweep`` selected; :class:`UserError` if it has none yet."""
    row = storage.sweep(sweep)
    if row.selected_trial is None:
        raise UserError(f"sweep {sweep!r} has no selected trial yet (run it to the end first)")
    return storage.trial(row.selected_trial)


def load_model(trial: TrialRow, artifacts: Path) -> nn.Module:
    """The network of ``trial`` with its best weights, in eval mode on CPU (channels-last: 2x faster)."""
    path = artifacts / trial.key / "best.pt"
    if not path.exists():
        raise UserError(f"trial {trial.key}: no best weights at {path} (pass --artifacts where its run folders are)")
    make_deterministic(torch.get_num_threads())
    model = build_model(trial.config)
    try:
        model.load_state_dict(load_verified(path, "cpu")["model"])
    except CorruptCheckpoint as exc:
        raise UserError(f"trial {trial.key}: {exc}") from None
    return model.eval().to(memory_format=torch.channels_last)


@torch.inference_mode()
def score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Scores:
    """Probabilities of ``model`` on uint8 ``images`` (N, 1, 28, 28), scaled to [0, 1] as in training."""
    outputs = [
        model(images[start : start + BATCH_SIZE].float().div_(255).contiguous(memory_format=torch.channels_last))
        for start in range(0, len(images), BATCH_SIZE)
    ]
    logits = torch.cat(outputs)
    loss = F.cross_entropy(logits, labels).item()
    return Scores(logits.softmax(1), labels, loss)
