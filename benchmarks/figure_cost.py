"""Where the report's figures spend their CPU: per figure, building it, its tight bounding box,
the PNG, the PDF and the rest (the preview), as CPU seconds of this process.

    python benchmarks/figure_cost.py --run RUN          # RUN: an analysed run, e.g. the quickstart's
    python benchmarks/figure_cost.py --run RUN --repeat 3

The figures are drawn ``--repeat`` times after one warm-up pass (fonts, tick machinery); the table
gives the mean of the repeats. Phases are timed by wrapping ``figures.tight_bbox`` and
``Figure.savefig``, so the package's own code is what runs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from privdyn.report import figures
from privdyn.report.data import load_run_data

PHASES = ("bbox", "png", "pdf")


def timed(spent: dict[str, float], phase: Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` that adds its CPU time to ``spent[phase(*args, **kwargs)]``."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[phase(*args, **kwargs)] += time.process_time() - t

    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="an analysed run directory")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    data = load_run_data(args.run)
    spent: dict[str, float] = defaultdict(float)
    figures.tight_bbox = timed(spent, lambda *a, **k: "bbox", figures.tight_bbox)  # type: ignore[assignment]
    Figure.savefig = timed(spent, lambda *a, **k: k["format"], Figure.savefig)  # type: ignore[method-assign]
    rows: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    with matplotlib.rc_context(figures.STYLE), tempfile.TemporaryDirectory() as out:
        for rep in range(args.repeat + 1):
            for draw in figures.FIGURES:
                spent.clear()
                t = time.process_time()
                try:
                    draw(data, Path(out))
                except figures.Missing:
                    continue
                total = time.process_time() - t
                if rep == 0:  # warm-up
                    continue
                row = rows[draw.__name__]
                row["total"] += total / args.repeat
                for p in PHASES:
                    row[p] += spent[p] / args.repeat
    print(f"run: {args.run}; CPU seconds per figure, mean of {args.repeat} after a warm-up")
    print(f"| figure | {' | '.join(PHASES)} | build and preview | total |")
    print("|---|" + "---:|" * (len(PHASES) + 2))
    sums: dict[str, float] = defaultdict(float)
    for name, row in rows.items():
        rest = row["total"] - sum(row[p] for p in PHASES)
        for k, v in [*row.items(), ("rest", rest)]:
            sums[k] += v
        print(f"| {name} | {' | '.join(f'{row[p]:.3f}' for p in PHASES)} | {rest:.3f} | {row['total']:.3f} |")
    print(f"| **all** | {' | '.join(f'{sums[p]:.2f}' for p in PHASES)} | {sums['rest']:.2f} | {sums['total']:.2f} |")


if __name__ == "__main__":
    main()
