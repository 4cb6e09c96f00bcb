"""What a reader gives the writer: the validated small arrays and a per-checkpoint view of the logits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from privdyn.errors import PrivdynError
from privdyn.ingest.npy import open_npy
from privdyn.ingest.validate import check_finite, check_shape


@dataclass(frozen=True)
class Logits:
    """Logits ``[T, M, N, Q, C]`` read one checkpoint at a time.

    ``read(t)`` returns checkpoint t as float32 ``[M, N, Q, C]`` (a copy: the files stay memory-mapped);
    ``where(t)`` names the files that hold it, for messages; ``files`` are all of them.
    """

    shape: tuple[int, int, int, int, int]
    read: Callable[[int], np.ndarray]
    where: Callable[[int], str]
    files: tuple[Path, ...]


@dataclass(frozen=True)
class Split:
    """One split's labels ``[N]`` (int64) and logits."""

    labels: np.ndarray
    logits: Logits


@dataclass(frozen=True)
class LogitSource:
    """A validated import: the membership (bool ``[M, N]``), the checkpoint epochs (int64 ``[T]``), the pool
    split, an optional test split, and every file it reads (for the fingerprint)."""

    layout: str
    path: Path
    membership: np.ndarray
    epochs: np.ndarray
    pool: Split
    test: Split | None
    files: tuple[Path, ...]

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        """``(T, M, N, Q, C)`` of the pool's logits."""
        return self.pool.logits.shape

    def describe(self) -> str:
        """The source for people: layout, folder and sizes."""
        T, M, N, Q, C = self.shape
        test = f", {len(self.test.labels)} test samples" if self.test else ", no test split"
        return f"{self.layout} layout at {self.path}: M={M} models, N={N} samples, T={T} checkpoints, Q={Q} queries, " \
               f"C={C} classes{test}"

    def check_values(self) -> None:
        """Read every checkpoint once and refuse non-finite logits (the only check that needs the data)."""
        for split in (self.pool, self.test):
            if split is None:
                continue
            for t in range(split.logits.shape[0]):
                check_finite(split.logits.read(t), split.logits.where(t), int(self.epochs[t]))


def as_float32(arr: np.ndarray, path: Path) -> np.ndarray:
    """A logits block as float32 (a copy), refusing non-float dtypes and finite values that float32
    cannot hold (they would become infinities, and be reported as logits that were never finite)."""
    if arr.dtype.kind != "f":
        raise PrivdynError(f"{path} holds {arr.dtype} values, but logits must be floats (float16, 32 or 64; "
                           "privdyn stores them as float32).")
    if arr.dtype.itemsize > 4:
        bad = np.isfinite(arr) & (np.abs(arr) > np.finfo(np.float32).max)
        if bad.any():
            at = tuple(int(v) for v in np.argwhere(bad)[0])
            axes = ("model", "sample", "query", "class")[-len(at):]
            raise PrivdynError(f"{path} holds {int(bad.sum())} finite logit(s) beyond float32's range "
                               f"(+-{np.finfo(np.float32).max:.3g}), in which privdyn stores logits (the first: "
                               f"{arr[at]:g} for " + ", ".join(f"{k} {v}" for k, v in zip(axes, at, strict=True))
                               + "). Logits that large come from a diverged model or from values that are not "
                               "logits (e.g. exponentiated): fix or drop that checkpoint.")
    return np.array(arr, dtype=np.float32)


def open_logit_files(paths: Sequence[Path], shape: tuple[int | None, ...], names: str, what: str) -> list[np.ndarray]:
    """Memory-map every file of one split's logits, checking each against ``shape`` (None: any) and that
    they agree on the sizes left open (Q and C)."""
    out: list[np.ndarray] = []
    for p in paths:
        arr = open_npy(p, what)
        check_shape(arr, shape if not out else tuple(out[0].shape), names, p, what)
        if arr.dtype.kind != "f":
            as_float32(arr[:0], p)
        out.append(arr)
    return out


def check_classes(q: int, c: int, where: Path) -> None:
    """Refuse logits without a query or with fewer than two classes."""
    if q < 1 or c < 2:
        raise PrivdynError(f"{where}: the logits have Q={q} queries and C={c} classes, but need at least one "
                           "query (augmentation) and two classes.")

