"""Why trials failed, in words: a dead worker's exit, and the commonest error of a sweep that selected nothing."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from gridsearch.store.models import TrialRow
from gridsearch.vocabulary import FAILURES, Stage

LOG_TAIL_LINES = 10
"""How many of a dead worker's last log lines its trial's error keeps when it printed no traceback."""
TRACEBACK_LINES = 40
"""The most lines of a printed traceback the error keeps (its end: where it was raised)."""
CRASH_START = "Fatal Python error:"
TRACEBACK_STARTS = ("Traceback (most recent call last):", CRASH_START)
"""How Python's and ``faulthandler``'s tracebacks begin."""


def log_size(log: Path) -> int:
    """Bytes in ``log`` now (0 if it does not exist): where what a new worker writes begins."""
    try:
        return log.stat().st_size
    except FileNotFoundError:
        return 0


def exit_reason(
    code: int | None, log: Path, offset: int = 0, reported: bool = False, stage: Stage | None = None
) -> str:
    """Why a worker that sent no ``error`` event ended: its signal or exit code and the ``stage`` it was in, then
    the last traceback it printed to ``log`` after byte ``offset`` (this run of it), then its last lines.
    ``reported``: it sent events before it died (else it died before it could report anything)."""
    if code is not None and code < 0:
        reason = f"worker killed by {signal.Signals(-code).name}"
    else:
        reason = f"worker exited with code {code}"
    if not reported:
        reason += " before it reported anything"
    return with_log(reason if stage is None else with_stage(reason, stage), log, offset)


def with_log(reason: str, log: Path, offset: int = 0) -> str:
    """``reason``, then the last traceback a worker printed to ``log`` after byte ``offset``, else its last lines."""
    lines = _read_from(log, offset).rstrip().splitlines()
    if not lines:
        return f"{reason}; {log} is empty (a traceback from before it opened its log goes to the run's stderr)"
    start = max((i for i, line in enumerate(lines) if line.startswith(TRACEBACK_STARTS)), default=None)
    if start is not None and lines[start].startswith(CRASH_START):
        return "\n".join([f"{reason}; the end of {log}:", *crashed_thread(lines[start:])])
    if start is not None:  # the traceback runs to the end of the log: it holds the last lines too
        return "\n".join([f"{reason}; the end of {log}:", *lines[start:][-TRACEBACK_LINES:]])
    return "\n".join([f"{reason}; the last lines of {log}:", *lines[-LOG_TAIL_LINES:]])


def crashed_thread(dump: list[str]) -> list[str]:
    """``faulthandler``'s dump of a crash cut to its first line and the stack of the thread that crashed (the
    dump also lists every other thread, the heartbeat's among them, and the extension modules)."""
    current = next((i for i, line in enumerate(dump) if line.startswith("Current thread")), None)
    if current is None:
        return dump[-TRACEBACK_LINES:]
    end = next((i for i in range(current, len(dump)) if not dump[i].strip()), len(dump))
    return [dump[0], *dump[current:end][:TRACEBACK_LINES]]


def with_stage(error: str, stage: Stage | str) -> str:
    """``error`` with the stage it happened in at the end of its first line: ``... (stage: checkpoint)``."""
    first, newline, rest = error.partition("\n")
    return f"{first} (stage: {stage}){newline}{rest}"


def _read_from(log: Path, offset: int) -> str:
    try:
        with log.open("rb") as file:
            file.seek(offset)
            return file.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def headline(error: str | None) -> str:
    """The first line of an error: what it is, without its traceback or log lines."""
    return (error or "no error recorded").strip().split("\n", 1)[0]


def nothing_finished(rows: list[TrialRow], sweep: str, artifacts: Path, retry_command: str) -> str:
    """Why no trial of ``sweep`` (``rows``) was selected: the commonest error and the command that runs the failed
    trials again."""
    commonest = commonest_error(rows)
    if commonest is None:
        return "no trial finished, so none was selected"
    error, count, failed = commonest
    return (
        f"no trial finished, so none was selected: {failed} of {len(rows)} trials failed, {count} of them with: "
        f"{error}\n(`gridsearch trials {sweep}` lists every error, and each trial's worker.log is in "
        f"{artifacts}/<key>/); once fixed, run them again: {retry_command}"
    )


def commonest_error(rows: Iterable[TrialRow]) -> tuple[str, int, int] | None:
    """The commonest error (its first line) of the failed or timed-out trials of ``rows``, how many had
    it and how many failed in all; None if none failed."""
    errors = Counter(headline(row.error) for row in rows if row.status in FAILURES)
    if not errors:
        return None
    (error, count), failed = errors.most_common(1)[0], sum(errors.values())
    return error, count, failed
