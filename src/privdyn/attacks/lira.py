"""LiRA (Carlini et al. 2022), online and offline, with leave-one-out references.

All statistics are vectorised over targets, samples and queries: per-sample totals over the IN
and OUT models are formed once, and each target's own term is subtracted, so target m's
references are exactly the other M-1 models at the same checkpoint.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr

from privdyn.attacks.base import Attack, CheckpointData, register
from privdyn.config import AttackOptions
from privdyn.errors import PrivdynError

_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


def loo_gaussian_stats(x: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    """Leave-one-out means and variances (ddof=0) of the IN and OUT references of every target.

    ``x`` is ``[M, N, Q]``, ``z`` bool ``[M, N]``. Returns ``mu_in, var_in, mu_out, var_out``,
    each ``[M, N, Q]``: for target m and sample i, the statistics over models m' != m with
    ``z[m', i]`` true (IN) or false (OUT).
    """
    x = np.asarray(x, dtype=np.float64)
    m = x.shape[0]
    if m < 4:
        raise PrivdynError(f"LiRA needs at least 4 models (2 IN and 2 OUT per sample); got M={m}. "
                           "Raise training.n_models.")
    centre = x.mean(axis=0, keepdims=True)  # centring keeps sums of squares accurate
    c = x - centre
    w_in = z[..., None].astype(np.float64)
    w_out = 1.0 - w_in
    out = {}
    for side, w in (("in", w_in), ("out", w_out)):
        s = (c * w).sum(axis=0, keepdims=True) - c * w
        ss = (c * c * w).sum(axis=0, keepdims=True) - c * c * w
        n = w.sum(axis=0, keepdims=True) - w
        mu = s / n
        out[f"mu_{side}"] = mu + centre
        out[f"var_{side}"] = np.maximum(ss / n - mu * mu, 0.0)
    return out


def _log_normal_pdf(x: np.ndarray, mu: np.ndarray, std: np.ndarray) -> np.ndarray:
    return -_LOG_SQRT_2PI - np.log(std) - 0.5 * ((x - mu) / std) ** 2


def lira_online(data: CheckpointData, opts: AttackOptions) -> np.ndarray:
    """s = sum_q [log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)], per-sample variances."""
    phi = np.asarray(data.pool["phi"], dtype=np.float64)
    st = loo_gaussian_stats(phi, data.membership)
    f = opts.lira_std_floor
    s_in, s_out = np.maximum(np.sqrt(st["var_in"]), f), np.maximum(np.sqrt(st["var_out"]), f)
    return (_log_normal_pdf(phi, st["mu_in"], s_in) - _log_normal_pdf(phi, st["mu_out"], s_out)).sum(-1)


def lira_online_fixed(data: CheckpointData, opts: AttackOptions) -> np.ndarray:
    """Online LiRA with one variance per side and query: the target's pooled within-sample variance.

    The IN variance pools the IN spreads and the OUT variance the OUT spreads (the reference
    code's fixed-variance branch uses the IN spread for both; we do not).
    """
    phi = np.asarray(data.pool["phi"], dtype=np.float64)
    st = loo_gaussian_stats(phi, data.membership)
    f = opts.lira_std_floor
    s_in = np.maximum(np.sqrt(st["var_in"].mean(axis=1, keepdims=True)), f)
    s_out = np.maximum(np.sqrt(st["var_out"].mean(axis=1, keepdims=True)), f)
    return (_log_normal_pdf(phi, st["mu_in"], s_in) - _log_normal_pdf(phi, st["mu_out"], s_out)).sum(-1)


def lira_offline_cdf(data: CheckpointData, opts: AttackOptions) -> np.ndarray:
    """One-sided offline LiRA: s = sum_q log Phi((phi - mu_out) / s_out), OUT references only."""
    phi = np.asarray(data.pool["phi"], dtype=np.float64)
    st = loo_gaussian_stats(phi, data.membership)
    s_out = np.maximum(np.sqrt(st["var_out"]), opts.lira_std_floor)
    return log_ndtr((phi - st["mu_out"]) / s_out).sum(-1)


register(Attack("lira_online", ("phi",), lira_online, "LiRA online, per-sample Gaussians (Carlini et al. 2022)"))
register(Attack("lira_online_fixed", ("phi",), lira_online_fixed, "LiRA online, one pooled variance per side"))
register(Attack("lira_offline_cdf", ("phi",), lira_offline_cdf, "LiRA offline, one-sided Gaussian CDF"))
