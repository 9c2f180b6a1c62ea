"""Real test images for the pages that show some (what a network learned, the augmentation explorer): each
dataset's official test set, read once, on the first request that needs it, from the data folder
(``$GRIDSEARCH_DATA`` or ``./data``)."""

from __future__ import annotations

import threading
from pathlib import Path

from gridsearch.errors import UserError
from gridsearch.spec.datasets import described
from gridsearch.training.data import DatasetRef, Split, prepare, test_split
from gridsearch.web.catalog import RequestError


class Digits:
    """The official test sets in ``data_dir`` (MNIST's digits unless a dataset is given: a built-in's name, a trial
    config's dataset part or a description), each loaded on first use."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self._tests: dict[str, Split] = {}
        self._lock = threading.Lock()

    def test(self, dataset: DatasetRef = "mnist") -> Split:
        """The test split of ``dataset``; 503 when it is not in the data folder (nor, for MNIST, downloadable)."""
        found = described(dataset)
        with self._lock:
            if found.folder not in self._tests:
                try:
                    prepare(self.data_dir, found)
                except UserError:
                    raise RequestError(503, self.absent(found)) from None
                self._tests[found.folder] = test_split(self.data_dir, dataset=found)
            return self._tests[found.folder]

    def absent(self, dataset: DatasetRef = "mnist") -> str:
        """Why there are no test images of ``dataset`` to show, in one line."""
        return (
            f"no {described(dataset).title} test images to show: its files are not in {self.data_dir} "
            "(serve with GRIDSEARCH_DATA set to the data folder that holds them)"
        )

    def index(self, text: str | None, default: int = 0, dataset: DatasetRef = "mnist") -> int:
        """A test image's index given in a query (``None``: ``default``); 400 unless a whole number in range."""
        if text is None:
            return default
        size = len(self.test(dataset))
        if not text.isdigit() or int(text) >= size:
            raise RequestError(400, f"digit must be a test image index from 0 to {size - 1}, got {text[:20]!r}")
        return int(text)
