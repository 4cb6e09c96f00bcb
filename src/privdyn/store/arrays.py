"""Checkpoint arrays ``[T, ...]`` (signals and scores) as zarr v3: one chunk per checkpoint,
checksummed per chunk with crc32c; boolean arrays are also zstd-compressed.

Float arrays are not compressed: the mantissas of trained models' signals and of attack scores
are close to random, so zstd saves about 5% and makes reads 2-3x slower (benchmarks/storage.py).

zarr checks every chunk's crc32c as it decodes it, so a bit flip or a truncated chunk is found
on the read that would have used it. A *missing* chunk zarr would silently read as the fill
value, so :func:`open_array` first checks that every chunk file is there. An array is written
into a temporary folder beside its final name and renamed into place once complete (the folder
of an older version is moved aside first), so a kill leaves the old array, the new one or none,
never a partial one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec

from privdyn.store.integrity import DIR_MODE, CorruptArtifact

SUFFIX = ".zarr"
#: Codecs after serialisation, by dtype kind: booleans compress 5-9x, floats do not.
CODECS = {"b": (BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"), Crc32cCodec()), "other": (Crc32cCodec(),)}
#: Array states (see :func:`_state`) whose every chunk decoded in this process.
_VERIFIED: set[tuple[tuple[str, int, int], ...]] = set()
_FIX = ("Delete it and run `privdyn run` on this run directory, which recomputes the stage that makes it "
        "(or restore the run from a backup).")


def is_array(path: Path) -> bool:
    """True when ``path`` names a checkpoint array (a ``.zarr`` folder)."""
    return path.name.endswith(SUFFIX)


def _chunk_files(path: Path, shape: tuple[int, ...]) -> list[Path]:
    """The chunk files an array of ``shape`` chunked by its first axis has (``c/t/0/0/...``)."""
    if not shape or 0 in shape:
        return []
    zeros = "/".join("0" for _ in shape[1:])
    return [path / "c" / (f"{t}/{zeros}" if zeros else str(t)) for t in range(shape[0])]


def _replace_dir(tmp: Path, path: Path) -> None:
    """Move the finished folder ``tmp`` to ``path``, setting an older ``path`` aside first."""
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", suffix=".tmp", dir=path.parent))
        os.rmdir(old)
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def create_array(path: str | Path, shape: tuple[int, ...], dtype: Any) -> Iterator[zarr.Array]:
    """A writable checkpoint array that appears at ``path`` only once the block exits normally.

    Write it one checkpoint at a time (``arr[t] = ...``); values are cast to ``dtype``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, DIR_MODE)
    try:
        kind = np.dtype(dtype).kind
        arr = zarr.create_array(str(tmp), shape=shape, dtype=dtype, chunks=(1, *shape[1:]) if shape else (),
                                compressors=CODECS.get(kind, CODECS["other"]),
                                fill_value=np.nan if kind == "f" else 0, overwrite=True,
                                config={"write_empty_chunks": True})
        yield arr
        missing = [p for p in _chunk_files(tmp, tuple(shape)) if not p.exists()]
        if missing:
            raise RuntimeError(f"{path}: {len(missing)} checkpoints were never written")
        for p in (tmp / "zarr.json", *_chunk_files(tmp, tuple(shape))):
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
        _replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_array(path: str | Path, array: np.ndarray) -> None:
    """Write a whole ``[T, ...]`` array at once."""
    with create_array(path, array.shape, array.dtype) as out:
        for t in range(array.shape[0]):
            out[t] = array[t]


class CheckpointArray:
    """A read-only checkpoint array: index it like numpy (``a[t]``, ``a[..., q]``, ``np.asarray(a)``);
    every read checks the checksums of the chunks it decodes.

    :meth:`at_query` and :meth:`as_type` give lazy views (one query of a signal, or values cast
    on read), so that streaming code reads one checkpoint at a time.
    """

    def __init__(self, path: Path, arr: zarr.Array, dtype: Any = None, query: int | None = None):
        self.path, self._arr, self._query = path, arr, query
        self.dtype = np.dtype(dtype if dtype is not None else arr.dtype)
        self.shape: tuple[int, ...] = tuple(arr.shape[:-1] if query is not None else arr.shape)
        self.ndim = len(self.shape)

    def at_query(self, q: int) -> CheckpointArray:
        """The ``[T, M, N]`` view of query ``q`` of a ``[T, M, N, Q]`` signal."""
        return CheckpointArray(self.path, self._arr, self.dtype, q)

    def as_type(self, dtype: Any) -> CheckpointArray:
        """The same array, cast to ``dtype`` as it is read."""
        return CheckpointArray(self.path, self._arr, dtype, self._query)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if self._query is not None:  # index the view's axes explicitly, then take the query
            key = key if isinstance(key, tuple) else (key,)
            if any(k is Ellipsis for k in key):
                i = next(j for j, k in enumerate(key) if k is Ellipsis)
                key = (*key[:i], *(slice(None),) * (self.ndim - len(key) + 1), *key[i + 1:])
            key = (*key, *(slice(None),) * (self.ndim - len(key)), self._query)
        try:
            return np.asarray(self._arr[key], dtype=self.dtype)
        except (ValueError, RuntimeError, OSError) as e:
            raise self._corrupt(e) from None

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[...] if self._query is None else self[:]
        return out.astype(dtype) if dtype is not None else out

    def _corrupt(self, error: BaseException) -> CorruptArtifact:
        bad = next((t for t in range(self.shape[0]) if not _chunk_ok(self._arr, t)), None)
        where = f"checkpoint index {bad}" if bad is not None else "a chunk"
        return CorruptArtifact(f"{self.path} does not match its checksum at {where} ({error}): the array is "
                               f"corrupt (a disk or copy error). {_FIX}")


def _chunk_ok(arr: zarr.Array, t: int) -> bool:
    try:
        arr[t]
    except (ValueError, RuntimeError, OSError):
        return False
    return True


def open_array(path: str | Path) -> CheckpointArray:
    """Open a checkpoint array for reading, refusing one whose metadata or any chunk file is missing."""
    path = Path(path)
    if not (path / "zarr.json").exists():
        raise CorruptArtifact(f"{path} is not a complete array (no zarr.json): its write was interrupted or "
                              f"it was made by an older privdyn. {_FIX}")
    try:
        arr = zarr.open_array(str(path), mode="r")
    except (ValueError, KeyError, OSError, TypeError) as e:
        raise CorruptArtifact(f"{path} has unreadable metadata ({e}). {_FIX}") from None
    missing = [p for p in _chunk_files(path, tuple(arr.shape)) if not p.exists()]
    if missing:
        raise CorruptArtifact(f"{path} lacks {len(missing)} of its {arr.shape[0]} checkpoint chunks "
                              f"(first: {missing[0].relative_to(path)}). {_FIX}")
    return CheckpointArray(path, arr)


def _state(path: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime) of an array's files: what a rewrite or damage would change."""
    files = [path / "zarr.json", *sorted((path / "c").rglob("*"))] if (path / "c").exists() else [path / "zarr.json"]
    return tuple((str(f), st.st_size, st.st_mtime_ns) for f in files if f.is_file() for st in [f.stat()])


def verify_array(path: str | Path) -> None:
    """Decode every chunk of the array at ``path`` (raises :class:`CorruptArtifact`), once per
    process and state of its files, like ``integrity.verify`` for other files."""
    path = Path(path).resolve()
    a = open_array(path)
    state = _state(path)
    if state in _VERIFIED:
        return
    for t in range(a.shape[0]):
        a[t]
    _VERIFIED.add(state)


def array_digest(path: Path) -> str:
    """A digest of an array's content from its metadata and the chunks' stored crc32c (no decoding)."""
    h = hashlib.sha256((path / "zarr.json").read_bytes() if (path / "zarr.json").exists() else b"missing")
    meta_shape: tuple[int, ...] = ()
    with contextlib.suppress(ValueError, KeyError, OSError, TypeError):
        meta_shape = tuple(zarr.open_array(str(path), mode="r").shape)
    for p in _chunk_files(path, meta_shape):
        try:
            with open(p, "rb") as fh:
                fh.seek(-4, os.SEEK_END)
                h.update(fh.read(4))
        except OSError:
            h.update(b"missing")
    return h.hexdigest()[:16]
