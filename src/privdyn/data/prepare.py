"""Turn raw arrays read from files into a normalised :class:`Dataset`.

Loaders pick the pool and test subsets on the raw (uint8) arrays first, with exactly the seeded
choice ``load_dataset`` makes, so that only the chosen samples are converted to float32.
"""

from __future__ import annotations

import numpy as np

from privdyn.data.base import Dataset, Kind, standardise, subsample
from privdyn.errors import PrivdynError

NORMALISE = ("feature", "global", "none")


def select_splits(x_pool: np.ndarray, y_pool: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                  n_pool: int | None, n_test: int | None, seed: int):
    """The seeded pool and test subsets (``load_dataset`` applies the same choice)."""
    x_pool, y_pool = subsample(x_pool, y_pool, n_pool, seed, "n_pool")
    x_test, y_test = subsample(x_test, y_test, n_test, seed + 1, "n_test")
    return x_pool, y_pool, x_test, y_test


def seeded_split(x: np.ndarray, y: np.ndarray, n_test: int | None, seed: int, test_fraction: float):
    """Split one labelled array into (x_pool, y_pool, x_test, y_test) by a seeded permutation.

    The test split is ``n_test`` samples (default: ``test_fraction`` of them); the rest is the pool.
    """
    n = len(y)
    k = n_test if n_test is not None else int(round(test_fraction * n))
    if not 0 < k < n:
        raise PrivdynError(f"Cannot hold out {k} of {n} samples as the test split; set dataset.n_test "
                           f"between 1 and {n - 1}")
    perm = np.random.default_rng(seed).permutation(n)
    return x[perm[k:]], y[perm[k:]], x[perm[:k]], y[perm[:k]]


def class_indices(y: np.ndarray, num_classes: int | None, what: str) -> np.ndarray:
    """Labels as int64 class indices ``0..K-1``.

    One-hot rows become their index. With a known ``num_classes`` K, labels ``1..K`` (the 1-based
    files of Location-30 and Purchase-100) are shifted down by one.
    """
    y = np.asarray(y)
    if y.ndim == 2:
        if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            raise PrivdynError(f"{what}: 2-D labels must be one-hot rows (one 1 per row)")
        return y.argmax(axis=1).astype(np.int64)
    if y.ndim != 1:
        raise PrivdynError(f"{what}: labels must be a vector (or one-hot rows), got shape {y.shape}")
    if y.size == 0:
        raise PrivdynError(f"{what}: no samples")
    if y.dtype.kind not in "iu" and not (y.dtype.kind == "f" and np.isfinite(y).all() and (y == np.round(y)).all()):
        raise PrivdynError(f"{what}: labels must be whole numbers (class indices), got dtype {y.dtype}")
    y = y.astype(np.int64)
    lo, hi = int(y.min()), int(y.max())
    if num_classes is not None and lo >= 1 and hi == num_classes:
        y = y - 1
    elif lo < 0 or (num_classes is not None and hi >= num_classes):
        expect = f"0..{num_classes - 1} (or 1..{num_classes})" if num_classes else "0 or more"
        raise PrivdynError(f"{what}: labels span {lo}..{hi}, expected {expect}")
    return y


def image_dataset(name: str, x_pool: np.ndarray, y_pool: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                  n_pool: int | None, n_test: int | None, seed: int, num_classes: int) -> Dataset:
    """Images ``[n, C, H, W]``: subsets chosen, uint8 scaled to [0, 1], standardised per channel by the pool."""
    x_pool, y_pool, x_test, y_test = select_splits(x_pool, y_pool, x_test, y_test, n_pool, n_test, seed)
    scale = np.float32(255.0 if x_pool.dtype == np.uint8 else 1.0)
    xp, xt = standardise(x_pool.astype(np.float32) / scale, x_test.astype(np.float32) / scale, 1)
    return Dataset(name, "image", xp, y_pool.astype(np.int64), xt, y_test.astype(np.int64), num_classes)


def features_dataset(name: str, kind: Kind, x_pool: np.ndarray, y_pool: np.ndarray, x_test: np.ndarray,
                     y_test: np.ndarray, n_pool: int | None, n_test: int | None, seed: int, num_classes: int,
                     normalise: str) -> Dataset:
    """Tabular ``[n, D]`` or sequence ``[n, C, L]`` data: subsets chosen, standardised by the pool.

    ``normalise``: ``feature`` (each column by its own pool mean and std), ``global`` (one mean and
    std for all features: keeps sparse binary features on one scale) or ``none``.
    """
    if normalise not in NORMALISE:
        raise PrivdynError(f"dataset.options.normalise={normalise!r}; use one of {', '.join(NORMALISE)}")
    x_pool, y_pool, x_test, y_test = select_splits(x_pool, y_pool, x_test, y_test, n_pool, n_test, seed)
    xp, xt = x_pool.astype(np.float32), x_test.astype(np.float32)
    if normalise != "none":
        xp, xt = standardise(xp, xt, 1 if normalise == "feature" else None)
    return Dataset(name, kind, xp, y_pool.astype(np.int64), xt, y_test.astype(np.int64), num_classes)
