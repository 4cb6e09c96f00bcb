"""Output folders of the commands that write a folder of their own (a sweep, a comparison): they
write only into a new or empty folder, or one they wrote before, so no user's file is overwritten."""

from __future__ import annotations

from pathlib import Path

from privdyn.errors import PrivdynError
from privdyn.store.atomic import is_leftover


def claim(out: Path, owned: bool, what: str, writes: str, owner: str, fix: str) -> None:
    """Create ``out`` for writing, or raise :class:`PrivdynError` before anything is written.

    ``out`` may be new, empty (but for the leftovers of an interrupted write) or ``owned`` (the
    caller recognised it as its own). ``what`` names the folder ("The sweep folder"), ``writes``
    what will be written there, ``owner`` what an owned folder is, ``fix`` what to do instead.
    """
    if out.exists() and not out.is_dir():
        raise PrivdynError(f"{what} {out} is a file, not a folder: {writes} go into a folder. {fix}")
    if out.is_dir() and not owned:
        try:
            names = sorted((p.name for p in out.iterdir() if not is_leftover(p.name)),
                           key=lambda n: (n.startswith("."), n))
        except OSError as err:
            raise PrivdynError(f"Cannot read {what.lower()} {out} ({err.strerror}). {fix}") from None
        if names:
            raise PrivdynError(f"{what} {out} already holds files (e.g. {names[0]}) and is not {owner}, so privdyn "
                               f"will not write into it: {writes} could overwrite your files. {fix}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PrivdynError(f"Cannot create {what.lower()} {out}: {err.strerror or err}. {fix}") from None
