"""What the live sweep page needs on every poll, kept cheap at ten thousand trials: each trial's state read in one
query, two versions of the sweep, the trials that changed since a version the page already has, and small
caches of what is costly to compute once per state (the analysis, the figures).

``version`` changes whenever anything the trials table shows does (every recorded epoch). ``results_version``
changes only with what the analysis and its figures are computed from: a trial finishing or its scores, a
successive-halving promotion or rung-0 budget reached, the selected trial, a stored evaluation. The page asks
``/api/sweeps/NAME/trials?since=VERSION`` and gets only the trials that changed since that version; the server
remembers the last few versions of each sweep (``Snapshots``), and answers in full to a version it no longer
knows.

What is costly is never computed in a request: :meth:`LiveSweeps.ready` answers with the value computed for the
sweep's current results version, or starts computing it on a small pool of threads and answers None (the endpoint
then says "computing", HTTP 202, and the page asks again). The results version itself is one aggregate query
(``views.results_stamp``), not a read of every trial.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from flask import Response, jsonify

from gridsearch.analysis.effects import hashable
from gridsearch.spec.config import config_value
from gridsearch.store import views
from gridsearch.store.models import SweepRow
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import TrialStatus, metric

RETRY_SECONDS = 1
"""How soon a client should ask again for what is being computed (``Retry-After``)."""
SNAPSHOTS = 16
"""Versions remembered (all sweeps together) to answer ``since`` with the trials that changed."""
CACHED = 32
"""Analyses and figures kept, all sweeps together."""
COMPUTE_THREADS = 4
"""Analyses and figures computed at once; the others wait their turn."""

Value = TypeVar("Value")


class Cache(Generic[Value]):
    """The last ``size`` values computed, by key; thread-safe (requests are served in threads)."""

    def __init__(self, size: int):
        self.size = size
        self._values: OrderedDict[Hashable, Value] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Value | None:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
            return self._values.get(key)

    def put(self, key: Hashable, value: Value) -> Value:
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value

    def get_or_make(self, key: Hashable, make: Callable[[], Value]) -> Value:
        """The value for ``key``, made (outside the lock) and kept if it is not there."""
        found = self.get(key)
        return found if found is not None else self.put(key, make())


@dataclass(frozen=True)
class Failed:
    """A computation that raised ``error``, kept as its value: each request for it raises it again."""

    error: Exception


@dataclass(frozen=True)
class SweepState:
    """A sweep's trials as they stand, in grid order, with the two versions; entries are made on demand."""

    states: list[views.TrialState]
    fixed: dict[str, tuple[dict[str, Any], int]]
    """Each trial's gridded params and planned epochs: they never change."""
    version: str
    results_version: str
    fingerprints: dict[str, int]
    """A hash of each trial's state: what changed since a version is what hashes differently."""

    def entry(self, state: views.TrialState) -> dict[str, Any]:
        """The trials endpoint's entry of one trial."""
        params, epochs = self.fixed[state.key]
        return {
            "key": state.key,
            "position": state.position,
            "params": params,
            "seed": state.seed,
            "status": state.status,
            "rung": state.rung,
            "epochs_run": state.epochs_run,
            "epochs": epochs,
            "best_epoch": state.best_epoch,
            "val_accuracy": state.val_accuracy,
            "val_loss": state.val_loss,
            "train_seconds": state.train_seconds,
            "error": state.error,
        }


def computing(results_version: str) -> Response:
    """The answer for what is still being computed for ``results_version``: HTTP 202 with
    ``{"state": "computing", "results_version": ...}`` and ``Retry-After``."""
    response = jsonify(state="computing", results_version=results_version)
    response.status_code = 202
    response.headers["Retry-After"] = str(RETRY_SECONDS)
    return response


def digest(parts: Hashable) -> str:
    """16 hex digits that change when ``parts`` do (Python's hash: the same only within one server process, which
    is all a version needs: a server started again answers every page in full)."""
    return f"{hash(parts) & 0xFFFF_FFFF_FFFF_FFFF:016x}"


class LiveSweeps:
    """The live state of the sweeps of ``storage``, each trial's config (which never changes) read once."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.snapshots: Cache[dict[str, int]] = Cache(SNAPSHOTS)
        self.computed: Cache[Any] = Cache(CACHED)
        """What is computed from a sweep's results version (analyses, figures), by (sweep, what, version)."""
        self._fixed: dict[tuple[str, tuple[str, ...]], tuple[dict[str, Any], int]] = {}
        self._lock = threading.Lock()
        self._computing: set[Hashable] = set()
        self._idle = threading.Condition(self._lock)
        self._pool = ThreadPoolExecutor(COMPUTE_THREADS, "compute")

    def ready(self, key: Hashable, make: Callable[[], Value]) -> Value | None:
        """The value ``make`` made for ``key``, or None while it is being made: on the computing pool, started by
        the first request that finds it missing. A ``make`` that raised raises the same error again here."""
        found = self.computed.get(key)
        if isinstance(found, Failed):
            raise found.error
        if found is not None:
            return cast(Value, found)
        with self._lock:
            if key in self._computing:
                return None
            self._computing.add(key)
        self._pool.submit(self._compute, key, make)
        return None

    def ready_within(self, key: Hashable, make: Callable[[], Value], seconds: float) -> Value | None:
        """:meth:`ready`, waiting up to ``seconds`` for a value being made (by this request or another one): a
        burst of requests for one value makes it once, and each gets it, or None if it takes longer."""
        found = self.ready(key, make)
        if found is None:
            with self._idle:
                self._idle.wait_for(lambda: key not in self._computing, seconds)
            found = self.ready(key, make)  # made (or failed: raised here), else still being made
        return found

    def _compute(self, key: Hashable, make: Callable[[], Any]) -> None:
        try:
            value = make()
        except Exception as exc:  # kept, to be raised in the requests that ask for it (a 404 saying why, ...)
            value = Failed(exc)
        self.computed.put(key, value)
        with self._idle:
            self._computing.discard(key)
            self._idle.notify_all()

    def wait_computed(self, timeout: float | None = None) -> bool:
        """Block until nothing is being computed (or ``timeout`` seconds); whether nothing is."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._computing, timeout)

    def results_version(self, row: SweepRow) -> str:
        """The version of what the analysis and the figures of sweep ``row`` are computed from: one aggregate
        query, and the selection and the latest evaluation."""
        halving = row.search.get("strategy") == "halving"
        budget = row.search["rung_epochs"][0] if halving else 0  # a trial is placed on the map once it trained it
        stamp = views.results_stamp(self.storage, row.name, budget)
        evaluation = views.last_evaluation(self.storage, row.name)
        return digest((stamp, tuple(row.gridded_params), row.selected_trial, evaluation))

    def fixed(self, row: SweepRow, keys: list[str]) -> dict[str, tuple[dict[str, Any], int]]:
        """The gridded params and planned epochs of each trial of ``keys``, read from its config the first time."""
        gridded = tuple(row.gridded_params)
        with self._lock:
            missing = [key for key in keys if (key, gridded) not in self._fixed]
        if missing:
            configs = views.trial_configs(self.storage, missing)
            found = {
                (key, gridded): ({name: config_value(config, name) for name in gridded}, config["params"]["epochs"])
                for key, config in configs.items()
            }
            with self._lock:
                self._fixed.update(found)
        with self._lock:
            return {key: self._fixed[(key, gridded)] for key in keys}

    def state(self, row: SweepRow) -> SweepState:
        """The sweep ``row`` as it stands now."""
        states = views.trial_states(self.storage, row.name)
        fixed = self.fixed(row, [state.key for state in states])
        evaluation = views.last_evaluation(self.storage, row.name)
        fingerprints = {state.key: hash(state) for state in states}
        version = digest((tuple(states), row.selected_trial, evaluation))
        self.snapshots.put((row.name, version), fingerprints)
        return SweepState(states, fixed, version, self.results_version(row), fingerprints)

    def best_first(self, row: SweepRow, state: SweepState) -> list[dict[str, Any]]:
        """Every entry of ``state``, as ``trials_table`` orders them: (a halving sweep's last rung first,) best
        score first, unscored last, equals in grid order."""
        halving = row.search.get("strategy") == "halving"
        select = metric(row.select_metric)

        def rank(trial: views.TrialState) -> tuple[object, ...]:
            value = getattr(trial, select.name)
            rung = (trial.rung is None, -(trial.rung or 0)) if halving else ()
            return (*rung, value is None, 0.0 if value is None else select.rank(value))

        return [state.entry(trial) for trial in sorted(state.states, key=rank)]

    def varying(self, row: SweepRow, state: SweepState, effects: Callable[[], list[str]]) -> list[str]:
        """The gridded params that take several values among the trials the heatmap compares: for a grid sweep,
        its done trials, read from ``state`` (as ``grid_effects`` finds them, without reading the trials again);
        a halving sweep's rung-0 placement is ``effects()``, made once per results version."""
        if row.search.get("strategy") == "halving":
            return self.computed.get_or_make((row.name, "varying", state.results_version), effects)
        done = [state.fixed[trial.key][0] for trial in state.states if trial.status == TrialStatus.DONE]
        return [name for name in row.gridded_params if len({hashable(params[name]) for params in done}) > 1]

    def changed(self, sweep: str, state: SweepState, since: str) -> tuple[list[dict[str, Any]], list[str]] | None:
        """The entries of ``state`` that differ from version ``since`` of ``sweep``, and the keys it no longer has;
        None when that version is not remembered (the page then gets every trial)."""
        before = self.snapshots.get((sweep, since))
        if before is None:
            return None
        fingerprints = state.fingerprints
        changed = [state.entry(trial) for trial in state.states if before.get(trial.key) != fingerprints[trial.key]]
        return changed, [key for key in before if key not in state.fingerprints]
