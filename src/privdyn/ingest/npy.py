"""Opening user ``.npy`` files safely: memory-mapped, never unpickled, errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from privdyn.errors import PrivdynError


def open_npy(path: Path, what: str) -> np.ndarray:
    """``path`` as a read-only memory map (only its header is read now); object arrays are refused.

    ``what`` says what the file should hold, for the message when it is missing or unreadable.
    """
    if not path.is_file():
        raise PrivdynError(f"{path} is missing: it should hold {what}. Write it with numpy.save, or check the "
                           "source folder and --layout (docs/import.md lists the files of each layout).")
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as e:
        if any(k in str(e) for k in ("allow_pickle", "Object arrays", "Python objects")):
            raise PrivdynError(f"{path} holds Python objects (a pickle), which privdyn never loads: it should "
                               f"hold {what}. Save it as a plain numeric array with numpy.save.") from None
        if "empty" in str(e):  # numpy cannot memory-map an array of zero bytes
            arr = np.load(path, allow_pickle=False)
        else:
            raise PrivdynError(f"{path} is not a readable .npy file ({e}): it should hold {what}. "
                               "Write it again with numpy.save.") from None
    except (OSError, EOFError) as e:
        raise PrivdynError(f"{path} is not a readable .npy file ({e}): it should hold {what}. "
                           "Write it again with numpy.save.") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise PrivdynError(f"{path} is an .npz archive, not one .npy array: it should hold {what}.")
    return arr


def shape_str(shape: tuple[int | str | None, ...]) -> str:
    """A shape for messages: ``[3, 8, 200]``; None or names stand for sizes that may be anything."""
    return "[" + ", ".join("any" if s is None else str(s) for s in shape) + "]"
