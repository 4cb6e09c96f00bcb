"""Checksums of every file privdyn writes, so truncation and bit flips are found on read.

Beside each file ``NAME`` the store keeps ``.NAME.crc`` (JSON): the file's size and CRC-32s. A
``.npy`` array is checksummed per slice of its first axis (one checkpoint of a ``[T, ...]``
array is one chunk), any other file as one chunk. The checksum is written before the file is
renamed into place, so a kill between the two leaves a mismatch (found, recomputed), never an
unchecked file. A file is verified once per process and state (size, mtime).
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from privdyn.errors import PrivdynError

SUFFIX = ".crc"
#: Bytes read at a time while checksumming.
BLOCK = 1 << 24
_VERIFIED: set[tuple[str, int, int]] = set()


class CorruptArtifact(PrivdynError):
    """A file whose content does not match its checksum (or that has none)."""


def sum_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{SUFFIX}")


def is_checksum(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(SUFFIX)


def _crc_range(fh: Any, start: int, length: int) -> int:
    fh.seek(start)
    crc = 0
    while length > 0:
        block = fh.read(min(BLOCK, length))
        if not block:
            return -1  # truncated
        crc = zlib.crc32(block, crc)
        length -= len(block)
    return crc


def _layout(path: Path, npy: bool) -> tuple[int, int, int]:
    """(data offset, chunk bytes, chunks) of a file: per first-axis slice for ``.npy``."""
    size = path.stat().st_size
    if npy:
        try:
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(fh)
                offset = fh.tell()
            if shape:
                per = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
                return offset, per, int(shape[0])
        except (ValueError, OSError):
            pass  # not readable as .npy: checksummed (and later refused) as one chunk
    return 0, size, 1


def checksums(path: Path, name: str | None = None) -> dict[str, Any]:
    """The size and per-chunk CRC-32s of a file (``name``: the name it will have, for its kind)."""
    offset, per, n = _layout(path, (name or path.name).endswith(".npy"))
    with open(path, "rb") as fh:
        head = _crc_range(fh, 0, offset) if offset else 0
        chunks = [_crc_range(fh, offset + k * per, per) for k in range(n)] if per else [0] * n
    return {"size": path.stat().st_size, "head": head, "chunk_bytes": per, "chunks": chunks}


def write_checksum(data: Path, final: Path) -> None:
    """Write the checksum of ``data`` (a finished temp file) as ``final``'s sidecar, atomically."""
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=final.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(checksums(data, final.name), fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, sum_path(final))


def verify_tree(root: Path, skip: tuple[str, ...] = (".lock",)) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Verify every file under ``root`` (checksums themselves and ``skip`` names aside): the files
    that passed, and (file, problem) for those that did not."""
    ok, bad = [], []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or is_checksum(p) or p.name in skip or p.name.endswith(".tmp"):
            continue
        try:
            verify(p)
            ok.append(p)
        except CorruptArtifact as e:
            bad.append((p, str(e)))
    return ok, bad


def verify(path: str | Path) -> None:
    """Raise :class:`CorruptArtifact` naming the file and the damaged chunk when ``path`` does
    not match its checksum."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _VERIFIED:
        return
    fix = ("Delete it and run `privdyn run` on this run directory, which recomputes the stage that "
           "makes it (or restore the run from a backup).")
    side = sum_path(path)
    if not side.exists():
        raise CorruptArtifact(f"{path} has no checksum ({side.name}): it was written by an older privdyn "
                              f"or its write was interrupted, so its content cannot be trusted. {fix}")
    try:
        want = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CorruptArtifact(f"The checksum file {side} is damaged, so {path} cannot be verified. {fix}") from None
    got = checksums(path)
    if got["size"] != want.get("size"):
        raise CorruptArtifact(f"{path} is {got['size']:,} bytes but was written as {want.get('size'):,}: it is "
                              f"truncated or was overwritten. {fix}")
    if got["head"] != want.get("head") or got["chunks"] != want.get("chunks"):
        bad = [k for k, (a, b) in enumerate(zip(got["chunks"], want.get("chunks", []))) if a != b]
        where = f"chunk {bad[0]} (checkpoint index {bad[0]} of a [T, ...] array)" if bad else "its header"
        raise CorruptArtifact(f"{path} does not match its checksum at {where}: the file is corrupt "
                              f"(a disk or copy error). {fix}")
    _VERIFIED.add(key)
