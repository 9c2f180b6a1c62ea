"""The seed study, in resumable chunks: at full size (``--profile full``, hours of a GPU, in chunks that
each fit a short lease) or at the scale of a 2-core CPU (``--profile cpu``, ``grids/study-cpu/``).

One call runs one chunk: it unpacks the state left by the previous chunk (``results.db`` and what each
trial needs to resume: ``best.pt``, ``last.pt`` and their checksums), runs the study for at most
``--chunk-seconds`` (then interrupts ``run`` the way Ctrl-C does: trials are left 'interrupted' and resume
from their last epoch checkpoint), and packs the state again into one file. Call it again with the same
state file until it prints ``"finished": true``. The stages, in order:

1. the profile's sweep files (full: ``grids/lenet53.yaml``, ``lenet53_augmented.yaml``, ``stn.yaml``,
   ``tps.yaml``; cpu: every file in ``grids/study-cpu/``): the first (LeNet-5-3, which the others warm-start
   from) alone on every lane's core, then the rest in lanes;
2. replicates: each study model's selected configuration under the profile's seeds, selected by the mean
   over seeds (a sweep named ``<grid>_seeds``; seed 0 is the grid's own trial, trained once; warm-started
   grids start every seed from the same selected trial, as the grid did); and for a profile that trains
   under bfloat16 autocast (cpu), the fp32 check: LeNet-5-3's selected configuration in float32 under the
   same seeds (``<grid>_fp32``), in a lane of its own;
3. the committee: a sweep ``study_committee`` of every replicate trial (it trains nothing);
4. evaluations: the committee of each replicate sweep and of ``study_committee`` (``evaluate --ensemble
   auto``: K chosen on validation) and the robustness suite of each sweep's selected trial.

``study/publish.py`` then turns the state into ``docs/study/``. The last line printed is one JSON object:
the stage reached, trial counts by status, and whether the study is finished. Exit code 0 when finished,
3 when another chunk is needed, else the failing command's own code.

    python study/run_study.py --state study.tar.gz --chunk-seconds 540 -- --device cuda   # again until finished
    python study/run_study.py --profile cpu --state study-cpu.tar.gz                    # about three hours

Trials record the code version they were trained by; a study is run from a commit (a working tree with
changes to tracked files is refused unless ``--allow-dirty``), so that ``docs/study`` names one version.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
STUDY_MODELS = ["lenet53.yaml", "lenet53_augmented.yaml", "stn.yaml", "tps.yaml"]
"""The study's four models, by sweep file name, in the order they run (the others warm-start from the first)."""


@dataclass(frozen=True)
class Profile:
    """A size of the study: its sweep files (in order), which of them are replicated, and under which seeds."""

    grids: list[str]
    replicated: list[str]
    seeds: list[int]
    chunk_seconds: float
    """The default length of one chunk."""
    lanes: int = 1
    """How many ``gridsearch run`` processes run side by side (one worker each when more than one): the study
    models' chain in one lane, the other sweeps in the others, so that one-trial sweeps keep every core busy."""
    fp32_check: list[str] = field(default_factory=list)
    """Grids whose selected configuration is trained again in float32 under the seeds (those trained under
    bfloat16 autocast): does the precision change the result?"""


def cpu_grids() -> list[str]:
    """``grids/study-cpu/``: the study's four models first (in order), then the other files by name."""
    folder = ROOT / "grids" / "study-cpu"
    others = sorted(path.name for path in folder.glob("*.yaml") if path.name not in STUDY_MODELS)
    return [f"grids/study-cpu/{name}" for name in STUDY_MODELS + others]


PROFILES = {
    "full": Profile(
        [f"grids/{name}" for name in STUDY_MODELS], [f"grids/{n}" for n in STUDY_MODELS], [0, 1, 2, 3, 4], 540
    ),
    "cpu": Profile(
        cpu_grids(),
        [f"grids/study-cpu/{name}" for name in STUDY_MODELS],
        [0, 1, 2],
        4 * 3600,
        lanes=2,
        fp32_check=["grids/study-cpu/lenet53.yaml"],
    ),
}
RESUME_FILES = ("best.pt", "best.pt.sha256", "last.pt", "last.pt.sha256", "last.prev.pt", "last.prev.pt.sha256")
"""What a trial's run folder needs to resume and to be selected, tested and served; its log is left out."""
COMMITTEE = "study_committee"
"""The sweep whose committee is the study's (chosen among every replicate trial)."""
LEDGER = "study.json"
"""In the state file: the profile and the wall seconds each stage has taken so far, over all chunks."""
NEEDS_ANOTHER_CHUNK = 3
INTERRUPTED = 130


def unpack(state: Path, work: Path) -> None:
    """Restore ``work`` from the state file of the previous chunk (nothing to do for the first)."""
    if state.exists():
        with tarfile.open(state) as archive:
            archive.extractall(work, filter="data")


def snapshot(database: Path, target: Path) -> Path:
    """``database`` copied to ``target`` as one vacuumed file, with what its -wal file still holds; ``target``."""
    target.unlink(missing_ok=True)
    with closing(sqlite3.connect(database)) as connection:
        connection.execute("VACUUM INTO ?", (str(target),))
    return target


def pack(work: Path, state: Path) -> None:
    """Write ``work``'s database and resume files into ``state`` (atomically: a crash keeps the old one)."""
    partial = state.with_name(state.name + ".partial")
    database = snapshot(work / "results.db", work / "snapshot.db")
    with tarfile.open(partial, "w:gz") as archive:
        archive.add(database, "results.db")
        archive.add(work / LEDGER, LEDGER)
        for run_dir in sorted((work / "runs").glob("*")):
            for name in RESUME_FILES:
                if (run_dir / name).exists():
                    archive.add(run_dir / name, f"runs/{run_dir.name}/{name}")
    database.unlink()
    partial.replace(state)


def add_seconds(work: Path, profile: str, stage: str, seconds: float) -> None:
    """Add ``seconds`` to ``stage``'s wall time in the state's ledger."""
    path = work / LEDGER
    ledger: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"profile": profile, "seconds": {}}
    spent: dict[str, float] = ledger["seconds"]
    spent[stage] = round(spent.get(stage, 0.0) + seconds, 1)
    path.write_text(json.dumps(ledger, indent=2) + "\n")


def gridsearch(*args: str) -> subprocess.CompletedProcess[str]:
    """A ``gridsearch`` command, its output captured."""
    return subprocess.run([sys.executable, "-m", "gridsearch", *args], capture_output=True, text=True, cwd=ROOT)


def replicate_file(grid: Path, work: Path, seeds: list[int], fp32: bool = False) -> Path | None:
    """A sweep file for ``grid``'s selected configuration under ``seeds``, selected by its mean over them
    (``<name>_seeds``; with ``fp32``, the same in float32: ``<name>_fp32``), or None if nothing is selected
    yet."""
    document = yaml.safe_load(grid.read_text())
    best = gridsearch("best", document["name"], "--format", "json", "--db", str(work / "results.db"))
    if best.returncode != 0:
        return None
    chosen = json.loads(best.stdout)
    chosen["params"]["architecture"] = chosen["architecture"]
    parts = document["grid"] if isinstance(document["grid"], list) else [document["grid"]]
    gridded = dict.fromkeys(name for part in parts for name in part)  # in order, once each
    document.pop("search", None)  # the selected point alone: nothing left to search
    suffix, precision = ("_fp32", " in float32 (no bfloat16 autocast)") if fp32 else ("_seeds", "")
    document.update(
        name=f"{document['name']}{suffix}",
        seeds=seeds,
        grid={name: [chosen["params"][name]] for name in gridded},
        select={"metric": "val_accuracy", "over_seeds": "mean"},
        description=f"the selected configuration of {document['name']}{precision} under seeds "
        + ", ".join(map(str, seeds)),
    )
    if fp32:
        document["params"]["amp"] = "off"
    path = work / "replicates" / f"{grid.stem}{suffix}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def committee_file(replicates: list[Path], work: Path) -> Path | None:
    """A sweep of every trial of the replicate sweeps of the first one's dataset (each model's selected
    configuration under each seed), one grid part per model: it trains nothing (the trials are the
    replicates' own), and its committee is chosen among all of them on validation. None if there are
    fewer than two such models."""
    parts, seeds, dataset = [], [], None
    for path in replicates:
        document = yaml.safe_load(path.read_text())
        dataset = dataset or document["dataset"]
        if document["dataset"].get("name", "mnist") != dataset.get("name", "mnist"):
            continue  # a committee votes on one dataset's images: the first replicate's
        best = gridsearch("best", document["name"], "--format", "json", "--db", str(work / "results.db"))
        if best.returncode != 0:
            return None
        chosen = json.loads(best.stdout)
        parts.append({"architecture": [chosen["architecture"]], **{k: [v] for k, v in chosen["params"].items()}})
        seeds = document["seeds"]
    if len(parts) < 2:
        return None
    committee = {
        "name": COMMITTEE,
        "description": "every seed of each study model's selected configuration: the committee's candidates",
        "dataset": dataset,
        "grid": parts,
        "seeds": seeds,
        "select": "val_accuracy",
    }
    path = work / "replicates" / "committee.yaml"
    path.write_text(yaml.safe_dump(committee, sort_keys=False))
    return path


def stored(work: Path, sweep: str, prefix: str) -> bool:
    """Whether ``sweep``'s selected trial has an evaluation whose name starts with ``prefix``."""
    with closing(sqlite3.connect(work / "results.db")) as connection:
        (count,) = connection.execute(
            "SELECT COUNT(*) FROM evaluations e JOIN sweeps s ON e.trial_key = s.selected_trial "
            "WHERE s.name = ? AND e.name LIKE ?",
            (sweep, prefix + "%"),
        ).fetchone()
    return count > 0


def evaluate(work: Path, grids: list[Path], replicates: list[Path], run_args: list[str]) -> int:
    """The committee of each replicate sweep and the robustness suite of each sweep's selected trial, each
    computed once (a later chunk skips what is stored); the first failing command's exit code, else 0."""
    data = [run_args[i + 1] for i, arg in enumerate(run_args[:-1]) if arg == "--data-dir"][:1]
    where = [
        "--db",
        str(work / "results.db"),
        "--artifacts",
        str(work / "runs"),
        *(["--data-dir", *data] if data else []),
    ]
    jobs = [(path, "ensemble/", ["--ensemble", "auto"]) for path in replicates]
    jobs += [(path, "robustness/", ["--suite", "robustness"]) for path in grids]
    for path, prefix, what in jobs:
        document = yaml.safe_load(path.read_text())
        if stored(work, document["name"], prefix):
            continue
        size = document["dataset"].get("test_size") if prefix == "robustness/" else None
        result = gridsearch("evaluate", document["name"], *what, *where, *(["--test-size", str(size)] if size else []))
        print(result.stdout, end="", flush=True)
        if result.returncode != 0:
            print(result.stderr, end="", file=sys.stderr)
            return result.returncode
    return 0


def lanes_of(files: list[Path], lanes: int, first: int = 0) -> list[list[Path]]:
    """``files`` in ``lanes`` groups run side by side: the first ``first`` files (a chain whose later sweeps
    warm-start from the earlier ones) in one lane, the rest split in order over the others (or all lanes)."""
    if lanes == 1:
        return [files]
    chain, rest = files[:first], files[first:]
    count = lanes - 1 if chain else lanes
    size = -(-len(rest) // count) if rest else 1
    return [group for group in [chain, *(rest[i : i + size] for i in range(0, len(rest), size))] if group]


def run_for(
    lanes: list[list[Path]], work: Path, seconds: float, run_args: list[str], workers: int | None = None
) -> int:
    """``gridsearch run FILES`` for each lane at once (``workers`` each, else one each when there are several;
    they share the database and its trials) for at most ``seconds``, then interrupted as by Ctrl-C. The first
    failing lane's exit code, else INTERRUPTED if one was interrupted, else 0."""
    workers = workers or (1 if len(lanes) > 1 else None)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "gridsearch", "run", *map(str, files), "--db", str(work / "results.db")]
            + ["--artifacts", str(work / "runs"), "--plain", *(["--workers", str(workers)] if workers else [])]
            + run_args,
            cwd=ROOT,
            start_new_session=True,
        )
        for files in lanes
    ]
    deadline = time.monotonic() + max(1.0, seconds)
    codes = [finish(process, deadline) for process in processes]
    return next((c for c in codes if c not in (0, INTERRUPTED)), INTERRUPTED if INTERRUPTED in codes else 0)


def finish(process: subprocess.Popen[bytes], deadline: float) -> int:
    """``process``'s exit code, interrupted as by Ctrl-C at ``deadline``."""
    try:
        return process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            code = process.wait()
        # killed by the signal itself (it came before Python's handler, or had to be SIGKILL): interrupted too
        return INTERRUPTED if code < 0 else code


def counts(work: Path) -> dict[str, int]:
    """Trials of the study by status, read from its database (none if there is none yet)."""
    if not (work / "results.db").exists():
        return {}
    with closing(sqlite3.connect(work / "results.db")) as connection:
        return dict(connection.execute("SELECT status, COUNT(*) FROM trials GROUP BY status").fetchall())


def bf16_instructions() -> bool:
    """Whether the CPU runs bfloat16 natively (the cpu profile trains under bfloat16 autocast)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return True  # not Linux: nothing to tell
    return "avx512_bf16" in flags or "amx_bf16" in flags


def dirty_files() -> list[str]:
    """The tracked files of the working tree with changes not committed (none outside a git checkout)."""
    found = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    )
    return [line[3:] for line in found.stdout.splitlines()] if found.returncode == 0 else []


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full", help="the study's size (default: full)")
    parser.add_argument("--state", type=Path, required=True, help="the state file this chunk reads and writes")
    parser.add_argument("--chunk-seconds", type=float, help="stop the chunk after this long (full: 540, cpu: 4 h)")
    parser.add_argument("--grids", nargs="+", help="sweep files to run instead of the profile's (all replicated)")
    parser.add_argument("--lanes", type=int, help="gridsearch run processes side by side (full: 1, cpu: 2)")
    parser.add_argument("--no-replicates", action="store_true", help="stop after the grids")
    parser.add_argument("--allow-dirty", action="store_true", help="run with uncommitted changes to tracked files")
    parser.add_argument(
        "run_args",
        nargs=argparse.REMAINDER,
        help="after --: options for gridsearch run, e.g. -- --device cuda --slots-per-gpu 8",
    )
    return parser.parse_args(argv)


@dataclass
class Chunk:
    """One call's work: where the study is unpacked, what it runs, and how long it may still run."""

    work: Path
    profile: str
    lanes: int
    run_args: list[str]
    deadline: float
    stage: str = "grids"

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def timed(self, stage: str, step: Callable[[], int]) -> int:
        """``step``'s exit code, its wall time added to ``stage`` in the ledger; INTERRUPTED if no time is left."""
        self.stage = stage
        if self.left() <= 5:
            return INTERRUPTED
        begun = time.monotonic()
        try:
            return step()
        finally:
            add_seconds(self.work, self.profile, stage, time.monotonic() - begun)

    def run(self, lanes: list[list[Path]], workers: int | None = None) -> int:
        return run_for(lanes, self.work, self.left(), self.run_args, workers)

    def grids(self, grids: list[Path], chain: int) -> int:
        """The sweep files: the chain's first (the model the others warm-start from) alone on every core,
        then the rest in lanes, the chain's others in one of them."""
        every_core = self.lanes if self.lanes > 1 else None  # (a GPU's run picks its own workers)
        code = self.timed("grids", lambda: self.run([grids[:1]], every_core)) if chain else 0
        rest = grids[1:] if chain else grids
        if code == 0 and rest:
            code = self.timed("grids", lambda: self.run(lanes_of(rest, self.lanes, max(chain - 1, 0))))
        return code

    def replicates(self, replicated: list[Path], fp32: list[Path], seeds: list[int]) -> tuple[int, list[Path]]:
        """Each replicated grid's selected configuration under ``seeds`` (the fp32 checks in a lane of their
        own), then the committee of them all; the exit code and the replicate sweep files."""
        replicates = [path for grid in replicated if (path := replicate_file(grid, self.work, seeds))]
        checks = [path for grid in fp32 if (path := replicate_file(grid, self.work, seeds, fp32=True))]
        code = self.timed("replicates", lambda: self.run(lanes_of(checks + replicates, self.lanes, len(checks))))
        if code == 0 and (committee := committee_file(replicates, self.work)):
            code = self.timed("replicates", lambda: self.run([[committee]]))
            replicates.append(committee)
        return code, replicates


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not args.allow_dirty and (changed := dirty_files()):
        print(
            f"error: uncommitted changes to {', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}: commit "
            "them first, so that every trial records the code version it was trained by (or pass --allow-dirty)",
            file=sys.stderr,
        )
        return 2
    profile = PROFILES[args.profile]
    if profile.fp32_check and not bf16_instructions():
        print(
            "warning: this CPU has no bfloat16 instructions (avx512_bf16, amx_bf16): the profile's bfloat16 training "
            "is emulated here, several times slower than on the CPU its estimate was measured on",
            file=sys.stderr,
        )
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        unpack(args.state.resolve(), work)
        chunk = Chunk(
            work,
            args.profile,
            args.lanes or profile.lanes,
            [a for a in args.run_args if a != "--"],
            started + (args.chunk_seconds or profile.chunk_seconds),
        )
        grids = [ROOT / grid for grid in args.grids or profile.grids]
        replicated = grids if args.grids else [ROOT / grid for grid in profile.replicated]
        fp32 = [] if args.grids else [ROOT / grid for grid in profile.fp32_check]
        code = chunk.grids(grids, 0 if args.grids else len(STUDY_MODELS))
        if code == 0 and not args.no_replicates:
            code, replicates = chunk.replicates(replicated, fp32, profile.seeds)
            if code == 0:
                code = chunk.timed("evaluations", lambda: evaluate(work, grids, replicates, chunk.run_args))
        if (work / "results.db").exists():  # a run refused before storing anything leaves no state to keep
            pack(work, args.state.resolve())
        finished = code == 0
        print(
            json.dumps(
                {
                    "profile": args.profile,
                    "stage": chunk.stage,
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
