"""The score stage: every configured attack at every checkpoint, streamed over checkpoints.

Only the signals an attack declares (``needs`` for the pool, ``needs_test`` for the test split)
are opened; one checkpoint of them is read at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from privdyn.attacks.base import ATTACKS, CheckpointData
from privdyn.attacks.references import reference_plan
from privdyn.config import RunConfig
from privdyn.errors import PrivdynError
from privdyn.store import arrays, provenance
from privdyn.store.rundir import RunDir

#: The stored scores' type (see :func:`score_attack`).
SCORE_DTYPE = np.float32


def score_attack(cfg: RunConfig, run: RunDir, attack: str, progress: Any = None) -> None:
    """Write ``scores/ATTACK.zarr`` (``[T, M, N]``), one checkpoint in memory at a time.

    Scores are computed in float64 and stored as float32: they are made from float32 signals, so
    the dropped digits carry no information (the analysis of the quickstart is unchanged).
    """
    spec = ATTACKS[attack]
    opts = cfg.options_for(attack)
    membership = run.load_array(run.path / "membership.npy", "the membership matrix")
    epochs = run.load_array(run.path / "epochs.npy", "the checkpoint epochs")
    pool = {s: run.checkpoints(run.signal_path(s), f"signal {s} (needed by {attack})") for s in spec.needs}
    test = {s: run.checkpoints(run.signal_path(s, "test"), f"test signal {s} (needed by {attack})")
            for s in spec.needs_test}
    T = len(epochs)
    stale = [k for k, v in (*pool.items(), *test.items()) if v.shape[0] != T]
    if stale:
        raise PrivdynError(f"signals {stale} do not have one entry per checkpoint ({T}); the run directory "
                           "is inconsistent: rerun `privdyn train` into a fresh directory")
    refs = reference_plan(membership, cfg.references, cfg.seed)
    task = progress.add_task(f"score {attack}", total=T) if progress else None
    with arrays.create_array(run.score_path(attack), (T, *membership.shape), SCORE_DTYPE) as out:
        for t in range(T):
            data = CheckpointData({k: v[t] for k, v in pool.items()}, {k: v[t] for k, v in test.items()},
                                  membership, refs)
            try:
                out[t] = spec.run(data, opts)
            except PrivdynError as e:
                raise PrivdynError(f"{attack} at epoch {int(epochs[t])}: {e}") from None
            if progress:
                progress.advance(task)
    provenance.record(run, provenance.score_digest(cfg, run, attack), run.score_path(attack))
