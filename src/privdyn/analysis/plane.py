"""The vulnerability plane: per-sample FPR, TPR, advantage and AUC at one checkpoint."""

from __future__ import annotations

import numpy as np

from privdyn.analysis.checkpoints import Checkpoints
from privdyn.analysis.model_level import fpr_threshold, rank_counts
from privdyn.analysis.rules import parse_rule
from privdyn.errors import DataError


def check_finite(scores: np.ndarray, what: str) -> None:
    """Refuse non-finite scores: the plane is undefined for them (``what`` names them)."""
    bad = ~np.isfinite(scores)
    if bad.any():
        raise DataError(
            f"{what}: {int(bad.sum())} scores are NaN or infinite, so the plane is undefined. "
            "This comes from non-finite model outputs (diverged training: lower the learning rate) "
            "or an attack given degenerate references."
        )


def threshold(scores: np.ndarray, membership: np.ndarray, rule: str) -> float:
    """Tau for one checkpoint: :func:`~privdyn.analysis.model_level.fpr_threshold`, or a fixed score."""
    kind, value = parse_rule(rule)
    return float(value) if kind == "score" else fpr_threshold(scores, membership, value)


def plane_at(scores: np.ndarray, membership: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """(FPR_i, TPR_i) for every sample: the share of OUT / IN models whose score exceeds tau."""
    flagged = scores > tau
    n_in = membership.sum(axis=0)
    tpr = (flagged & membership).sum(axis=0) / n_in
    fpr = (flagged & ~membership).sum(axis=0) / (membership.shape[0] - n_in)
    return fpr, tpr


def sample_auc(scores: np.ndarray, membership: np.ndarray) -> np.ndarray:
    """Per-sample ROC AUC of IN vs OUT scores over the models, ties 1/2 (the model-level AUC's
    :func:`~privdyn.analysis.model_level.rank_counts` along the model axis)."""
    return rank_counts(scores, membership).auc


def compute_plane(scores: Checkpoints, membership: np.ndarray, rule: str) -> dict[str, np.ndarray]:
    """The plane over all checkpoints: ``fpr, tpr, adv, auc`` ``[T, N]`` and ``tau`` ``[T]``.

    ``scores`` is ``[T, M, N]`` (a memmap is fine: one checkpoint is read at a time).
    """
    T, _, N = scores.shape
    out: dict[str, np.ndarray] = {k: np.empty((T, N)) for k in ("fpr", "tpr", "auc")}
    out["tau"] = np.empty(T)
    for t in range(T):
        s = np.asarray(scores[t], dtype=np.float64)
        check_finite(s, f"checkpoint {t}")
        tau = threshold(s, membership, rule)
        out["tau"][t] = tau
        out["fpr"][t], out["tpr"][t] = plane_at(s, membership, tau)
        out["auc"][t] = sample_auc(s, membership)
    out["adv"] = out["tpr"] - out["fpr"]
    return out
