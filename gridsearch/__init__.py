"""gridsearch: deterministic hyperparameter grid searches over digit-recognition networks.

The Python API (``gridsearch/api.py``), loaded on first use so that ``import gridsearch`` stays cheap:
``run`` runs sweep files and returns a :class:`RunResult`; ``trials``, ``epochs`` and ``evaluations`` read a
sweep's results as pandas DataFrames.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["RunResult", "SweepResult", "__version__", "epochs", "evaluations", "run", "trials"]

if TYPE_CHECKING:
    from gridsearch.api import RunResult, SweepResult, epochs, evaluations, run, trials


def __getattr__(name: str) -> Any:
    if name in __all__:
        from gridsearch import api

        return getattr(api, name)
    raise AttributeError(f"module 'gridsearch' has no attribute {name!r}")
