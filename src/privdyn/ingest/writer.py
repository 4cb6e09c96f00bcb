"""Writing an import into a run directory: signals computed from the logits one checkpoint at a time,
the logits themselves (for ``privdyn export``), the small arrays, provenance and the train stage."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from privdyn.config import TRAIN_SECTIONS, RunConfig
from privdyn.ingest.source import LogitSource, Split
from privdyn.ingest.validate import membership_stats
from privdyn.store import arrays, atomic, provenance
from privdyn.store.rundir import RunDir

#: Logits per block of samples turned into signals at once (float64 intermediates stay ~100 MB).
BLOCK_LOGITS = 1 << 21


def checkpoint_signals(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Every signal of ``SIGNALS`` for one checkpoint's float32 logits ``[M, N, Q, C]`` and labels ``[N]``:
    name -> ``[M, N, Q]`` (float32; ``correct`` bool), exactly as training computes them."""
    import torch

    from privdyn.training.signals import SIGNALS, signals_from_logits

    M, N, Q, C = logits.shape
    out = {s: np.empty((M, N, Q), dtype=bool if s == "correct" else np.float32) for s in SIGNALS}
    step = max(1, BLOCK_LOGITS // max(1, M * Q * C))
    y = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    with torch.no_grad():
        for start in range(0, N, step):  # blocks of samples bound the memory, not a loop over samples
            block = slice(start, start + step)
            z = torch.from_numpy(np.ascontiguousarray(logits[:, block]))
            yb = y[block][None, :, None].expand(M, -1, Q)
            for s, v in signals_from_logits(z, yb).items():
                out[s][:, block] = v.numpy()
    return out


def expected_files(run: RunDir, has_test: bool) -> list[Path]:
    """Every artifact an import makes from the membership: epochs, labels and each split's arrays."""
    from privdyn.training.signals import SIGNALS

    splits = ("pool", "test") if has_test else ("pool",)
    return [run.path / "epochs.npy", run.path / "labels.npy",
            *(run.signal_path(s, split) for split in splits for s in (*SIGNALS, "logits"))]


def is_imported(cfg: RunConfig, run: RunDir, has_test: bool) -> bool:
    """True when ``run`` already holds this import, complete and intact (a re-import has nothing to do)."""
    if not run.stage_done("train", cfg.section_hash(*TRAIN_SECTIONS)):
        return False
    digest = provenance.signal_digest(cfg, run)
    return all(provenance.is_current(run, p, digest) for p in expected_files(run, has_test))


def write_arrays(src: LogitSource, run: RunDir, tick: Callable[[], None] | None = None) -> None:
    """Stream the logits into ``signals/NAME.zarr`` (pool) and ``signals/test/NAME.zarr``: every signal
    ``[T, M, N, Q]`` and the logits ``[T, M, N, Q, C]``; each array appears only once complete."""
    from privdyn.training.signals import SIGNALS

    T, M, _, Q, C = src.shape
    splits: dict[str, Split] = {"pool": src.pool, **({"test": src.test} if src.test else {})}
    with contextlib.ExitStack() as stack:
        out = {}
        for split, part in splits.items():
            n = len(part.labels)
            for name in (*SIGNALS, "logits"):
                shape = (T, M, n, Q, C) if name == "logits" else (T, M, n, Q)
                out[split, name] = stack.enter_context(arrays.create_array(
                    run.signal_path(name, split), shape, bool if name == "correct" else np.float32))
        for t in range(T):
            for split, part in splits.items():
                z = part.logits.read(t)
                out[split, "logits"][t] = z
                for name, v in checkpoint_signals(z, part.labels).items():
                    out[split, name][t] = v
            if tick:
                tick()


def write_import(src: LogitSource, cfg: RunConfig, run: RunDir,
                 tick: Callable[[], None] | None = None) -> dict[str, Any]:
    """Write the whole import into ``run`` (initialised with ``cfg``, lock held) and mark the train stage
    done; returns what the stage records (sizes, source and the membership's IN counts)."""
    digest = cfg.section_hash(*TRAIN_SECTIONS)
    run.mark_stage("train", "running", digest)
    mpath = run.path / "membership.npy"
    atomic.save_npy(mpath, src.membership)
    provenance.record(run, provenance.membership_digest(cfg), mpath)
    atomic.save_npy(run.path / "labels.npy", src.pool.labels)
    atomic.save_npy(run.path / "epochs.npy", src.epochs)
    write_arrays(src, run, tick)
    provenance.record(run, provenance.signal_digest(cfg, run), *expected_files(run, src.test is not None))
    stats: dict[str, Any] = {
        "n_pool": len(src.pool.labels), "n_test": len(src.test.labels) if src.test else 0,
        "source": {"layout": src.layout, "path": str(src.path.resolve()), "fingerprint": cfg.source.fingerprint,
                   "files": len(src.files), "bytes": sum(p.stat().st_size for p in src.files)},
        "membership": membership_stats(src.membership).as_dict(),
    }
    run.mark_stage("train", "done", digest, **stats)
    return stats
