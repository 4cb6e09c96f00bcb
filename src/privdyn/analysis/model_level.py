"""Model-level metrics per checkpoint: accuracies, global ROC AUC, TPR at fixed FPR."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def global_auc(scores: np.ndarray, membership: np.ndarray) -> float:
    """ROC AUC over all (model, sample) pairs of one checkpoint, ties counted 1/2."""
    s = scores.ravel()
    z = membership.ravel()
    ranks = rankdata(s)
    n1 = z.sum()
    n0 = z.size - n1
    return float((ranks[z].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def tpr_at_fpr(scores: np.ndarray, membership: np.ndarray, alpha: float) -> float:
    """Share of IN pairs above the (1 - alpha) quantile of the OUT scores (the plane's rule)."""
    tau = np.quantile(scores[~membership], 1.0 - alpha)
    return float((scores[membership] > tau).mean())


def per_model_mean(signal: np.ndarray, membership: np.ndarray | None) -> np.ndarray:
    """Per checkpoint and model, the mean of a signal ``[T, M, N, Q]`` under the identity query.

    With ``membership`` the mean runs over each model's IN samples (train accuracy or loss);
    without it, over all samples (pass the test split's signal). Streams over checkpoints.
    """
    T, M = signal.shape[:2]
    out = np.empty((T, M))
    for t in range(T):
        v = np.asarray(signal[t, ..., 0], dtype=np.float64)
        out[t] = v.mean(axis=1) if membership is None else (v * membership).sum(axis=1) / membership.sum(axis=1)
    return out
