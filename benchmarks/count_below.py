"""The core's batched count (``attacks.base.count_below``, numpy only) against the torch
``searchsorted`` it replaced, on the shapes RMIA and Attack-R give it, in one run.

    .venv/bin/python benchmarks/count_below.py [--repeat 5]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from timing import median_seconds

from privdyn.attacks.base import count_below

#: (rows, population per row, values per row, what)
SHAPES = [(16, 2000, 8000, "RMIA, quickstart (M=16, Z=2000, N=8000)"),
          (64, 20000, 50000, "RMIA, paper scale (M=64, Z=20000, N=50000)"),
          (8192, 16, 16, "Attack-R block, M=16"),
          (2048, 64, 64, "Attack-R block, M=64")]



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    for rows, k, j, what in SHAPES:
        pop, values = rng.normal(size=(rows, k)), rng.normal(size=(rows, j))

        def with_torch(pop=pop, values=values):
            return torch.searchsorted(torch.from_numpy(np.sort(pop, axis=1)), torch.from_numpy(values)).numpy()

        assert (count_below(pop, values) == with_torch()).all()
        new = median_seconds(lambda pop=pop, values=values: count_below(pop, values), args.repeat)
        old = median_seconds(with_torch, args.repeat)
        print(f"{what:<45} numpy {new * 1e3:7.1f} ms  torch {old * 1e3:7.1f} ms  ratio {new / old:.2f}")


if __name__ == "__main__":
    main()
