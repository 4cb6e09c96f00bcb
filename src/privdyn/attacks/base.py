"""What every attack is: a pure function from one checkpoint's signals to scores.

An attack takes :class:`CheckpointData` (signals of all M models at one checkpoint, the
membership matrix) and returns float64 scores ``[M, N]``, higher meaning "more likely a member".
Reference-model attacks score target m with the other M-1 models as references.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from privdyn.config import AttackOptions


@dataclass(frozen=True)
class CheckpointData:
    """Signals at one checkpoint: ``pool[name]`` is ``[M, N, Q]``, ``test[name]`` ``[M, N_test, Q]``."""

    pool: Mapping[str, np.ndarray]
    test: Mapping[str, np.ndarray]
    membership: np.ndarray


@dataclass(frozen=True)
class Attack:
    name: str
    needs: tuple[str, ...]
    score: Callable[[CheckpointData, AttackOptions], np.ndarray]
    description: str
    needs_test: bool = False


ATTACKS: dict[str, Attack] = {}


def register(attack: Attack) -> Attack:
    ATTACKS[attack.name] = attack
    return attack
