"""The LiRA reference code's layout (Carlini et al. 2022, ``privacy/research/mi_lira_2021``)::

    LOGDIR/y_train.npy                          int [N]             the pool's labels
    LOGDIR/experiment-*/keep.npy                bool [N]            the samples this model trained on
    LOGDIR/experiment-*/logits/%010d.npy        float [N, 1, Q, C]  logits at that epoch (augmentations Q)

One experiment folder per model, in name order with numbers compared as numbers (``experiment-2``
before ``experiment-10``); every experiment must hold the same epochs. The layout has no test split.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from privdyn.errors import PrivdynError
from privdyn.ingest.npy import open_npy
from privdyn.ingest.source import Logits, LogitSource, Split, as_float32, check_classes, open_logit_files
from privdyn.ingest.validate import check_epochs, check_labels, check_membership, check_pool_size, check_shape

EPOCH_FILE = re.compile(r"^(\d+)\.npy$")


def natural_key(path: Path) -> list[int | str]:
    """Sort key of a name with numbers compared as numbers (``experiment-2_16`` before ``experiment-10_16``)."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name)]


def experiments(root: Path) -> list[Path]:
    """The ``experiment-*`` folders of ``root`` in model order."""
    found = sorted((p for p in root.glob("experiment-*") if p.is_dir()), key=natural_key)
    if not found:
        raise PrivdynError(f"{root} holds no experiment-* folders, so it is not a LiRA log directory "
                           "(LOGDIR/experiment-*/keep.npy and LOGDIR/experiment-*/logits/%010d.npy, with "
                           "LOGDIR/y_train.npy). Point SOURCE at that LOGDIR, or use --layout generic.")
    return found


def epoch_files(exp: Path) -> dict[int, Path]:
    """Epoch -> logits file of one experiment (``logits/%010d.npy``)."""
    folder = exp / "logits"
    if folder.exists() and not folder.is_dir():
        raise PrivdynError(f"{folder} is a file, not a folder: every LiRA experiment folder needs a logits/ "
                           "folder of %010d.npy files, one per saved epoch. Move that file away.")
    if not folder.is_dir():
        raise PrivdynError(f"{folder} is missing: every LiRA experiment folder needs logits/%010d.npy files, one "
                           "per saved epoch. Check that this experiment finished its inference step.")
    out: dict[int, Path] = {}
    for p in sorted(folder.glob("*.npy")):
        m = EPOCH_FILE.match(p.name)
        if m is None:
            continue
        if int(m.group(1)) in out:
            raise PrivdynError(f"{folder} holds two files for epoch {int(m.group(1))} ({out[int(m.group(1))].name}"
                               f" and {p.name}): keep one.")
        out[int(m.group(1))] = p
    if not out:
        raise PrivdynError(f"{folder} holds no logits files named by their epoch (%010d.npy, e.g. 0000000100.npy).")
    return out


def _same_epochs(exps: list[Path], files: list[dict[int, Path]]) -> list[int]:
    first = sorted(files[0])
    diffs = []
    for exp, f in zip(exps[1:], files[1:]):
        missing, extra = sorted(set(first) - set(f)), sorted(set(f) - set(first))
        if missing or extra:
            diffs.append(f"{exp.name} lacks {missing or 'none'} and adds {extra or 'none'}")
    if diffs:
        shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5 else "")
        raise PrivdynError(f"The experiments in {exps[0].parent} saved logits at different epochs: {exps[0].name} "
                           f"has {first}, and {shown}. Every model must be evaluated at the same checkpoints: "
                           "delete the epochs that not every experiment has, or finish the missing ones.")
    return first


def read_lira(root: Path) -> LogitSource:
    """Read and check a LiRA log directory (see the module docstring); no logits are loaded yet."""
    root = Path(root)
    exps = experiments(root)
    y_path = root / "y_train.npy"
    y = open_npy(y_path, "the pool's class labels [N] (integers)")
    check_shape(y, (None,), "[N]", y_path, "the labels")
    n = len(y)
    check_pool_size(n, y_path)
    keeps = [open_npy(e / "keep.npy", "the experiment's membership, bool [N]") for e in exps]
    for e, k in zip(exps, keeps):
        check_shape(k, (n,), "[N]", e / "keep.npy", "keep.npy (one entry per sample of y_train.npy)")
    membership = check_membership(np.stack([np.asarray(k) for k in keeps]), n, root / "experiment-*/keep.npy")
    files = [epoch_files(e) for e in exps]
    epochs = check_epochs(np.array(_same_epochs(exps, files), dtype=np.int64), exps[0] / "logits")
    grid = [[f[int(ep)] for ep in epochs] for f in files]  # [M][T]
    maps = open_logit_files([p for row in grid for p in row], (n, 1, None, None), "[N, 1, Q, C]",
                            "logits of one experiment at one epoch")
    _, _, q, c = maps[0].shape
    check_classes(q, c, grid[0][0])
    T, M = len(epochs), len(exps)

    def read(t: int) -> np.ndarray:
        return np.stack([as_float32(np.load(grid[m][t], allow_pickle=False, mmap_mode="r")[:, 0], grid[m][t])
                         for m in range(M)])

    def where(t: int) -> str:
        return f"{root}/experiment-*/logits/{grid[0][t].name}"

    logits = Logits((T, M, n, q, c), read, where, tuple(p for row in grid for p in row))
    labels = check_labels(y, c, y_path)
    all_files = (y_path, *(e / "keep.npy" for e in exps), *logits.files)
    return LogitSource("lira", root, membership, epochs, Split(labels, logits), None, all_files)
