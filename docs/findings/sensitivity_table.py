"""Print how a sweep's headline dynamics depend on the operating point, grid and bands.

    python docs/findings/sensitivity_table.py SWEEP_DIR [KEY] [--metric NAME ...]

Reads every finished run's ``analysis/sensitivity.parquet`` (the default attack), averages over
seeds per configuration (``KEY``, default: ``label`` when the sweep has one, else its first
varying key) and prints, per metric, one Markdown table: a row per configuration, a column per
rule at the run's own grid and bands, then a column per other grid (at the run's rule and bands)
and per other band set. A verdict that holds in every column does not depend on those choices.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from privdyn.sweep.tables import markdown_table

METRICS = ("com_displacement_pp", "delta_entropy_bits", "peak_p_to_high", "n_high_final",
           "encoding_speed_mean", "epoch_recall_0.7", "spearman_consistency")


def run_tables(sweep_dir: Path, key: str | None) -> tuple[pd.DataFrame, str]:
    """Every done run's sensitivity rows for its default attack, with its configuration label."""
    manifest = json.loads((sweep_dir / "manifest.json").read_text())
    rows = []
    for slug, point in manifest["points"].items():
        run_dir = sweep_dir / point["run_dir"]
        path = run_dir / "analysis" / "sensitivity.parquet"
        if point.get("status") != "done" or not path.exists():
            continue
        summary = json.loads((run_dir / "summary.json").read_text())
        t = pd.read_parquet(path)
        rows.append(t[t["attack"] == summary["default_attack"]].assign(slug=slug))
    if not rows:
        raise SystemExit(f"{sweep_dir}: no finished run has a sensitivity table (run `privdyn analyze RUN`)")
    table = pd.concat(rows, ignore_index=True)
    comparison = pd.read_parquet(sweep_dir / "comparison.parquet")
    key = key or ("label" if "label" in comparison.columns else manifest["varying"][0])
    table[key] = table["slug"].map(dict(zip(comparison["slug"], comparison[key].astype(str))))
    return table, key


def _fmt(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.3g}"


def metric_table(table: pd.DataFrame, key: str, metric: str) -> str:
    """Rows: configurations (in sweep order); columns: rules, then other grids, then other bands."""
    default = table[table["is_default"]].iloc[0]
    at_default = (table["grid"] == default["grid"]) & (table["bands"] == default["bands"])
    columns: dict[str, pd.Series] = {}
    for rule in dict.fromkeys(table["rule"]):
        columns[rule + (" ★" if rule == default["rule"] else "")] = table[at_default & (table["rule"] == rule)].groupby(
            key, sort=False)[metric].mean()
    same_rule = table["rule"] == default["rule"]
    for g in sorted(set(table["grid"]) - {default["grid"]}):
        columns[f"G={g}"] = table[same_rule & (table["grid"] == g) & (table["bands"] == default["bands"])].groupby(
            key, sort=False)[metric].mean()
    for b in dict.fromkeys(table["bands"]):
        if b != default["bands"]:
            rows = same_rule & (table["grid"] == default["grid"]) & (table["bands"] == b)
            columns[f"bands {b}"] = table[rows].groupby(key, sort=False)[metric].mean()
    order = list(dict.fromkeys(table[key]))
    out = pd.DataFrame({key: order})
    for name, series in columns.items():
        out[name] = [_fmt(float(series.get(k, math.nan))) for k in order]
    return markdown_table(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("key", nargs="?", default=None)
    ap.add_argument("--metric", action="append", choices=METRICS, help="metrics to print (default: all)")
    args = ap.parse_args()
    table, key = run_tables(args.sweep_dir, args.key)
    d = table[table["is_default"]].iloc[0]
    print(f"Mean over seeds; ★ = the runs' own rule; other grids at that rule, bands "
          f"{d['bands']}; other bands at that rule, G = {d['grid']}.\n")
    for metric in args.metric or METRICS:
        print(f"**{metric}**\n\n{metric_table(table, key, metric)}\n")


if __name__ == "__main__":
    main()
