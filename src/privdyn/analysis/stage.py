"""The analyze stage: plane, population geometry and model-level metrics for one attack and rule.

Reads the score and signal arrays of a run, writes Parquet tables and a ``plane.npz`` under
``analysis/ATTACK/RULE/``, and returns the summary entries for ``summary.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from privdyn.analysis import model_level, population
from privdyn.analysis.plane import compute_plane
from privdyn.config import RunConfig
from privdyn.store import atomic
from privdyn.store.rundir import RunDir


def model_metrics(run: RunDir, membership: np.ndarray) -> dict[str, np.ndarray]:
    """Per checkpoint and model: train/test accuracy and loss ``[T, M]``."""
    return {
        "train_accuracy": model_level.per_model_mean(run.load_array(run.signal_path("correct"), "signals"), membership),
        "train_loss": model_level.per_model_mean(run.load_array(run.signal_path("loss"), "signals"), membership),
        "test_accuracy": model_level.per_model_mean(run.load_array(run.signal_path("correct", "test"), "signals"), None),
        "test_loss": model_level.per_model_mean(run.load_array(run.signal_path("loss", "test"), "signals"), None),
    }


def analyze(cfg: RunConfig, run: RunDir, attack: str, rule: str) -> dict[str, Any]:
    """Analyse one attack under one rule; write its tables and return its summary entries."""
    membership = run.load_array(run.path / "membership.npy", "membership", mmap=False)
    epochs = run.load_array(run.path / "epochs.npy", "checkpoint epochs", mmap=False)
    scores = run.load_array(run.score_path(attack), f"scores of {attack}")
    T, M, N = scores.shape
    plane = compute_plane(scores, membership, rule)
    st = population.states(plane["adv"], cfg.analysis.states)
    com = population.centre_of_mass(plane["fpr"], plane["tpr"])
    disp, path = population.com_displacement_and_path(com)
    entropy = population.spatial_entropy(plane["fpr"], plane["tpr"], cfg.grid_size())
    metrics = model_metrics(run, membership)

    alphas = sorted(set(cfg.analysis.report_alphas) | {0.001, 0.01})
    tpr_at = {a: np.empty(T) for a in alphas}
    auc = np.empty(T)
    for t in range(T):
        s = np.asarray(scores[t], dtype=np.float64)
        auc[t] = model_level.global_auc(s, membership)
        for a in alphas:
            tpr_at[a][t] = model_level.tpr_at_fpr(s, membership, a)

    out_dir = run.analysis_dir(attack, rule)
    atomic.save_npz(out_dir / "plane.npz", **plane, epochs=epochs)
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
    })
    state_counts = {f"n_{name}": (st == k).sum(axis=1) for k, name in enumerate(population.STATE_NAMES)}
    epoch_table = pd.DataFrame({
        "epoch": epochs, "tau": plane["tau"], "com_fpr": com[:, 0], "com_tpr": com[:, 1],
        "entropy_bits": entropy, "auc": auc,
        **{f"tpr_at_fpr_{a:g}": v for a, v in tpr_at.items()},
        **{k: v.mean(axis=1) for k, v in metrics.items()},
        "generalisation_gap": (metrics["train_accuracy"] - metrics["test_accuracy"]).mean(axis=1),
        **state_counts,
    })
    atomic.write_parquet(out_dir / "sample_epoch.parquet", sample_epoch)
    atomic.write_parquet(out_dir / "sample.parquet", sample)
    atomic.write_parquet(out_dir / "epoch.parquet", epoch_table)

    return {
        "attack": attack, "rule": rule, "epochs": epochs.tolist(),
        "test_accuracy": epoch_table["test_accuracy"].tolist(),
        "train_accuracy": epoch_table["train_accuracy"].tolist(),
        **{f"tpr_at_fpr_{a:g}": v.tolist() for a, v in tpr_at.items()},
        "auc": auc.tolist(),
        "com_displacement_pp": disp, "com_path_pp": path,
        "entropy_bits": entropy.tolist(), "delta_entropy_bits": float(entropy[-1] - entropy[0]),
        "n_high_final": int((st[-1] == 3).sum()),
        "final": {"test_accuracy": float(epoch_table["test_accuracy"].iloc[-1]),
                  "auc": float(auc[-1]),
                  **{f"tpr_at_fpr_{a:g}": float(v[-1]) for a, v in tpr_at.items()}},
    }


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
