"""gridsearch: deterministic hyperparameter grid searches over digit-recognition networks."""

__version__ = "0.1.0"
