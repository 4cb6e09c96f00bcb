"""Sensitivity of the headline dynamics to the open definitional choices (DESIGN.md "Sensitivity").

The paper's operating point, grid and state bands are not public, so every run shows whether a
conclusion depends on them: the headline dynamics are recomputed from the stored scores (no
re-scoring) for every combination of operating-point rule, grid size G and band set. A plane is
computed once per rule; grids and bands only re-bin it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from privdyn.analysis import dynamics, early, population
from privdyn.analysis.checkpoints import Checkpoints
from privdyn.analysis.plane import operating_points_of
from privdyn.analysis.population import Bands
from privdyn.analysis.results import num

#: Attacks whose score is a log-likelihood ratio, so that the fixed rule score:0 means "the IN
#: hypothesis is likelier" (LiRA online); other scores have no natural zero.
LOG_RATIO_ATTACKS = ("lira_online", "lira_online_fixed")
RULES = ("fpr:0.001", "fpr:0.01", "fpr:0.1")
GRIDS = (5, 10, 20)
#: The default bands and DESIGN.md's second set.
BAND_SETS = ((0.1, 0.3, 0.6), (0.2, 0.4, 0.7))
HEADLINE = ("com_displacement_pp", "com_path_pp", "delta_entropy_bits", "peak_p_to_high", "n_high_final",
            "encoding_speed_mean", "epoch_recall_0.7", "spearman_consistency")


@dataclass(frozen=True)
class Variants:
    """The choices to cross: rules, grid sizes and band sets (``default_*`` marks the run's own)."""

    rules: tuple[str, ...]
    grids: tuple[int, ...]
    bands: tuple[Bands, ...]
    default_rule: str
    default_grid: int
    default_bands: Bands


def variants_for(attack: str, n_models: int, rule: str, grid: int, bands: Bands) -> Variants:
    """DESIGN.md's variant set plus the run's own choices; grids above M/2 are left out."""
    rules = tuple(dict.fromkeys([*RULES, *(["score:0"] if attack in LOG_RATIO_ATTACKS else []), rule]))
    grids = tuple(sorted({g for g in (*GRIDS, grid) if g <= n_models // 2}))
    band_sets = tuple(dict.fromkeys([bands, *(Bands(*b) for b in BAND_SETS)]))
    return Variants(rules, grids, band_sets, rule, grid, bands)


def _epoch_at(curve: np.ndarray, epochs: np.ndarray, level: float) -> float:
    reached = early.earliest_epochs(curve, epochs, [level])
    return reached[level][0]


def sensitivity_table(scores: Checkpoints, membership: np.ndarray, epochs: np.ndarray,
                      consistency: np.ndarray, variants: Variants) -> pd.DataFrame:
    """One row per (rule, grid, bands): the headline dynamics of DESIGN.md "Sensitivity".

    ``scores`` ``[T, M, N]`` (a memmap is fine), ``consistency`` ``[N]`` the C-score estimate
    whose Spearman correlation with the final advantage is reported.
    """
    rows = []
    points = operating_points_of(scores, membership, list(variants.rules))  # each checkpoint read once
    for rule in variants.rules:
        fpr, tpr = points[rule]
        adv = tpr - fpr
        disp, path = population.com_displacement_and_path(population.centre_of_mass(fpr, tpr))
        speed, _ = dynamics.encoding_speed(fpr, tpr, epochs)
        rho = spearmanr(consistency, adv[-1]).statistic if np.ptp(adv[-1]) > 0 else np.nan
        entropy = {g: population.spatial_entropy(fpr[[0, -1]], tpr[[0, -1]], g) for g in variants.grids}
        for bands in variants.bands:
            st = population.states(adv, bands)
            high_final = st[-1] == dynamics.HIGH
            recall = early.recall_curve(adv, early.final_vulnerable(adv[-1], high_final))
            per_bands = {
                "peak_p_to_high": dynamics.peak(dynamics.p_to_high(dynamics.transition_counts(st))),
                "n_high_final": int(high_final.sum()),
                "epoch_recall_0.7": _epoch_at(recall, epochs, 0.7),
            }
            for g in variants.grids:
                rows.append({
                    "rule": rule, "grid": g, "bands": bands.label(),
                    "is_default": rule == variants.default_rule and g == variants.default_grid
                    and bands == variants.default_bands,
                    "com_displacement_pp": disp, "com_path_pp": path,
                    "delta_entropy_bits": float(entropy[g][-1] - entropy[g][0]),
                    **per_bands,
                    "encoding_speed_mean": float(np.mean(speed)),
                    "spearman_consistency": float(rho),
                })
    return pd.DataFrame(rows)


def summarise_by_attack(table: pd.DataFrame) -> dict[str, dict[str, dict[str, float | None]]]:
    """:func:`summarise` for each attack of a table with an ``attack`` column."""
    return {str(a): summarise(t) for a, t in table.groupby("attack", sort=False)}


def summarise(table: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """Per headline metric: the run's default value and the range over all variants."""

    default = table[table.is_default]
    out: dict[str, dict[str, float | None]] = {}
    for metric in HEADLINE:
        values = table[metric].to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        out[metric] = {
            "default": num(float(default[metric].iloc[0])) if len(default) else None,
            "min": num(float(finite.min())) if finite.size else None,
            "max": num(float(finite.max())) if finite.size else None,
        }
    return out
