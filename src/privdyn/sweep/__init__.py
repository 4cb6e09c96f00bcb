"""Sweeps: many runs over a grid of config values, then comparison tables and a report.

``load_sweep`` reads and expands a sweep file, ``run_sweep`` runs its points (skipping finished
ones) and ``compare`` writes the comparison tables and, when available, the comparison report.
docs/sweeps.md describes the file format and the outputs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from privdyn.sweep.runner import SweepOutcome, is_finished, run_dir_of, run_sweep, select_points
from privdyn.sweep.spec import Sweep, SweepPoint, SweepSpec, expand, load_sweep, parse_spec
from privdyn.sweep.tables import collect_rows, comparison_table, write_tables

REPORT_MODULE = "privdyn.report.compare"


def compare(sweep: Sweep, out: str | Path, log: Callable[[str], None] = print,
            rules: list[str] | None = None) -> dict[str, Path]:
    """Write OUT/comparison.* over every finished point, then the report when its module exists.

    ``rules``: operating-point rules whose headline metrics get columns, besides the sweep's own.
    """
    out = Path(out)
    rows = collect_rows(sweep.points, out, list(dict.fromkeys([*sweep.spec.rules, *(rules or [])])))
    if not rows:
        log("no finished or failed point yet: no comparison table written")
        return {}
    table = comparison_table(rows, sweep.varying)
    paths = write_tables(sweep.spec.name, table, sweep.varying, out)
    done = table[table["status"] == "done"]
    if len(done) and importlib.util.find_spec(REPORT_MODULE) is not None:
        from privdyn.report.compare import build_comparison

        configuration = {p.slug: p.configuration for p in sweep.points}
        paths["report"] = build_comparison([out / r for r in done["run_dir"]], out / "report",  # the sweep's own
                                           groups=[configuration[s] for s in done["slug"]], check_out=False)
    elif len(done):
        log(f"{REPORT_MODULE} is not available: comparison report skipped (tables written)")
    return paths


__all__ = ["Sweep", "SweepOutcome", "SweepPoint", "SweepSpec", "compare", "expand", "is_finished",
           "load_sweep", "parse_spec", "run_dir_of", "run_sweep", "select_points"]
