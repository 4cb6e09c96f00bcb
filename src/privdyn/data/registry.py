"""Dataset registry: names mapped to loaders, and the one entry point ``load_dataset``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from privdyn.data import builtin
from privdyn.data.base import Dataset, subsample
from privdyn.errors import PrivdynError


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    description: str
    loader: Callable[[int | None, int | None, int, dict], Dataset]
    needs_files: bool = False
    where: str = "built in (no download)"


DATASETS: dict[str, DatasetEntry] = {}


def register(entry: DatasetEntry) -> None:
    DATASETS[entry.name] = entry


register(DatasetEntry("mnist1d", "MNIST-1D, generated procedurally by the mnist1d package", builtin.load_mnist1d))
register(DatasetEntry("digits", "scikit-learn's 8x8 handwritten digits (1,797 images)", builtin.load_digits))
register(DatasetEntry("synthetic", "Gaussian mixture with a difficulty knob, for tests", builtin.load_synthetic))


def load_dataset(name: str, n_pool: int | None = None, n_test: int | None = None, seed: int = 0,
                 options: dict | None = None) -> Dataset:
    """Load a registered dataset, take seeded subsets, and make the pool even (balanced design)."""
    if name not in DATASETS:
        raise PrivdynError(f"Unknown dataset {name!r}. Available: {', '.join(sorted(DATASETS))} "
                           "(`privdyn datasets` lists them with where they are looked for).")
    ds = DATASETS[name].loader(n_pool, n_test, seed, dict(options or {}))
    x_pool, y_pool = subsample(ds.x_pool, ds.y_pool, n_pool, seed, "n_pool")
    x_test, y_test = subsample(ds.x_test, ds.y_test, n_test, seed + 1, "n_test")
    if len(y_pool) % 2:
        x_pool, y_pool = x_pool[:-1], y_pool[:-1]
    return Dataset(ds.name, ds.kind, np.ascontiguousarray(x_pool), y_pool,
                   np.ascontiguousarray(x_test), y_test, ds.num_classes)
