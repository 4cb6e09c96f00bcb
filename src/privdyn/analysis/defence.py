"""What a defence did, sample by sample: the flagged samples' own risk and the onion effect.

Pure functions over the final planes of a baseline run and a defended run of the same pool and
membership (DESIGN.md "Defences"). A defence is judged on the most vulnerable samples (Aerni et
al. 2024: an average over all samples hides what happens to the few that leak): the baseline's
finally-vulnerable set V and each run's own top 1%. The onion effect (Carlini et al. 2022) is
the set of samples safe in the baseline that end high under the intervention: their count, the
baseline state and plane cell they came from, and whether they were flagged themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from privdyn.analysis.early import final_vulnerable
from privdyn.analysis.plane import compute_plane
from privdyn.analysis.population import STATE_NAMES, Bands, grid_cells, most_vulnerable, states

#: Share of samples in a run's own most-vulnerable set (its top by final advantage, then AUC).
TOP_SHARE = 0.01
#: A sample counts as flagged when at least this share of its IN models flagged it.
FLAGGED_MAJORITY = 0.5


@dataclass(frozen=True)
class FinalPlane:
    """Every sample's final place on the plane: ``fpr, tpr, adv, auc`` and ``state`` ``[N]``."""

    fpr: np.ndarray
    tpr: np.ndarray
    adv: np.ndarray
    auc: np.ndarray
    state: np.ndarray


def final_plane(scores: np.ndarray, membership: np.ndarray, rule: str, bands: Bands) -> FinalPlane:
    """The final plane from the last checkpoint's scores ``[M, N]`` under ``rule`` and ``bands``."""
    p = compute_plane(np.asarray(scores, dtype=np.float64)[None], membership, rule)
    adv = p.adv[0]
    return FinalPlane(p.fpr[0], p.tpr[0], adv, p.auc[0], states(adv, bands))


def top_set(fp: FinalPlane, share: float = TOP_SHARE) -> np.ndarray:
    """Bool ``[N]``: the ``ceil(share * N)`` most vulnerable samples (final advantage, then AUC, then index)."""
    n = len(fp.adv)
    out = np.zeros(n, dtype=bool)
    out[most_vulnerable(fp.adv, np.nan_to_num(fp.auc, nan=0.0), max(1, math.ceil(share * n)))] = True
    return out


def baseline_vulnerable(base: FinalPlane) -> np.ndarray:
    """V of the baseline: its samples high at the end, or its top 1% when none is (DESIGN.md)."""
    return np.asarray(final_vulnerable(base.adv, base.state == len(STATE_NAMES) - 1), dtype=bool)


def flag_rate(flags: np.ndarray, membership: np.ndarray) -> np.ndarray:
    """Per sample, the share of its IN models that flagged it ``[N]``; ``flags`` is bool ``[M, N]``
    (or ``[D, M, N]`` over flaggings: a sample counts as flagged by a model at any of them)."""
    f = np.asarray(flags, dtype=bool)
    f = np.asarray(f.any(axis=0) if f.ndim == 3 else f)
    n_in = membership.sum(axis=0)
    return (f & membership).sum(axis=0) / np.maximum(n_in, 1)


def vulnerability(run: FinalPlane, base: FinalPlane, high: int = len(STATE_NAMES) - 1) -> dict[str, float]:
    """Judged on the most vulnerable samples: the mean final advantage and AUC, and the share
    high, of the baseline's V under this run; the mean advantage of this run's own top 1%."""
    v = baseline_vulnerable(base)
    own = top_set(run)
    n = int(v.sum())  # 0 when no baseline sample has any advantage
    return {"n_baseline_vulnerable": n,
            "baseline_vulnerable_adv": float(run.adv[v].mean()) if n else math.nan,
            "baseline_vulnerable_auc": float(np.nanmean(run.auc[v])) if n else math.nan,
            "baseline_vulnerable_still_high": float((run.state[v] == high).mean()) if n else math.nan,
            "own_top1pct_adv": float(run.adv[own].mean()),
            "own_top1pct_auc": float(np.nanmean(run.auc[own]))}


def flagged_effect(base: FinalPlane, run: FinalPlane, rate: np.ndarray,
                   majority: float = FLAGGED_MAJORITY) -> dict[str, float]:
    """The flagged samples' own risk, baseline against the intervention: their count (flagged
    by at least ``majority`` of their IN models), mean final advantage and AUC and share high
    under each; and the same for the samples any model flagged."""
    high = len(STATE_NAMES) - 1
    out: dict[str, float] = {}
    for name, mask in (("flagged", rate >= majority), ("any_flagged", rate > 0)):
        n = int(mask.sum())
        out[f"n_{name}"] = n
        for side, fp in (("baseline", base), ("defended", run)):
            out[f"{name}_adv_{side}"] = float(fp.adv[mask].mean()) if n else math.nan
            out[f"{name}_auc_{side}"] = float(np.nanmean(fp.auc[mask])) if n else math.nan
            out[f"{name}_high_{side}"] = float((fp.state[mask] == high).mean()) if n else math.nan
    return out


@dataclass(frozen=True)
class Onion:
    """The onion effect of one intervention: ``safe_to_high`` and ``new_high`` masks ``[N]``
    (safe / not high in the baseline, high under the intervention), their baseline states
    and, per ``G x G`` cell of the baseline plane, how many of the safe-to-high samples sat there."""

    safe_to_high: np.ndarray
    new_high: np.ndarray
    high_to_lower: np.ndarray
    new_high_by_state: dict[str, int]
    baseline_cells: np.ndarray  # [G, G] counts: row = TPR_i cell (bottom first), column = FPR_i cell
    origin: dict[str, float]    # where the safe-to-high samples sat on the baseline plane, against all safe ones

    def summary(self) -> dict[str, Any]:
        """The counts and the origin, for the comparison's JSON and tables."""
        return {"n_safe_to_high": int(self.safe_to_high.sum()), "n_new_high": int(self.new_high.sum()),
                "n_high_to_lower": int(self.high_to_lower.sum()),
                **{f"new_high_from_{k}": v for k, v in self.new_high_by_state.items()}, **self.origin}


def onion(base: FinalPlane, run: FinalPlane, grid: int) -> Onion:
    """Samples the intervention exposed: safe (state 0) in the baseline and high under it, and
    more broadly any sample that was not high and ends high; with the samples that left the
    high state for comparison, the baseline states of the newly high, the baseline plane cells
    of the safe-to-high ones and their mean baseline FPR_i, TPR_i and AUC_i (beside the mean
    baseline AUC_i of every safe sample: were they the next layer of the onion?)."""
    high = len(STATE_NAMES) - 1
    safe_to_high = (base.state == 0) & (run.state == high)
    new_high = (base.state < high) & (run.state == high)
    lower = (base.state == high) & (run.state < high)
    by_state = {STATE_NAMES[s]: int((new_high & (base.state == s)).sum()) for s in range(high)}
    cells = np.zeros((grid, grid), dtype=np.int64)
    if safe_to_high.any():
        c = grid_cells(base.fpr[safe_to_high], base.tpr[safe_to_high], grid)
        np.add.at(cells.reshape(-1), c, 1)
    safe = base.state == 0

    def mean(x: np.ndarray, mask: np.ndarray) -> float:
        return float(np.nanmean(x[mask])) if mask.any() else math.nan

    origin = {f"safe_to_high_baseline_{k}": mean(v, safe_to_high) for k, v in
              (("fpr", base.fpr), ("tpr", base.tpr), ("auc", base.auc))}
    origin["safe_baseline_auc"] = mean(base.auc, safe)
    return Onion(safe_to_high, new_high, lower, by_state, cells, origin)


def nearest(values: np.ndarray, target: float) -> int:
    """The index of the value closest to ``target`` (the first on ties; NaN never chosen)."""
    v = np.asarray(values, dtype=np.float64)
    d = np.where(np.isfinite(v), np.abs(v - target), np.inf)
    return int(np.argmin(d))
