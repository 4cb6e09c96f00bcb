"""The in-memory dataset every loader returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Kind = Literal["image", "sequence", "tabular"]


@dataclass(frozen=True)
class Dataset:
    """A pool (the training split) and a test split, as float32 features and int64 labels.

    Images are ``[n, C, H, W]``, sequences ``[n, C, L]``, tabular data ``[n, D]``. Features are
    already normalised; ``num_classes`` covers both splits.
    """

    name: str
    kind: Kind
    x_pool: np.ndarray
    y_pool: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's feature shape: ``[C, H, W]``, ``[C, L]`` or ``[D]``."""
        return tuple(self.x_pool.shape[1:])

    @property
    def n_pool(self) -> int:
        """N, the number of pool samples."""
        return len(self.y_pool)


def standardise(x_pool: np.ndarray, x_test: np.ndarray, channel_axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Standardise with the pool's statistics (per channel when channel_axis is given)."""
    axes = tuple(a for a in range(x_pool.ndim) if a != channel_axis) if channel_axis is not None else None
    mean = x_pool.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = x_pool.std(axis=axes, keepdims=True, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    return (((x_pool - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32))


def subsample(x: np.ndarray, y: np.ndarray, n: int | None, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random subset of size n (all when n is None)."""
    from privdyn.errors import PrivdynError

    if n is None or n == len(y):
        return x, y
    if n > len(y):
        raise PrivdynError(f"dataset.{what}={n} exceeds the {len(y)} samples available; lower it")
    idx = np.sort(np.random.default_rng(seed).choice(len(y), size=n, replace=False))
    return x[idx], y[idx]
