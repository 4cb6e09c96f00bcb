"""Per-sample training traces on disk, for the training-time monitor (``privdyn.monitor``).

A folder holds one ``.npy`` per signal and recorded epoch (``SIGNAL/000003.npy``: the row
``[N]`` of the 4th recorded epoch, float16 by default), each written atomically with its checksum
sidecar, and ``traces.json`` (the number of samples, the dtype and the epochs recorded, written
after the rows). A crash leaves whole rows of whole epochs; nothing is pickled, and a reader takes
any block of samples across the epochs from memory-mapped rows, so the monitor can rank millions
of samples without holding every trace in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from privdyn.errors import DataError
from privdyn.store import atomic, integrity
from privdyn.store.integrity import CorruptArtifact

META = "traces.json"


class TraceStore:
    """The trace folder ``root`` for ``n_samples`` samples, rows stored as ``dtype``."""

    def __init__(self, root: str | Path, n_samples: int, dtype: Any = np.float16):
        self.root = Path(root)
        self.n_samples = int(n_samples)
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise DataError(f"traces are stored as floats (float16 or float32), not {self.dtype}")

    def row_path(self, signal: str, index: int) -> Path:
        """Where row ``index`` (0-based recorded epoch) of ``signal`` lives."""
        return self.root / signal / f"{index:06d}.npy"

    def write_row(self, signal: str, index: int, row: np.ndarray) -> None:
        """Write one epoch's row ``[N]`` atomically (replacing a row of that index)."""
        r = np.asarray(row)
        if r.shape != (self.n_samples,):
            raise DataError(f"a {signal} row has shape {r.shape}, expected ({self.n_samples},)")
        atomic.save_npy(self.row_path(signal, index), r.astype(self.dtype))

    def write_meta(self, epochs: list[float], signals: list[str]) -> None:
        """Record which epochs and signals the folder holds (after their rows are written)."""
        atomic.write_json(self.root / META, {"n_samples": self.n_samples, "dtype": self.dtype.name,
                                             "epochs": [float(e) for e in epochs], "signals": list(signals)})

    def read(self, signal: str, n_rows: int, samples: slice = slice(None)) -> np.ndarray:
        """Rows ``0 .. n_rows - 1`` of ``signal`` for a block of samples: ``[n_rows, block]`` float32
        (a row never written, e.g. an epoch without an evaluation pass, reads as NaN)."""
        width = len(range(*samples.indices(self.n_samples)))
        out = np.full((n_rows, width), np.nan, dtype=np.float32)
        for j in range(n_rows):
            path = self.row_path(signal, j)
            if not path.exists():
                continue
            self._verify(path)
            row = np.load(path, mmap_mode="r", allow_pickle=False)
            if row.shape != (self.n_samples,):
                raise CorruptArtifact(f"{path} holds {row.shape} values, not ({self.n_samples},): it belongs to "
                                      "another monitor; give each monitor its own folder")
            out[j] = row[samples]
        return out

    def _verify(self, path: Path) -> None:
        try:
            integrity.verify(path)
        except CorruptArtifact as e:
            raise CorruptArtifact(f"monitor trace row {path} failed its check ({str(e).split('. ')[0]}). Delete "
                                  "the monitor folder and record again, or resume from a state_dict saved before "
                                  "the damage.") from None

    @classmethod
    def open(cls, root: str | Path) -> tuple[TraceStore, dict[str, Any]]:
        """An existing folder and its ``traces.json``."""
        meta = atomic.read_json(Path(root) / META)
        return cls(root, int(meta["n_samples"]), meta["dtype"]), meta
