"""``privdyn export``: a run's stored logits written out in the LiRA or the generic layout, so that
other tools (or ``privdyn import``) can read them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from privdyn.errors import PrivdynError
from privdyn.ingest import LAYOUTS
from privdyn.ingest.generic import FORMS
from privdyn.store.arrays import CheckpointArray
from privdyn.store.rundir import RunDir


def _save(path: Path, array: np.ndarray) -> None:
    """``numpy.save`` through a temporary file, so that a file appears only once complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(tmp, path)


def recover_labels(logits: CheckpointArray, loss: CheckpointArray) -> np.ndarray:
    """The labels ``[N]`` of a split whose run stores logits and losses but not labels (the test split):
    for each sample, the one class whose recomputed loss equals the stored one under every model and
    query; checkpoints are added until every sample has one such class."""
    import torch

    T, _, N, _, C = logits.shape
    candidates = np.ones((N, C), dtype=bool)
    for t in range(T):
        nll = (-torch.log_softmax(torch.from_numpy(logits[t]).to(torch.float64), dim=-1)).numpy().astype(np.float32)
        candidates &= (nll == loss[t][..., None]).all(axis=(0, 2))
        if (candidates.sum(axis=1) == 1).all():
            return candidates.argmax(axis=1).astype(np.int64)
    bad = np.flatnonzero(candidates.sum(axis=1) != 1)
    raise PrivdynError(f"{logits.path}: the labels of {len(bad)} samples (e.g. sample {int(bad[0])}) cannot be "
                       "recovered from the stored logits and losses (no class, or several, reproduce the stored "
                       "loss), so the test split cannot be exported. The pool exports without it: delete "
                       "signals/test/ from a copy of the run and export that.")


def _check_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PrivdynError(f"{out} already exists and is not an empty folder: export writes into a new (or empty) "
                           "folder, so that no file of yours is overwritten. Choose another --out.")


def _write_logits(arr: CheckpointArray, folder: Path, stem: str, form: str) -> None:
    """A split's logits ``[T, M, N, Q, C]`` in ``form`` (array, checkpoint or model), one checkpoint in memory."""
    T, M = arr.shape[:2]
    if form == "checkpoint":
        for t in range(T):
            _save(folder / stem / f"t{t:03d}.npy", arr[t])
        return
    if form == "array":
        target, shape = folder / f"{stem}.npy", arr.shape
        tmp = target.with_name(f".{target.name}.tmp")
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        for t in range(T):
            mm[t] = arr[t]
        mm.flush()
        del mm
        os.replace(tmp, target)
        return
    maps = []
    (folder / stem).mkdir(parents=True, exist_ok=True)
    for m in range(M):  # one memory-mapped file per model, filled one checkpoint at a time
        tmp = folder / stem / f".m{m:03d}.npy.tmp"
        maps.append(np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(T, *arr.shape[2:])))
    for t in range(T):
        chunk = arr[t]
        for m in range(M):
            maps[m][t] = chunk[m]
    for m, mm in enumerate(maps):
        mm.flush()
        os.replace(folder / stem / f".m{m:03d}.npy.tmp", folder / stem / f"m{m:03d}.npy")


def export_logits(run_dir: str | Path, layout: str, out: str | Path, form: str = "checkpoint") -> Path:
    """Write the logits stored in ``run_dir`` (a run made with ``checkpoints.save_logits: true``, or an
    import) to the new folder ``out`` in ``layout`` (lira or generic; generic in ``form`` array,
    checkpoint or model). Returns ``out``."""
    if layout not in LAYOUTS:
        raise PrivdynError(f"--layout {layout!r} is not one of {', '.join(LAYOUTS)}.")
    if form not in FORMS:
        raise PrivdynError(f"--form {form!r} is not one of {', '.join(FORMS)}.")
    run, out = RunDir(run_dir), Path(out)
    if not run.is_run():
        raise PrivdynError(f"{run.path} is not a privdyn run directory (no config.yaml).")
    with run.locked():
        path = run.signal_path("logits")
        if not path.exists():
            raise PrivdynError(f"{run.path} stores no logits (signals/logits.zarr), only the signals computed from "
                               "them. Train it again with `checkpoints.save_logits: true` (e.g. `privdyn run CONFIG "
                               "--set checkpoints.save_logits=true --out NEW_DIR`), then export that run.")
        _check_target(out)
        logits = run.checkpoints(path, "logits")
        labels = run.load_array(run.path / "labels.npy", "labels")
        membership = run.load_array(run.path / "membership.npy", "membership")
        epochs = run.load_array(run.path / "epochs.npy", "checkpoint epochs")
        if layout == "lira":
            _export_lira(logits, labels, membership, epochs, out)
        else:
            _save(out / "labels.npy", labels)
            _save(out / "membership.npy", membership)
            _save(out / "epochs.npy", epochs)
            _write_logits(logits, out, "logits", form)
            test = run.signal_path("logits", "test")
            if test.exists():
                t_logits = run.checkpoints(test, "test logits")
                t_labels = recover_labels(t_logits, run.checkpoints(run.signal_path("loss", "test"), "test loss"))
                _save(out / "test_labels.npy", t_labels)
                _write_logits(t_logits, out, "test_logits", form)
    return out


def _export_lira(logits: CheckpointArray, labels: np.ndarray, membership: np.ndarray, epochs: np.ndarray,
                 out: Path) -> None:
    """The LiRA layout: ``experiment-{m}_{M}/keep.npy`` and ``logits/%010d.npy`` [N, 1, Q, C], ``y_train.npy``."""
    M = membership.shape[0]
    exps = [out / f"experiment-{m}_{M}" for m in range(M)]
    _save(out / "y_train.npy", labels)
    for m, e in enumerate(exps):
        _save(e / "keep.npy", membership[m])
    for t, epoch in enumerate(epochs):
        chunk = logits[t]
        for m, e in enumerate(exps):
            _save(e / "logits" / f"{int(epoch):010d}.npy", chunk[m][:, None])
