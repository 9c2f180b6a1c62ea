"""The test images and labels a report reads, dataset by dataset: from the data folder when the dataset's files are
there; without them, the labels the database keeps (``Storage.save_test_labels``: ``study/publish.py`` keeps them),
so that every table that needs no image is written all the same, and a list of what had to be left out, for the
report's one warning line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gridsearch.analysis.trained_models import BestModel, by_dataset
from gridsearch.errors import UserError
from gridsearch.spec.datasets import Dataset
from gridsearch.store.storage import Storage
from gridsearch.training import data
from gridsearch.training.data import Images


@dataclass
class HeldOutImages:
    """Per dataset of a report's models: its first ``sizes[dataset]`` official test images (None when its files
    are absent: ``missing`` says why) and their labels (from the images, else from the database)."""

    data_dir: Path
    sizes: dict[str, int]
    found: dict[str, Images]
    stored_labels: dict[str, np.ndarray]
    missing: dict[str, str]
    """Why each absent dataset could not be read (``prepare``'s error)."""
    datasets: dict[str, Dataset] = field(default_factory=dict)
    """The description of each dataset, by name."""
    left_out: list[str] = field(default_factory=list)
    """What the report went without for want of images (each a short phrase), in the order sections found out."""

    @classmethod
    def load(cls, storage: Storage, data_dir: Path, models: list[BestModel]) -> HeldOutImages:
        """The test sets of ``models``' datasets, as many images of each as any of them was tested on."""
        groups = by_dataset(models)
        sizes = {name: max(m.test.samples for m in alike) for name, alike in groups.items()}
        datasets = {name: alike[0].dataset for name, alike in groups.items()}
        found, stored, missing = {}, {}, {}
        for name, size in sizes.items():
            try:
                data.prepare(data_dir, datasets[name])
                found[name] = data.test_images(data_dir, size, datasets[name])
            except UserError as exc:
                missing[name] = str(exc)
                labels = storage.test_labels(name)
                if labels is not None and len(labels) >= size:
                    stored[name] = np.array(labels[:size], dtype=np.int64)
        return cls(data_dir, sizes, found, stored, missing, datasets=datasets)

    def images(self, dataset: str, size: int | None = None) -> Images | None:
        """The first ``size`` (all) test images of ``dataset`` with their labels, or None without its files."""
        if dataset not in self.found:
            return None
        images = self.found[dataset]
        return images if size is None else Images(images.images[:size], images.labels[:size])

    def for_model(self, model: BestModel) -> Images | None:
        """The test images ``model`` was tested on, or None without its dataset's files."""
        return self.images(model.dataset.name, model.test.samples)

    def labels(self, dataset: str) -> np.ndarray | None:
        """The test labels of ``dataset`` (from its files, else from the database), or None."""
        if dataset in self.found:
            return self.found[dataset].labels
        return self.stored_labels.get(dataset)

    def all_labels(self) -> dict[str, np.ndarray]:
        """The labels of every dataset that has them, by name."""
        return {name: labels for name in self.sizes if (labels := self.labels(name)) is not None}

    def leave_out(self, what: str) -> None:
        """Record that ``what`` was left out for want of images (once each)."""
        if what not in self.left_out:
            self.left_out.append(what)

    def warning(self) -> str | None:
        """What the report left out and why, in one line; None when nothing was."""
        if not self.missing:
            return None
        unlabelled = [self.datasets[name].title for name in self.missing if name not in self.stored_labels]
        titles = ", ".join(self.datasets[name].title for name in self.missing)
        parts = [f"no {titles} files in {self.data_dir} (--data-dir or GRIDSEARCH_DATA)"]
        if self.left_out:
            parts.append("left out: " + ", ".join(self.left_out))
        if unlabelled:
            parts.append(f"tables that test predictions against the labels of {', '.join(unlabelled)} left out too")
        return "; ".join(parts)
