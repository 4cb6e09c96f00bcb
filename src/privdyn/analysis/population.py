"""Population-level geometry of the plane: states, centre of mass, spatial entropy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STATE_NAMES = ("safe", "low", "medium", "high")


@dataclass(frozen=True)
class Bands:
    """State bands on the advantage A: safe A < low <= low < medium <= medium < high <= high."""

    low: float = 0.1
    medium: float = 0.3
    high: float = 0.6

    def label(self) -> str:
        """``low/medium/high``, for tables and legends."""
        return f"{self.low:g}/{self.medium:g}/{self.high:g}"


def states(adv: np.ndarray, bands: Bands) -> np.ndarray:
    """State index per entry: 0 safe (A < low), 1 low, 2 medium, 3 high (A >= high)."""
    return np.searchsorted(np.array([bands.low, bands.medium, bands.high]), adv, side="right")


def centre_of_mass(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    """c(t) = mean_i p_i(t), shape ``[T, 2]`` as (FPR, TPR)."""
    return np.stack([fpr.mean(axis=1), tpr.mean(axis=1)], axis=1)


def com_displacement_and_path(com: np.ndarray) -> tuple[float, float]:
    """||c(e_T) - c(e_1)|| and sum_t ||c(t+1) - c(t)||, both in percentage points."""
    disp = float(np.linalg.norm(com[-1] - com[0])) * 100
    path = float(np.linalg.norm(np.diff(com, axis=0), axis=1).sum()) * 100
    return disp, path


def grid_cells(fpr: np.ndarray, tpr: np.ndarray, g: int) -> np.ndarray:
    """Cell index (row-major over TPR then FPR) of each point on a G x G grid of [0,1]^2."""
    fx = np.minimum((fpr * g).astype(np.int64), g - 1)
    ty = np.minimum((tpr * g).astype(np.int64), g - 1)
    return ty * g + fx


def spatial_entropy(fpr: np.ndarray, tpr: np.ndarray, g: int) -> np.ndarray:
    """H(t) = -sum_c q_c log2 q_c over grid cells, per checkpoint (inputs ``[T, N]``)."""
    T, N = fpr.shape
    cells = grid_cells(fpr, tpr, g)
    counts = np.zeros((T, g * g))
    np.add.at(counts, (np.repeat(np.arange(T), N), cells.ravel()), 1.0)
    q = counts / N
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(q > 0, q * np.log2(q), 0.0).sum(axis=1)
    return h


def most_vulnerable(final_adv: np.ndarray, final_auc: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k most vulnerable samples: by final advantage, then final AUC, then index
    (a total order, so the ranking never depends on how ties happen to be sorted)."""
    order = np.lexsort((np.arange(len(final_adv)), -np.asarray(final_auc), -np.asarray(final_adv)))
    return order[:k]
