"""Typed results of one attack's analysis, and the one definition of ``summary.json``.

:func:`measure_dynamics` turns a plane and its states into a :class:`Dynamics` (per-sample and
per-epoch columns, tables, and a :class:`DynamicsSummary`). :class:`AttackSummary` adds the
model-level series, and :class:`Summary` the run's description; their ``to_dict()`` methods
are the only place the JSON keys are spelled, so the file's schema is read here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from privdyn.analysis import clusters, difficulty, dynamics, early
from privdyn.analysis.plane import Plane
from privdyn.analysis.population import Bands

#: Recall level always reported: ``epoch_recall_0.7`` is part of summary.json's public surface.
HEADLINE_RECALL = 0.7


def num(x: float) -> float | None:
    """A float for JSON, None for NaN or infinity (missing: keeps the file valid JSON)."""
    return float(x) if np.isfinite(x) else None


def nums(values: np.ndarray) -> list[float | None]:
    """:func:`num` of every entry."""
    return [num(float(v)) for v in np.asarray(values, dtype=np.float64).ravel()]


@dataclass(frozen=True)
class DynamicsOptions:
    """What the dynamics depend on beyond the plane: the clustering's k (None: best silhouette),
    the silhouette's subsample, the state bands, the bootstrap draws of the difficulty CIs,
    the recall levels whose earliest epoch is reported, and the seed."""

    n_clusters: int | None
    silhouette_sample: int
    bands: Bands
    n_bootstrap: int
    recall_levels: tuple[float, ...]
    seed: int


@dataclass(frozen=True)
class DynamicsSummary:
    """The scalar and per-epoch dynamics of one attack that ``summary.json`` reports."""

    encoding_speed: dict[str, float]        # mean, median, high_mean (over the finally-high samples)
    net_encoding_rate_mean: float
    p_to_high: np.ndarray                    # [T-1]
    peak_p_to_high_epoch: int | None        # the epoch the step of the peak starts from
    n_ever_high: int
    time_to_high_median: float
    clustering: clusters.Clustering
    cluster_table: pd.DataFrame
    n_vulnerable: int
    vulnerable_set: str                      # how V was chosen (early.vulnerable_set_rule)
    recall_curve: np.ndarray                 # [T]
    spearman_to_final: np.ndarray            # [T]
    reached: dict[float, tuple[float, float]]  # recall level -> (earliest epoch, fraction of training)
    early_el2n_epoch: int
    spearman: pd.DataFrame                   # difficulty.spearman_table
    has_el2n: bool

    def to_dict(self) -> dict[str, Any]:
        """The entries of ``summary.json`` (NaN written as null)."""
        peak = dynamics.peak(self.p_to_high)
        return {
            "encoding_speed_mean": num(self.encoding_speed["mean"]),
            "encoding_speed_median": num(self.encoding_speed["median"]),
            "encoding_speed_high_mean": num(self.encoding_speed["high_mean"]),
            "net_encoding_rate_mean": num(self.net_encoding_rate_mean),
            "peak_p_to_high": num(peak),
            "peak_p_to_high_epoch": self.peak_p_to_high_epoch,
            "p_to_high": nums(self.p_to_high),
            "n_ever_high": self.n_ever_high,
            "time_to_high_median": num(self.time_to_high_median),
            "n_clusters": self.clustering.k, "silhouette": num(self.clustering.silhouette),
            "clusters": json.loads(self.cluster_table.to_json(orient="records")),
            "n_vulnerable": self.n_vulnerable,
            "vulnerable_set": self.vulnerable_set,
            "recall_curve": nums(self.recall_curve),
            "spearman_to_final": nums(self.spearman_to_final),
            **{f"epoch_recall_{lv:g}": num(e) for lv, (e, _) in self.reached.items()},
            **{f"fraction_recall_{lv:g}": num(f) for lv, (_, f) in self.reached.items()},
            "early_el2n_epoch": self.early_el2n_epoch,
            "spearman_difficulty": self._spearman_dict(),
        }

    def _spearman_dict(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for m in difficulty.MEASURES:
            rows = self.spearman[self.spearman.measure == m]
            out[m] = {r.target: {"rho": num(r.rho), "ci_low": num(r.ci_low), "ci_high": num(r.ci_high)}
                      for r in rows.itertuples()}
            if m == "early_el2n" and not self.has_el2n:
                out[m]["note"] = "signal el2n not stored: retrain with this privdyn version"
        return out


@dataclass(frozen=True)
class Dynamics:
    """Everything :func:`measure_dynamics` finds: per-sample ``[N]`` and per-epoch ``[T]``
    columns for the analysis tables, the long tables, and the summary."""

    sample: dict[str, Any]
    epoch: dict[str, np.ndarray]
    transitions: pd.DataFrame
    clusters: pd.DataFrame
    difficulty_spearman: pd.DataFrame
    difficulty_deciles: pd.DataFrame
    summary: DynamicsSummary

    def tables(self) -> dict[str, pd.DataFrame]:
        """The long tables by file stem."""
        return {"transitions": self.transitions, "clusters": self.clusters,
                "difficulty_spearman": self.difficulty_spearman, "difficulty_deciles": self.difficulty_deciles}


def measure_dynamics(plane: Plane, st: np.ndarray, epochs: np.ndarray, measures: Mapping[str, np.ndarray],
                     has_el2n: bool, early_el2n_epoch: int, opts: DynamicsOptions,
                     spearman: pd.DataFrame | None = None) -> Dynamics:
    """Speed, transitions, time to high, clusters, difficulty and early determination of one
    plane with states ``st`` ``[T, N]``; ``measures`` are the per-sample difficulty measures.

    ``spearman`` is the difficulty Spearman table when it was computed for several attacks at
    once (:func:`~privdyn.analysis.difficulty.spearman_tables`); else it is computed here.
    """
    adv, high_final = plane.adv, st[-1] == dynamics.HIGH
    speed, net = dynamics.encoding_speed(plane.fpr, plane.tpr, epochs)
    counts = dynamics.transition_counts(st)
    to_high = dynamics.p_to_high(counts)
    first_high, settled = dynamics.time_to_high(st, epochs)
    clus = clusters.cluster_trajectories(adv, opts.n_clusters, opts.seed, opts.silhouette_sample)
    clus_table = clusters.describe_clusters(clus.labels, adv, first_high, epochs, opts.bands)
    if spearman is None:
        spearman = difficulty.spearman_table(dict(measures), {"final_advantage": adv[-1], "final_auc": plane.auc[-1]},
                                             opts.n_bootstrap, opts.seed)
    vulnerable = early.final_vulnerable(adv[-1], high_final)
    recall = early.recall_curve(adv, vulnerable)
    to_final = early.spearman_to_final(adv)
    ever = np.isfinite(first_high)
    summary = DynamicsSummary(
        encoding_speed=dynamics.speed_summary(speed, high_final),
        net_encoding_rate_mean=float(np.mean(net)),
        p_to_high=to_high,
        peak_p_to_high_epoch=(int(epochs[int(np.nanargmax(to_high))])
                              if np.isfinite(dynamics.peak(to_high)) else None),
        n_ever_high=int(ever.sum()),
        time_to_high_median=float(np.median(first_high[ever])) if ever.any() else float("nan"),
        clustering=clus, cluster_table=clus_table,
        n_vulnerable=int(vulnerable.sum()), vulnerable_set=early.vulnerable_set_rule(vulnerable, high_final),
        recall_curve=recall, spearman_to_final=to_final,
        reached=early.earliest_epochs(recall, epochs, sorted({*opts.recall_levels, HEADLINE_RECALL})),
        early_el2n_epoch=early_el2n_epoch, spearman=spearman, has_el2n=has_el2n,
    )
    return Dynamics(
        sample={
            "encoding_speed": speed, "net_encoding_rate": net,
            "time_to_high": first_high, "settled_high": settled,
            "cluster": clus.labels,
            "cluster_name": pd.Categorical.from_codes(clus.labels, list(clus_table["name"])),
            "finally_vulnerable": vulnerable, **measures,
        },
        epoch={"recall": recall, "spearman_to_final": to_final, "p_to_high": np.append(to_high, np.nan)},
        transitions=dynamics.transitions_table(counts, epochs),
        clusters=clus_table, difficulty_spearman=spearman,
        difficulty_deciles=difficulty.decile_table(dict(measures), adv[-1], plane.auc[-1], high_final),
        summary=summary,
    )


@dataclass(frozen=True)
class AttackSummary:
    """One attack's entry in ``summary.json``: per-checkpoint model-level series ``[T]``, the
    population geometry and the dynamics. ``tpr_at_fpr`` maps alpha to ``[T]``, ``tpr_ci``
    alpha to its bootstrap CI ``[T, 2]``."""

    attack: str
    rule: str
    epochs: np.ndarray
    test_accuracy: np.ndarray
    train_accuracy: np.ndarray
    auc: np.ndarray
    balanced_accuracy: np.ndarray
    tpr_at_fpr: dict[float, np.ndarray]
    tpr_ci: dict[float, np.ndarray]
    com_displacement_pp: float
    com_path_pp: float
    entropy_bits: np.ndarray
    n_high_final: int
    dynamics: DynamicsSummary

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-ready values; ``final`` repeats the last checkpoint's metrics."""
        return {
            "attack": self.attack, "rule": self.rule, "epochs": self.epochs.tolist(),
            "test_accuracy": nums(self.test_accuracy), "train_accuracy": self.train_accuracy.tolist(),
            **{f"tpr_at_fpr_{a:g}": v.tolist() for a, v in self.tpr_at_fpr.items()},
            "auc": self.auc.tolist(), "balanced_accuracy": self.balanced_accuracy.tolist(),
            **{f"tpr_at_fpr_{a:g}_ci": v.tolist() for a, v in self.tpr_ci.items()},
            "com_displacement_pp": self.com_displacement_pp, "com_path_pp": self.com_path_pp,
            "entropy_bits": self.entropy_bits.tolist(),
            "delta_entropy_bits": float(self.entropy_bits[-1] - self.entropy_bits[0]),
            "n_high_final": self.n_high_final,
            **self.dynamics.to_dict(),
            "final": {"test_accuracy": num(float(self.test_accuracy[-1])), "auc": float(self.auc[-1]),
                      "balanced_accuracy": float(self.balanced_accuracy[-1]),
                      **{f"tpr_at_fpr_{a:g}": float(v[-1]) for a, v in self.tpr_at_fpr.items()},
                      **{f"tpr_at_fpr_{a:g}_ci": v[-1].tolist() for a, v in self.tpr_ci.items()}},
        }


@dataclass(frozen=True)
class Summary:
    """``summary.json``: the run's description, the default attack's entries at top level, and
    every attack's entry (an :meth:`AttackSummary.to_dict`, with the run-level analyses'
    per-attack entries such as ``sensitivity``) under ``attacks``, and the run-level analyses'
    own entries (``run_level``, e.g. ``early_warning``) at top level."""

    name: str
    dataset: str
    model: str
    optimizer: str
    n_models: int
    n_samples: int
    default_attack: str
    attacks: Mapping[str, Mapping[str, Any]]
    run_level: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The file's content."""
        default = self.attacks[self.default_attack]
        return {
            "name": self.name, "dataset": self.dataset, "model": self.model, "optimizer": self.optimizer,
            "n_models": self.n_models, "n_samples": self.n_samples, "default_attack": self.default_attack,
            **{k: v for k, v in default.items() if k != "attack"},
            "attacks": {a: dict(e) for a, e in self.attacks.items()},
            **self.run_level,
        }
