"""The generic layout: plain ``.npy`` arrays in one folder (docs/import.md)::

    labels.npy             int [N]                the pool's class labels
    membership.npy         bool [M, N]            True where model m trained on sample i
    epochs.npy             int [T]                checkpoint epochs, strictly increasing (0 = initialisation)
    logits.npy             float [T, M, N, Q, C]  the logits as one array, or
    logits/t000.npy ...    float [M, N, Q, C]     one file per checkpoint index t (t000 .. t{T-1}), or
    logits/m000.npy ...    float [T, N, Q, C]     one file per model m (m000 .. m{M-1})
    test_labels.npy        int [N_test]           optional test split, with test_logits.npy or
    test_logits/           ...                    test_logits/ in one of the same three forms

Logits may be float16, 32 or 64; privdyn stores them, and computes the signals from them, as float32.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from privdyn.errors import PrivdynError
from privdyn.ingest.npy import open_npy
from privdyn.ingest.source import Logits, LogitSource, Split, as_float32, check_classes, open_logit_files
from privdyn.ingest.validate import (
    check_epochs,
    check_labels,
    check_membership,
    check_pool_size,
    check_shape,
    check_test_size,
)

#: The forms a split's logits may take, by the name of their files.
FORMS = ("array", "checkpoint", "model")
PER_FILE = {"checkpoint": "t", "model": "m"}


def indexed_files(folder: Path, prefix: str, count: int, what: str) -> list[Path]:
    """``folder/{prefix}000.npy`` .. ``{prefix}{count-1:03d}.npy``, refusing gaps and extra indices."""
    pattern = re.compile(rf"^{prefix}(\d+)\.npy$")
    found = {int(m.group(1)): p for p in folder.glob(f"{prefix}*.npy") if (m := pattern.match(p.name))}
    missing, extra = sorted(set(range(count)) - set(found)), sorted(set(found) - set(range(count)))
    if missing or extra:
        problems = ([f"lacks indices {missing[:10]}"] if missing else []) + (
            [f"has extra indices {extra[:10]}"] if extra else [])
        raise PrivdynError(f"{folder} must hold one file per {what}, {prefix}000.npy to {prefix}{count - 1:03d}.npy "
                           f"({count} files), but it {' and '.join(problems)}. Write exactly one file per index.")
    return [found[i] for i in range(count)]


def form_of(root: Path, stem: str) -> str | None:
    """Which form a split's logits take in ``root`` (``stem`` = logits or test_logits); None when absent."""
    single, folder = root / f"{stem}.npy", root / stem
    kinds = {k for k, p in PER_FILE.items() if folder.is_dir() and any(folder.glob(f"{p}[0-9]*.npy"))}
    forms = (["array"] if single.exists() else []) + sorted(kinds)
    if len(forms) > 1:
        raise PrivdynError(f"{root} holds its {stem} in more than one form ({', '.join(forms)}: {stem}.npy, "
                           f"{stem}/t*.npy per checkpoint, {stem}/m*.npy per model). Keep exactly one.")
    return forms[0] if forms else None


def open_logits(root: Path, stem: str, T: int, M: int, n: int) -> Logits:
    """A split's logits ``[T, M, n, Q, C]`` in whichever form ``root`` holds them."""
    form = form_of(root, stem)
    what = "the test split's logits" if stem.startswith("test") else "the logits"
    if form is None:
        raise PrivdynError(f"{root} holds no {stem}: give {stem}.npy [T, M, N, Q, C], or {stem}/t000.npy ... "
                           f"[M, N, Q, C] (one per checkpoint), or {stem}/m000.npy ... [T, N, Q, C] (one per model).")
    if form == "array":
        path = root / f"{stem}.npy"
        arr = open_logit_files([path], (T, M, n, None, None), "[T, M, N, Q, C]", what)[0]
        shape = (T, M, n, int(arr.shape[3]), int(arr.shape[4]))
        check_classes(shape[3], shape[4], path)
        return Logits(shape, lambda t: as_float32(arr[t], path), lambda t: str(path), (path,))
    if form == "checkpoint":
        paths = indexed_files(root / stem, "t", T, "checkpoint (one per entry of epochs.npy)")
        maps = open_logit_files(paths, (M, n, None, None), "[M, N, Q, C]", f"{what} of one checkpoint")
        shape = (T, M, n, int(maps[0].shape[2]), int(maps[0].shape[3]))
        check_classes(shape[3], shape[4], paths[0])
        return Logits(shape, lambda t: as_float32(maps[t], paths[t]), lambda t: str(paths[t]), tuple(paths))
    paths = indexed_files(root / stem, "m", M, "model (one per row of membership.npy)")
    maps = open_logit_files(paths, (T, n, None, None), "[T, N, Q, C]", f"{what} of one model")
    shape = (T, M, n, int(maps[0].shape[2]), int(maps[0].shape[3]))
    check_classes(shape[3], shape[4], paths[0])
    return Logits(shape, lambda t: np.stack([as_float32(a[t], p) for a, p in zip(maps, paths)]),
                  lambda t: f"{root / stem}/m*.npy (checkpoint index {t})", tuple(paths))


def read_generic(root: Path) -> LogitSource:
    """Read and check a generic-layout folder (see the module docstring); no logits are loaded yet."""
    root = Path(root)
    if not root.is_dir():
        raise PrivdynError(f"{root} is not a folder: SOURCE must be the folder that holds labels.npy, "
                           "membership.npy, epochs.npy and the logits.")
    lpath, mpath, epath = root / "labels.npy", root / "membership.npy", root / "epochs.npy"
    labels = open_npy(lpath, "the pool's class labels [N] (integers)")
    check_shape(labels, (None,), "[N]", lpath, "the labels")
    n = len(labels)
    check_pool_size(n, lpath)
    membership = open_npy(mpath, "the membership, bool [M, N]")
    check_shape(membership, (None, n), "[M, N]", mpath, "the membership (one column per sample of labels.npy)")
    z = check_membership(membership, n, mpath)
    epochs = check_epochs(open_npy(epath, "the checkpoint epochs [T] (integers)"), epath)
    M, T = int(membership.shape[0]), len(epochs)
    pool = open_logits(root, "logits", T, M, n)
    y = check_labels(labels, pool.shape[4], lpath)
    test: Split | None = None
    files = [lpath, mpath, epath, *pool.files]
    tl_path = root / "test_labels.npy"
    has_logits = form_of(root, "test_logits") is not None
    if tl_path.exists() != has_logits:
        found = "test_labels.npy but no test_logits" if tl_path.exists() else "test_logits but no test_labels.npy"
        raise PrivdynError(f"{root} holds {found}: a test split needs both (or neither, for no test split).")
    if has_logits:
        t_labels = open_npy(tl_path, "the test split's class labels [N_test] (integers)")
        check_shape(t_labels, (None,), "[N_test]", tl_path, "the test labels")
        stem = "test_logits.npy" if form_of(root, "test_logits") == "array" else "test_logits"
        check_test_size(len(t_labels), tl_path, root / stem)
        t_logits = open_logits(root, "test_logits", T, M, len(t_labels))
        if t_logits.shape[3:] != pool.shape[3:]:
            raise PrivdynError(f"{root}: the test logits have Q={t_logits.shape[3]} queries and C={t_logits.shape[4]} "
                               f"classes, the pool's Q={pool.shape[3]} and C={pool.shape[4]}: both splits must be "
                               "evaluated under the same queries and classes.")
        test = Split(check_labels(t_labels, pool.shape[4], tl_path), t_logits)
        files += [tl_path, *t_logits.files]
    return LogitSource("generic", root, z, epochs, Split(y, pool), test, tuple(files))
