"""Where a report's numbers come from: when it was written, from which database and code, and for each sweep
the data split, epochs and search it ran with (read from its trials' configs, not assumed)."""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from gridsearch import __version__
from gridsearch.analysis.inspection import SplitSizes
from gridsearch.analysis.trained_models import BestModel, dataset_shown
from gridsearch.analysis.webpage import Block, Folder, Paragraph, table
from gridsearch.spec.search import Search
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
    epochs, seeds, trial count and search."""
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
                "seeds": values_text({c["seed"] for c in configs}),
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


def provenance_section(folder: Folder, storage: Storage, models: list[BestModel], written: datetime) -> list[Block]:
    """The report's date, database (password hidden), code versions, and each sweep's split, epochs and search."""
    versions = {trial.code_version for m in models for trial in storage.trials(m.name) if trial.code_version}
    trained = f"trained by code version {values_text(set(versions))}" if versions else "no code version recorded"
    overview = sweep_overview(storage, models)
    return [
        Paragraph(
            f"Written {written:%Y-%m-%d %H:%M} UTC by gridsearch {__version__} from the database "
            f"{storage.location}; its trials were {trained}."
        ),
        table(overview, folder.csv(overview, "sweeps")),
    ]
