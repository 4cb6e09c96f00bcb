"""A user's data as privdyn's :class:`~privdyn.data.base.Dataset`: arrays, torch Datasets or a name."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from privdyn.data.base import Dataset, Kind
from privdyn.errors import PrivdynError

#: Input kind by the number of axes of one sample.
KIND_BY_NDIM: dict[int, Kind] = {1: "tabular", 2: "sequence", 3: "image"}


def _torch_arrays(ds: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Stack the ``(x, y)`` items of a map-style torch Dataset into numpy arrays."""
    import torch

    try:
        n = len(ds)
    except TypeError:
        raise PrivdynError(f"{what}: a torch Dataset needs __len__ (a map-style dataset)") from None
    loader = torch.utils.data.DataLoader(ds, batch_size=1024, shuffle=False)
    xs, ys = [], []
    for batch in loader:
        if not isinstance(batch, (list, tuple)) or len(batch) != 2:
            raise PrivdynError(f"{what}: each item must be an (input, label) pair")
        xs.append(np.asarray(batch[0]))
        ys.append(np.asarray(batch[1]))
    if not xs or sum(len(y) for y in ys) != n:
        raise PrivdynError(f"{what}: the dataset gave {sum(len(y) for y in ys)} items, not its length {n}")
    return np.concatenate(xs), np.concatenate(ys)


def _checked(x: Any, y: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2 or x.ndim > 4:
        raise PrivdynError(f"{what}: inputs must be [n, D], [n, C, L] or [n, C, H, W]; got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise PrivdynError(f"{what}: labels must be [n] with n = {len(x)} inputs; got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise PrivdynError(f"{what}: labels must be non-negative integers (class indices); got dtype {y.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise PrivdynError(f"{what}: {int((~np.isfinite(x)).sum())} input values are NaN or infinite")
    return np.ascontiguousarray(x), y.astype(np.int64)


def as_dataset(data: Any, name: str = "user", seed: int = 0, n_pool: int | None = None,
               n_test: int | None = None) -> Dataset:
    """``data`` as a Dataset: a Dataset; a registered dataset name; ``(x_pool, y_pool, x_test, y_test)``
    numpy arrays; or ``(train_pool, test)`` map-style torch Datasets of ``(input, label)`` items.

    Features are taken as they are (normalise them first), as float32; ``num_classes`` covers
    both splits. ``n_pool``/``n_test`` subsample a registered dataset only.
    """
    if isinstance(data, Dataset):
        return data
    if isinstance(data, str):
        from privdyn.data import load_dataset

        return load_dataset(data, n_pool, n_test, seed, {})
    if not isinstance(data, Sequence) or len(data) not in (2, 4):
        raise PrivdynError("data: give a registered dataset name, (x_pool, y_pool, x_test, y_test) arrays, "
                           f"or a (pool, test) pair of torch Datasets; got {type(data).__name__}")
    if len(data) == 2:
        (xp, yp), (xt, yt) = _torch_arrays(data[0], "data[0] (pool)"), _torch_arrays(data[1], "data[1] (test)")
    else:
        xp, yp, xt, yt = data
    x_pool, y_pool = _checked(xp, yp, "the pool")
    x_test, y_test = _checked(xt, yt, "the test split")
    if x_pool.shape[1:] != x_test.shape[1:]:
        raise PrivdynError(f"the pool's inputs are {x_pool.shape[1:]} but the test split's {x_test.shape[1:]}")
    if len(y_pool) < 4 or len(y_test) < 1:
        raise PrivdynError(f"need at least 4 pool samples and 1 test sample (got {len(y_pool)}, {len(y_test)})")
    classes = int(max(y_pool.max(), y_test.max())) + 1
    return Dataset(name, KIND_BY_NDIM[x_pool.ndim - 1], x_pool, y_pool, x_test, y_test, classes)


def data_digest(ds: Dataset) -> str:
    """A digest of a dataset's arrays (their bytes, shapes and dtypes)."""
    h = hashlib.sha256()
    for a in (ds.x_pool, ds.y_pool, ds.x_test, ds.y_test):
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()[:16]
