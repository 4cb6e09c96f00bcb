"""Dataset registry: names mapped to loaders, and the one entry point ``load_dataset``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from privdyn.data import builtin, cifar, idx, imagefolder, tabular
from privdyn.data.base import Dataset
from privdyn.data.options import (
    Cifar100Options,
    ImageFolderOptions,
    NpzOptions,
    Options,
    PathOptions,
    TabularOptions,
    parse_options,
)
from privdyn.data.prepare import select_splits
from privdyn.data.roots import Location, data_root
from privdyn.errors import PrivdynError
from privdyn.registry import DATASETS as _DATASETS
from privdyn.registry import Registry


@dataclass(frozen=True)
class DatasetEntry:
    """A named dataset. File-based ones (``location`` set) get the data root as ``root=``."""

    name: str
    description: str
    loader: Callable[..., Dataset]
    needs_files: bool = False
    where: str = "built in (no download)"
    location: Location | None = None
    #: the ``dataset.options`` model (None: the loader validates its options itself)
    options: type[Options] | None = None

    def status(self, root: str | Path | None = None) -> str:
        """Whether its files are found under the data root (`privdyn datasets`)."""
        return "ready" if self.location is None else self.location.status(data_root(root))


#: Every dataset by name (built-ins, then plugins: ``privdyn.registry``).
DATASETS: Registry[DatasetEntry] = _DATASETS


def register(entry: DatasetEntry, *, replace: bool = False) -> DatasetEntry:
    """Make a dataset available as ``dataset.name``. Its loader is called as
    ``loader(n_pool, n_test, seed, options)`` (plus ``root=`` when ``needs_files``) and returns a
    :class:`~privdyn.data.base.Dataset`."""
    return DATASETS.register(entry.name, entry, replace=replace)


register(DatasetEntry("mnist1d", "MNIST-1D, generated procedurally by the mnist1d package", builtin.load_mnist1d,
                      options=builtin.Mnist1dOptions))
register(DatasetEntry("digits", "scikit-learn's 8x8 handwritten digits (1,797 images)", builtin.load_digits,
                      options=builtin.DigitsOptions))
register(DatasetEntry("synthetic", "Gaussian mixture with a difficulty knob, for tests", builtin.load_synthetic,
                      options=builtin.SyntheticOptions))


def _files(name: str, description: str, loader: Callable[..., Dataset], location: Location,
           options: type[Options] = PathOptions) -> None:
    where = " or ".join(f"ROOT/{r}" for r in location.relative) or "dataset.options.path"
    if location.system:
        where += " or " + " or ".join(location.system)
    register(DatasetEntry(name, description, loader, True, where, location, options))


_files("mnist", "MNIST handwritten digits (IDX files)", idx.load_mnist, idx.MNIST)
_files("fashion_mnist", "Fashion-MNIST clothing images (IDX files)", idx.load_fashion_mnist, idx.FASHION_MNIST)
_files("cifar10", "CIFAR-10 (python batches)", cifar.load_cifar10, cifar.CIFAR10)
_files("cifar100", "CIFAR-100 (python batches; options.labels: fine|coarse)", cifar.load_cifar100, cifar.CIFAR100,
       Cifar100Options)
_files("imagefolder", "images in SPLIT/CLASS/IMAGE folders (CINIC-10 layout)", imagefolder.load_imagefolder,
       imagefolder.location({}), ImageFolderOptions)
_files("npz", "your arrays: x_train, y_train, x_test, y_test in dataset.options.path", tabular.load_npz,
       tabular.NPZ, NpzOptions)
_files("location30", "Location-30 check-ins, 446 binary features (npz or CSV)", tabular.load_location30,
       tabular.LOCATION30, TabularOptions)
_files("purchase100", "Purchase-100 shopping histories, 600 binary features (npz or CSV)",
       tabular.load_purchase100, tabular.PURCHASE100, TabularOptions)
_files("texas100", "Texas-100 hospital stays, 6,169 binary features (npz or CSV)", tabular.load_texas100,
       tabular.TEXAS100, TabularOptions)


#: Samples beyond which a pool or test size is refused before anything is allocated.
MAX_SAMPLES = 100_000_000


def _check_memory(name: str, n_pool: int | None, n_test: int | None) -> None:
    big = [f"{k}={v:,}" for k, v in (("dataset.n_pool", n_pool), ("dataset.n_test", n_test))
           if v is not None and v > MAX_SAMPLES]
    if big:
        raise PrivdynError(f"Dataset {name!r}: {', '.join(big)} is more than {MAX_SAMPLES:,} samples, far beyond "
                           "what one run's signals can hold in memory: choose a smaller size.")


def check_data(ds: Dataset) -> None:
    """Refuse data a model cannot learn from: non-finite features, labels outside 0..K-1."""
    for split, x, y in (("pool", ds.x_pool, ds.y_pool), ("test", ds.x_test, ds.y_test)):
        bad = ~np.isfinite(x)
        if bad.any():
            i = int(np.argwhere(bad)[0][0])
            raise PrivdynError(f"Dataset {ds.name!r}: the {split} split has {int(bad.sum())} NaN or infinite "
                               f"feature values (first in sample {i}). Clean or impute the input file; a model "
                               "trained on them would only report that training diverged.")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= ds.num_classes):
            raise PrivdynError(f"Dataset {ds.name!r}: {split} labels span {int(y.min())}..{int(y.max())} but the "
                               f"dataset declares {ds.num_classes} classes (labels must be 0..{ds.num_classes - 1}). "
                               "Relabel the file with consecutive class indices.")


def load_dataset(name: str, n_pool: int | None = None, n_test: int | None = None, seed: int = 0,
                 options: dict | None = None, root: str | None = None) -> Dataset:
    """Load a registered dataset, take seeded subsets, and make the pool even (balanced design).

    ``root`` is the data root for file-based datasets (None: $PRIVDYN_DATA_ROOT, else ~/.privdyn/data).
    """
    if name not in DATASETS:
        raise PrivdynError(f"Unknown dataset {name!r}. Available: {', '.join(sorted(DATASETS))} "
                           "(`privdyn datasets` lists them with where they are looked for).")
    entry = DATASETS[name]
    if entry.options is not None:
        parse_options(entry.options, dict(options or {}), name)
    extra = {"root": data_root(root)} if entry.needs_files else {}
    _check_memory(name, n_pool, n_test)
    try:
        ds = entry.loader(n_pool, n_test, seed, dict(options or {}), **extra)
    except MemoryError:
        raise PrivdynError(f"Dataset {name!r} with dataset.n_pool={n_pool} and dataset.n_test={n_test} does "
                           "not fit in this machine's memory: choose smaller sizes.") from None
    check_data(ds)
    x_pool, y_pool, x_test, y_test = select_splits(ds.x_pool, ds.y_pool, ds.x_test, ds.y_test, n_pool, n_test, seed)
    if len(y_pool) % 2:
        x_pool, y_pool = x_pool[:-1], y_pool[:-1]
    return Dataset(ds.name, ds.kind, np.ascontiguousarray(x_pool), y_pool,
                   np.ascontiguousarray(x_test), y_test, ds.num_classes)
