"""Real MNIST test digits for the pages that show some (what a network learned, the augmentation explorer),
read once, on the first request that needs them, from the data folder (``$GRIDSEARCH_DATA`` or ``./data``)."""

from __future__ import annotations

import threading
from pathlib import Path

from gridsearch.errors import UserError
from gridsearch.training.data import Split, prepare, test_split
from gridsearch.web.catalog import RequestError


class Digits:
    """The official MNIST test set in ``data_dir``, loaded on first use."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self._test: Split | None = None
        self._lock = threading.Lock()

    def test(self) -> Split:
        """The test split; 503 when MNIST is not in the data folder (nor downloadable)."""
        with self._lock:
            if self._test is None:
                try:
                    prepare(self.data_dir)
                except UserError as exc:
                    raise RequestError(503, f"no MNIST digits to show: {exc}") from None
                self._test = test_split(self.data_dir)
            return self._test

    def index(self, text: str | None, default: int = 0) -> int:
        """A test digit's index given in a query (``None``: ``default``); 400 unless a whole number in range."""
        if text is None:
            return default
        size = len(self.test())
        if not text.isdigit() or int(text) >= size:
            raise RequestError(400, f"digit must be a test image index from 0 to {size - 1}, got {text[:20]!r}")
        return int(text)
