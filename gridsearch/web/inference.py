"""Drawings classified on a small fixed pool of threads, with the last few models kept loaded.

The server answers each request on a new thread. Were each to decode its image and run the model itself,
a burst of concurrent requests would hold a burst's worth of images and activations at once, spread over
as many malloc arenas as there are request threads, and the process would keep that memory after the
burst (``benchmarks/web_predict_memory.py``). Here images and tensors live only on the pool's threads:
memory stays that of a few requests however many arrive together, and a model is loaded once even when
many requests ask for it at the same moment. Each pool thread runs torch on one thread: one digit's
forward passes are too small to gain from more, and OpenMP teams on busy cores lose many times over.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from gridsearch.analysis.preprocessing import BadDrawing, at_size, mnist_style, png_ink
from gridsearch.analysis.trained_models import bf16, load_model
from gridsearch.errors import UserError
from gridsearch.spec.datasets import described
from gridsearch.store.models import TrialRow
from gridsearch.web.catalog import Catalog, RequestError
from gridsearch.web.recognizer import Recognition, ink_extent, recognize

T = TypeVar("T")

PNG_DATA_URL = "data:image/png;base64,"
CACHED_MODELS = 4
"""Models kept loaded, the most recently used."""
THREADS = min(4, os.cpu_count() or 1)
"""Drawings classified at once; the others wait their turn."""


@dataclass(frozen=True)
class Prediction:
    """A drawing as the model saw it (uint8 ``(H, W)``, its dataset's image size), the trial that classified it,
    what it said, and how much of the pad the ink spans (``recognizer.ink_extent``)."""

    trial: TrialRow
    digit: np.ndarray
    recognition: Recognition
    ink_extent: float


class Inference:
    """Classifies drawings with the catalog's trained trials, ``threads`` at a time, in arrival order."""

    def __init__(self, catalog: Catalog, threads: int = THREADS, cached_models: int = CACHED_MODELS):
        self.catalog = catalog
        self.cached_models = cached_models
        self._models: OrderedDict[str, nn.Module] = OrderedDict()
        self._loading = threading.Lock()
        """Held to use or change ``_models``, and while a model loads."""
        self._pool = ThreadPoolExecutor(threads, "inference", initializer=torch.set_num_threads, initargs=(1,))

    def predict(self, image: object, trial: object) -> Prediction:
        """Classify the PNG data URL ``image`` with ``trial`` (a key; None: the default model), once a pool
        thread is free; raises :class:`BadDrawing` or :class:`RequestError` as the request deserves."""
        return self._pool.submit(self._predict, image, trial).result()

    def _predict(self, image: object, key: object) -> Prediction:
        ink = drawing(image)
        trial = self.catalog.recognizer_trial(self.catalog.default_trial() if key is None else key)
        digit = at_size(mnist_style(ink), described(trial.config["dataset"]).shape[1:])
        return Prediction(trial, digit, recognize(self._model(trial), digit, bf16(trial)), ink_extent(ink))

    def with_model(self, key: str, work: Callable[[TrialRow, nn.Module], T]) -> T:
        """``work(trial, model)`` for the trained trial ``key``, on a pool thread once one is free (the model
        from the cache, or loaded); raises :class:`RequestError` as :meth:`Catalog.model_trial` does."""

        def run() -> T:
            trial = self.catalog.model_trial(key)
            return work(trial, self._model(trial))

        return self._pool.submit(run).result()

    def _model(self, trial: TrialRow) -> nn.Module:
        """The trial's network with its best weights (in eval mode, so threads may share it): from the cache,
        or loaded (checksum verified)."""
        with self._loading:
            if trial.key in self._models:
                self._models.move_to_end(trial.key)
                return self._models[trial.key]
            try:
                model = load_model(trial, self.catalog.artifacts)
            except UserError as exc:  # e.g. a damaged checkpoint
                raise RequestError(409, str(exc)) from None
            self._models[trial.key] = model
            while len(self._models) > self.cached_models:
                self._models.popitem(last=False)
            return model


def drawing(data_url: object) -> np.ndarray:
    """The ink of a PNG data URL (``data:image/png;base64,...``); :class:`BadDrawing` if it is not one."""
    if not isinstance(data_url, str) or not data_url.startswith(PNG_DATA_URL):
        raise BadDrawing(f"image must be a PNG data URL starting with {PNG_DATA_URL!r}")
    try:
        png = base64.b64decode(data_url[len(PNG_DATA_URL) :], validate=True)
    except binascii.Error:
        raise BadDrawing("image: the data URL is not valid base64") from None
    return png_ink(png)
