"""Print a sweep's seed-averaged comparison as the compact Markdown table of docs/FINDINGS.md.

    python docs/findings/sweep_table.py SWEEP_DIR [KEY]

Reads ``SWEEP_DIR/comparison_agg.parquet`` (written by ``privdyn sweep``) and keeps one row label
(``KEY``, default: ``label`` when the sweep has one, else its first varying key), the run count
and the headline metrics as ``mean ± std`` over seeds (three significant digits).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd

from privdyn.sweep.tables import markdown_table

#: Sweep metric -> column header in FINDINGS.md.
COLUMNS = {
    "com_displacement_pp": "CoM disp. (pp)", "com_path_pp": "CoM path (pp)",
    "encoding_speed_mean": "speed mean", "delta_entropy_bits": "ΔH (bits)",
    "peak_p_to_high": "peak P(→high)", "n_high_final": "# high", "tpr_at_fpr_0.01": "TPR@1%FPR",
    "auc": "AUC", "test_accuracy": "test acc.", "recall_at_25pct": "recall@25%",
    "spearman_consistency_final_auc_rho": "ρ(consistency, AUC_i)",
    "spearman_mean_train_loss_final_auc_rho": "ρ(train loss, AUC_i)",
}


def _fmt(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3g}" if math.isnan(std) else f"{mean:.3g} ± {std:.2g}"


def compact_table(sweep_dir: Path, key: str | None = None) -> str:
    agg = pd.read_parquet(sweep_dir / "comparison_agg.parquet")
    varying = json.loads((sweep_dir / "manifest.json").read_text())["varying"]
    key = key or ("label" if "label" in agg.columns else varying[0])
    out = pd.DataFrame({key: agg[key], "runs": agg["n_runs"]})
    for metric, header in COLUMNS.items():
        if f"{metric}_mean" in agg.columns:
            out[header] = [_fmt(m, s) for m, s in zip(agg[f"{metric}_mean"], agg[f"{metric}_std"])]
    return markdown_table(out)


if __name__ == "__main__":
    print(compact_table(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
