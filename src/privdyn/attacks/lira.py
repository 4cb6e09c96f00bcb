"""LiRA (Carlini et al. 2022), online and offline, with balanced epoch-matched references.

Per target m, sample i and query q, Gaussians are fitted to the signal phi of the IN references
(the target's reference models that trained on i, see :mod:`privdyn.attacks.references`) and of
the OUT references. Standard deviations use ddof = 0
and are floored at ``std_floor``; the centre is the mean (or, as an option, the median).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field
from scipy.special import log_ndtr

from privdyn.attacks.base import Attack, AttackOptionsBase, CheckpointData, register
from privdyn.attacks.references import ref_median, ref_moments
from privdyn.errors import DataError

_LOG_SQRT_2PI = 0.5 * np.log(2 * np.pi)


class LiraOptions(AttackOptionsBase):
    """Options of every LiRA variant."""

    std_floor: float = Field(1e-6, gt=0, description="lower bound on every standard deviation")
    center: Literal["mean", "median"] = Field(
        "mean", description="centre of each Gaussian: the references' mean, or their median "
                            "(the reference code's choice); the spread is the ddof=0 std either way")


def _gaussian(phi: np.ndarray, data: CheckpointData, side: str,
              opts: LiraOptions) -> tuple[np.ndarray, np.ndarray]:
    """Centre and variance of phi over the target's IN (``side='in'``) or OUT references."""
    z = data.membership
    w = z if side == "in" else ~z
    mu, var = ref_moments(phi, w, data.refs, side.upper())
    if opts.center == "median":
        mu = ref_median(phi, w, data.refs, side.upper())
    return mu, var


def _std(var: np.ndarray, floor: float) -> np.ndarray:
    return np.maximum(np.sqrt(var), floor)


def _log_normal_pdf(x: np.ndarray, mu: np.ndarray, std: np.ndarray) -> np.ndarray:
    return -_LOG_SQRT_2PI - np.log(std) - 0.5 * ((x - mu) / std) ** 2


def _phi(data: CheckpointData, online: bool) -> np.ndarray:
    if online and data.n_models < 4:
        raise DataError(f"online LiRA needs at least 4 models (an IN and an OUT reference for every "
                           f"target and sample); got M={data.n_models} models.")
    return data.pool_signal("phi")


def lira_online(data: CheckpointData, opts: LiraOptions) -> np.ndarray:
    """S = sum_q [log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)], per-sample variances."""
    phi = _phi(data, True)
    mu_in, var_in = _gaussian(phi, data, "in", opts)
    mu_out, var_out = _gaussian(phi, data, "out", opts)
    f = opts.std_floor
    return (_log_normal_pdf(phi, mu_in, _std(var_in, f)) - _log_normal_pdf(phi, mu_out, _std(var_out, f))).sum(-1)


def lira_online_fixed(data: CheckpointData, opts: LiraOptions) -> np.ndarray:
    """Online LiRA with one variance per side, target and query: the pooled within-sample variance.

    The IN variance pools the IN spreads and the OUT variance the OUT spreads (the reference
    code's fixed-variance branch uses the IN spread for both; we do not).
    """
    phi = _phi(data, True)
    mu_in, var_in = _gaussian(phi, data, "in", opts)
    mu_out, var_out = _gaussian(phi, data, "out", opts)
    f = opts.std_floor
    s_in = _std(var_in.mean(axis=1, keepdims=True), f)
    s_out = _std(var_out.mean(axis=1, keepdims=True), f)
    return (_log_normal_pdf(phi, mu_in, s_in) - _log_normal_pdf(phi, mu_out, s_out)).sum(-1)


def lira_offline_cdf(data: CheckpointData, opts: LiraOptions) -> np.ndarray:
    """One-sided offline LiRA: s = sum_q log Phi((phi - mu_out) / s_out), OUT references only."""
    phi = _phi(data, False)
    mu_out, var_out = _gaussian(phi, data, "out", opts)
    return log_ndtr((phi - mu_out) / _std(var_out, opts.std_floor)).sum(-1)


def lira_offline_pdf(data: CheckpointData, opts: LiraOptions) -> np.ndarray:
    """Two-sided offline LiRA (the reference code's): s = -sum_q log N(phi; mu_out, s_out^2)."""
    phi = _phi(data, False)
    mu_out, var_out = _gaussian(phi, data, "out", opts)
    return -_log_normal_pdf(phi, mu_out, _std(var_out, opts.std_floor)).sum(-1)


_PAPER = "Carlini et al., Membership Inference Attacks From First Principles, IEEE S&P 2022"
for _fn, _desc, _per_sample in (
    (lira_online, "LiRA online, per-sample IN and OUT Gaussians", True),
    (lira_online_fixed, "LiRA online, one pooled variance per side and query", False),
    (lira_offline_cdf, "LiRA offline, one-sided Gaussian CDF of the OUT references", True),
    (lira_offline_pdf, "LiRA offline, two-sided negative log density (reference code's variant)", True),
):
    register(Attack(_fn.__name__, _fn, LiraOptions, ("phi",), description=_desc, source=_PAPER,
                    per_sample=_per_sample))
