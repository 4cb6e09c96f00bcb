"""Storage: the checkpoint-array store (zarr v3, one zstd-compressed, crc32c-checksummed chunk per
checkpoint) against the store it replaced (a .npy memmap with a CRC-32 sidecar), in one run.

Writes and reads one signal array [T, M, N, Q] both ways (default the quickstart's shape,
30 x 16 x 8000 x 1, float32 values shaped like a loss signal: many near zero, a long tail) and
prints the ratios (new / old) of the median of ``--repeat`` timings, and the bytes on disk per
(t, m, i, q). A second table does the same for the float64 -> float32 scores.

    .venv/bin/python benchmarks/storage.py [--shape 30 16 8000 1] [--repeat 5] [--run RUN_DIR]

With ``--run``, the script also prints the bytes per (t, m, i, q) of a real run directory by part.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from timing import median_seconds

from privdyn.store import arrays, atomic, integrity


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def compare(x_old: np.ndarray, x_new_dtype: np.dtype, repeat: int, label: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        old, new = Path(d) / "old.npy", Path(d) / "new.zarr"

        def write_old() -> None:  # the previous store: checksummed atomic .npy, written per checkpoint
            with atomic.atomic_path(old) as tmp:
                arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=x_old.dtype, shape=x_old.shape)
                for t in range(x_old.shape[0]):
                    arr[t] = x_old[t]
                arr.flush()
                del arr

        def write_new() -> None:
            with arrays.create_array(new, x_old.shape, x_new_dtype) as out:
                for t in range(x_old.shape[0]):
                    out[t] = x_old[t]

        def read_old() -> None:  # verify (one pass), then stream the checkpoints
            integrity._VERIFIED.clear()
            integrity.verify(old)
            a = np.load(old, mmap_mode="r")
            for t in range(a.shape[0]):
                np.asarray(a[t]).sum()

        def read_new() -> None:  # every chunk's crc32c is checked as it is decoded
            a = arrays.open_array(new)
            for t in range(a.shape[0]):
                a[t].sum()

        w_old, w_new = median_seconds(write_old, repeat), median_seconds(write_new, repeat)
        r_old, r_new = median_seconds(read_old, repeat), median_seconds(read_new, repeat)
        cells = x_old.size
        b_old = old.stat().st_size + integrity.sum_path(old).stat().st_size
        b_new = size(new)
        print(f"{label}: array {x_old.shape} {x_old.dtype} -> {np.dtype(x_new_dtype)}, "
              f"{x_old.nbytes / 1e6:.1f} MB, median of {repeat}")
        print(f"  write: npy+crc {w_old * 1e3:.0f} ms, zarr {w_new * 1e3:.0f} ms, ratio {w_new / w_old:.2f}")
        print(f"  read (verified, by checkpoint): npy+crc {r_old * 1e3:.0f} ms, zarr {r_new * 1e3:.0f} ms, "
              f"ratio {r_new / r_old:.2f}")
        print(f"  bytes per (t, m, i, q): npy+crc {b_old / cells:.3f}, zarr {b_new / cells:.3f}, "
              f"ratio {b_new / b_old:.2f}")


def run_sizes(run: Path) -> None:
    import json

    m = json.loads((run / "manifest.json").read_text())
    cfg_T = len(np.load(run / "epochs.npy"))
    M, N = np.load(run / "membership.npy").shape
    n_test, Q = m["stages"]["train"]["n_test"], len(json.loads(json.dumps(m.get("queries", [0]))))
    cells = cfg_T * M * (N + n_test) * Q
    total = size(run)
    print(f"run {run}: {total / 1e6:.1f} MB, {total / cells:.2f} bytes per (t, m, i, q) "
          f"(T={cfg_T}, M={M}, N+N_test={N + n_test})")
    for part in sorted(p for p in run.iterdir() if p.is_dir()):
        print(f"  {part.name:<10} {size(part) / 1e6:7.1f} MB  {size(part) / cells:6.2f} bytes per cell")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=4, default=[30, 16, 8000, 1])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--run", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    signal = rng.exponential(size=args.shape).astype(np.float32) ** 3  # loss-like: mass near 0, long tail
    compare(signal, np.float32, args.repeat, "signal")
    scores = rng.normal(size=args.shape[:3])  # float64 scores, stored as float32 now
    compare(scores, np.float32, args.repeat, "scores")
    if args.run:
        run_sizes(args.run)


if __name__ == "__main__":
    main()
