"""A researcher's own package: a model and a data loader, nothing from gridsearch."""
