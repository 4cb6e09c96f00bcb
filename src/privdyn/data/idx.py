"""MNIST and Fashion-MNIST from their official IDX files (gzipped or raw).

IDX: two zero bytes, a type byte (0x08 ubyte ... 0x0E double), the number of dimensions, then each
dimension as a big-endian uint32, then the values in C order, big-endian.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from privdyn.data.base import Dataset
from privdyn.data.prepare import image_dataset
from privdyn.data.roots import Location, first_existing, missing_files, read_bytes
from privdyn.errors import PrivdynError

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_VARIANTS = [(f"{f}.gz", f, f.replace("-idx", ".idx")) for f in FILES]
_REFETCH = "download it again"


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (gzip detected by its magic) into a native-endian array."""
    raw = read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise PrivdynError(f"{path} is not an IDX file: it starts with {raw[:4].hex() or 'nothing'}, "
                           f"an IDX file with 00 00 then a type byte 08-0e; {_REFETCH}.")
    ndim, header = raw[3], 4 + 4 * raw[3]
    if len(raw) < header:
        raise PrivdynError(f"{path} is truncated inside its IDX header; {_REFETCH}.")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_TYPES[raw[2]])
    want = header + math.prod(shape) * dtype.itemsize
    if len(raw) != want:
        what = "truncated" if len(raw) < want else "longer than its header says"
        raise PrivdynError(f"{path} is {what}: {len(raw)} bytes, its header {shape} needs {want}; {_REFETCH}.")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def read_split(folder: Path, images: str, labels: str) -> tuple[np.ndarray, np.ndarray]:
    """One split's images ``[n, 1, H, W]`` (uint8) and labels ``[n]``, checked against each other."""
    ipath = first_existing(folder, _VARIANTS[FILES.index(images)])
    lpath = first_existing(folder, _VARIANTS[FILES.index(labels)])
    assert ipath is not None and lpath is not None  # the location checked that both exist
    x, y = read_idx(ipath), read_idx(lpath)
    if x.ndim != 3 or x.dtype != np.uint8:
        raise PrivdynError(f"{ipath} holds {x.dtype} of shape {x.shape}, not uint8 images [n, H, W]; {_REFETCH}.")
    if y.ndim != 1 or len(y) != len(x):
        raise PrivdynError(f"{lpath} holds shape {y.shape}, not one label for each of the {len(x)} images "
                           f"in {ipath}; the two files do not belong together.")
    if len(y) and not 0 <= int(y.min()) <= int(y.max()) <= 9:
        raise PrivdynError(f"{lpath} has labels {int(y.min())}..{int(y.max())}; these datasets have classes 0-9.")
    return x[:, None], y.astype(np.int64)


def load_idx_dataset(name: str, folder: Path, n_pool: int | None, n_test: int | None, seed: int) -> Dataset:
    """The official 60k/10k train/test IDX files in ``folder``, as 10-class images [n, 1, 28, 28]."""
    x_pool, y_pool = read_split(folder, FILES[0], FILES[1])
    x_test, y_test = read_split(folder, FILES[2], FILES[3])
    return image_dataset(name, x_pool, y_pool, x_test, y_test, n_pool, n_test, seed, 10)


def _location(name: str, relative: tuple[str, ...], get: str, system: tuple[str, ...] = ()) -> Location:
    return Location(name, relative, lambda p: missing_files(p, _VARIANTS), get, system)


MNIST = _location(
    "mnist", ("mnist", "MNIST/raw"),
    "the four MNIST files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
    "and t10k-labels-idx1-ubyte.gz (Y. LeCun's MNIST page or a mirror of it; gzipped or raw)")
FASHION_MNIST = _location(
    "fashion_mnist", ("fashion_mnist", "fashion-mnist", "FashionMNIST/raw"),
    "the four Fashion-MNIST files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (the zalandoresearch/fashion-mnist "
    "repository, or `apt-get install dataset-fashion-mnist` on Debian/Ubuntu)",
    system=("/usr/share/datasets/fashion-mnist",))


def load_mnist(n_pool: int | None, n_test: int | None, seed: int, options: dict, root: Path) -> Dataset:
    """MNIST from IDX files under the data root (or ``dataset.options.path``)."""
    return load_idx_dataset("mnist", MNIST.find(root, options), n_pool, n_test, seed)


def load_fashion_mnist(n_pool: int | None, n_test: int | None, seed: int, options: dict, root: Path) -> Dataset:
    """Fashion-MNIST from IDX files under the data root, else the Debian package's folder."""
    return load_idx_dataset("fashion_mnist", FASHION_MNIST.find(root, options), n_pool, n_test, seed)
