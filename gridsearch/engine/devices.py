"""The machine a run uses: its device, its GPUs, its cores, and the code version it records."""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

from gridsearch import __version__
from gridsearch.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def code_version() -> str:
    """The git commit of the engine's code (with '+dirty' for local changes), else the package version."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return __version__


KEPT_FREED_BYTES = 1 << 30
"""How large a freed block glibc keeps in the heap for the next batch (see :func:`keep_freed_memory`)."""


def keep_freed_memory() -> None:
    """Let glibc keep freed blocks of up to ``KEPT_FREED_BYTES`` for reuse (``mallopt``). By default it gives every
    block over 32 MB back to the kernel at once, so a network's activations, allocated anew for each batch, are
    page-faulted in again batch after batch: LeNet-5-3 on 10,000 MNIST images spent 6.5 of its 6.9 s in the kernel
    on a 2-core CPU, 3.1 s in all with this (``benchmarks/results/2026-12-05-cpu-test-suite.md``). The allocator
    alone changes: every number stays the same. A no-op where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    mallopt(m_mmap_threshold, KEPT_FREED_BYTES)
    mallopt(m_trim_threshold, KEPT_FREED_BYTES)


def resolve_device(device: str, driver_only: bool = False) -> str:
    """'cpu' or 'cuda' for ``--device auto|cpu|cuda``; UserError if CUDA is asked for but absent. ``driver_only``:
    ask the CUDA driver whether it sees a GPU instead of torch, which is not imported then (``plan``)."""
    if device == "cpu":
        return "cpu"
    if cuda_driver_sees_a_gpu() if driver_only else cuda_in_torch():
        return "cuda"
    if device == "cuda":
        raise UserError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return "cpu"


def cuda_in_torch() -> bool:
    """Whether torch can use a CUDA device."""
    import torch

    return torch.cuda.is_available()


def cuda_driver_sees_a_gpu() -> bool:
    """Whether the CUDA driver (``libcuda``, through ctypes) sees a GPU: torch's answer without importing torch,
    but for a CPU-only build of torch on a machine with a GPU."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return driver.cuInit(0) == 0 and driver.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (ids or UUIDs)."""
    import torch

    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [entry.strip() for entry in listed.split(",") if entry.strip()][: torch.cuda.device_count()]
    return [str(index) for index in range(torch.cuda.device_count())]


def oversubscription(workers: int, threads: int, cores: int) -> str | None:
    """Why ``workers`` trials of ``threads`` threads each overload ``cores`` cores, or None if they fit."""
    if workers * threads <= cores:
        return None
    return (
        f"{workers} workers x {threads} thread(s) per trial = {workers * threads} threads on {cores} "
        f"cores: trials will slow each other down (threads stay fixed per trial, for determinism; "
        f"use --workers {max(1, cores // threads)})"
    )
