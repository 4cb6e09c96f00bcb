"""Matplotlib figures of one analysed run (PNG for the report, PDF for papers)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from privdyn.analysis.population import STATE_NAMES  # noqa: E402

STATE_COLOURS = ("#9e9e9e", "#4c9be8", "#f2a33a", "#d62728")


def _save(fig: plt.Figure, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=130, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def pick_epochs(epochs: np.ndarray, k: int = 4) -> list[int]:
    """Indices of k checkpoints spread over training (first, last and evenly between)."""
    idx = np.unique(np.round(np.linspace(0, len(epochs) - 1, min(k, len(epochs)))).astype(int))
    return idx.tolist()


def plane_panels(plane: dict[str, np.ndarray], state: np.ndarray, epochs: np.ndarray, out: Path,
                 rng_seed: int = 0, max_points: int = 20000) -> list[Path]:
    """The vulnerability plane at four checkpoints, points coloured by state (jittered slightly)."""
    idx = pick_epochs(epochs)
    n = plane["fpr"].shape[1]
    rng = np.random.default_rng(rng_seed)
    sel = rng.choice(n, size=min(n, max_points), replace=False)
    fig, axes = plt.subplots(1, len(idx), figsize=(3.3 * len(idx), 3.4), sharey=True)
    for ax, t in zip(np.atleast_1d(axes), idx, strict=True):
        jit = rng.uniform(-0.012, 0.012, size=(2, len(sel)))
        for k, name in enumerate(STATE_NAMES):
            m = state[t, sel] == k
            ax.scatter(plane["fpr"][t, sel][m] + jit[0][m], plane["tpr"][t, sel][m] + jit[1][m], s=4,
                       alpha=0.5, color=STATE_COLOURS[k], label=f"{name} ({(state[t] == k).sum()})", lw=0)
        ax.plot([0, 1], [0, 1], ls=":", color="k", lw=0.8)
        ax.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.03), xlabel="per-sample FPR", title=f"epoch {epochs[t]}")
        ax.legend(fontsize=7, loc="lower right", markerscale=2)
    np.atleast_1d(axes)[0].set_ylabel("per-sample TPR")
    fig.suptitle("Vulnerability plane" + (f" ({len(sel)} of {n} samples shown)" if len(sel) < n else ""))
    return _save(fig, out, "plane")


def com_path(epoch_table: pd.DataFrame, out: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(4.2, 4))
    x, y = epoch_table["com_fpr"] * 100, epoch_table["com_tpr"] * 100
    ax.plot(x, y, "-", color="#555")
    sc = ax.scatter(x, y, c=epoch_table["epoch"], cmap="viridis", zorder=3)
    fig.colorbar(sc, ax=ax, label="epoch")
    ax.set(xlabel="mean FPR_i (%)", ylabel="mean TPR_i (%)", title="Centre of mass of the plane")
    return _save(fig, out, "com_path")


def attack_and_accuracy(epoch_table: pd.DataFrame, out: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    e = epoch_table["epoch"]
    ax.plot(e, epoch_table["tpr_at_fpr_0.01"], "o-", label="TPR at 1% FPR", color="#d62728")
    ax.plot(e, epoch_table["tpr_at_fpr_0.001"], "s--", label="TPR at 0.1% FPR", color="#9467bd")
    ax.plot(e, epoch_table["train_accuracy"], "-", label="train accuracy", color="#2ca02c")
    ax.plot(e, epoch_table["test_accuracy"], "-", label="test accuracy", color="#1f77b4")
    ax.set(xlabel="epoch", ylim=(0, 1.02), title="Attack success and accuracy over training")
    ax.legend(fontsize=8)
    return _save(fig, out, "tpr_accuracy")


def entropy_curve(epoch_table: pd.DataFrame, out: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(epoch_table["epoch"], epoch_table["entropy_bits"], "o-")
    ax.set(xlabel="epoch", ylabel="H (bits)", title="Spatial entropy of the plane")
    return _save(fig, out, "entropy")


def state_shares(epoch_table: pd.DataFrame, out: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    counts = np.stack([epoch_table[f"n_{s}"] for s in STATE_NAMES])
    shares = counts / counts.sum(axis=0, keepdims=True)
    ax.stackplot(epoch_table["epoch"], shares, labels=STATE_NAMES, colors=STATE_COLOURS, alpha=0.85)
    ax.set(xlabel="epoch", ylabel="share of samples", ylim=(0, 1), title="Samples per vulnerability state")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, out, "states")
