"""Early determination: how soon the finally-vulnerable set is visible in the plane."""

from __future__ import annotations

import math

import numpy as np

from privdyn.analysis.warning import Ranking

#: Share of samples taken as the finally-vulnerable set when no sample ends high.
TOP_SHARE = 0.01


def final_vulnerable(final_adv: np.ndarray, high_final: np.ndarray) -> np.ndarray:
    """V: the samples high at e_T; if none, the top 1% by A_i(e_T) among those with A_i(e_T) > 0
    (at least one sample; every sample tied with the last one taken is included, so V does not
    depend on sample order). A sample without advantage is not vulnerable: when no sample has
    one, V is empty (its recall is undefined) rather than every tied sample."""
    if high_final.any():
        return high_final.copy()
    n = len(final_adv)
    k = min(max(1, math.ceil(TOP_SHARE * n)), int((final_adv > 0).sum()))
    if k == 0:
        return np.zeros(n, dtype=bool)
    kth = np.partition(final_adv, n - k)[n - k]  # > 0, since k samples have A > 0
    return final_adv >= kth


def vulnerable_set_rule(vulnerable: np.ndarray, high_final: np.ndarray) -> str:
    """How V was chosen, for the summary: the high set, the top 1%, or none."""
    if high_final.any():
        return "high at e_T"
    return "top 1% by A(e_T)" if vulnerable.any() else "none: no sample has A(e_T) > 0"


def recall_curve(adv: np.ndarray, target: np.ndarray) -> np.ndarray:
    """recall(t) = |top-|V| samples by A_i(t)  intersected with V| / |V|, per checkpoint ``[T]``.

    Samples tied at the |V|-th largest advantage share the remaining places equally: this is the
    expected recall when ties are broken at random, so it does not depend on sample order.
    """
    T, N = adv.shape
    k = int(target.sum())
    if k == 0:
        return np.full(T, np.nan)
    kth = np.partition(adv, N - k, axis=1)[:, N - k][:, None]
    above, at = adv > kth, adv == kth
    free = k - above.sum(axis=1)
    hits = (above & target).sum(axis=1) + free / at.sum(axis=1) * (at & target).sum(axis=1)
    return hits / k


def spearman_to_final(adv: np.ndarray) -> np.ndarray:
    """Spearman(A(t), A(e_T)) per checkpoint ``[T]``; NaN where either is constant."""
    every = np.ones(adv.shape, dtype=bool)
    return Ranking(adv, every).spearman(Ranking(adv[-1:], every[-1:]))


def earliest_epochs(recall: np.ndarray, epochs: np.ndarray, levels: list[float]) -> dict[float, tuple[float, float]]:
    """Per level: the first checkpoint epoch with recall(t) >= level and that epoch as a fraction
    of e_T; (NaN, NaN) when recall never reaches it."""
    out = {}
    for lv in levels:
        hit = np.flatnonzero(recall >= lv - 1e-12)
        e = float(epochs[hit[0]]) if hit.size else float("nan")
        out[lv] = (e, e / float(epochs[-1]) if epochs[-1] > 0 else float("nan"))
    return out
