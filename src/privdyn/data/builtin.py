"""Datasets that need no download: MNIST-1D (generated), scikit-learn digits, synthetic mixtures."""

from __future__ import annotations

import functools

import numpy as np
from pydantic import Field

from privdyn.data.base import Dataset, standardise
from privdyn.data.options import Options, parse_options
from privdyn.errors import PrivdynError


class Mnist1dOptions(Options):
    """mnist1d's options: the seed of its generator."""

    seed: int = Field(42, description="the generator's seed (mnist1d's own default)")


class DigitsOptions(Options):
    """digits has no options."""


class SyntheticOptions(Options):
    """synthetic's options: feature dimension, classes, difficulty and label noise (:func:`load_synthetic`)."""

    dim: int = Field(16, ge=1, le=100_000, description="feature dimension")
    classes: int = Field(4, ge=2, le=10_000, description="number of classes")
    difficulty: float = Field(0.5, ge=0, le=1, description="within-class spread relative to the class distance")
    label_noise: float = Field(0.05, ge=0, lt=1, description="share of pool labels flipped")


def load_mnist1d(n_pool: int | None, n_test: int | None, seed: int, options: dict) -> Dataset:
    """MNIST-1D generated offline by ``mnist1d.data.make_dataset`` (never its download path)."""
    n_pool = n_pool or 8000
    n_test = n_test or 2000
    # make_dataset draws whole rounds of the 10 classes and splits by a rounded fraction, so ask
    # for a few more samples than needed and split here: the pool and test sizes are then exact.
    x, y = _mnist1d(n_pool + n_test + 10, parse_options(Mnist1dOptions, options, "mnist1d").seed)
    y = y.copy()
    x_pool, x_test = standardise(x[:n_pool], x[n_pool:n_pool + n_test], None)
    return Dataset(
        name="mnist1d", kind="sequence",
        x_pool=x_pool[:, None, :], y_pool=y[:n_pool],
        x_test=x_test[:, None, :], y_test=y[n_pool:n_pool + n_test], num_classes=10,
    )


@functools.lru_cache(maxsize=4)
def _mnist1d(num_samples: int, generator_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """make_dataset's inputs (float32) and labels for these arguments, read-only. Generating
    them is a Python loop over samples in mnist1d (about 9 s for the quickstart's 10,010), so the
    runs of a sweep, which share their data, generate it once per process."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = num_samples, 1.0, generator_seed
    d = make_dataset(args)
    x, y = np.asarray(d["x"], np.float32), np.asarray(d["y"], np.int64)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def load_digits(n_pool: int | None, n_test: int | None, seed: int, options: dict) -> Dataset:
    """scikit-learn's bundled 8x8 digits, split into a pool and a test split (seeded)."""
    from sklearn.datasets import load_digits as sk_load

    parse_options(DigitsOptions, options, "digits")
    x, y = sk_load(return_X_y=True)
    x = (x.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = n_test or 497
    n_pool = n_pool or len(y) - n_test
    if n_pool + n_test > len(y):
        raise PrivdynError(f"digits has {len(y)} samples; dataset.n_pool + dataset.n_test = {n_pool + n_test}")
    pool, test = perm[:n_pool], perm[n_pool:n_pool + n_test]
    x_pool, x_test = standardise(x[pool], x[test], 1)
    return Dataset("digits", "image", x_pool, y[pool].astype(np.int64), x_test, y[test].astype(np.int64), 10)


def load_synthetic(n_pool: int | None, n_test: int | None, seed: int, options: dict) -> Dataset:
    """A Gaussian mixture with a difficulty knob.

    Options: ``dim`` (16), ``classes`` (4), ``difficulty`` in [0, 1] (0.5; the within-class spread
    relative to the distance between class means) and ``label_noise`` (0.05; the share of pool
    labels flipped, which makes atypical samples that can only be memorised).
    """
    n_pool = n_pool or 2000
    n_test = n_test or 1000
    o = parse_options(SyntheticOptions, options, "synthetic")
    dim, k, difficulty, label_noise = o.dim, o.classes, o.difficulty, o.label_noise
    rng = np.random.default_rng(seed + 7919)
    means = rng.normal(size=(k, dim))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    spread = 0.05 + 1.5 * difficulty

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, k, size=n)
        x = means[y] + spread * rng.normal(size=(n, dim)) / np.sqrt(dim) * 3
        return x.astype(np.float32), y.astype(np.int64)

    x_pool, y_pool = draw(n_pool)
    x_test, y_test = draw(n_test)
    flip = rng.random(n_pool) < label_noise
    y_pool[flip] = (y_pool[flip] + rng.integers(1, k, size=int(flip.sum()))) % k
    x_pool, x_test = standardise(x_pool, x_test, None)
    return Dataset("synthetic", "tabular", x_pool, y_pool, x_test, y_test, k)
