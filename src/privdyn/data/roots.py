"""Where dataset files are looked for, and the error that says where and what to get.

The data root is ``dataset.root`` (or ``--data-root``), else the environment variable
``PRIVDYN_DATA_ROOT``, else ``~/.privdyn/data``. Each file-based dataset has a :class:`Location`:
candidate paths under the root (``dataset.options.path`` replaces them), a check of what is missing
at a candidate, and what to get when nothing usable is found.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from privdyn.errors import PrivdynError

ENV_VAR = "PRIVDYN_DATA_ROOT"
DEFAULT_ROOT = "~/.privdyn/data"


def data_root(root: str | Path | None = None) -> Path:
    """The data root: the given one (config or ``--data-root``), else $PRIVDYN_DATA_ROOT, else ~/.privdyn/data."""
    chosen = root if root not in (None, "") else os.environ.get(ENV_VAR) or DEFAULT_ROOT
    return Path(chosen).expanduser()


def missing_files(folder: Path, names: Sequence[tuple[str, ...]]) -> list[str]:
    """What is missing in ``folder``: each entry of ``names`` lists acceptable variants of one file."""
    if not folder.is_dir():
        return ["no such folder"]
    return [" or ".join(variants) for variants in names if first_existing(folder, variants) is None]


def first_existing(folder: Path, variants: tuple[str, ...]) -> Path | None:
    """The first of ``variants`` that is a file in ``folder``."""
    return next((folder / v for v in variants if (folder / v).is_file()), None)


def missing_file(path: Path) -> list[str]:
    """The check for a dataset stored as one file."""
    return [] if path.is_file() else ["no such file"]


@dataclass(frozen=True)
class Location:
    """Where a dataset's files may be, how to tell a candidate is usable, and what to get."""

    dataset: str
    relative: tuple[str, ...]
    missing: Callable[[Path], list[str]]
    get: str
    system: tuple[str, ...] = ()
    archives: tuple[str, ...] = ()

    def candidates(self, root: Path, options: dict) -> list[Path]:
        """``dataset.options.path`` (relative to the root unless absolute), else the usual places."""
        if options.get("path"):
            p = Path(str(options["path"])).expanduser()
            return [p if p.is_absolute() else root / p]
        return [root / r for r in self.relative] + [Path(s) for s in self.system]

    def search(self, root: Path, options: dict) -> tuple[Path | None, list[str]]:
        """The first usable candidate (or None) and, for each unusable one, what it lacks."""
        looked: list[str] = []
        for c in self.candidates(root, options):
            lacking = self.missing(c)
            if not lacking:
                return c, looked
            looked.append(f"{c} ({'; '.join(lacking)})")
        return None, looked

    def find(self, root: Path, options: dict) -> Path:
        """The usable candidate, or a PrivdynError naming every path looked at and what to get."""
        found, looked = self.search(root, options)
        if found is not None:
            return found
        if not looked:
            raise PrivdynError(f"Dataset {self.dataset!r} reads the file named by dataset.options.path; set it, "
                               f"e.g. --set dataset.options.path=/data/mine.npz ({self.get}).")
        first = self.candidates(root, options)[0]
        unpacked = [a for a in self.archives if (root / a).is_file()]
        extract = (f" Found {root / unpacked[0]}: extract it with `tar xzf {root / unpacked[0]} -C {root}`."
                   if unpacked else "")
        raise PrivdynError(
            f"Dataset {self.dataset!r}: no usable files. Looked at: {', '.join(looked)}.{extract} "
            f"Get {self.get}; the first place looked at is {first}. Or point privdyn at the files with "
            f"--data-root, dataset.root or ${ENV_VAR} (the data root, now {root}), or dataset.options.path."
        )

    def status(self, root: Path, options: dict | None = None) -> str:
        """One line for `privdyn datasets`: where it was found, or that it was not."""
        found, looked = self.search(root, options or {})
        if found is None and not looked:
            return "set dataset.options.path"
        return f"found: {found}" if found is not None else "not found"


def read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when it starts with the gzip magic (whatever its name says)."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise PrivdynError(f"Cannot read {path}: {err.strerror}. Check the file and its permissions.") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise PrivdynError(f"{path} is a damaged gzip file ({err}); download it again.") from None
