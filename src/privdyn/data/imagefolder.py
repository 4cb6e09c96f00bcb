"""Image folders in the CINIC-10 layout: ROOT/SPLIT/CLASS/IMAGE (png, jpg, jpeg, bmp).

Classes are the sorted folder names of the training split; every image must have one size. Only
the images of the chosen pool and test subsets are decoded (with Pillow).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from privdyn.data.base import Dataset
from privdyn.data.prepare import image_dataset, select_splits
from privdyn.data.roots import Location
from privdyn.errors import PrivdynError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
_GREY = ("1", "L", "LA", "I", "I;16", "F")


def _splits(options: dict) -> tuple[str, str]:
    return str(options.get("train_split", "train")), str(options.get("test_split", "test"))


def list_split(folder: Path, classes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Image paths (sorted within each class), their class indices, and the class names."""
    names = classes or sorted(d.name for d in folder.iterdir() if d.is_dir())
    extra = sorted({d.name for d in folder.iterdir() if d.is_dir()} - set(names))
    if extra:
        raise PrivdynError(f"{folder} has class folders {extra} that the training split lacks; "
                           "both splits need the same class folders.")
    paths, labels = [], []
    for k, name in enumerate(names):
        files = sorted(p for p in (folder / name).glob("*") if p.suffix.lower() in EXTENSIONS) \
            if (folder / name).is_dir() else []
        paths += files
        labels += [k] * len(files)
    if not paths:
        raise PrivdynError(f"{folder} holds no images in class folders (CLASS/*{'|*'.join(EXTENSIONS)}).")
    return np.array(paths, dtype=object), np.array(labels, np.int64), names


def decode(paths: np.ndarray, channels: int) -> np.ndarray:
    """Decode images into uint8 [n, C, H, W]; all must share one size."""
    from PIL import Image, UnidentifiedImageError

    mode = "L" if channels == 1 else "RGB"
    out = None
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                a = np.asarray(im.convert(mode))
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise PrivdynError(f"Cannot decode image {p} ({err}); replace or remove it.") from None
        a = a[None] if channels == 1 else a.transpose(2, 0, 1)
        if out is None:
            out = np.empty((len(paths), *a.shape), np.uint8)
        elif a.shape != out.shape[1:]:
            raise PrivdynError(f"{p} is {a.shape[2]}x{a.shape[1]} but {paths[0]} is {out.shape[3]}x{out.shape[2]}; "
                               "resize all images to one size.")
        out[i] = a
    assert out is not None  # paths is not empty
    return out


def infer_channels(path: Path) -> int:
    """1 for greyscale images, 3 otherwise."""
    from PIL import Image

    with Image.open(path) as im:
        return 1 if im.mode in _GREY else 3


def _missing(folder: Path, options: dict) -> list[str]:
    return [f"no folder {s}/" for s in _splits(options) if not (folder / s).is_dir()]


def location(options: dict) -> Location:
    """Where the image folder is looked for (``options.path``, else ROOT/cinic10 or ROOT/CINIC-10) and the split
    folders it must hold."""
    tr, te = _splits(options)
    return Location(
        "imagefolder", ("cinic10", "CINIC-10"), lambda p: _missing(p, options),
        f"an image folder with {tr}/CLASS/*.png and {te}/CLASS/*.png (the CINIC-10 layout: "
        "CINIC-10.tar.gz from the University of Edinburgh DataShare, extracted; or your own images)")


def load_imagefolder(n_pool: int | None, n_test: int | None, seed: int, options: dict, root: Path) -> Dataset:
    """Images from ``dataset.options.path`` (default ROOT/cinic10); ``options.channels`` 1 or 3 (default: inferred)."""
    folder = location(options).find(root, options)
    tr, te = _splits(options)
    p_pool, y_pool, classes = list_split(folder / tr)
    p_test, y_test, _ = list_split(folder / te, classes)
    p_pool, y_pool, p_test, y_test = select_splits(p_pool, y_pool, p_test, y_test, n_pool, n_test, seed)
    channels = int(options.get("channels") or infer_channels(p_pool[0]))
    if channels not in (1, 3):
        raise PrivdynError(f"dataset.options.channels={channels}; use 1 (greyscale) or 3 (RGB)")
    return image_dataset("imagefolder", decode(p_pool, channels), y_pool, decode(p_test, channels), y_test,
                         None, None, seed, len(classes))
