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


def balanced_accuracy(scores: np.ndarray, membership: np.ndarray) -> float:
    """Best (TPR + TNR) / 2 over all global thresholds (the LiRA code's "accuracy").

    Flagging ``s >= c`` for every distinct score c, and flagging nothing (1/2), are considered.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    z = np.asarray(membership, dtype=bool).ravel()
    order = np.argsort(-s, kind="stable")
    s, z = s[order], z[order]
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # last index of each tie group
    tp, fp = np.cumsum(z)[ends], np.cumsum(~z)[ends]
    n1 = z.sum()
    return float(max(0.5, (0.5 * (1.0 + tp / n1 - fp / (z.size - n1))).max()))


def bootstrap_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, B]`` int32 multiplicities of a bootstrap over n samples (n draws with replacement per
    replicate); samples are rows so that gathering the weights of many samples is cheap."""
    draws = rng.integers(0, n, size=(n_boot, n)) * n_boot + np.arange(n_boot)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n, n_boot).astype(np.int32)


def tpr_at_fpr_boot(scores: np.ndarray, membership: np.ndarray, alphas: list[float],
                    weights: np.ndarray) -> np.ndarray:
    """:func:`tpr_at_fpr` on every bootstrap replicate of the samples, ``[len(alphas), B]``.

    ``weights`` is ``[N, B]`` (:func:`bootstrap_weights`): replicate b repeats sample i, with all
    its M pairs, ``weights[i, b]`` times. Nothing is copied: the replicate's threshold is numpy's
    linear (1 - alpha) quantile of its repeated OUT scores, read from weighted cumulative counts
    over the top OUT scores only (a tail that holds every replicate's quantile; grown if not). The
    IN weight above it is the weight above the highest replicate threshold (one matrix-vector
    product) plus the IN pairs between the lowest and the highest replicate threshold. Equal to
    :func:`tpr_at_fpr` on the explicitly repeated arrays.
    """
    s = np.asarray(scores, dtype=np.float64)
    z = np.asarray(membership, dtype=bool)
    w = np.asarray(weights, dtype=np.float64)  # exact for counts; lets BLAS do the products
    n_boot = w.shape[1]
    sample = np.broadcast_to(np.arange(s.shape[1]), s.shape)
    out_s, out_j = s[~z], sample[~z]
    order = np.argsort(out_s, kind="stable")[::-1]  # descending: rank 0 is the largest
    out_s, out_j = out_s[order], out_j[order]
    in_s, in_j = s[z], sample[z]
    n_out = (~z).sum(axis=0) @ w
    n_in = z.sum(axis=0) @ w
    if (n_out == 0).any() or (n_in == 0).any():
        raise ValueError("a bootstrap replicate has no IN or no OUT pair")
    n0 = out_s.size
    result = np.empty((len(alphas), n_boot))
    for row, alpha in enumerate(alphas):
        q = 1.0 - alpha
        h = (n_out - 1) * q  # numpy's virtual index for method="linear"
        lo = np.floor(h)
        frac = h - lo
        r_lo = n_out - 1 - lo  # ranks from the top of positions lo and lo + 1
        r_hi = np.maximum(r_lo - 1, 0)
        k = min(n0, int(1.2 * alpha * n0 + 10 * np.sqrt(alpha * n0)) + 64)
        while True:
            top_w = np.cumsum(w[out_j[:k]], axis=0)  # [k, B] weight at rank <= d
            if k == n0 or (top_w[-1] > r_lo).all():
                break
            k = min(n0, 2 * k)
        a = out_s[(top_w <= r_lo).sum(axis=0)]
        b = out_s[(top_w <= r_hi).sum(axis=0)]
        diff = b - a
        tau = np.where(frac >= 0.5, b - diff * (1 - frac), a + diff * frac)  # numpy's _lerp
        hi_tau = tau.max()
        above = np.bincount(in_j[in_s > hi_tau], minlength=s.shape[1]).astype(np.float64) @ w
        band = (in_s > tau.min()) & (in_s <= hi_tau)
        order = np.argsort(in_s[band], kind="stable")
        band_s, band_j = in_s[band][order], in_j[band][order]
        cum = np.zeros((band_s.size + 1, n_boot))
        np.cumsum(w[band_j], axis=0, out=cum[1:])
        pos = np.searchsorted(band_s, tau, side="right")
        result[row] = (above + cum[-1] - cum[pos, np.arange(n_boot)]) / n_in
    return result


def percentile_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval (numpy's linear percentiles)."""
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def checkpoint_metrics(scores: np.ndarray, membership: np.ndarray, alphas: list[float], n_boot: int,
                       seed: int, level: float = 0.95) -> dict[str, np.ndarray]:
    """Global metrics of one attack at every checkpoint, each ``[T]``: ``auc``,
    ``balanced_accuracy``, ``tpr_at_fpr_A`` and its bootstrap CI ``tpr_at_fpr_A_ci_low/high``.

    ``scores`` is ``[T, M, N]`` (a memmap is read one checkpoint at a time). The bootstrap
    resamples samples (all M pairs of a sample together); checkpoint t uses the seed
    ``(seed, t)``, so every attack of a run is resampled identically.
    """
    T, _, N = scores.shape
    out = {k: np.empty(T) for k in ("auc", "balanced_accuracy")}
    for a in alphas:
        for suffix in ("", "_ci_low", "_ci_high"):
            out[f"tpr_at_fpr_{a:g}{suffix}"] = np.empty(T)
    for t in range(T):
        s = np.asarray(scores[t], dtype=np.float64)
        out["auc"][t] = global_auc(s, membership)
        out["balanced_accuracy"][t] = balanced_accuracy(s, membership)
        weights = bootstrap_weights(N, n_boot, np.random.default_rng([seed, t]))
        boot = tpr_at_fpr_boot(s, membership, alphas, weights)
        for a, reps in zip(alphas, boot):
            out[f"tpr_at_fpr_{a:g}"][t] = tpr_at_fpr(s, membership, a)
            out[f"tpr_at_fpr_{a:g}_ci_low"][t], out[f"tpr_at_fpr_{a:g}_ci_high"][t] = percentile_ci(reps, level)
    return out
