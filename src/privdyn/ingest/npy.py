"""Opening user ``.npy`` files safely: memory-mapped, never unpickled, errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from privdyn.errors import PrivdynError

#: The first bytes of every ``.npy`` file (numpy.lib.format.MAGIC_PREFIX), and of an ``.npz`` (zip) archive.
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


def check_is_file(path: Path, what: str) -> None:
    """Raise unless ``path`` is a regular file: a directory, another kind of entry and a missing path
    each get their own message (``what`` says what the file should hold)."""
    if path.is_file():
        return
    if path.is_dir():
        raise PrivdynError(f"{path} is a directory, not a file: it should be a .npy file holding {what}. Move "
                           "that folder away and write the file with numpy.save (docs/import.md lists the files "
                           "of each layout).")
    if path.exists():
        raise PrivdynError(f"{path} is not a regular file (a socket, pipe or device): it should be a .npy file "
                           f"holding {what}. Replace it with the file written by numpy.save.")
    raise PrivdynError(f"{path} is missing: it should hold {what}. Write it with numpy.save, or check the "
                       "source folder and --layout (docs/import.md lists the files of each layout).")


def _magic(path: Path, what: str) -> bytes:
    """The first bytes of ``path`` (as many as the .npy magic has, fewer for a shorter file)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(NPY_MAGIC))
    except OSError as e:
        raise PrivdynError(f"{path} cannot be read ({e.strerror or e}): it should hold {what}. Check its "
                           "permissions, or write it again with numpy.save.") from None


def open_npy(path: Path, what: str) -> np.ndarray:
    """``path`` as a read-only memory map (only its header is read now); object arrays are refused.

    ``what`` says what the file should hold, for the message when it is missing or unreadable. The
    magic bytes are checked first: numpy takes any file without them for a pickle.
    """
    check_is_file(path, what)
    head = _magic(path, what)
    if head.startswith(ZIP_MAGIC):
        raise PrivdynError(f"{path} is an .npz archive, not one .npy array: it should hold {what}. Save that "
                           "array alone with numpy.save.")
    if head != NPY_MAGIC:  # numpy would take any other header for a pickle
        raise PrivdynError(f"{path} is not a .npy file (it does not start with the NumPy header"
                           f"{', it is empty' if not head else ''}): it should hold {what}. Write it with "
                           "numpy.save (a text, CSV or pickle file under a .npy name is not read).")
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
