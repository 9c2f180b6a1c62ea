"""Real test images for the pages that show some (what a network learned, the augmentation explorer): each
dataset's official test set, read once, on the first request that needs it, from the data folder
(``$GRIDSEARCH_DATA`` or ``./data``)."""

from __future__ import annotations

import threading
from pathlib import Path

from gridsearch.errors import UserError
from gridsearch.spec.datasets import DATASETS
from gridsearch.training.data import Split, prepare, test_split
from gridsearch.web.catalog import RequestError


class Digits:
    """The official test sets in ``data_dir`` (MNIST's digits unless a dataset is named), each loaded on first use."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self._tests: dict[str, Split] = {}
        self._lock = threading.Lock()

    def test(self, dataset: str = "mnist") -> Split:
        """The test split of ``dataset``; 503 when it is not in the data folder (nor, for MNIST, downloadable)."""
        with self._lock:
            if dataset not in self._tests:
                try:
                    prepare(self.data_dir, dataset)
                except UserError:
                    raise RequestError(503, self.absent(dataset)) from None
                self._tests[dataset] = test_split(self.data_dir, dataset=dataset)
            return self._tests[dataset]

    def absent(self, dataset: str = "mnist") -> str:
        """Why there are no test images of ``dataset`` to show, in one line."""
        return (
            f"no {DATASETS[dataset].title} test images to show: its files are not in {self.data_dir} "
            "(serve with GRIDSEARCH_DATA set to the data folder that holds them)"
        )

    def index(self, text: str | None, default: int = 0, dataset: str = "mnist") -> int:
        """A test image's index given in a query (``None``: ``default``); 400 unless a whole number in range."""
        if text is None:
            return default
        size = len(self.test(dataset))
        if not text.isdigit() or int(text) >= size:
            raise RequestError(400, f"digit must be a test image index from 0 to {size - 1}, got {text[:20]!r}")
        return int(text)
