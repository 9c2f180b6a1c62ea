"""What the live sweep page needs on every poll, kept cheap at ten thousand trials: each trial's state read in one
query, two versions of the sweep, the trials that changed since a version the page already has, and small
caches of what is costly to compute once per state (the analysis, the figures).

``version`` changes whenever anything the trials table shows does (every recorded epoch). ``results_version``
changes only with what the analysis and its figures are computed from: a trial finishing or its scores, a
successive-halving promotion or rung-0 budget reached, the selected trial, a stored evaluation. The page asks
``/api/sweeps/NAME/trials?since=VERSION`` and gets only the trials that changed since that version; the server
remembers the last few versions of each sweep (``Snapshots``), and answers in full to a version it no longer
knows.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gridsearch.spec.config import config_value
from gridsearch.store import views
from gridsearch.store.models import SweepRow
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import FINISHED, metric

SNAPSHOTS = 16
"""Versions remembered (all sweeps together) to answer ``since`` with the trials that changed."""
CACHED = 32
"""Analyses and figures kept, all sweeps together."""

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
class SweepState:
    """A sweep's trials as they stand: entries by key, best first, and the two versions."""

    entries: dict[str, dict[str, Any]]
    """The trials endpoint's entry of each trial, in its order (best first)."""
    version: str
    results_version: str
    fingerprints: dict[str, int]
    """A hash of each entry: what changed since a version is what hashes differently."""


def digest(parts: object) -> str:
    """A 16-hex-digit digest of the text of ``parts``."""
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()


class LiveSweeps:
    """The live state of the sweeps of ``storage``, with the configs (which never change) read once per trial."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.snapshots: Cache[dict[str, int]] = Cache(SNAPSHOTS)
        self.computed: Cache[Any] = Cache(CACHED)
        """What is computed from a sweep's results version (analyses, figures), by (sweep, what, version)."""
        self._configs: dict[str, Any] = {}
        self._lock = threading.Lock()

    def configs(self, keys: list[str]) -> dict[str, Any]:
        """The config of each trial of ``keys``, read from the database only the first time."""
        with self._lock:
            missing = [key for key in keys if key not in self._configs]
        if missing:
            found = views.trial_configs(self.storage, missing)
            with self._lock:
                self._configs.update(found)
        with self._lock:
            return {key: self._configs[key] for key in keys}

    def state(self, row: SweepRow) -> SweepState:
        """The sweep ``row`` as it stands now (its trials best first, as ``trials_table`` orders them)."""
        states = views.trial_states(self.storage, row.name)
        configs = self.configs([state.key for state in states])
        halving = row.search.get("strategy") == "halving"
        select = metric(row.select_metric)

        def best_first(state: views.TrialState) -> tuple[object, ...]:
            """As ``trials_table`` sorts: (a halving sweep's last rung first,) best score first, unscored last."""
            value = getattr(state, select.name)
            rung = (state.rung is None, -(state.rung or 0)) if halving else ()
            return (*rung, value is None, 0.0 if value is None else select.rank(value))

        ordered = sorted(states, key=best_first)  # stable: equals stay in grid order
        entries = {}
        for state in ordered:
            config = configs[state.key]
            entries[state.key] = {
                "key": state.key,
                "position": state.position,
                "params": {name: config_value(config, name) for name in row.gridded_params},
                "seed": state.seed,
                "status": state.status,
                "rung": state.rung,
                "epochs_run": state.epochs_run,
                "epochs": config["params"]["epochs"],
                "best_epoch": state.best_epoch,
                "val_accuracy": state.val_accuracy,
                "val_loss": state.val_loss,
                "train_seconds": state.train_seconds,
                "error": state.error,
            }
        fingerprints = {key: hash(repr(entry)) for key, entry in entries.items()}
        budget = row.search["rung_epochs"][0] if halving else 0
        results = [
            (
                state.key,
                state.status if state.status in FINISHED else "open",
                state.val_accuracy if state.status in FINISHED else None,
                state.val_loss if state.status in FINISHED else None,
                state.rung,
                min(state.epochs_run, budget),
            )
            for state in states
        ]
        evaluation = views.last_evaluation(self.storage, row.name)
        version = digest((sorted(fingerprints.items()), row.selected_trial, evaluation))
        results_version = digest((results, row.gridded_params, row.selected_trial, evaluation))
        self.snapshots.put((row.name, version), fingerprints)
        return SweepState(entries, version, results_version, fingerprints)

    def changed(self, sweep: str, state: SweepState, since: str) -> tuple[list[dict[str, Any]], list[str]] | None:
        """The entries of ``state`` that differ from version ``since`` of ``sweep``, and the keys it no longer has;
        None when that version is not remembered (the page then gets every trial)."""
        before = self.snapshots.get((sweep, since))
        if before is None:
            return None
        changed = [entry for key, entry in state.entries.items() if before.get(key) != state.fingerprints[key]]
        return changed, [key for key in before if key not in state.entries]
