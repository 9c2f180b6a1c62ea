"""Checkpoint files: atomic writes, a SHA-256 beside each file, and finding the newest intact one.

A kill never leaves half a checkpoint (write to a temporary file, then rename); a file damaged later
(truncated, bit rot) is detected on load because its bytes no longer match ``<name>.sha256``.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gridsearch.vocabulary import Execution

FINISHED = "finished"
"""The key that marks a resume checkpoint holding a finished trial's history alone."""


class CorruptCheckpoint(RuntimeError):
    """A checkpoint file that is missing, or whose bytes do not match the SHA-256 saved beside it."""


def checksum_path(path: Path) -> Path:
    """Where the SHA-256 of checkpoint ``path`` is kept: ``<name>.sha256`` beside it."""
    return path.with_name(path.name + ".sha256")


def previous_path(path: Path) -> Path:
    """Where ``save_atomically(..., keep_previous=True)`` keeps the checkpoint it replaced."""
    return path.with_suffix(".prev" + path.suffix)


def _write_atomically(data: bytes, path: Path) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:  # a write that fails (a full disk) names no file: name the one it was writing
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(tmp)) from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def save_atomically(state: dict[str, Any], path: Path, keep_previous: bool = False) -> None:
    """``torch.save`` to a temporary file, then rename, with the file's SHA-256 beside it: a kill never
    leaves half a checkpoint, and one damaged later is detected by :func:`load_verified`. With
    ``keep_previous``, the checkpoint it replaces (and its checksum) is kept at ``previous_path``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    if keep_previous and path.exists():
        os.replace(path, previous_path(path))
        if checksum_path(path).exists():
            os.replace(checksum_path(path), checksum_path(previous_path(path)))
    _write_atomically(data, path)
    _write_atomically(hashlib.sha256(data).hexdigest().encode(), checksum_path(path))


def load_verified(path: Path, device: torch.device | str) -> dict[str, Any]:
    """``torch.load`` (weights only) of a checkpoint whose SHA-256 matches the one saved beside it;
    :class:`CorruptCheckpoint` if it is missing or damaged."""
    try:
        data = path.read_bytes()
        expected = checksum_path(path).read_text().strip()
    except FileNotFoundError as exc:
        raise CorruptCheckpoint(f"{Path(exc.filename).name} is missing") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise CorruptCheckpoint(f"{path.name} is damaged (its SHA-256 does not match {checksum_path(path).name})")
    return torch.load(io.BytesIO(data), map_location=device, weights_only=True)


def keep_history_only(run_dir: Path, history: list[Any], execution: Execution = Execution.PER_TRIAL) -> None:
    """A finished trial (trained to its end, or stopped early), whichever way it trained, drops its resume
    checkpoints: ``last.pt`` becomes its epoch history alone (a few KB, no weights nor optimizer state; with
    ``execution`` when that is not per-trial, as in every resume checkpoint) and ``last.prev.pt`` goes.
    ``best.pt`` stays for evaluation, warm starts, committees and the web app. The history lets a worker
    that finished just before its coordinator died replay the trial instead of training it again."""
    last = run_dir / "last.pt"
    state: dict[str, Any] = {"history": history, FINISHED: True}
    if execution != Execution.PER_TRIAL:
        state["execution"] = execution.value
    save_atomically(state, last)
    for path in (previous_path(last), checksum_path(previous_path(last))):
        path.unlink(missing_ok=True)


def is_history_only(state: dict[str, Any]) -> bool:
    """Whether ``state`` is a finished trial's history alone (see ``keep_history_only``): nothing to train on from."""
    return bool(state.get(FINISHED))


def resume_state(run_dir: Path, warn: Callable[[str], None]) -> dict[str, Any] | None:
    """The newest intact resume checkpoint of a trial (``last.pt``, else the one before it), or None to
    start afresh. Damaged checkpoints are skipped with a warning, and so is a resume whose ``best.pt``
    is damaged (the trial then restarts: it is deterministic, so it ends with the same numbers).

    Loaded on the CPU whatever the trial's device: its random states must stay CPU byte tensors (``set_state``
    takes no other), and ``load_state_dict`` moves the weights and optimizer state to their parameters' device."""
    last = run_dir / "last.pt"
    if not last.exists() and not previous_path(last).exists():
        return None
    for path in (last, previous_path(last)):
        try:
            state = load_verified(path, "cpu")
        except CorruptCheckpoint as exc:
            warn(f"{exc}; trying an earlier checkpoint")
            continue
        try:
            load_verified(run_dir / "best.pt", "cpu")
        except CorruptCheckpoint as exc:
            warn(f"{exc}; restarting the trial from scratch")
            return None
        return state
    warn("no intact checkpoint left; restarting the trial from scratch")
    return None
