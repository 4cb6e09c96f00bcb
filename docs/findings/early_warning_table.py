"""Tabulate a run's early-warning validation for docs/FINDINGS.md ("Early warning", issue #17).

    python docs/findings/early_warning_table.py RUN [RUN ...]

Per run: for every proxy, precision@1% (mean [95% t-interval over the monitored models], n models
with a non-empty truth) against LiRA's per-model flags (truth `attack`) and against V (truth
`final_high`) at the checkpoints nearest 25%, 50% and 100% of training; AUC against both truths and
Spearman with the final A_i at the end, with precision at k = the model's own flag count
(P@flags); then the loss-tail estimate against the measured TPR.
Reads only analysis/early_warning.parquet, analysis/early_warning_model.parquet and summary.json.
"""
import json
import sys
from pathlib import Path

import pandas as pd


def _nearest(df, frac):
    fr = df["fraction"].unique()
    return fr[abs(fr - frac).argmin()]


def _fmt(row):
    if row is None or pd.isna(row["mean"]):
        return "n/a"
    return f"{row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def table(run):
    run = Path(run)
    ew = pd.read_parquet(run / "analysis/early_warning.parquet")
    md = pd.read_parquet(run / "analysis/early_warning_model.parquet")
    s = json.loads((run / "summary.json").read_text())["early_warning"]
    fracs = [_nearest(ew, f) for f in (0.25, 0.5, 1.0)]
    epochs = [float(ew.loc[ew.fraction == f, "epoch"].iloc[0]) for f in fracs]
    per = s["mean_truth_per_model"]
    print(f"## {run}  k = {s['k_1pct']:.0f}, LiRA flags {per['attack']:.2f} members per model "
          f"(ceiling of precision@1% {min(1, per['attack'] / s['k_1pct']):.2f}), |V| = {s['n_final_high']}, "
          f"V members per model {per['final_high']:.2f} (ceiling {min(1, per['final_high'] / s['k_1pct']):.2f})")
    head = " | ".join(f"{t} e{e:g} ({f:.0%})" for t in ("LiRA", "V") for e, f in zip(epochs, fracs))
    print(f"| proxy | {head} | P@flags LiRA end | AUC LiRA | AUC V | Spearman A | n models (LiRA) |")
    print("|---" * 12 + "|")
    for proxy in s["proxies"]:
        p = ew[ew.proxy == proxy]
        cells = []
        for truth in ("attack", "final_high"):
            q = p[(p.truth == truth) & (p.metric == "precision") & (p.k == "1%")]
            for f in fracs:
                r = q[q.fraction == f]
                cells.append(_fmt(r.iloc[0] if len(r) else None))
        end = p[p.fraction == fracs[-1]]
        auc_a = end[(end.truth == "attack") & (end.metric == "auc")]
        auc_v = end[(end.truth == "final_high") & (end.metric == "auc")]
        sp = end[end.metric == "spearman"]
        rp = end[(end.truth == "attack") & (end.metric == "precision") & (end.k == "truth")]
        nm = p[(p.truth == "attack") & (p.metric == "precision") & (p.fraction == fracs[-1]) & (p.k == "1%")]
        vals = [f"{x['mean'].iloc[0]:.3f}" if len(x) else "n/a" for x in (rp, auc_a, auc_v, sp)]
        print(f"| {proxy} | " + " | ".join(cells + vals) + f" | {int(nm['n_models'].iloc[0]) if len(nm) else 0} |")
    print()
    print(f"loss-tail estimate / measured TPR ({s['tail_measured_by']}), mean over models:")
    print("| FPR | " + " | ".join(f"e{e:g} ({f:.0%})" for e, f in zip(epochs, fracs)) + " |")
    print("|---" * 4 + "|")
    for alpha in sorted(md.alpha.unique()):
        cells = []
        for e in epochs:
            r = md[(md.alpha == alpha) & (md.epoch == e)].set_index("quantity")["mean"]
            cells.append(f"{r['estimate']:.4f} / {r['measured']:.4f}")
        print(f"| {alpha:g} | " + " | ".join(cells) + " |")
    print()


if __name__ == "__main__":
    for r in sys.argv[1:] or ["/tmp/qs_new"]:
        table(r)
