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


def as_dataset(data: Any, name: str = "user data", seed: int = 0, n_pool: int | None = None,
               n_test: int | None = None) -> Dataset:
    """``data`` as a validated :class:`Dataset` (float32 features, int64 labels), or a :class:`PrivdynError`.

    ``data`` is a Dataset; a registered dataset name (``n_pool``/``n_test`` subsample it with
    ``seed``); ``(x_pool, y_pool, x_test, y_test)`` numpy arrays or tensors: features ``[N, ...]``
    (any real dtype, converted to float32, all finite; normalise them first), integer labels
    ``[N]`` in ``0..C-1``; or a ``(pool, test)`` pair of map-style torch Datasets of
    ``(input, label)`` items.
    """
    if isinstance(data, str):
        from privdyn.data import load_dataset

        return load_dataset(data, n_pool, n_test, seed, {})
    parts: tuple[Any, ...]
    if isinstance(data, Dataset):
        parts = (data.x_pool, data.y_pool, data.x_test, data.y_test)
        name, num_classes = data.name, int(data.num_classes)
    elif isinstance(data, Sequence) and len(data) == 2:
        parts, num_classes = (*_torch_arrays(data[0], "data[0] (pool)"), *_torch_arrays(data[1], "data[1] (test)")), -1
    elif isinstance(data, Sequence) and len(data) == 4:
        parts, num_classes = tuple(data), -1
    else:
        raise PrivdynError("data: give a privdyn Dataset, a registered dataset name, a tuple (x_pool, y_pool, "
                           f"x_test, y_test) of arrays or a (pool, test) pair of torch Datasets, not "
                           f"{type(data).__name__}")
    x_pool, y_pool, x_test, y_test = (_numpy(p) for p in parts)
    for what, x in (("x_pool", x_pool), ("x_test", x_test)):
        if x.ndim < 2 or x.ndim > 4 or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise PrivdynError(f"data: {what} must be a real array [N, D], [N, C, L] or [N, C, H, W] of features "
                               f"(one row per sample), got dtype {x.dtype} and shape {x.shape}")
    for what, y, x in (("y_pool", y_pool, x_pool), ("y_test", y_test, x_test)):
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise PrivdynError(f"data: {what} must be integer class labels [N], got dtype {y.dtype} and shape "
                               f"{y.shape}; convert with .astype(np.int64)")
        if len(y) != len(x):
            raise PrivdynError(f"data: {what} has {len(y)} labels but x_{what[2:]} has {len(x)} samples")
    if x_pool.shape[1:] != x_test.shape[1:]:
        raise PrivdynError(f"data: pool and test samples differ in shape ({x_pool.shape[1:]} vs {x_test.shape[1:]})")
    if len(y_pool) < 4 or len(y_test) < 1:
        raise PrivdynError(f"data: need at least 4 pool samples and 1 test sample, got {len(y_pool)} and {len(y_test)}")
    lo = min(int(y_pool.min()), int(y_test.min()))
    hi = max(int(y_pool.max()), int(y_test.max()))
    if num_classes < 0:
        num_classes = hi + 1
    if lo < 0 or hi >= num_classes or num_classes < 2:
        raise PrivdynError(f"data: labels must lie in 0..C-1 with C >= 2 classes; found labels {lo}..{hi}"
                           + (f" for num_classes={num_classes}" if isinstance(data, Dataset) else ""))
    x_pool = np.ascontiguousarray(x_pool, dtype=np.float32)
    x_test = np.ascontiguousarray(x_test, dtype=np.float32)
    for what, x in (("x_pool", x_pool), ("x_test", x_test)):
        if not np.isfinite(x).all():
            raise PrivdynError(f"data: {what} holds NaN or infinite values; clean or impute them first")
    kind = data.kind if isinstance(data, Dataset) else KIND_BY_NDIM[x_pool.ndim - 1]
    return Dataset(name, kind, x_pool, np.ascontiguousarray(y_pool, dtype=np.int64), x_test,
                   np.ascontiguousarray(y_test, dtype=np.int64), num_classes)


def _numpy(a: Any) -> np.ndarray:
    """An array or a tensor (any device) as numpy."""
    if hasattr(a, "detach"):
        return np.asarray(a.detach().cpu().numpy())
    return np.asarray(a)


def data_fingerprint(ds: Dataset) -> str:
    """A sha256 of the features and labels (dtype, shape and bytes of each split): other data, other digest."""
    h = hashlib.sha256(f"privdyn-record-data-v1:{ds.num_classes}".encode())
    for a in (ds.x_pool, ds.y_pool, ds.x_test, ds.y_test):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()
