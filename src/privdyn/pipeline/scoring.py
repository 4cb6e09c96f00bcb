"""The score stage: every configured attack at every checkpoint, streamed over checkpoints.

Only the signals an attack declares (``needs`` for the pool, ``needs_test`` for the test split)
are opened; one checkpoint of them is read at a time. Attacks that share a fused scoring function
(``Attack.fused``: the four LiRA variants) are scored in one pass, which reads their signals once
per checkpoint and forms the statistics they share once; each still gets its own score file and
its own provenance digest, with the scores its single-attack run gives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from privdyn.attacks.base import ATTACKS, CheckpointData, run_fused
from privdyn.attacks.references import reference_plan
from privdyn.config import RunConfig
from privdyn.errors import PrivdynError
from privdyn.store import arrays, provenance
from privdyn.store.rundir import RunDir

#: The stored scores' type (see :func:`score_attack`).
SCORE_DTYPE = np.float32

def fused_groups(attacks: Sequence[str]) -> list[list[str]]:
    """``attacks`` in order, those sharing a fused scoring function gathered at the first one's place."""
    groups: list[list[str]] = []
    by_fn: dict[int, list[str]] = {}
    for a in dict.fromkeys(attacks):
        fn = ATTACKS[a].fused
        if fn is None:
            groups.append([a])
        elif id(fn) in by_fn:
            by_fn[id(fn)].append(a)
        else:
            by_fn[id(fn)] = [a]
            groups.append(by_fn[id(fn)])
    return groups


def score_attacks(cfg: RunConfig, run: RunDir, attacks: Sequence[str], progress: Any = None) -> None:
    """Write the scores of every attack in ``attacks``, one pass per fused group (see :func:`fused_groups`)."""
    for group in fused_groups(attacks):
        _score_group(cfg, run, group, progress)


def score_attack(cfg: RunConfig, run: RunDir, attack: str, progress: Any = None) -> None:
    """Write ``scores/ATTACK.zarr`` (``[T, M, N]``), one checkpoint in memory at a time.

    Scores are computed in float64 and stored as float32: they are made from float32 signals, so
    the dropped digits carry no information (the analysis of the quickstart is unchanged).
    """
    _score_group(cfg, run, [attack], progress)


def _score_group(cfg: RunConfig, run: RunDir, group: list[str], progress: Any) -> None:
    """Score the attacks of ``group`` (one attack, or several sharing ``Attack.fused``) in one
    pass over the checkpoints; each gets its own array and provenance record."""
    specs = [ATTACKS[a] for a in group]
    opts = {a: cfg.options_for(a) for a in group}
    label = group[0] if len(group) == 1 else ", ".join(group)
    membership = run.load_array(run.path / "membership.npy", "the membership matrix")
    epochs = run.load_array(run.path / "epochs.npy", "the checkpoint epochs")
    needs = list(dict.fromkeys(s for spec in specs for s in spec.needs))
    needs_test = list(dict.fromkeys(s for spec in specs for s in spec.needs_test))
    pool = {s: run.checkpoints(run.signal_path(s), f"signal {s} (needed by {label})") for s in needs}
    test = {s: run.checkpoints(run.signal_path(s, "test"), f"test signal {s} (needed by {label})")
            for s in needs_test}
    T = len(epochs)
    stale = [k for k, v in (*pool.items(), *test.items()) if v.shape[0] != T]
    if stale:
        raise PrivdynError(f"signals {stale} do not have one entry per checkpoint ({T}); the run directory "
                           "is inconsistent: rerun `privdyn train` into a fresh directory")
    refs = reference_plan(membership, cfg.references, cfg.seed)
    task = progress.add_task(f"score {group[0]}" + (f" +{len(group) - 1}" if len(group) > 1 else ""),
                             total=T) if progress else None
    with contextlib.ExitStack() as stack:
        outs = {a: stack.enter_context(arrays.create_array(run.score_path(a), (T, *membership.shape), SCORE_DTYPE))
                for a in group}
        for t in range(T):
            data = CheckpointData({k: v[t] for k, v in pool.items()}, {k: v[t] for k, v in test.items()},
                                  membership, refs)
            try:
                scores = ({group[0]: specs[0].run(data, opts[group[0]])} if len(group) == 1
                          else run_fused(specs, data, opts))
            except PrivdynError as e:
                raise PrivdynError(f"{label} at epoch {int(epochs[t])}: {e}") from None
            for a in group:
                outs[a][t] = scores[a]
            if progress:
                progress.advance(task)
    for a in group:
        provenance.record(run, provenance.score_digest(cfg, run, a), run.score_path(a))
