"""Checksums of every file privdyn writes, so truncation and bit flips are found on read.

Beside each file ``NAME`` the store keeps ``.NAME.crc`` (JSON): the file's size and CRC-32.
(The large checkpoint arrays are zarr, checksummed per chunk by zarr itself: ``store.arrays``.)
The checksum is written before the file is renamed into place, so a kill
between the two leaves a mismatch (found, recomputed), never an unchecked file. A file is verified
once per process and state (size, mtime).
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any

from privdyn.errors import PrivdynError

SUFFIX = ".crc"
#: Bytes read at a time while checksumming.
BLOCK = 1 << 24
_VERIFIED: set[tuple[str, int, int]] = set()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: The modes ``open()`` and ``mkdir()`` would give (``mkstemp`` and ``mkdtemp`` make private ones).
FILE_MODE, DIR_MODE = 0o666 & ~_umask(), 0o777 & ~_umask()


class CorruptArtifact(PrivdynError):
    """A file whose content does not match its checksum (or that has none)."""


def sum_path(path: Path) -> Path:
    """The checksum sidecar of ``path``: ``.NAME.crc`` beside it."""
    return path.with_name(f".{path.name}{SUFFIX}")


def data_path(checksum: Path) -> Path:
    """The file that the checksum file ``checksum`` belongs to."""
    return checksum.with_name(checksum.name[1:-len(SUFFIX)])


def is_checksum(path: Path) -> bool:
    """True when ``path`` is a checksum sidecar (``.NAME.crc``)."""
    return path.name.startswith(".") and path.name.endswith(SUFFIX)


def checksums(path: Path) -> dict[str, Any]:
    """The size and CRC-32 of a file."""
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            crc = zlib.crc32(block, crc)
    return {"size": path.stat().st_size, "crc32": crc}


def write_checksum(data: Path, final: Path) -> None:
    """Write the checksum of ``data`` (a finished temp file) as ``final``'s sidecar, atomically."""
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=final.parent)
    os.chmod(tmp, FILE_MODE)
    with os.fdopen(fd, "w") as fh:
        json.dump(checksums(data), fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, sum_path(final))


def verify(path: str | Path) -> None:
    """Raise :class:`CorruptArtifact` naming the file and the damaged chunk when ``path`` does
    not match its checksum."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CorruptArtifact(f"{path} is missing. Run `privdyn run` on this run directory, which recomputes "
                              "the stage that makes it.") from None
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
    if got["crc32"] != want.get("crc32"):
        raise CorruptArtifact(f"{path} does not match its checksum: the file is corrupt (a disk or copy "
                              f"error). {fix}")
    _VERIFIED.add(key)
