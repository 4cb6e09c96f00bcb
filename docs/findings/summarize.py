"""Print the docs/FINDINGS.md tables for analysed run directories.

    python docs/findings/summarize.py RUN_DIR [RUN_DIR ...]

Reads each run's summary.json (default attack, default rule) with the same metric definitions as
the sweep comparison tables, and prints two Markdown tables: dynamics, and the Spearman
correlation of each difficulty measure with the final per-sample AUC (95% bootstrap CI).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from privdyn.sweep.tables import METRICS, markdown_table, metrics_from_summary


def main(paths: list[str]) -> None:
    rows, spear = [], []
    for p in paths:
        s = json.loads((Path(p) / "summary.json").read_text())
        label = f"{s['name']} ({s['dataset']}, {s['model']}, M={s['n_models']}, N={s['n_samples']})"
        rows.append({"run": label, **{m: metrics_from_summary(s)[m] for m in METRICS}})
        for measure, entry in (s.get("spearman_difficulty") or {}).items():
            auc = entry.get("final_auc", {})
            if auc.get("rho") is not None:
                spear.append({"run": s["name"], "measure": measure,
                              "rho (final AUC_i)": f"{auc['rho']:+.2f} [{auc['ci_low']:+.2f}, {auc['ci_high']:+.2f}]"})
    print(markdown_table(pd.DataFrame(rows)))
    print()
    if spear:
        wide = pd.DataFrame(spear).pivot(index="measure", columns="run", values="rho (final AUC_i)")
        print(markdown_table(wide.reset_index()))


if __name__ == "__main__":
    main(sys.argv[1:])
