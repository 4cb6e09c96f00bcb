"""The score stage: every configured attack at every checkpoint, streamed over checkpoints."""

from __future__ import annotations

from typing import Any

import numpy as np

from privdyn.attacks.base import ATTACKS, CheckpointData
from privdyn.config import RunConfig
from privdyn.store import atomic
from privdyn.store.rundir import RunDir


def score_attack(cfg: RunConfig, run: RunDir, attack: str, progress: Any = None) -> None:
    """Write ``scores/ATTACK.npy`` (float64 ``[T, M, N]``), one checkpoint in memory at a time."""
    spec = ATTACKS[attack]
    membership = run.load_array(run.path / "membership.npy", "the membership matrix", mmap=False)
    pool = {s: run.load_array(run.signal_path(s), f"signal {s}") for s in spec.needs}
    test = {s: run.load_array(run.signal_path(s, "test"), f"test signal {s}") for s in spec.needs} if spec.needs_test else {}
    T = next(iter(pool.values())).shape[0]
    task = progress.add_task(f"score {attack}", total=T) if progress else None
    with atomic.open_memmap_atomic(run.score_path(attack), (T, *membership.shape), np.float64) as out:
        for t in range(T):
            data = CheckpointData({k: np.asarray(v[t]) for k, v in pool.items()},
                                  {k: np.asarray(v[t]) for k, v in test.items()}, membership)
            out[t] = spec.score(data, cfg.attack_options)
            if progress:
                progress.advance(task)
