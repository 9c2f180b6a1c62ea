"""The seed study at full size, in resumable chunks that each fit a short GPU lease.

One call runs one chunk: it unpacks the state left by the previous chunk (``results.db`` and what each
trial needs to resume: ``best.pt``, ``last.pt`` and their checksums), runs the study's sweeps for at most
``--chunk-seconds`` (then interrupts ``run`` the way Ctrl-C does: trials are left 'interrupted' and resume
from their last epoch checkpoint), and packs the state again into one file. Call it again with the same
state file until it prints ``"finished": true``. The stages, in order:

1. the four study grids (``grids/lenet53.yaml``, ``lenet53_augmented.yaml``, ``stn.yaml``, ``tps.yaml``);
2. replicates: each grid's selected configuration again under seeds 1-4 (a sweep named ``<grid>_seeds``;
   warm-started grids start every seed from the same selected seed-0 trial, as the grid did).

The last line printed is one JSON object: the stage reached, trial counts by status, and whether the
study is finished. Exit code 0 when finished, 3 when another chunk is needed, else ``run``'s own code.

    python study/run_study.py --state study.tar.gz --chunk-seconds 540 --device cuda   # again until finished
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
STUDY_GRIDS = ["grids/lenet53.yaml", "grids/lenet53_augmented.yaml", "grids/stn.yaml", "grids/tps.yaml"]
REPLICATE_SEEDS = [1, 2, 3, 4]
RESUME_FILES = ("best.pt", "best.pt.sha256", "last.pt", "last.pt.sha256", "last.prev.pt", "last.prev.pt.sha256")
"""What a trial's run folder needs to resume and to be selected, tested and served; its log is left out."""
NEEDS_ANOTHER_CHUNK = 3
INTERRUPTED = 130


def unpack(state: Path, work: Path) -> None:
    """Restore ``work`` from the state file of the previous chunk (nothing to do for the first)."""
    if state.exists():
        with tarfile.open(state) as archive:
            archive.extractall(work, filter="data")


def pack(work: Path, state: Path) -> None:
    """Write ``work``'s database and resume files into ``state`` (atomically: a crash keeps the old one)."""
    partial = state.with_name(state.name + ".partial")
    with tarfile.open(partial, "w:gz") as archive:
        archive.add(work / "results.db", "results.db")
        for run_dir in sorted((work / "runs").glob("*")):
            for name in RESUME_FILES:
                if (run_dir / name).exists():
                    archive.add(run_dir / name, f"runs/{run_dir.name}/{name}")
    partial.replace(state)


def replicate_file(grid: Path, work: Path) -> Path | None:
    """A sweep file for ``grid``'s selected configuration under seeds 1-4, or None if nothing is selected yet."""
    document = yaml.safe_load(grid.read_text())
    best = subprocess.run(
        [
            sys.executable,
            "-m",
            "gridsearch",
            "best",
            document["name"],
            "--format",
            "json",
            "--db",
            str(work / "results.db"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if best.returncode != 0:
        return None
    params = json.loads(best.stdout)["params"]
    gridded = list(document["grid"]) if isinstance(document["grid"], dict) else []
    document.update(
        name=f"{document['name']}_seeds",
        seeds=REPLICATE_SEEDS,
        grid={name: [params[name]] for name in gridded},
        description=f"the selected configuration of {document['name']} under seeds 1-4",
    )
    path = work / "replicates" / grid.name
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def run_for(files: list[Path], work: Path, seconds: float, run_args: list[str]) -> int:
    """``gridsearch run FILES`` for at most ``seconds``, then interrupted as by Ctrl-C; its exit code."""
    command = [
        sys.executable,
        "-m",
        "gridsearch",
        "run",
        *map(str, files),
        "--db",
        str(work / "results.db"),
        "--artifacts",
        str(work / "runs"),
        "--plain",
        *run_args,
    ]
    process = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    try:
        return process.wait(timeout=max(1.0, seconds))
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        process.send_signal(signal.SIGINT)
        try:
            return process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            return process.wait()


def counts(work: Path) -> dict[str, int]:
    """Trials of the study by status, read from its database."""
    import sqlite3

    with sqlite3.connect(work / "results.db") as connection:
        return dict(connection.execute("SELECT status, COUNT(*) FROM trials GROUP BY status").fetchall())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, required=True, help="the state file this chunk reads and writes")
    parser.add_argument("--chunk-seconds", type=float, default=540, help="stop the chunk after this long")
    parser.add_argument("--grids", nargs="+", default=STUDY_GRIDS, help="the study's sweep files, in order")
    parser.add_argument("--no-replicates", action="store_true", help="stop after the grids")
    parser.add_argument(
        "run_args",
        nargs=argparse.REMAINDER,
        help="after --: options for gridsearch run, e.g. -- --device cuda --slots-per-gpu 8",
    )
    args = parser.parse_args(argv)
    run_args = [a for a in args.run_args if a != "--"]
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        unpack(args.state.resolve(), work)
        grids = [ROOT / grid for grid in args.grids]
        code = run_for(grids, work, args.chunk_seconds, run_args)
        stage = "grids"
        if code == 0 and not args.no_replicates:
            stage = "replicates"
            replicates = [path for grid in grids if (path := replicate_file(grid, work))]
            left = args.chunk_seconds - (time.monotonic() - started)
            code = run_for(replicates, work, left, run_args) if left > 5 else INTERRUPTED
        pack(work, args.state.resolve())
        finished = code == 0
        print(
            json.dumps(
                {
                    "stage": stage,
                    "finished": finished,
                    "exit_code": code,
                    "trials": counts(work),
                    "seconds": round(time.monotonic() - started, 1),
                }
            )
        )
    if finished:
        return 0
    return NEEDS_ANOTHER_CHUNK if code == INTERRUPTED else code


if __name__ == "__main__":
    sys.exit(main())
