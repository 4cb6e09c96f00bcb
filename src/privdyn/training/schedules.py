"""Learning-rate schedules as functions of the global optimisation step."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence


def cosine_lr(lr: float, step: int, total: int) -> float:
    """Cosine decay from ``lr`` at step 0 to 0 at step ``total``."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


def step_lr(lr: float, epoch: int, milestones: list[int], gamma: float) -> float:
    """``lr * gamma**k`` where k is the number of milestones already reached (epoch >= milestone)."""
    return lr * gamma ** bisect_right(sorted(milestones), epoch)


def lr_schedule(kind: str, lr: float, steps_per_epoch: int, epochs: int,
                milestones: Sequence[int] = (), gamma: float = 0.1) -> Callable[[int], float]:
    """The lr at global step ``s`` (steps count from 0; step s lies in epoch s // steps_per_epoch + 1).

    ``step`` multiplies by gamma once each milestone epoch has been completed, so with milestone
    m the epochs 1..m train at lr and epoch m + 1 onwards at lr * gamma.
    """
    if kind == "cosine":
        total = steps_per_epoch * epochs
        return lambda s: cosine_lr(lr, s, total)
    if kind == "step":
        ms = sorted(milestones)
        return lambda s: step_lr(lr, s // steps_per_epoch, ms, gamma)
    if kind == "constant":
        return lambda s: lr
    raise ValueError(f"unknown schedule {kind!r}: use cosine, step or constant")
