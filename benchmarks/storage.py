"""Storage: what the checksummed store costs against plain .npy files, measured in one run.

Writes and reads one float32 signal array [T, M, N, Q] (default the quickstart's shape,
30 x 16 x 8000 x 1) both ways and prints the ratios (new / old) of the median of ``--repeat``
timings, and the bytes on disk per (t, m, i, q).

    .venv/bin/python benchmarks/storage.py [--shape 30 16 8000 1] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from privdyn.store import atomic, integrity


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=4, default=[30, 16, 8000, 1])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    x = np.random.default_rng(0).normal(size=args.shape).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        old, new = Path(d) / "old.npy", Path(d) / "new.npy"

        def write_old() -> None:
            np.save(old, x, allow_pickle=False)

        def write_new() -> None:
            with atomic.open_memmap_atomic(new, x.shape, x.dtype) as arr:
                arr[:] = x

        def read_old() -> None:
            np.asarray(np.load(old, mmap_mode="r")).sum()

        def read_new() -> None:
            integrity._VERIFIED.clear()  # noqa: SLF001  (measure a first read in a process)
            integrity.verify(new)
            np.asarray(np.load(new, mmap_mode="r")).sum()

        w_old, w_new = timed(write_old, args.repeat), timed(write_new, args.repeat)
        crc = timed(lambda: integrity.checksums(new), args.repeat)
        r_old, r_new = timed(read_old, args.repeat), timed(read_new, args.repeat)
        cells = x.size
        side = integrity.sum_path(new).stat().st_size
        print(f"array {tuple(args.shape)} float32, {x.nbytes / 1e6:.1f} MB, median of {args.repeat}")
        print(f"write: plain np.save {w_old * 1e3:.0f} ms (no fsync), checksummed atomic memmap "
              f"{w_new * 1e3:.0f} ms (fsync, fallocate, CRC), ratio {w_new / w_old:.2f}")
        print(f"checksum pass alone: {crc * 1e3:.0f} ms ({x.nbytes / crc / 1e9:.2f} GB/s), "
              f"{crc / w_new:.0%} of the checksummed write")
        print(f"read (first in a process): plain {r_old * 1e3:.0f} ms, verified {r_new * 1e3:.0f} ms, "
              f"ratio {r_new / r_old:.2f}")
        print(f"bytes per (t, m, i, q): plain {old.stat().st_size / cells:.4f}, checksummed "
              f"{(new.stat().st_size + side) / cells:.4f} (sidecar {side} bytes)")


if __name__ == "__main__":
    main()
