"""The balanced membership matrix Z of DESIGN.md."""

from __future__ import annotations

import numpy as np

from privdyn.errors import PrivdynError


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


def checked_membership(membership: np.ndarray, where: str) -> np.ndarray:
    """A given membership ``[M, N]`` as bool, or a :class:`PrivdynError` naming ``where`` (a file or an
    argument): entries bool or 0/1, and every sample IN for at least one model and OUT for another,
    or its TPR and FPR are undefined."""
    z = np.asarray(membership)
    if z.dtype != bool and (z.dtype.kind not in "iu" or not np.isin(z, (0, 1)).all()):
        raise PrivdynError(f"{where} holds {z.dtype} values, but the membership must be bool (or integers 0 "
                           "and 1): True where model m trained on sample i.")
    z = np.array(z, dtype=bool)
    M, N = z.shape
    k_in = z.sum(axis=0)
    for side, bad in (("never IN (IN for no model)", np.flatnonzero(k_in == 0)),
                      ("never OUT (IN for every model)", np.flatnonzero(k_in == M))):
        if len(bad):
            shown = ", ".join(str(int(i)) for i in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise PrivdynError(f"{where}: {len(bad)} of {N} samples are {side}: samples {shown}. Every sample "
                               "needs at least one IN and one OUT model, or its membership cannot be inferred. "
                               "Drop those samples, or add models.")
    return z
