"""The balanced membership matrix Z of DESIGN.md."""

from __future__ import annotations

import numpy as np


def balanced_membership(n_models: int, n_samples: int, seed: int) -> np.ndarray:
    """Z in {0,1}^{M x N} built from complementary pairs, as a bool array.

    Model 2j trains on a random half of the pool and model 2j+1 on the rest, so every sample is
    IN for exactly M/2 models and every model trains on exactly N/2 samples.
    """
    if n_models % 2 or n_samples % 2:
        raise ValueError(f"need even M and N for the balanced design, got M={n_models}, N={n_samples}")
    rng = np.random.default_rng([seed, 0x5EED])
    z = np.zeros((n_models, n_samples), dtype=bool)
    for j in range(n_models // 2):  # M/2 iterations, each fully vectorised over samples
        half = rng.permutation(n_samples)[: n_samples // 2]
        z[2 * j, half] = True
        z[2 * j + 1] = ~z[2 * j]
    return z
