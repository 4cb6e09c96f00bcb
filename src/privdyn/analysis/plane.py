"""The vulnerability plane: per-sample FPR, TPR, advantage and AUC at one checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Plane:
    """Every sample's place on the plane at every checkpoint: ``fpr, tpr, adv, auc`` ``[T, N]``
    and the threshold ``tau`` ``[T]``."""

    fpr: np.ndarray
    tpr: np.ndarray
    auc: np.ndarray
    tau: np.ndarray

    @property
    def adv(self) -> np.ndarray:
        """The advantage A = TPR - FPR ``[T, N]``."""
        return self.tpr - self.fpr

    @property
    def shape(self) -> tuple[int, int]:
        """(T, N)."""
        T, N = self.fpr.shape
        return T, N

    def arrays(self) -> dict[str, np.ndarray]:
        """The named arrays, as ``plane.npz`` stores them (adv included, for readers without privdyn)."""
        return {"fpr": self.fpr, "tpr": self.tpr, "adv": self.adv, "auc": self.auc, "tau": self.tau}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Plane:
        """The inverse of :meth:`arrays` (extra entries such as ``epochs`` are ignored)."""
        return cls(*(np.asarray(arrays[k]) for k in ("fpr", "tpr", "auc", "tau")))


def compute_plane(scores: Checkpoints, membership: np.ndarray, rule: str) -> Plane:
    """The plane over all checkpoints of ``scores`` ``[T, M, N]`` under ``rule``."""
    points, auc = _sweep(scores, membership, [rule], with_auc=True)
    fpr, tpr, tau = points[rule]
    assert auc is not None
    return Plane(fpr, tpr, auc, tau)


def operating_points(scores: Checkpoints, membership: np.ndarray, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) ``[T, N]`` alone: the plane without the per-sample AUC, its costly part."""
    return operating_points_of(scores, membership, [rule])[rule]


def operating_points_of(scores: Checkpoints, membership: np.ndarray,
                        rules: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """:func:`operating_points` under several rules, from one read of each checkpoint."""
    points, _ = _sweep(scores, membership, list(dict.fromkeys(rules)), with_auc=False)
    return {rule: (fpr, tpr) for rule, (fpr, tpr, _) in points.items()}


def _sweep(scores: Checkpoints, membership: np.ndarray, rules: list[str], with_auc: bool
           ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], np.ndarray | None]:
    """One checkpoint read at a time (a lazily read array is fine): per rule FPR, TPR and tau,
    and the rule-free per-sample AUC when asked."""
    T, _, N = scores.shape
    points = {rule: (np.empty((T, N)), np.empty((T, N)), np.empty(T)) for rule in rules}
    auc = np.empty((T, N)) if with_auc else None
    for t in range(T):
        s = np.asarray(scores[t], dtype=np.float64)
        check_finite(s, f"checkpoint {t}")
        for rule, (fpr, tpr, tau) in points.items():
            tau[t] = threshold(s, membership, rule)
            fpr[t], tpr[t] = plane_at(s, membership, tau[t])
        if auc is not None:
            auc[t] = sample_auc(s, membership)
    return points, auc
