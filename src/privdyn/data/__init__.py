"""Dataset registry and loaders."""

from privdyn.data.base import Dataset
from privdyn.data.registry import DATASETS, DatasetEntry, load_dataset, register

__all__ = ["DATASETS", "Dataset", "DatasetEntry", "load_dataset", "register"]
