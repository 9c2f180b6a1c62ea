"""The worker: one process per trial, started by the coordinator as ``python -m gridsearch.worker``.

It reads one job (JSON) on stdin, trains or evaluates, and reports JSON lines on its original
stdout; anything else printed goes to stderr, which the coordinator keeps in the trial's log.
The worker never touches the database: the coordinator is its only writer.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, TextIO

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this process when the coordinator dies (Linux), so no orphan trains on."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def run_job(job: dict[str, Any], protocol: TextIO) -> None:
    """Run one ``train`` or ``evaluate`` job, writing its events to ``protocol``. A ``train`` job's
    optional ``epoch_budget`` stops it after that many epochs (a successive-halving rung)."""
    import torch

    from gridsearch import training

    def emit(event: dict[str, Any]) -> None:
        protocol.write(json.dumps(event) + "\n")
        protocol.flush()

    device = torch.device(job["device"])
    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(job["data_dir"])
    emit({"event": "hello", "pid": os.getpid(), "device": str(device), "torch_version": torch.__version__})
    if job["task"] == "train":
        summary = training.train_trial(job["config"], run_dir, data_dir, device, emit, job.get("epoch_budget"))
        emit({"event": "done", **summary})
    else:
        emit({"event": "evaluation", **training.evaluate_trial(job["config"], run_dir, data_dir, device,
                                                               job["test_size"])})


def main() -> None:
    job = json.load(sys.stdin)
    die_with_parent(job["parent_pid"])
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints from libraries go to the log, not into the protocol
    try:
        run_job(job, protocol)
    except Exception as exc:
        traceback.print_exc()
        protocol.write(json.dumps({"event": "error", "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        protocol.flush()
        sys.exit(1)


if __name__ == "__main__":
    main()
