"""CIFAR-10 and CIFAR-100 from the official python-batch folders, read with the safe unpickler.

Each batch is a pickled dict: ``data`` uint8 [n, 3072] (1024 red, then green, then blue values of
a 32x32 image, so a row reshapes to [3, 32, 32]) and ``labels`` (CIFAR-10) or ``fine_labels`` and
``coarse_labels`` (CIFAR-100).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from privdyn.data import safe_pickle
from privdyn.data.base import Dataset
from privdyn.data.prepare import image_dataset
from privdyn.data.roots import Location, missing_files
from privdyn.errors import PrivdynError

CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = ("test_batch",)


def read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as images uint8 [n, 3, 32, 32] and labels int64 [n], checked."""
    batch = safe_pickle.load(path)
    if not isinstance(batch, dict) or "data" not in batch or label_key not in batch:
        keys = sorted(map(str, batch)) if isinstance(batch, dict) else type(batch).__name__
        raise PrivdynError(f"{path} is not a CIFAR python batch: it lacks 'data' or {label_key!r} (has {keys}); "
                           "download and extract the official python archive again.")
    data, labels = batch["data"], np.asarray(batch[label_key])
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise PrivdynError(f"{path}: 'data' is {got}, not uint8 [n, 3072]; the file is not an official batch.")
    if labels.shape != (len(data),) or labels.dtype.kind not in "iu" or (
            len(labels) and not 0 <= labels.min() <= labels.max() < num_classes):
        raise PrivdynError(f"{path}: {label_key!r} is not {len(data)} class indices in 0..{num_classes - 1}; "
                           "the file is not an official batch.")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_batches(folder: Path, names: tuple[str, ...], label_key: str, num_classes: int):
    """The named batches of ``folder``, concatenated in order."""
    parts = [read_batch(folder / n, label_key, num_classes) for n in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


CIFAR10 = Location(
    "cifar10", ("cifar-10-batches-py", "cifar10/cifar-10-batches-py"),
    lambda p: missing_files(p, [(n,) for n in CIFAR10_TRAIN + CIFAR10_TEST]),
    "cifar-10-python.tar.gz (the CIFAR-10 python version, A. Krizhevsky's CIFAR page) and extract it, "
    "which makes the folder cifar-10-batches-py", archives=("cifar-10-python.tar.gz",))
CIFAR100 = Location(
    "cifar100", ("cifar-100-python", "cifar100/cifar-100-python"),
    lambda p: missing_files(p, [("train",), ("test",)]),
    "cifar-100-python.tar.gz (the CIFAR-100 python version, A. Krizhevsky's CIFAR page) and extract it, "
    "which makes the folder cifar-100-python", archives=("cifar-100-python.tar.gz",))


def load_cifar10(n_pool: int | None, n_test: int | None, seed: int, options: dict, root: Path) -> Dataset:
    """CIFAR-10: 50,000 training and 10,000 test images [3, 32, 32], 10 classes."""
    folder = CIFAR10.find(root, options)
    x_pool, y_pool = read_batches(folder, CIFAR10_TRAIN, "labels", 10)
    x_test, y_test = read_batches(folder, CIFAR10_TEST, "labels", 10)
    return image_dataset("cifar10", x_pool, y_pool, x_test, y_test, n_pool, n_test, seed, 10)


def load_cifar100(n_pool: int | None, n_test: int | None, seed: int, options: dict, root: Path) -> Dataset:
    """CIFAR-100 with its 100 fine labels, or the 20 coarse ones with ``dataset.options.labels: coarse``."""
    mode = options.get("labels", "fine")  # validated by data.options.Cifar100Options
    key, k = (f"{mode}_labels", 100 if mode == "fine" else 20)
    folder = CIFAR100.find(root, options)
    x_pool, y_pool = read_batches(folder, ("train",), key, k)
    x_test, y_test = read_batches(folder, ("test",), key, k)
    return image_dataset("cifar100", x_pool, y_pool, x_test, y_test, n_pool, n_test, seed, k)
