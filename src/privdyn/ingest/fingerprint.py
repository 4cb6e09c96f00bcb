"""The fingerprint of an import: a streaming sha256 of every file's content (sizes and times are not
enough: a rewritten file of the same size must make the run's signals stale)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def file_sha256(path: Path) -> str:
    """The sha256 of one file's content, read in blocks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def fingerprint(root: Path, files: Iterable[Path]) -> str:
    """One digest of ``files``: their paths relative to ``root`` and their contents (``sha256:`` + 32 hex)."""
    h = hashlib.sha256()
    for p in sorted(files):
        rel = p.relative_to(root).as_posix() if p.is_relative_to(root) else p.name
        h.update(f"{rel}\0{file_sha256(p)}\n".encode())
    return "sha256:" + h.hexdigest()[:32]
