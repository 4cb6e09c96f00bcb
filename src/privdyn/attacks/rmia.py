"""RMIA (Zarifzadeh et al. 2024), online and offline, scored by sorting instead of an N x Z matrix.

Pr(x | theta) = p_y(x) = exp(-loss) of the target; Pr(x) = mean of p_y(x) over the references
(``rmia``: all the target's reference models, IN and OUT; ``rmia_offline``: the OUT references
only, corrected linearly to Pr(x) = (1+a)/2 * mean_out + (1-a)/2). The likelihood ratio is
ratio(x) = Pr(x|theta) / Pr(x), averaged over queries. Population samples z come from the test
split (non-members of every model; their Pr(z) uses the same references and, offline, the same
a-correction), optionally joined by the pool samples that are OUT for the target. The score is
the share of z with ratio(x) / ratio(z) > gamma: one batched count (``count_below``) per target
gives every count. Everything is computed in log space.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from privdyn.attacks.base import Attack, AttackOptionsBase, CheckpointData, count_below, register
from privdyn.attacks.references import ref_logmeanexp


class RmiaOptions(AttackOptionsBase):
    """Options of online RMIA."""

    gamma: float = Field(1.0, gt=0, description="threshold on the pairwise ratio ratio(x)/ratio(z)")
    population: Literal["test", "test+pool"] = Field(
        "test", description="population z: the test split, or the test split plus the pool samples "
                            "that are OUT for the target")


class RmiaOfflineOptions(RmiaOptions):
    """Options of offline RMIA: those of RMIA and the correction ``a``."""

    a: float = Field(0.3, ge=0, le=1, description="offline correction Pr(x) = (1+a)/2 Pr_OUT(x) + (1-a)/2")


def _a_correct(log_p: np.ndarray, a: float) -> np.ndarray:
    """log((1+a)/2 * exp(log_p) + (1-a)/2)."""
    if a == 1.0:
        return log_p
    return np.logaddexp(np.log((1 + a) / 2) + log_p, np.log((1 - a) / 2))


def _log_ratio(log_p: np.ndarray, log_pr: np.ndarray) -> np.ndarray:
    """Log of the query-averaged ratio mean_q p^q / Pr^q, ``[M, N]`` (exact for one query)."""
    x = log_p - log_pr
    top = x.max(axis=-1)
    return top + np.log(np.exp(x - top[..., None]).mean(axis=-1))


def log_ratios(data: CheckpointData, offline: bool, a: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Log ratio(x) for the pool ``[M, N]`` and log ratio(z) for the test split ``[M, N_test]``."""
    z = data.membership
    log_p, log_pt = -data.pool_signal("loss"), -data.test_signal("loss")
    log_pr = ref_logmeanexp(log_p, ~z if offline else None, data.refs, "OUT" if offline else "")
    log_prt = ref_logmeanexp(log_pt, None, data.refs.for_population(log_pt.shape[1]))
    if offline:
        log_pr, log_prt = _a_correct(log_pr, a), _a_correct(log_prt, a)
    return _log_ratio(log_p, log_pr), _log_ratio(log_pt, log_prt)


#: Relative tolerance under which two log ratios are treated as equal (see ``_score``).
RATIO_TIE_TOL = 1e-12


def share_below(pop: np.ndarray, values: np.ndarray, n_pop: np.ndarray) -> np.ndarray:
    """Per row m, the share of ``pop[m]`` strictly below each ``values[m, i]``.

    ``pop`` ``[M, Z]`` may hold +inf for entries that are not in row m's population; ``n_pop``
    ``[M]`` counts the real entries.
    """
    return count_below(pop, values) / n_pop[:, None]


def _score(data: CheckpointData, opts: RmiaOptions, offline: bool, a: float) -> np.ndarray:
    lr_x, lr_z = log_ratios(data, offline, a)
    pop = lr_z
    if opts.population == "test+pool":
        pop = np.concatenate([lr_z, np.where(data.membership, np.inf, lr_x)], axis=1)
    n_pop = np.isfinite(pop).sum(axis=1)
    # ratio(x)/ratio(z) > gamma  <=>  log ratio(z) < log ratio(x) - log gamma. Pairs equal up to
    # float rounding count as ties (not greater): the reference means are sums whose last bits
    # depend on the order of the models, and a strict test on them would not be order-invariant.
    cut = lr_x - np.log(opts.gamma)
    return share_below(pop, cut - RATIO_TIE_TOL * np.maximum(1.0, np.abs(cut)), n_pop)


def rmia(data: CheckpointData, opts: RmiaOptions) -> np.ndarray:
    """Online RMIA: Pr(x) is the mean over all the target's references (IN and OUT)."""
    return _score(data, opts, offline=False, a=1.0)


def rmia_offline(data: CheckpointData, opts: RmiaOfflineOptions) -> np.ndarray:
    """Offline RMIA: Pr(x) from the OUT references with the linear a-correction."""
    return _score(data, opts, offline=True, a=opts.a)


_PAPER = "Zarifzadeh, Liu, Shokri, Low-Cost High-Power Membership Inference Attacks, ICML 2024"
register(Attack("rmia", rmia, RmiaOptions, ("loss",), ("loss",),
                description="RMIA online: pairwise likelihood ratios against test-split population samples",
                source=_PAPER))
register(Attack("rmia_offline", rmia_offline, RmiaOfflineOptions, ("loss",), ("loss",),
                description="RMIA offline: OUT references with the linear a-correction", source=_PAPER))
