"""The report's "Early warning" section: how well one model's own proxies find its at-risk samples
as training goes on, beside the shadow-model recall curve, and the loss-tail estimate of TPR at low
FPR against the measured TPR. Reads ``analysis/early_warning.parquet`` and
``analysis/early_warning_model.parquet`` (``RunData.table("early_warning")``, ``"early_warning_model"``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from privdyn.report.data import RunData
from privdyn.report.page import Cell, fmt, sortable_table
from privdyn.report.panels import Missing, Panel, build, require

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
SHADOW_STYLE = dict(color="#000", dash="dash", width=3)
COLUMNS = ["proxy", "truth", "epoch", "k", "metric", "mean", "ci_low", "ci_high"]


def _curve(t: pd.DataFrame, proxy: str, truth: str, metric: str, k: str) -> pd.DataFrame:
    return t[(t.proxy == proxy) & (t.truth == truth) & (t.metric == metric) & (t.k == k)].sort_values("epoch")


def _ci_text(rows: pd.DataFrame) -> list[str]:
    return [f"[{fmt(lo)}, {fmt(hi)}], {int(n)} models" for lo, hi, n in
            zip(rows["ci_low"], rows["ci_high"], rows.get("n_models", pd.Series([0] * len(rows))))]


def proxies_panel(d: RunData) -> Panel:
    """Precision at k against epoch for every proxy: vs the strong attack's final flags (k = 1%)
    and vs the finally-high set V (k = |V|), beside the shadow-model recall curve."""
    t = require(d.table("early_warning"), COLUMNS, "early_warning.parquet")
    entry = d.summary.get("early_warning", {})
    truth = f"{entry.get('truth_attack', 'lira_online')} at {entry.get('truth_rule', 'fpr:0.001')}"
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06, subplot_titles=(
        f"precision@k=1% of the model's training set: {truth}", "precision@k=|V|: the finally-high set V"))
    for i, proxy in enumerate(dict.fromkeys(t["proxy"])):
        colour = PALETTE[i % len(PALETTE)]
        for col, (tr, k) in enumerate((("attack", "1%"), ("final_high", "truth")), start=1):
            rows = _curve(t, proxy, tr, "precision", k)
            if rows.empty:
                continue
            fig.add_trace(go.Scatter(
                x=rows["epoch"], y=rows["mean"], mode="lines+markers", name=proxy, legendgroup=proxy,
                showlegend=col == 1, line=dict(color=colour), marker=dict(size=5), text=_ci_text(rows),
                hovertemplate=f"{proxy}<br>epoch %{{x}}: %{{y:.3f}}<br>95% CI %{{text}}<extra></extra>"),
                row=1, col=col)
    if "recall" in d.epoch.columns:
        fig.add_trace(go.Scatter(x=d.epoch["epoch"], y=d.epoch["recall"], mode="lines",
                                 name=f"shadow models: recall(t) of V ({d.attack})", line=SHADOW_STYLE),
                      row=1, col=2)
    fig.update_layout(height=440, margin=dict(l=60, r=20, t=40, b=40),
                      legend=dict(orientation="h", y=-0.18))
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="precision (mean over monitored models)", range=[-0.03, 1.03], row=1, col=1)
    said = []
    for key, what in (("best_precision", "precision@1% against the attack"), ("best_v_precision", "precision@|V|")):
        for pct in (25, 50):
            b = entry.get(f"{key}_at_{pct}pct") or {}
            if b.get("proxy") is not None and b.get("fraction") is not None:
                said.append(f"{what} {fmt(b['mean'])} by {b['proxy']} at epoch {fmt(b['epoch'])} "
                            f"({fmt(100 * b['fraction'], 0)}% of training)")
    return Panel("early-warning", "Early warning: one model's proxies against the shadow-model truth", figure=fig,
                 wide=True, caption=(
                     "Each proxy is computed from one model's own training signals up to the epoch (no reference "
                     "model) and ranks that model's own training samples; the curves are the mean over the "
                     "models taken in turn as the monitored one (hover: 95% t interval). Left: the share of the "
                     "top 1% that the strong attack flags on that model at the end of training (Pollock et al.'s "
                     "precision@k=1%). Right: the share of the top |V| in the finally-high set V; the dashed "
                     "line is what the shadow models give, the recall of V among the top samples by advantage at "
                     "that epoch. " + ("Best early: " + "; ".join(said) + "." if said else "")))


def model_level_panel(d: RunData) -> Panel:
    """The loss-tail estimate of TPR at each low FPR against the measured TPR, per epoch."""
    t = require(d.table("early_warning_model"), ["epoch", "alpha", "quantity", "mean", "ci_low", "ci_high"],
                "early_warning_model.parquet")
    attack = str(t["attack"].iloc[0]) if "attack" in t.columns and len(t) else "the attack"
    fig = go.Figure()
    for i, alpha in enumerate(sorted(t["alpha"].unique())):
        colour = PALETTE[i % len(PALETTE)]
        for quantity, dash, label in (("estimate", "dash", "loss-tail estimate"), ("measured", "solid", attack)):
            rows = t[(t.alpha == alpha) & (t.quantity == quantity)].sort_values("epoch")
            if rows.empty or not np.isfinite(rows["mean"]).any():
                continue
            lo, hi = rows["ci_low"].to_numpy(), rows["ci_high"].to_numpy()
            ok = np.isfinite(lo) & np.isfinite(hi)
            if ok.any():
                x = rows["epoch"].to_numpy()[ok]
                fig.add_trace(go.Scatter(x=np.r_[x, x[::-1]], y=np.r_[hi[ok], lo[ok][::-1]], fill="toself",
                                         fillcolor=colour, opacity=0.12, line=dict(width=0), hoverinfo="skip",
                                         showlegend=False))
            fig.add_trace(go.Scatter(x=rows["epoch"], y=rows["mean"], mode="lines+markers",
                                     name=f"{label}, TPR at FPR {alpha:g}", line=dict(color=colour, dash=dash),
                                     marker=dict(size=5)))
    if not fig.data:
        raise Missing("early_warning_model.parquet has no finite rows")
    fig.update_layout(height=400, margin=dict(l=60, r=20, t=30, b=40), xaxis_title="epoch",
                      yaxis_title="TPR (mean over target models)", legend=dict(x=0, y=1))
    return Panel("early-warning-model", "Early warning: model-level TPR from the loss tail", figure=fig, caption=(
        "Dashed: the TNR of the LOSS attack at FNR alpha from each model's own losses alone (the share of its "
        "non-members above the (1 - alpha) quantile of its members' losses; Dodd et al. 2025, \"The Tail Tells "
        f"All\"). Solid: the measured TPR of {attack} on the same target at FPR alpha. Bands: 95% t intervals "
        "over the target models."))


def final_table(d: RunData) -> Panel:
    """Every proxy's final values: precision, recall, AUC and Spearman with the final advantage."""
    entry = d.summary.get("early_warning", {})
    final = entry.get("final")
    if not final:
        raise Missing("summary.json has no early_warning.final entry")
    names = {"precision_at_1pct": "precision@1%", "precision_at_truth": "precision@|flagged|",
             "recall_at_1pct": "recall@1%", "auc": "AUC", "v_precision_at_1pct": "V: precision@1%",
             "v_precision_at_v": "V: precision@|V|", "v_auc": "V: AUC", "spearman_final_advantage": "Spearman(A)"}
    rows: list[list[Cell]] = []
    for proxy, values in final.items():
        row: list[Cell] = [(proxy, proxy)]
        for key in names:
            v = values.get(key)
            row.append((fmt(v), v if v is not None else ""))
        rows.append(row)
    return Panel("early-warning-final", "Early warning: every proxy at the end of training", wide=True,
                 html=sortable_table(["proxy", *names.values()], rows), caption=(
                     "Means over the monitored models at the last checkpoint. The first four columns are against "
                     f"{entry.get('truth_attack', 'lira_online')}'s flags at {entry.get('truth_rule', 'fpr:0.001')} "
                     "on that model, the next three against V."))


def early_warning_panels(d: RunData) -> list[Panel]:
    """The section's panels: none when the analysis is off or did not run (e.g. a run analysed
    before it existed, or a report built from tables written by hand)."""
    if not d.config.analysis.early_warning.enabled or d.table("early_warning") is None:
        return []
    return [build("early-warning", "Early warning: one model's proxies", lambda: proxies_panel(d)),
            build("early-warning-model", "Early warning: model level", lambda: model_level_panel(d)),
            build("early-warning-final", "Early warning: final values", lambda: final_table(d))]
