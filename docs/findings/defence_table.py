"""Print the tables of docs/FINDINGS.md's defence section from a `privdyn defend` folder.

    python docs/findings/defence_table.py OUT

reads OUT/defence_frontier.parquet and OUT/defence_summary.json and prints, per point, the
frontier (test accuracy, TPR at 0.1% and 1% FPR, n high), the most vulnerable samples (the run's
own top 1% and the baseline's V), the flagged samples' own final advantage and the onion counts,
then the matched DP point and the rule that chose it.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd

COLUMNS = [("label", "point"), ("test_accuracy", "test acc."), ("tpr_at_fpr_0.001", "TPR@0.1%"),
           ("tpr_at_fpr_0.01", "TPR@1%"), ("auc", "AUC"), ("n_high_final", "# high"),
           ("own_top1pct_adv", "own top-1% A"), ("baseline_vulnerable_adv", "A of baseline's V"),
           ("baseline_vulnerable_still_high", "V still high"), ("flagged_adv_baseline", "flagged A (base)"),
           ("flagged_adv_defended", "flagged A (here)"), ("n_safe_to_high", "safe→high"),
           ("n_new_high", "new high"), ("epsilon", "ε")]


def cell(v: object, col: str) -> str:
    """A number for the table: counts as integers, shares and rates to three decimals."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if col in ("n_high_final", "n_safe_to_high", "n_new_high"):
        return f"{int(v)}"
    if col == "epsilon":
        return f"{float(v):.1f}"
    if col.startswith("tpr"):
        return f"{float(v):.4f}"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def table(out: Path) -> str:
    """The Markdown table of every point, ORACLE points marked."""
    f = pd.read_parquet(out / "defence_frontier.parquet")
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for _, r in f.iterrows():
        row = []
        for c, _ in COLUMNS:
            v = r.get(c, None)
            if c == "label":
                v = f"**ORACLE** {v}" if r["oracle"] else (f"{v} (matched)" if r["dp_matched"] else v)
            row.append(cell(v, c))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(out: Path) -> None:
    """Print the table and the matched DP point."""
    print(table(out))
    s = json.loads((out / "defence_summary.json").read_text())
    m = s.get("dp_matched")
    if m:
        print(f"\nmatched DP: {m['label']} (epsilon {m['epsilon']:.2f}, test accuracy {m['test_accuracy']:.3f}): "
              f"{m['rule']}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
