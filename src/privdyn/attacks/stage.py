"""The score stage: every configured attack at every checkpoint, streamed over checkpoints.

Only the signals an attack declares (``needs`` for the pool, ``needs_test`` for the test split)
are opened, as memory maps; one checkpoint of them is read at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privdyn.attacks.base import ATTACKS, CheckpointData
from privdyn.attacks.references import reference_plan
from privdyn.config import RunConfig
from privdyn.errors import PrivdynError
from privdyn.store import atomic
from privdyn.store.rundir import RunDir


def score_digest(cfg: RunConfig, run: RunDir, attack: str) -> str:
    """What ``scores/ATTACK`` is made from: the attack's setup and its input signals' contents."""
    spec = ATTACKS[attack]
    inputs = [run.path / "membership.npy", run.path / "epochs.npy", *(run.signal_path(s) for s in spec.needs),
              *(run.signal_path(s, "test") for s in spec.needs_test)]
    return f"{cfg.attack_digest(attack)}-{run.content_digest(*inputs)}"


def scores_current(cfg: RunConfig, run: RunDir, attack: str) -> bool:
    """True when ``scores/ATTACK`` exists, is intact and was made from today's setup and signals."""
    return run.artifact_current(f"scores/{attack}", score_digest(cfg, run, attack), run.score_path(attack))


def score_attack(cfg: RunConfig, run: RunDir, attack: str, progress: Any = None) -> None:
    """Write ``scores/ATTACK.npy`` (float64 ``[T, M, N]``), one checkpoint in memory at a time."""
    spec = ATTACKS[attack]
    opts = getattr(cfg.attack_options, attack)
    membership = run.load_array(run.path / "membership.npy", "the membership matrix", mmap=False)
    epochs = run.load_array(run.path / "epochs.npy", "the checkpoint epochs", mmap=False)
    pool = {s: run.load_array(run.signal_path(s), f"signal {s} (needed by {attack})") for s in spec.needs}
    test = {s: run.load_array(run.signal_path(s, "test"), f"test signal {s} (needed by {attack})")
            for s in spec.needs_test}
    T = len(epochs)
    stale = [k for k, v in (*pool.items(), *test.items()) if v.shape[0] != T]
    if stale:
        raise PrivdynError(f"signals {stale} do not have one entry per checkpoint ({T}); the run directory "
                           "is inconsistent: rerun `privdyn train` into a fresh directory")
    refs = reference_plan(membership, cfg.references, cfg.seed)
    task = progress.add_task(f"score {attack}", total=T) if progress else None
    with atomic.open_memmap_atomic(run.score_path(attack), (T, *membership.shape), np.float64) as out:
        for t in range(T):
            data = CheckpointData({k: np.asarray(v[t]) for k, v in pool.items()},
                                  {k: np.asarray(v[t]) for k, v in test.items()}, membership, refs)
            try:
                out[t] = spec.run(data, opts)
            except PrivdynError as e:
                raise PrivdynError(f"{attack} at epoch {int(epochs[t])}: {e}") from None
            if progress:
                progress.advance(task)
    run.record_artifact(f"scores/{attack}", score_digest(cfg, run, attack))
