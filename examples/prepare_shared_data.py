"""Write the shared benchmark arrays (shared/data/*.npz) into the standard formats privdyn reads.

    python examples/prepare_shared_data.py DEST [--source DIR] [--limit N]

makes a data root for the example configs (`privdyn run examples/mnist.yaml --data-root DEST`):

    DEST/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz      MNIST, 20,000 train / 10,000 test
    DEST/fashion_mnist/...                                          Fashion-MNIST, the same
    DEST/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}  CIFAR-10 (JPEG copy), 10k / 10k
    DEST/location30.npz                                             Location-30 (x, y), 5,010 rows

The CIFAR batches are written exactly as the official Python 2 pickles are (protocol 2, byte
strings as BINSTRING), so DEST looks like a data root made from the official downloads.
``--limit N`` keeps the first N samples of each split (for quick tests).
"""

from __future__ import annotations

import argparse
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

from privdyn.store import atomic

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def idx_bytes(a: np.ndarray) -> bytes:
    """An IDX file of a uint8 array: 00 00 08 ndim, big-endian dims, the values."""
    return bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.astype(np.uint8).tobytes()


def write_idx_set(folder: Path, d: dict[str, np.ndarray]) -> None:
    for prefix, split in (("train", "train"), ("t10k", "test")):
        atomic.write_bytes(folder / f"{prefix}-images-idx3-ubyte.gz", gzip.compress(idx_bytes(d[f"x_{split}"]), 6))
        atomic.write_bytes(folder / f"{prefix}-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(d[f"y_{split}"]), 6))


class Py2Pickler(pickle._Pickler):
    """Protocol 2 with bytes written as Python 2 str (BINSTRING), as cPickle wrote the CIFAR batches."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj: bytes) -> None:
        n = len(obj)
        self.write((pickle.SHORT_BINSTRING + bytes([n]) if n < 256 else pickle.BINSTRING + struct.pack("<i", n)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes

    def save_global(self, obj: object, name: str | None = None) -> None:
        module = getattr(obj, "__module__", "") or ""
        if module.startswith("numpy._core."):  # numpy 1.x names, as in the official files
            self.write(pickle.GLOBAL + f"numpy.core.{module[12:]}\n{obj.__name__}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


def py2_pickle(obj: object) -> bytes:
    import io

    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cifar_batch(label: str, x_hwc: np.ndarray, y: np.ndarray, first: int) -> dict:
    """The official batch dict: data uint8 [n, 3072] (R, G, B planes), labels, filenames."""
    data = np.ascontiguousarray(x_hwc.transpose(0, 3, 1, 2).reshape(len(x_hwc), 3072))
    names = [f"image_{first + i:05d}.png".encode() for i in range(len(y))]
    return {b"batch_label": label.encode(), b"labels": [int(v) for v in y], b"data": data, b"filenames": names}


def write_cifar10(folder: Path, d: dict[str, np.ndarray]) -> None:
    parts = np.array_split(np.arange(len(d["y_train"])), 5)
    for i, idx in enumerate(parts, 1):
        batch = cifar_batch(f"training batch {i} of 5", d["x_train"][idx], d["y_train"][idx],
                            int(idx[0]) if len(idx) else 0)
        atomic.write_bytes(folder / f"data_batch_{i}", py2_pickle(batch))
    test = cifar_batch("testing batch 1 of 1", d["x_test"], d["y_test"], 0)
    atomic.write_bytes(folder / "test_batch", py2_pickle(test))
    meta = {b"num_cases_per_batch": len(parts[0]), b"label_names": [n.encode() for n in CIFAR10_LABELS],
            b"num_vis": 3072}
    atomic.write_bytes(folder / "batches.meta", py2_pickle(meta))


def load(source: Path, name: str, limit: int | None) -> dict[str, np.ndarray]:
    with np.load(source / name, allow_pickle=False) as z:
        return {k: z[k][:limit] for k in z.files}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dest", type=Path, help="the data root to write")
    ap.add_argument("--source", type=Path, default=SHARED, help=f"the shared data folder (default {SHARED})")
    ap.add_argument("--limit", type=int, default=None, help="keep the first N samples of each split")
    a = ap.parse_args(argv)
    write_idx_set(a.dest / "mnist", load(a.source, "mnist_train20k_test10k_uint8.npz", a.limit))
    write_idx_set(a.dest / "fashion_mnist", load(a.source, "fashion_mnist_train20k_test10k_uint8.npz", a.limit))
    write_cifar10(a.dest / "cifar-10-batches-py", load(a.source, "cifar10_jpegq75_train10k_test10k_uint8.npz", a.limit))
    loc = load(a.source, "location30_bangkok_uint8.npz", a.limit)
    atomic.save_npz(a.dest / "location30.npz", x=loc["x"], y=loc["y"])
    print(f"wrote {a.dest}: mnist/, fashion_mnist/, cifar-10-batches-py/, location30.npz")


if __name__ == "__main__":
    main()
