"""Warm starts (``init_from``): a checkpoint file is read when the sweep is, and trial keys name its content.

A checkpoint path in a sweep file resolves to ``<absolute path>#sha256=<digest>`` (the first 16 hex digits
of the file's SHA-256, as many as a trial key has), so the trial key hashes the weights, not only where
they were: a file replaced at the same path makes new trials, and a worker refuses a file whose content
is no longer the one its key names. The file must load with ``torch.load(weights_only=True)`` and fit the
network it starts: tensors are matched by name (or dotted suffix) and shape, and a checkpoint with no
matching tensor is refused. ``trial:<key>`` and ``best:<sweep>`` name a trial's weights already.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

import architectures

if TYPE_CHECKING:
    from gridsearch.spec.sweep import Trial

DIGEST_MARK = "#sha256="
DIGEST_HEX = 16
Shapes = Mapping[str, tuple[int, ...]]
"""A state dict's tensors by name: name -> shape."""


@dataclass(frozen=True)
class CheckpointFile:
    """A checkpoint file as read: where it is, the SHA-256 of its bytes and the shapes of its tensors."""

    path: Path
    digest: str
    shapes: dict[str, tuple[int, ...]]

    @property
    def reference(self) -> str:
        """The ``init_from`` value trial keys hash: the path and the content's digest."""
        return f"{self.path}{DIGEST_MARK}{self.digest}"


def content_digest(data: bytes) -> str:
    """The digest a reference records of a file's ``data``."""
    return hashlib.sha256(data).hexdigest()[:DIGEST_HEX]


def split_reference(value: str) -> tuple[Path, str | None]:
    """A file ``init_from`` value's path and digest (None for a bare path, as written before digests)."""
    path, mark, digest = value.rpartition(DIGEST_MARK)
    if mark and re.fullmatch(f"[0-9a-f]{{{DIGEST_HEX}}}", digest):
        return Path(path), digest
    return Path(value), None


def is_file_reference(value: Any) -> TypeGuard[str]:
    """Whether ``init_from`` value ``value`` names a checkpoint file (not a trial, a sweep, or nothing)."""
    return isinstance(value, str) and bool(value) and not value.startswith(("trial:", "best:"))


def state_tensors(state: Any) -> dict[str, Any]:
    """The tensors of a loaded checkpoint: a state dict, or the ``model`` entry of a resume checkpoint."""
    import torch

    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        return {}
    return {
        name: tensor for name, tensor in state.items() if isinstance(name, str) and isinstance(tensor, torch.Tensor)
    }


def load_tensors(data: bytes) -> dict[str, Any]:
    """The tensors of checkpoint bytes ``data``, loaded weights-only on the CPU; :class:`ValueError` saying
    why when they are not a PyTorch checkpoint holding tensors."""
    import torch

    try:
        with warnings.catch_warnings():  # e.g. on the pickle protocol of a file that is no checkpoint
            warnings.simplefilter("ignore")
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load fails on foreign bytes in many ways (KeyError, struct.error, ...)
        raise ValueError(
            f"not a PyTorch checkpoint of weights (torch.load with weights_only=True raises {type(exc).__name__})"
        ) from None
    tensors = state_tensors(state)
    if not tensors:
        raise ValueError("a PyTorch file, but it holds no named tensors (a state dict)")
    return tensors


def read_checkpoint(path: Path) -> CheckpointFile:
    """The checkpoint file at ``path``; :class:`ValueError` saying why it is not one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read it ({exc.strerror or exc})") from None
    tensors = load_tensors(data)
    return CheckpointFile(path, content_digest(data), {name: tuple(t.shape) for name, t in tensors.items()})


def matching_tensors(target: Shapes, source: Shapes) -> dict[str, str]:
    """Which tensor of ``source`` fills each tensor of ``target`` it can: the same name, or the longest
    name that ends a target's dotted name (a LeNet-5-3 checkpoint fills the classifier inside an STN), and
    the same shape. Target name -> source name."""
    matches = {}
    for name, shape in target.items():
        candidates = [k for k in source if (k == name or name.endswith("." + k)) and source[k] == shape]
        if candidates:
            matches[name] = max(candidates, key=len)
    return matches


def fit(architecture: str, own_params: dict[str, Any], checkpoint: CheckpointFile) -> tuple[int, int]:
    """How many of the tensors of ``architecture`` (built with ``own_params``, on the meta device: shapes
    only) ``checkpoint`` fills, and how many it has: (matched, total)."""
    import torch

    with torch.device("meta"):
        model = architectures.get(architecture).build(**own_params)
    target = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    return len(matching_tensors(target, checkpoint.shapes)), len(target)


def fit_lines(trials: Iterable[Trial]) -> list[str]:
    """One line for each checkpoint file and network it starts: how many of the network's tensors it fills."""
    lines: dict[str, None] = {}
    checkpoints: dict[Path, CheckpointFile] = {}
    for trial in trials:
        init_from = trial.params.get("init_from")
        if not is_file_reference(init_from):
            continue
        path = split_reference(init_from)[0]
        if path not in checkpoints:
            checkpoints[path] = read_checkpoint(path)
        own = {k: v for k, v in trial.params.items() if k in architectures.get(trial.architecture).params()}
        matched, total = fit(trial.architecture, own, checkpoints[path])
        lines[
            f"init_from {path}: {matched} of the {total} tensors of {trial.architecture} match by name and shape"
            + (f"; the other {total - matched} start fresh" if matched < total else "")
        ] = None
    return list(lines)
