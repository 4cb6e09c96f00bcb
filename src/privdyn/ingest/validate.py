"""Checks of imported arrays; each failure is one :class:`PrivdynError` paragraph naming the file,
what was found, what was expected and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from privdyn.errors import PrivdynError
from privdyn.ingest.npy import shape_str
from privdyn.training.membership import checked_membership

#: Sample indices listed in a message before "and N more".
SHOWN = 5


def _first(idx: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:SHOWN])
    return shown + (f" and {len(idx) - SHOWN} more" if len(idx) > SHOWN else "")


def check_shape(arr: np.ndarray, expected: tuple[int | None, ...], names: str, path: Path, what: str) -> None:
    """Raise unless ``arr.shape`` matches ``expected`` (None: any size), named ``names`` (e.g. ``[T, M, N]``)."""
    ok = arr.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, arr.shape))
    if not ok:
        raise PrivdynError(f"{path} has shape {list(arr.shape)}, but {what} must have shape {names} = "
                           f"{shape_str(expected)} (sizes from the other files of the source). Write it with "
                           "that shape (docs/import.md).")


#: The smallest pool privdyn audits (``dataset.n_pool``: every model trains on part of it, in batches of 2).
MIN_POOL = 4


def check_pool_size(n: int, path: Path) -> None:
    """Refuse a pool (the labels ``path`` give ``n`` samples) that is empty or smaller than :data:`MIN_POOL`."""
    if n == 0:
        raise PrivdynError(f"{path} holds no samples (0 labels), so the source has an empty pool and nothing to "
                           "audit. Write the labels, membership and logits of the pool's samples (N >= "
                           f"{MIN_POOL}; docs/import.md).")
    if n < MIN_POOL:
        raise PrivdynError(f"{path} holds only {n} samples, but privdyn audits a pool of at least {MIN_POOL} "
                           "(the limit of dataset.n_pool). Import the logits of more samples.")


def check_test_size(n: int, labels: Path, logits: Path) -> None:
    """Refuse a test split of zero samples (its ``labels`` file and its ``logits`` file or folder)."""
    if n == 0:
        raise PrivdynError(f"{labels} holds no samples (0 labels), so the test split it forms with {logits} is "
                           f"empty. Delete {labels.name} and {logits.name} to import without a test split, or "
                           "fill both with the test samples' labels and logits.")


def check_integer(arr: np.ndarray, path: Path, what: str) -> np.ndarray:
    """``arr`` as int64, refusing non-integer dtypes (floats would hide a mix-up of files)."""
    if arr.dtype.kind not in "iu":
        raise PrivdynError(f"{path} holds {arr.dtype} values, but {what} must be integers. Save it as an "
                           "integer array (e.g. numpy.save(path, a.astype(numpy.int64))).")
    return np.array(arr, dtype=np.int64)


def check_labels(labels: np.ndarray, n_classes: int, path: Path) -> np.ndarray:
    """The class labels ``[N]`` as int64, each in ``[0, n_classes)`` (C from the logits)."""
    check_shape(labels, (None,), "[N]", path, "the labels")
    y = check_integer(labels, path, "the labels")
    bad = np.flatnonzero((y < 0) | (y >= n_classes))
    if len(bad):
        raise PrivdynError(f"{path}: {len(bad)} labels are outside [0, {n_classes}) (C = {n_classes} classes, "
                           f"from the last axis of the logits), at samples {_first(bad)} (e.g. label "
                           f"{int(y[bad[0]])}). Labels must index the logits' classes: fix the labels, or give "
                           "logits with one column per class.")
    return y


def check_membership(membership: np.ndarray, n: int, path: Path) -> np.ndarray:
    """The membership ``[M, N]`` as bool: M >= 2 models, every sample IN for one model and OUT for another."""
    check_shape(membership, (None, n), "[M, N]", path, "the membership (model m trained on sample i)")
    if membership.shape[0] < 2:
        raise PrivdynError(f"{path}: the source has {membership.shape[0]} model(s), but a membership-inference "
                           "audit needs at least 2 (every sample IN for one model and OUT for another; at least 4 "
                           "for attacks that fit reference distributions). Import more models.")
    return checked_membership(membership, str(path))


def check_epochs(epochs: np.ndarray, path: Path) -> np.ndarray:
    """The checkpoint epochs ``[T]`` as int64: non-negative, strictly increasing, at least one above 0."""
    check_shape(epochs, (None,), "[T]", path, "the checkpoint epochs")
    e = check_integer(epochs, path, "the checkpoint epochs")
    if len(e) == 0:
        raise PrivdynError(f"{path} lists no checkpoint epochs: give at least one (the epochs the logits were "
                           "taken at, e.g. [1, 2, 3]).")
    if (e < 0).any() or (np.diff(e) <= 0).any():
        raise PrivdynError(f"{path} holds epochs {e.tolist()}, but checkpoint epochs must be non-negative "
                           "integers in strictly increasing order (0 = initialisation), one per checkpoint of "
                           "the logits. Sort the checkpoints (and the logits with them) and drop duplicates.")
    if e[-1] == 0:
        raise PrivdynError(f"{path} holds only epoch 0 (initialisation): import at least one trained checkpoint.")
    return e


def check_finite(logits: np.ndarray, where: str, epoch: int) -> None:
    """Raise when a checkpoint's logits ``[M, N, Q, C]`` hold a NaN or an infinity."""
    finite = np.isfinite(logits)
    if not finite.all():
        m, i, q, c = (int(v) for v in np.argwhere(~finite)[0])
        raise PrivdynError(f"{where}: {int((~finite).sum())} logits at epoch {epoch} are not finite (the first: "
                           f"{logits[m, i, q, c]} for model {m}, sample {i}, query {q}, class {c}). Signals of "
                           "diverged or broken models would be meaningless: fix or drop that checkpoint.")


@dataclass(frozen=True)
class MembershipStats:
    """Per-sample IN counts of a membership: their range, and whether it is the balanced design."""

    n_models: int
    in_min: int
    in_max: int
    pairs: bool      # models 2j and 2j+1 complementary (the pair reference rule applies)

    @property
    def balanced(self) -> bool:
        """Every sample IN for exactly half of the models."""
        return self.n_models % 2 == 0 and self.in_min == self.in_max == self.n_models // 2

    def as_dict(self) -> dict[str, int | bool]:
        """The manifest's record of the membership."""
        return {"in_count_min": self.in_min, "in_count_max": self.in_max, "balanced": self.balanced,
                "complementary_pairs": self.pairs}

    def warnings(self) -> list[str]:
        """What the user should know about this membership (nothing for the balanced pair design)."""
        out = []
        if not self.balanced:
            out.append(f"the membership is not balanced: samples are IN for {self.in_min} to {self.in_max} of "
                       f"{self.n_models} models (balanced: {self.n_models / 2:g} each). The plane stays defined "
                       "(TPR_i and FPR_i are fractions of each sample's IN and OUT models), but samples with few "
                       "IN or OUT models have coarser rates; the reference rule falls back to balanced.")
        elif not self.pairs:
            out.append("the models do not form complementary pairs (2j, 2j+1): the pair reference rule falls "
                       "back to balanced.")
        low = min(self.in_min, self.n_models - self.in_max)
        if low < 2:
            out.append(f"some samples have only {low} IN or OUT model(s): attacks that fit reference "
                       "distributions need at least 2 on each side and will refuse them; the loss, confidence "
                       "and entropy attacks still work.")
        return out


def membership_stats(membership: np.ndarray) -> MembershipStats:
    """The :class:`MembershipStats` of a bool membership ``[M, N]``."""
    from privdyn.attacks.references import has_pairs

    k_in = membership.sum(axis=0)
    if k_in.size == 0:  # no samples: the readers refuse this, but the stats stay defined
        return MembershipStats(int(membership.shape[0]), 0, 0, False)
    return MembershipStats(int(membership.shape[0]), int(k_in.min()), int(k_in.max()), has_pairs(membership))
