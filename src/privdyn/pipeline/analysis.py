"""The analyze stage: plane, population geometry and model-level metrics for one attack and rule.

Reads the score and signal arrays of a run, writes Parquet tables and a ``plane.npz`` under
``analysis/ATTACK/RULE/``, and returns the summary entries for ``summary.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from privdyn.analysis import (
    clusters,
    difficulty,
    dynamics,
    early,
    model_level,
    population,
    sensitivity,
)
from privdyn.analysis.plane import compute_plane
from privdyn.config import RunConfig
from privdyn.store import atomic
from privdyn.store.arrays import CheckpointArray
from privdyn.store.rundir import RunDir


def identity_query(cfg: RunConfig) -> int:
    """Index of the identity query (the first query when identity is not scored)."""
    return cfg.queries.index("identity") if "identity" in cfg.queries else 0


def model_metrics(cfg: RunConfig, run: RunDir, membership: np.ndarray) -> dict[str, np.ndarray]:
    """Per checkpoint and model: train/test accuracy and loss ``[T, M]``, under the identity query."""
    q = identity_query(cfg)

    def mean(name: str, split: str, z: np.ndarray | None) -> np.ndarray:
        return model_level.per_model_mean(run.checkpoints(run.signal_path(name, split), f"signal {name}"), z, q)

    return {"train_accuracy": mean("correct", "pool", membership), "train_loss": mean("loss", "pool", membership),
            "test_accuracy": mean("correct", "test", None), "test_loss": mean("loss", "test", None)}


def _num(x: float) -> float | None:
    """A float for summary.json, None for NaN (missing: keeps the file valid JSON)."""
    return float(x) if np.isfinite(x) else None


def difficulty_signals(cfg: RunConfig, run: RunDir) -> dict[str, CheckpointArray | None]:
    """``[T, M, N]`` arrays of the pool's correct, loss and el2n signals under the identity
    query (the first query when identity is not scored); el2n is None in runs that lack it."""
    q = identity_query(cfg)
    out: dict[str, CheckpointArray | None] = {
        name: run.checkpoints(run.signal_path(name), f"signal {name}").at_query(q) for name in ("correct", "loss")}
    el2n = run.signal_path("el2n")
    out["el2n"] = run.checkpoints(el2n, "signal el2n").at_query(q) if el2n.exists() else None
    return out


@dataclass(frozen=True)
class TrainingMeasures:
    """What the analysis reads from the trained signals alone: the same for every attack and
    rule, so a stage that analyses several attacks computes it once."""

    metrics: dict[str, np.ndarray]      # per checkpoint and model: train/test accuracy and loss
    difficulty: dict[str, np.ndarray]   # per sample: the learning-difficulty measures
    has_el2n: bool                      # False for runs trained before el2n was stored
    k_early: int                        # the checkpoint index early EL2N is read at


def training_measures(cfg: RunConfig, run: RunDir, membership: np.ndarray, epochs: np.ndarray) -> TrainingMeasures:
    sig = difficulty_signals(cfg, run)
    assert sig["correct"] is not None and sig["loss"] is not None  # every run records them
    k_early = difficulty.early_index(epochs, cfg.analysis.el2n_fraction)
    return TrainingMeasures(
        model_metrics(cfg, run, membership),
        difficulty.difficulty_measures(sig["correct"], sig["loss"], sig["el2n"], membership, k_early),
        sig["el2n"] is not None, k_early)


def dynamics_results(cfg: RunConfig, plane: dict[str, np.ndarray], st: np.ndarray,
                     epochs: np.ndarray, tm: TrainingMeasures) -> dict[str, Any]:
    """Speed, transitions, time to high, clusters, difficulty and early determination.

    Returns the extra per-sample and per-epoch columns (``sample``, ``epoch``), the tables
    ``transitions``, ``clusters``, ``difficulty_spearman``, ``difficulty_deciles`` and the
    ``summary`` entries.
    """
    ac = cfg.analysis
    measures = tm.difficulty
    adv, high_final = plane["adv"], st[-1] == dynamics.HIGH
    speed, net = dynamics.encoding_speed(plane["fpr"], plane["tpr"], epochs)
    counts = dynamics.transition_counts(st)
    to_high = dynamics.p_to_high(counts)
    first_high, settled = dynamics.time_to_high(st, epochs)
    clus = clusters.cluster_trajectories(adv, ac.n_clusters, cfg.seed, ac.silhouette_sample)
    clus_table = clusters.describe_clusters(clus.labels, adv, first_high, epochs, ac.states.bands())
    spearman = difficulty.spearman_table(measures, {"final_advantage": adv[-1], "final_auc": plane["auc"][-1]},
                                         ac.n_bootstrap, cfg.seed)
    deciles = difficulty.decile_table(measures, adv[-1], plane["auc"][-1], high_final)
    vulnerable = early.final_vulnerable(adv[-1], high_final)
    recall = early.recall_curve(adv, vulnerable)
    to_final = early.spearman_to_final(adv)
    # 0.7 always: epoch_recall_0.7 is part of summary.json's public surface
    reached = early.earliest_epochs(recall, epochs, sorted({*ac.recall_levels, 0.7}))
    sp = dynamics.speed_summary(speed, high_final)
    peak = dynamics.peak(to_high)
    summary = {
        "encoding_speed_mean": _num(sp["mean"]), "encoding_speed_median": _num(sp["median"]),
        "encoding_speed_high_mean": _num(sp["high_mean"]),
        "net_encoding_rate_mean": _num(float(np.mean(net))),
        "peak_p_to_high": _num(peak),
        "peak_p_to_high_epoch": int(epochs[int(np.nanargmax(to_high))]) if np.isfinite(peak) else None,
        "p_to_high": [_num(v) for v in to_high],
        "n_ever_high": int(np.isfinite(first_high).sum()),
        "time_to_high_median": _num(float(np.median(first_high[np.isfinite(first_high)]))
                                    if np.isfinite(first_high).any() else float("nan")),
        "n_clusters": clus.k, "silhouette": _num(clus.silhouette),
        "clusters": json.loads(clus_table.to_json(orient="records")),
        "n_vulnerable": int(vulnerable.sum()),
        "vulnerable_set": "high at e_T" if high_final.any() else "top 1% by A(e_T)",
        "recall_curve": [_num(v) for v in recall],
        "spearman_to_final": [_num(v) for v in to_final],
        **{f"epoch_recall_{lv:g}": _num(e) for lv, (e, _) in reached.items()},
        **{f"fraction_recall_{lv:g}": _num(f) for lv, (_, f) in reached.items()},
        "early_el2n_epoch": int(epochs[tm.k_early]),
        "spearman_difficulty": {
            m: {r.target: {"rho": _num(r.rho), "ci_low": _num(r.ci_low), "ci_high": _num(r.ci_high)}
                for r in spearman[spearman.measure == m].itertuples()}
            | ({"note": "signal el2n not stored: retrain with this privdyn version"}
               if m == "early_el2n" and not tm.has_el2n else {})
            for m in difficulty.MEASURES},
    }
    return {
        "sample": {
            "encoding_speed": speed, "net_encoding_rate": net,
            "time_to_high": first_high, "settled_high": settled,
            "cluster": clus.labels,
            "cluster_name": pd.Categorical.from_codes(clus.labels, list(clus_table["name"])),
            "finally_vulnerable": vulnerable, **measures,
        },
        "epoch": {"recall": recall, "spearman_to_final": to_final,
                  "p_to_high": np.append(to_high, np.nan)},
        "transitions": dynamics.transitions_table(counts, epochs),
        "clusters": clus_table, "difficulty_spearman": spearman, "difficulty_deciles": deciles,
        "summary": summary,
    }


def analyze(cfg: RunConfig, run: RunDir, attack: str, rule: str,
            measures: TrainingMeasures | None = None) -> dict[str, Any]:
    """Analyse one attack under one rule; write its tables and return its summary entries.

    ``measures`` (from :func:`training_measures`) is computed here when not given.
    """
    membership = run.load_array(run.path / "membership.npy", "membership")
    epochs = run.load_array(run.path / "epochs.npy", "checkpoint epochs")
    scores = run.load_scores(attack)
    T, M, N = scores.shape
    plane = compute_plane(scores, membership, rule)
    st = population.states(plane["adv"], cfg.analysis.states.bands())
    com = population.centre_of_mass(plane["fpr"], plane["tpr"])
    disp, path = population.com_displacement_and_path(com)
    entropy = population.spatial_entropy(plane["fpr"], plane["tpr"], cfg.grid_size())
    if measures is None:
        measures = training_measures(cfg, run, membership, epochs)
    metrics = measures.metrics
    dyn = dynamics_results(cfg, plane, st, epochs, measures)

    alphas = sorted(set(cfg.analysis.report_alphas) | {0.001, 0.01})
    ml = model_level.checkpoint_metrics(scores, membership, alphas, cfg.analysis.model_bootstrap, cfg.seed)
    tpr_at = {a: ml[f"tpr_at_fpr_{a:g}"] for a in alphas}
    auc = ml["auc"]
    tpr_ci = {a: np.column_stack([ml[f"tpr_at_fpr_{a:g}_ci_low"], ml[f"tpr_at_fpr_{a:g}_ci_high"]]) for a in alphas}

    out_dir = run.analysis_dir(attack, rule)
    atomic.save_npz(out_dir / "plane.npz", compress=True, **plane, epochs=epochs)
    sample_epoch = pd.DataFrame({
        "sample": np.tile(np.arange(N), T), "epoch": np.repeat(epochs, N),
        "fpr": plane["fpr"].ravel(), "tpr": plane["tpr"].ravel(), "advantage": plane["adv"].ravel(),
        "auc": plane["auc"].ravel(),
        "state": pd.Categorical.from_codes(st.ravel(), population.STATE_NAMES),
    })
    sample = pd.DataFrame({
        "sample": np.arange(N),
        "final_fpr": plane["fpr"][-1], "final_tpr": plane["tpr"][-1], "final_advantage": plane["adv"][-1],
        "final_auc": plane["auc"][-1],
        "final_state": pd.Categorical.from_codes(st[-1], population.STATE_NAMES),
        "max_advantage": plane["adv"].max(axis=0),
        **dyn["sample"],
    })
    state_counts = {f"n_{name}": (st == k).sum(axis=1) for k, name in enumerate(population.STATE_NAMES)}
    epoch_table = pd.DataFrame({
        "epoch": epochs, "tau": plane["tau"], "com_fpr": com[:, 0], "com_tpr": com[:, 1],
        "entropy_bits": entropy, **ml,
        **{k: v.mean(axis=1) for k, v in metrics.items()},
        "generalisation_gap": (metrics["train_accuracy"] - metrics["test_accuracy"]).mean(axis=1),
        **state_counts,
        **dyn["epoch"],
    })
    atomic.write_parquet(out_dir / "sample_epoch.parquet", sample_epoch)
    atomic.write_parquet(out_dir / "sample.parquet", sample)
    atomic.write_parquet(out_dir / "epoch.parquet", epoch_table)
    for name in ("transitions", "clusters", "difficulty_spearman", "difficulty_deciles"):
        atomic.write_parquet(out_dir / f"{name}.parquet", dyn[name])

    return {
        "attack": attack, "rule": rule, "epochs": epochs.tolist(),
        "test_accuracy": epoch_table["test_accuracy"].tolist(),
        "train_accuracy": epoch_table["train_accuracy"].tolist(),
        **{f"tpr_at_fpr_{a:g}": v.tolist() for a, v in tpr_at.items()},
        "auc": auc.tolist(),
        "balanced_accuracy": ml["balanced_accuracy"].tolist(),
        **{f"tpr_at_fpr_{a:g}_ci": v.tolist() for a, v in tpr_ci.items()},
        "com_displacement_pp": disp, "com_path_pp": path,
        "entropy_bits": entropy.tolist(), "delta_entropy_bits": float(entropy[-1] - entropy[0]),
        "n_high_final": int((st[-1] == dynamics.HIGH).sum()),
        **dyn["summary"],
        "final": {"test_accuracy": float(epoch_table["test_accuracy"].iloc[-1]),
                  "auc": float(auc[-1]),
                  "balanced_accuracy": float(ml["balanced_accuracy"][-1]),
                  **{f"tpr_at_fpr_{a:g}": float(v[-1]) for a, v in tpr_at.items()},
                  **{f"tpr_at_fpr_{a:g}_ci": v[-1].tolist() for a, v in tpr_ci.items()}},
    }


def sensitivity_stage(cfg: RunConfig, run: RunDir, membership: np.ndarray, epochs: np.ndarray,
                      measures: TrainingMeasures) -> dict[str, Any]:
    """``analysis/sensitivity.parquet`` for every attack; returns each attack's summary entry."""
    tables = []
    for attack in cfg.attacks:
        variants = sensitivity.variants_for(attack, cfg.training.n_models, cfg.analysis.rule, cfg.grid_size(),
                                            cfg.analysis.states.bands())
        scores = run.load_scores(attack)
        table = sensitivity.sensitivity_table(scores, membership, epochs, measures.difficulty["consistency"],
                                              variants)
        tables.append(table.assign(attack=attack))
    table = pd.concat(tables, ignore_index=True)
    table.insert(0, "attack", table.pop("attack"))
    atomic.write_parquet(run.path / "analysis" / "sensitivity.parquet", table)
    return sensitivity.summarise_by_attack(table)


def write_summary(cfg: RunConfig, run: RunDir, per_attack: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``summary.json``: the default attack's entries at top level, every attack under ``attacks``."""
    default = per_attack[cfg.default_attack()]
    summary = {
        "name": cfg.name, "dataset": cfg.dataset.name, "model": cfg.model.arch,
        "optimizer": cfg.training.optimizer.name, "n_models": cfg.training.n_models,
        "n_samples": int(run.load_array(run.path / "membership.npy", "membership").shape[1]),
        "default_attack": cfg.default_attack(),
        **{k: v for k, v in default.items() if k != "attack"},
        "attacks": per_attack,
    }
    atomic.write_json(run.summary_path, summary)
    return summary
