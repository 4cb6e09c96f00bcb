"""A plugin as a third party would write it: one attack, one model and one dataset, registered
through privdyn's entry points (tests/test_plugins.py installs it by writing its dist-info)."""

import numpy as np
from torch import nn


def register_attack():
    from privdyn.attacks import Attack, CheckpointData, NoOptions, register

    def low_loss(data: CheckpointData, opts: NoOptions) -> np.ndarray:
        """Members have low loss: the negated loss of the first query."""
        return -data.pool["loss"][..., 0]

    register(Attack("low_loss", low_loss, NoOptions, ("loss",), per_sample=True, description="negated loss"))


def linear(input_shape, num_classes, width=None, depth=None, norm="none", dropout=0.0):
    """A linear classifier on the flattened input."""
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), num_classes))


def register_model():
    from privdyn.models import register

    register("plugin_linear", linear)


def blobs(n_pool, n_test, seed, options):
    """Two Gaussian blobs in 5 dimensions."""
    from privdyn.data.base import Dataset

    rng = np.random.default_rng(seed)
    n = (n_pool or 200) + (n_test or 100)
    y = rng.integers(0, 2, n)
    x = (rng.normal(size=(n, 5)) + y[:, None] * float(options.get("gap", 1.0))).astype(np.float32)
    k = n_pool or 200
    return Dataset("blobs", "tabular", x[:k], y[:k], x[k:], y[k:], 2)


def register_dataset():
    from privdyn.data import DatasetEntry, register

    register(DatasetEntry("blobs", "two Gaussian blobs (a plugin)", blobs))
