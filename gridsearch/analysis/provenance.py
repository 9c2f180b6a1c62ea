"""Where a report's numbers come from: when it was written, from which database and code, and for each sweep
the data split, epochs and search it ran with (read from its trials' configs, not assumed)."""

from __future__ import annotations

import os
from datetime import datetime

import pandas as pd

from gridsearch import __version__
from gridsearch.analysis.inspection import SplitSizes
from gridsearch.analysis.trained_models import BestModel, dataset_shown
from gridsearch.analysis.webpage import Block, Folder, Note, Paragraph, table
from gridsearch.engine.devices import code_version
from gridsearch.spec.search import Search
from gridsearch.store.connection import sqlite_path
from gridsearch.store.models import SweepRow
from gridsearch.store.storage import Storage
from gridsearch.vocabulary import format_value


def values_text(values: set[object]) -> str:
    """One value as written, or several (a gridded one) in order: ``1, 3``."""
    return ", ".join(format_value(value) for value in sorted(values, key=str))


def search_text(sweep: SweepRow) -> str:
    """How a sweep searched its grid, in words."""
    return Search.from_record(sweep.search).label


def sweep_overview(storage: Storage, models: list[BestModel]) -> pd.DataFrame:
    """Per sweep: architecture, the data split its trials used (and their dataset, when one is not MNIST), their
    epochs, how many seeds and which, trial count and search."""
    records = []
    shown = dataset_shown(models)
    for model in models:
        configs = [trial.config for trial in storage.trials(model.name)]
        records.append(
            {
                "sweep": model.name,
                "architecture": model.sweep.architecture,
                **({"dataset": model.dataset.title} if shown else {}),
                "train_size": values_text({c["dataset"]["train_size"] for c in configs}),
                "val_size": values_text({c["dataset"]["val_size"] for c in configs}),
                "test_size": model.sweep.test_size,
                "epochs": values_text({c["params"]["epochs"] for c in configs}),
                "seeds": len({c["seed"] for c in configs}),
                "seed_values": values_text({c["seed"] for c in configs}),
                "trials": len(configs),
                "search": search_text(model.sweep),
                "select": model.sweep.select_metric,
            }
        )
    return pd.DataFrame.from_records(records)


def union_split(storage: Storage, models: list[BestModel]) -> SplitSizes:
    """The smallest split that holds every image the sweeps trained, validated or tested on (each part is a
    prefix or a suffix of its official set, so the largest size of each covers the others)."""
    datasets = [trial.config["dataset"] for model in models for trial in storage.trials(model.name)]
    return SplitSizes(
        max(d["train_size"] for d in datasets),
        max(d["val_size"] for d in datasets),
        max(model.sweep.test_size for model in models),
    )


def database_name(storage: Storage, folder: Folder) -> str:
    """The database as the report names it: an SQLite file by its path from the report's folder (the two move
    together, e.g. ``../results.db``), another database by its URL without the password."""
    path = sqlite_path(storage.url)
    return os.path.relpath(path.resolve(), folder.path.resolve()) if path else storage.location


def provenance_section(folder: Folder, storage: Storage, models: list[BestModel], written: datetime) -> list[Block]:
    """The report's date, database (relative to the report; password hidden), the code version that wrote it and
    those that trained its trials, and each sweep's split, epochs, seeds and search."""
    versions = {trial.code_version for m in models for trial in storage.trials(m.name) if trial.code_version}
    trained = f"trained by code version {values_text(set(versions))}" if versions else "no code version recorded"
    overview = sweep_overview(storage, models)
    return [
        Paragraph(
            f"Written {written:%Y-%m-%d %H:%M} UTC by gridsearch {__version__} (code version {code_version()}) from "
            f"the database {database_name(storage, folder)}; its trials were {trained}."
        ),
        table(overview, folder.csv(overview, "sweeps")),
        Note("seeds: how many seeds the sweep's trials ran under; seed values: which."),
    ]
