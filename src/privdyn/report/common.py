"""Choices shared by the interactive and the static figures: colours, labels, subsets, jitter."""

from __future__ import annotations

from typing import Any

import numpy as np

from privdyn.analysis.population import most_vulnerable
from privdyn.report.data import RunData

STATE_COLOURS = ("#9e9e9e", "#4c9be8", "#f2a33a", "#d62728")

#: Per-sample difficulty measures the analysis may write, with how to read them.
DIFFICULTY = {
    "iteration_learned": "iteration learned (checkpoint index; higher = learned later)",
    "forgetting_events": "forgetting events",
    "mean_train_loss": "mean training loss",
    "consistency": "consistency (C-score estimate; lower = harder)",
    "early_el2n": "early EL2N",
}
#: Per-sample timing columns (epochs), with labels.
TIMING = {"time_to_high": "first epoch in the high state", "settled_high": "epoch from which it stays high"}
SPEED = {"encoding_speed": "path speed v_i (plane units per epoch)",
         "net_encoding_rate": "net encoding rate (A_i per epoch)"}


def display_subset(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``min(n, max_points)`` samples."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def frame_indices(t: int, max_frames: int) -> np.ndarray:
    """Checkpoint indices for the animation: all of them, or ``max_frames`` spread evenly
    (always the first and the last)."""
    if t <= max_frames:
        return np.arange(t)
    return np.unique(np.round(np.linspace(0, t - 1, max_frames)).astype(int))


def plane_jitter(d: RunData, idx: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed offset per shown sample, under a third of the plane's resolution (1/n_out, 1/n_in),
    so the points sitting on the same grid position become visible as a cloud."""
    step = 1.0 / (d.n_models / 2)
    rng = np.random.default_rng(seed + 1)
    jitter = rng.uniform(-step / 3, step / 3, size=(2, len(idx))).astype(np.float32)
    return jitter[0], jitter[1]


def top_samples(d: RunData, k: int) -> np.ndarray:
    """The k most vulnerable samples (:func:`~privdyn.analysis.population.most_vulnerable`)."""
    return most_vulnerable(d.plane.adv[-1], d.plane.auc[-1], k)


def subplots(*args: Any, figsize: tuple[float, float], dpi: float | None = None, **kwargs: Any) -> tuple[Any, Any]:
    """A figure and its axes (``Figure.subplots`` arguments), made without pyplot: building a
    report never switches the backend of the user's session or keeps figures alive."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(*args, **kwargs)
