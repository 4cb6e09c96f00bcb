"""Tabulate a run's DP audit for docs/FINDINGS.md ("DP audit", issue #18).

    python docs/findings/dp_audit_table.py RUN [RUN ...]

Per run and epoch: Opacus's epsilon (upper bound, at the audit's delta), the three lower bounds of
each attack (one_run, gdp, clopper_pearson; each at 1 - beta), the run's strongest bound (at
1 - beta/(3A)) and the ratio accountant / strongest. Reads analysis/dp_audit.parquet and summary.json.
"""
import json
import sys
from pathlib import Path

import pandas as pd


def table(run):
    run = Path(run)
    d = pd.read_parquet(run / "analysis/dp_audit.parquet")
    s = json.loads((run / "summary.json").read_text())
    a = s["dp_audit"]
    attacks = [x for x in d.attack.unique() if x != "*"]
    print(f"## {run}  delta {a['delta']:g}, confidence {a['confidence']}, design {a['design']}, "
          f"{a['n_canaries']} canaries, exceeds_accountant = {a['exceeds_accountant']}, "
          f"final test accuracy {s['test_accuracy'][-1]:.3f}, AUC {s['auc'][-1]:.3f}")
    cols = [f"{x} {e}" for x in attacks for e in ("one_run", "gdp", "CP")]
    print("| epoch | accountant eps | " + " | ".join(cols) + " | strongest (winner) | accountant / strongest |")
    print("|---" * (len(cols) + 4) + "|")
    for ep in sorted(d.epoch.unique()):
        e = d[d.epoch == ep]
        def get(at, est, e=e):
            return e[(e.attack == at) & (e.estimator == est)].iloc[0]
        cells = [f"{get(at, est)['epsilon_lb']:.3f}" for at in attacks
                 for est in ("one_run", "gdp", "clopper_pearson")]
        st = get("*", "strongest")
        acc = st["accountant_epsilon"]
        ratio = "inf" if st["epsilon_lb"] == 0 else f"{acc / st['epsilon_lb']:.0f}x"
        accs = "n/a" if pd.isna(acc) else f"{acc:.2f}"
        if pd.isna(acc):
            ratio = "n/a"
        best = f"{st['epsilon_lb']:.3f} ({st['winner'] or '-'})"
        print(f"| {ep} | {accs} | " + " | ".join(cells) + f" | {best} | {ratio} |")
    print()


if __name__ == "__main__":
    for r in sys.argv[1:]:
        table(r)
