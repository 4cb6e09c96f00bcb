"""Cost of building the reference plan (DESIGN.md "References") against scoring with it.

The plan is built once per attack group and run; this prints its CPU seconds for privdyn's pair
design and for memberships without complementary pairs (balanced columns, iid), and the ratio to
one checkpoint of ``lira_online`` scored under the same plan, measured in the same run.

    .venv/bin/python benchmarks/reference_plan.py [--m 64] [--n 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from null_auc import membership  # benchmarks/null_auc.py: the three memberships

from privdyn.attacks import ATTACKS, CheckpointData
from privdyn.attacks.references import reference_plan


def fastest(fn, repeat: int) -> float:
    """The fastest of ``repeat`` CPU-time measurements of ``fn()``."""
    best = np.inf
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=64)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"M = {args.m}, N = {args.n}; CPU seconds, fastest of {args.repeat}\n")
    print("| membership | rule in effect | plan rows | plan s | lira_online s (one checkpoint) | plan / scoring |")
    print("|---|---|---:|---:|---:|---:|")
    for design in ("pairs", "columns", "iid"):
        z = membership(args.m, args.n, design, 0)
        refs = reference_plan(z, "pair", 0)
        plan = fastest(lambda z=z: reference_plan(z, "pair", 0), args.repeat)
        M, N = z.shape
        pool = {"phi": rng.normal(size=(M, N, 1))}
        data = CheckpointData(pool, {}, z, refs)
        score = fastest(lambda data=data: ATTACKS["lira_online"].run(data), args.repeat)
        rows = refs.excluded.shape[0]
        print(f"| {design} | `{refs.rule}` | {rows} | {plan:.2f} | {score:.2f} | {plan / score:.2f} |")


if __name__ == "__main__":
    main()
