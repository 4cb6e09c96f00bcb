"""The report's differential-privacy audit panel: empirical epsilon lower bounds against epoch,
per estimator for the strongest attack and per attack, beside the accountant's epsilon of a DP-SGD
run (the upper bound). Reads ``analysis/dp_audit.parquet`` (``RunData.table("dp_audit")``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from privdyn.analysis.dp_audit import ESTIMATORS, STRONGEST
from privdyn.report.data import RunData
from privdyn.report.page import fmt
from privdyn.report.panels import Missing, Panel, require

#: Legend names and colours of the estimators.
ESTIMATOR_STYLE = {"one_run": ("one-run (Steinke et al.)", "#1f77b4"),
                   "gdp": ("Gaussian DP (mu bound)", "#2ca02c"),
                   "clopper_pearson": ("multi-run Clopper-Pearson", "#d62728")}
ACCOUNTANT_STYLE = dict(color="#000", dash="dash", width=2)


def strongest_attack(table: pd.DataFrame, preferred: str) -> str:
    """The attack whose best bound is largest at any epoch (``preferred``, the report's own attack,
    on a tie, e.g. when every bound is 0)."""
    best = table[table.estimator == "best"]
    peak = best.groupby("attack")["epsilon_lb"].max().fillna(0.0)
    if peak.empty:
        raise Missing("dp_audit.parquet has no per-attack rows")
    top = peak.max()
    return preferred if peak.get(preferred, -1.0) >= top else str(peak.idxmax())


def dp_audit_panel(d: RunData) -> Panel:
    """Lower bounds per estimator for the strongest attack and per attack, with the accountant's epsilon."""
    t = require(d.table("dp_audit"), ["attack", "epoch", "estimator", "epsilon_lb", "confidence", "delta",
                                      "accountant_epsilon"], "dp_audit.parquet")
    per = t[t.attack != STRONGEST]
    attack = strongest_attack(per, d.attack)
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=(f"by estimator: {attack}", "by attack: best of the three"))
    mine = per[per.attack == attack].sort_values("epoch")
    for est in ESTIMATORS:
        rows = mine[mine.estimator == est]
        name, colour = ESTIMATOR_STYLE[est]
        fig.add_trace(go.Scatter(x=rows["epoch"], y=rows["epsilon_lb"], name=name, mode="lines+markers",
                                 line=dict(color=colour), marker=dict(size=5), legendgroup="est"), row=1, col=1)
    strongest = t[t.attack == STRONGEST].sort_values("epoch")
    if len(strongest):
        fig.add_trace(go.Scatter(x=strongest["epoch"], y=strongest["epsilon_lb"], name="strongest (all attacks)",
                                 mode="lines", line=dict(color="#7f7f7f", dash="dot", width=3),
                                 text=strongest.get("winner"), hovertemplate="epoch %{x}: %{y:.3f} %{text}"),
                      row=1, col=1)
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf")
    best = per[per.estimator == "best"]
    for i, (a, rows) in enumerate(best.groupby("attack", sort=True)):
        rows = rows.sort_values("epoch")
        fig.add_trace(go.Scatter(x=rows["epoch"], y=rows["epsilon_lb"], name=str(a), mode="lines+markers",
                                 line=dict(color=palette[i % len(palette)]), marker=dict(size=4),
                                 legendgroup="attack"), row=1, col=2)
    acc = mine[mine.estimator == ESTIMATORS[0]][["epoch", "accountant_epsilon"]]
    has_accountant = bool(np.isfinite(acc["accountant_epsilon"].to_numpy(np.float64)).any())
    if has_accountant:
        for col in (1, 2):
            fig.add_trace(go.Scatter(x=acc["epoch"], y=acc["accountant_epsilon"], name="accountant (Opacus RDP)",
                                     mode="lines", line=ACCOUNTANT_STYLE, showlegend=col == 1,
                                     legendgroup="acc"), row=1, col=col)
    fig.update_yaxes(title_text="epsilon", rangemode="tozero", row=1, col=1)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=440, margin=dict(l=60, r=20, t=40, b=40))
    conf, delta = float(mine["confidence"].iloc[0]), float(mine["delta"].iloc[0])
    final = strongest["epsilon_lb"].iloc[-1] if len(strongest) else np.nan
    gap = ""
    if has_accountant:
        up = float(acc["accountant_epsilon"].iloc[-1])
        gap = (f" At the last epoch the audits show epsilon >= {fmt(float(final))} and the accountant promises "
               f"epsilon <= {fmt(up)}: the gap is the accountant's slack plus what the attacks miss.")
    caption = (f"Empirical lower bounds on epsilon of (epsilon, delta = {delta:.3g})-DP per checkpoint, each estimator "
               f"at confidence {conf:g}; an attack's best of the three at 1 - beta/3 and the strongest over "
               "all attacks at 1 - beta/(3 A), so that each maximum keeps the confidence. One-run: each model "
               "a run with the pool as canaries (median over models); Gaussian DP: a lower bound on mu from "
               "the trade-off curve, converted at delta (a bound only for Gaussian-shaped curves such as "
               "DP-SGD's); Clopper-Pearson: global TPR/FPR at declared operating points, treating the "
               "(model, sample) pairs as independent trials (nominal confidence)."
               + (" The dashed line is Opacus's epsilon, an upper bound: a lower bound above it means a bug "
                  "somewhere." + gap if has_accountant else " Not a DP-SGD run: no accountant's epsilon."))
    return Panel("dp-audit", "Differential-privacy audit", figure=fig, wide=True, caption=caption)
