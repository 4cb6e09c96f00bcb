"""The comparison tables of a sweep: one row per run, and mean/std over seeds per configuration.

Metrics come from each run's ``summary.json`` (the default attack at the default rule). Extra
operating-point rules (the sweep's ``rules``, or ``--rule``) add the headline dynamics at that
rule as ``METRIC@RULE`` columns, read from the run's ``analysis/sensitivity.parquet`` at the
run's own grid and bands. A key an older analysis did not write becomes NaN, so the tables never
depend on every analysis existing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from privdyn.store import atomic

#: Scalars read as they are from summary.json.
SCALAR_METRICS = ("com_displacement_pp", "com_path_pp", "encoding_speed_mean", "delta_entropy_bits",
                  "peak_p_to_high", "n_high_final", "epoch_recall_0.7")
#: Per-epoch series whose final value is reported (``summary["final"]`` first, else the last entry).
FINAL_METRICS = ("tpr_at_fpr_0.01", "test_accuracy", "auc")
#: Recall of the finally-vulnerable set at the first checkpoint at or after this share of training.
EARLY_FRACTION = 0.25
EARLY_COLUMN = "recall_at_25pct"
METRICS = (*SCALAR_METRICS, *FINAL_METRICS, EARLY_COLUMN)
SPEARMAN_PREFIX = "spearman_"
#: Separates a metric from the rule it was measured at in the extra columns, e.g. n_high_final@score:0.
AT_RULE = "@"
#: The headline dynamics of the sensitivity table (DESIGN.md "Sensitivity").
RULE_METRICS = ("com_displacement_pp", "com_path_pp", "delta_entropy_bits", "peak_p_to_high", "n_high_final",
                "encoding_speed_mean", "epoch_recall_0.7", "spearman_consistency")
#: Confidence-bound columns: in the CSV and Parquet tables, left out of the Markdown.
CI_SUFFIXES = ("_lo", "_hi", "_ci_low", "_ci_high")


def _num(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return math.nan
    return float(x)


def final_value(summary: dict[str, Any], key: str) -> float:
    """The final value of ``key``: ``summary["final"][key]``, else the last entry of its series (or the scalar);
    NaN when absent or not a number."""
    final = summary.get("final")
    if isinstance(final, dict) and key in final:
        return _num(final[key])
    series = summary.get(key)
    if isinstance(series, list):
        return _num(series[-1]) if series else math.nan
    return _num(series)


def recall_at_fraction(recall_curve: Any, epochs: Any, fraction: float = EARLY_FRACTION) -> float:
    """Recall at the first checkpoint epoch e with e >= fraction * e_T (e_T the last checkpoint)."""
    if isinstance(recall_curve, dict):  # {epoch: recall}
        pairs = sorted((float(e), _num(r)) for e, r in recall_curve.items())
        epochs, recall_curve = [p[0] for p in pairs], [p[1] for p in pairs]
    if not isinstance(recall_curve, list) or not isinstance(epochs, list) or not epochs \
            or len(recall_curve) != len(epochs):
        return math.nan
    e = np.asarray(epochs, dtype=np.float64)
    idx = np.flatnonzero(e >= fraction * e[-1])
    return _num(recall_curve[int(idx[0])]) if len(idx) else math.nan


def _flatten(prefix: str, obj: Any, out: dict[str, float]) -> None:
    """Numeric leaves of nested mappings as ``prefix_key_subkey``; a pair of numbers as _lo/_hi."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}_{k}", v, out)
    elif isinstance(obj, list) and len(obj) == 2 and all(isinstance(v, (int, float)) or v is None for v in obj):
        out[f"{prefix}_lo"], out[f"{prefix}_hi"] = _num(obj[0]), _num(obj[1])
    elif isinstance(obj, list) and all(isinstance(v, dict) for v in obj):  # records
        for rec in obj:
            name = "_".join(str(v) for v in rec.values() if isinstance(v, str))
            _flatten(f"{prefix}_{name}" if name else prefix,
                     {k: v for k, v in rec.items() if not isinstance(v, str)}, out)
    elif obj is None or isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = _num(obj)


def spearman_columns(entry: Any) -> dict[str, float]:
    """``spearman_difficulty`` as flat columns, e.g. spearman_forgetting_events_advantage(_lo/_hi)."""
    out: dict[str, float] = {}
    if isinstance(entry, (dict, list)):
        _flatten(SPEARMAN_PREFIX.rstrip("_"), entry, out)
    return out


def metrics_from_summary(summary: dict[str, Any]) -> dict[str, float]:
    """The comparison metrics of one run; NaN for every key its summary lacks."""
    row = {k: _num(summary.get(k)) for k in SCALAR_METRICS}
    row.update({k: final_value(summary, k) for k in FINAL_METRICS})
    row[EARLY_COLUMN] = recall_at_fraction(summary.get("recall_curve"), summary.get("epochs"))
    row.update(spearman_columns(summary.get("spearman_difficulty")))
    return row


def rule_columns(run_dir: Path, attack: str | None, rules: list[str]) -> dict[str, float]:
    """``METRIC@RULE`` for each rule, at the run's own grid and bands; NaN where the run's
    sensitivity table lacks the rule (e.g. score:0 for a non-LiRA attack) or does not exist."""
    out = {f"{m}{AT_RULE}{r}": math.nan for r in rules for m in RULE_METRICS}
    path = run_dir / "analysis" / "sensitivity.parquet"
    if not rules or attack is None or not path.exists():
        return out
    t = atomic.read_parquet(path)
    t = t[t["attack"] == attack]
    default = t[t["is_default"]]
    if not len(default):
        return out
    t = t[(t["grid"] == default["grid"].iloc[0]) & (t["bands"] == default["bands"].iloc[0])]
    for r in rules:
        hit = t[t["rule"] == r]
        if len(hit):
            out.update({f"{m}{AT_RULE}{r}": _num(float(hit[m].iloc[0])) for m in RULE_METRICS})
    return out


def _key_column(values: list[Any]) -> list[Any]:
    """Values of one varying key in a Parquet-safe form: scalars of one type kept, else JSON text."""
    types = {type(v) for v in values if v is not None}
    if len(types) <= 1 and types <= {int, float, str, bool}:
        return values
    if types <= {int, float}:
        return [None if v is None else float(v) for v in values]
    return [v if v is None or isinstance(v, str) else json.dumps(v, sort_keys=True) for v in values]


def comparison_table(rows: list[dict[str, Any]], keys: list[str]) -> pd.DataFrame:
    """Rows of ``slug, seed, <keys>, status, <metrics>, run_dir``; metric columns always present."""
    df = pd.DataFrame(rows)
    for k in (*keys, "seed"):
        df[k] = _key_column(df[k].tolist()) if k in df else None
    for m in METRICS:
        if m not in df:
            df[m] = math.nan
    at_rule = [c for c in df.columns if AT_RULE in c]
    spear = [c for c in df.columns if c.startswith(SPEARMAN_PREFIX) and c not in at_rule]
    order = ["slug", *keys, "seed", "status", *METRICS, *at_rule, *spear, "run_dir", "error"]
    for c in ("status", "run_dir", "error"):
        if c not in df:
            df[c] = None
    return df[order]


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The metric columns of a comparison table: the fixed metrics, the ``METRIC@RULE`` and the Spearman ones."""
    return [c for c in table.columns if c in METRICS or AT_RULE in c or c.startswith(SPEARMAN_PREFIX)]


def aggregate(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per configuration (the varying keys, seed excluded): n_runs done, mean and std (ddof=1).

    NaN metrics (failed runs, keys a summary lacks) are left out of the mean and std.
    """
    metrics = metric_columns(table)
    df = table.assign(_done=(table["status"] == "done").astype(int))
    by = keys if keys else df.assign(_all=0)["_all"]
    g = df.groupby(by, sort=False, dropna=False)
    mean = g[metrics].mean().add_suffix("_mean")
    std = g[metrics].std(ddof=1).add_suffix("_std")
    agg = pd.concat([g["_done"].sum().rename("n_runs"), mean, std], axis=1)
    agg = agg[["n_runs", *(f"{m}_{s}" for m in metrics for s in ("mean", "std"))]]
    return agg.reset_index(drop=not keys)


# ----- markdown -----------------------------------------------------------------------------

def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame) -> str:
    """``df`` as a Markdown table: floats to 4 significant digits, missing values as n/a, ``|`` escaped."""
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def _point_estimates(cols: list[str]) -> list[str]:
    return [c for c in cols if not c.endswith(CI_SUFFIXES)]


def comparison_markdown(name: str, table: pd.DataFrame, agg: pd.DataFrame, keys: list[str]) -> str:
    """Both tables for reading: point estimates only, CIs and errors left to the CSV/Parquet."""
    metrics = _point_estimates(metric_columns(table))
    per_run = table[[*keys, "seed", "status", *metrics]]
    summary = agg[[*keys, "n_runs"]].copy()
    for m in metrics:
        summary[m] = [f"{_cell(a)} ± {_cell(b)}" if not math.isnan(b) else _cell(a)
                      for a, b in zip(agg[f"{m}_mean"], agg[f"{m}_std"])]
    return (f"# Sweep {name}: comparison\n\n"
            "Default attack at the default rule of each run; ± is the standard deviation over seeds "
            f"(ddof=1); {EARLY_COLUMN} is the recall of the finally-vulnerable set at the first "
            f"checkpoint at or after {EARLY_FRACTION:.0%} of training.\n\n"
            f"## Mean over seeds\n\n{markdown_table(summary)}\n\n## Per run\n\n{markdown_table(per_run)}\n")


def write_tables(name: str, table: pd.DataFrame, keys: list[str], out: Path) -> dict[str, Path]:
    """OUT/comparison.{parquet,csv,md} and OUT/comparison_agg.{parquet,csv}."""
    agg = aggregate(table, keys)
    paths = {"table": out / "comparison.parquet", "csv": out / "comparison.csv", "markdown": out / "comparison.md",
             "agg": out / "comparison_agg.parquet", "agg_csv": out / "comparison_agg.csv"}
    atomic.write_parquet(paths["table"], table)
    atomic.write_text(paths["csv"], table.to_csv(index=False))
    atomic.write_parquet(paths["agg"], agg)
    atomic.write_text(paths["agg_csv"], agg.to_csv(index=False))
    atomic.write_text(paths["markdown"], comparison_markdown(name, table, agg, keys))
    return paths


def collect_rows(points: list[Any], out: Path, rules: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per point the manifest records as done or failed, metrics from its summary.json
    (and, for each of ``rules``, from its sensitivity table)."""
    manifest = json.loads((out / "manifest.json").read_text())["points"]
    rows = []
    for p in points:
        entry = manifest.get(p.slug, {})
        status = entry.get("status")
        if status not in ("done", "failed"):
            continue
        run_dir = out / entry["run_dir"]
        row: dict[str, Any] = {"slug": p.slug, **p.values, "status": status, "run_dir": entry["run_dir"],
                               "error": entry.get("error")}
        summary_path = run_dir / "summary.json"
        if status == "done" and summary_path.exists():
            summary = atomic.read_json(summary_path)
            row.update(metrics_from_summary(summary))
            row.update(rule_columns(run_dir, summary.get("default_attack"), rules or []))
        rows.append(row)
    return rows
