"""The comparison page of a defence study (``privdyn defend``): frontier, flagged samples, onion, planes.

``build_defence_report(out, frontier, flagged, onion, summary, run_dirs)`` writes
``out/index.html`` (offline, self-contained) and the frontier as PNG/PDF figures:

- the privacy-utility frontier: TPR at 0.1% and at 1% FPR and the mean final advantage of each
  run's own 1% most vulnerable samples, against test accuracy; DP-SGD as a line through its
  noise multipliers, the matched DP point ringed, oracle points hollow and named ORACLE;
- the flagged samples' own final advantage under the baseline and under each intervention;
- the onion effect: per point, how many samples end high without being high in the baseline,
  by their baseline state, and where the safe-in-baseline ones sat on the baseline plane;
- the final planes side by side (baseline, matched DP, and per action the realistic
  intervention with the lowest TPR at 0.1% FPR and its oracle counterpart);
- the table of every point.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from privdyn.report import figures
from privdyn.report.common import subplots
from privdyn.report.compare import planes_panel
from privdyn.report.data import load_run_data
from privdyn.report.interactive import F4
from privdyn.report.page import Cell, document, figure_gallery, fmt, section, sortable_table
from privdyn.report.panels import Missing, Panel, build
from privdyn.store import atomic

#: Colour per action (interventions, their random controls and oracles share it) and for DP-SGD.
COLOURS = {"remove": "#1f77b4", "clip": "#2ca02c", "weight": "#9467bd", "dp": "#d62728", "baseline": "#000000"}
#: Marker per kind of point.
SYMBOLS = {"baseline": "star", "intervention": "circle", "random": "x", "oracle": "diamond-open", "dp": "square"}
#: The frontier's y axes: column, title.
FRONTIER = (("tpr_at_fpr_0.001", "TPR at 0.1% FPR"), ("tpr_at_fpr_0.01", "TPR at 1% FPR"),
            ("own_top1pct_adv", "mean final advantage of the run's own top 1%"))


def _colour(row: Any) -> str:
    return COLOURS["dp"] if row["kind"] == "dp" else COLOURS.get(row["action"] or "baseline", "#000000")


def _name(row: Any) -> str:
    return f"ORACLE {row['label']}" if row["oracle"] else str(row["label"])


def dp_curves(frontier: pd.DataFrame) -> list[pd.DataFrame]:
    """The DP-SGD points, one curve per clipping norm, each sorted by test accuracy."""
    dp = frontier[frontier["kind"] == "dp"]
    if not len(dp):
        return []
    by = dp["dp_clip"] if "dp_clip" in dp else pd.Series(0.0, index=dp.index)
    return [g.sort_values("test_accuracy") for _, g in dp.groupby(by, sort=True)]


def frontier_panel(frontier: pd.DataFrame) -> Panel:
    """Three scatter panels against test accuracy; DP-SGD joined by a line, the matched point ringed."""
    if not len(frontier):
        raise Missing("no finished point")
    fig = make_subplots(rows=1, cols=len(FRONTIER), subplot_titles=[t for _, t in FRONTIER], horizontal_spacing=0.07)
    for c, (col, _) in enumerate(FRONTIER, 1):
        for dp in dp_curves(frontier):
            fig.add_trace(go.Scatter(x=dp["test_accuracy"], y=dp[col].astype(F4), mode="lines", showlegend=False,
                                     line=dict(color=COLOURS["dp"], width=1, dash="dot"), hoverinfo="skip"),
                          row=1, col=c)
        for _, r in frontier.iterrows():
            fig.add_trace(go.Scatter(
                x=[r["test_accuracy"]], y=[r[col]], mode="markers", name=_name(r), legendgroup=str(r["label"]),
                showlegend=c == 1,
                marker=dict(symbol=SYMBOLS[r["kind"]], size=13 if r["dp_matched"] else 9, color=_colour(r),
                            line=dict(width=2 if r["dp_matched"] else 1, color=_colour(r))),
                hovertemplate=f"{_name(r)}<br>{r['description']}<br>accuracy %{{x:.4f}}<br>%{{y:.4f}}<extra></extra>"),
                row=1, col=c)
        fig.update_xaxes(title_text="final test accuracy", row=1, col=c)
    fig.update_layout(height=460, margin=dict(l=50, r=20, t=40, b=40),
                      legend=dict(orientation="h", y=-0.25, font=dict(size=9)))
    return Panel("def-frontier", "Privacy-utility frontier", figure=fig, wide=True,
                 caption="Lower is more private, right is more useful. Stars: baseline; circles: realistic "
                         "interventions (an early-warning proxy from each model's own signals); crosses: random "
                         "flags (the control); hollow diamonds: ORACLE flags from the baseline's own final plane "
                         "(an upper bound, not a realistic defence); squares joined by a dotted line: DP-SGD at "
                         "each noise multiplier (one line per clipping norm), the one at matched test accuracy "
                         "drawn larger.")


def flagged_panel(frontier: pd.DataFrame) -> Panel:
    """Per defended point, the flagged samples' mean final advantage under the baseline and under it."""
    d = frontier[frontier["kind"].isin(["intervention", "random", "oracle"])]
    if not len(d) or "flagged_adv_baseline" not in d:
        raise Missing("no defended point")
    names = [_name(r) for _, r in d.iterrows()]
    fig = go.Figure([go.Bar(name="baseline", x=names, y=d["flagged_adv_baseline"].astype(F4), marker_color="#9e9e9e"),
                     go.Bar(name="intervention", x=names, y=d["flagged_adv_defended"].astype(F4),
                            marker_color=[_colour(r) for _, r in d.iterrows()])])
    fig.update_layout(barmode="group", height=420, margin=dict(l=50, r=20, t=30, b=120),
                      yaxis_title="mean final advantage A_i", legend=dict(orientation="h", y=1.1))
    return Panel("def-flagged", "The flagged samples' own risk", figure=fig, wide=True,
                 caption="Samples flagged by at least half of their IN models: their mean final advantage in the "
                         "baseline (grey) and under the intervention. defence_flagged.parquet has every sample.")


def onion_panel(frontier: pd.DataFrame) -> Panel:
    """Per point, the samples that end high without being high in the baseline, by baseline state."""
    d = frontier[frontier["kind"] != "baseline"]
    cols = [c for c in ("new_high_from_safe", "new_high_from_low", "new_high_from_medium") if c in d]
    if not len(d) or not cols:
        raise Missing("no point besides the baseline")
    names = [_name(r) for _, r in d.iterrows()]
    shades = {"new_high_from_safe": "#9e9e9e", "new_high_from_low": "#4c9be8", "new_high_from_medium": "#f2a33a"}
    bars = [go.Bar(name=c.removeprefix("new_high_from_") + " in the baseline", x=names, y=d[c], marker_color=shades[c])
            for c in cols]
    bars.append(go.Scatter(name="high in the baseline, lower here", x=names, y=d["n_high_to_lower"], mode="markers",
                           marker=dict(symbol="line-ew-open", size=18, color="#d62728")))
    fig = go.Figure(bars)
    fig.update_layout(barmode="stack", height=420, margin=dict(l=50, r=20, t=30, b=120),
                      yaxis_title="samples", legend=dict(orientation="h", y=1.12))
    return Panel("def-onion", "Onion effect: newly exposed samples", figure=fig, wide=True,
                 caption="Bars: samples high at the end under this point but not in the baseline, coloured by their "
                         "baseline state (grey = safe in the baseline: the onion effect proper). Red marks: samples "
                         "that were high in the baseline and are not any more. Compare an intervention with its "
                         "random control: training noise alone moves samples across the bands too.")


def onion_plane_panel(onion: pd.DataFrame, frontier: pd.DataFrame) -> Panel:
    """Where the newly high samples sat on the baseline plane, one colour per point."""
    if not len(onion) or "fpr_baseline" not in onion:
        raise Missing("no sample became high")
    rng = np.random.default_rng(0)
    fig = go.Figure()
    kinds = dict(zip(frontier["label"], frontier["oracle"], strict=True))
    for label, g in onion.groupby("label", sort=False):
        jit = rng.uniform(-0.01, 0.01, size=(2, len(g)))
        fig.add_trace(go.Scatter(x=(g["fpr_baseline"] + jit[0]).astype(F4), y=(g["tpr_baseline"] + jit[1]).astype(F4),
                                 mode="markers", name=f"ORACLE {label}" if kinds.get(label) else str(label),
                                 marker=dict(size=5, opacity=0.7,
                                             symbol=["circle" if s else "circle-open" for s in g["safe_in_baseline"]])))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#bbb", dash="dot"), showlegend=False))
    fig.update_layout(height=460, margin=dict(l=50, r=20, t=30, b=40), xaxis_title="baseline FPR_i",
                      yaxis_title="baseline TPR_i", xaxis_range=[-0.05, 1.05], yaxis_range=[-0.05, 1.05])
    return Panel("def-onion-plane", "Where the newly high samples came from", figure=fig,
                 caption="Their final place on the baseline plane (slightly jittered); filled: safe in the baseline "
                         "(A_i < the low band), open: low or medium.")


def chosen_planes(frontier: pd.DataFrame) -> list[str]:
    """The points whose planes are shown: baseline, matched DP, per action the best realistic
    intervention (lowest TPR at 0.1% FPR, then 1%) and the oracle of the same action, share and epoch."""
    out = ["baseline"] if (frontier["label"] == "baseline").any() else []
    out += frontier.loc[frontier["dp_matched"], "label"].tolist()
    for action in ("remove", "clip", "weight"):
        real = frontier[(frontier["kind"] == "intervention") & (frontier["action"] == action)]
        if not len(real):
            continue
        best = real.sort_values(["tpr_at_fpr_0.001", "tpr_at_fpr_0.01"]).iloc[0]
        out.append(best["label"])
        orc = frontier[(frontier["kind"] == "oracle") & (frontier["action"] == action)
                       & (frontier["share"] == best["share"]) & (frontier["epoch"] == best["epoch"])]
        out += orc["label"].tolist()[:1]
    return list(dict.fromkeys(out))


def point_table(frontier: pd.DataFrame) -> Panel:
    """Every point as a sortable row."""
    cols = ["label", "kind", "description", "test_accuracy", "tpr_at_fpr_0.001", "tpr_at_fpr_0.01", "auc",
            "n_high_final", "own_top1pct_adv", "baseline_vulnerable_adv", "baseline_vulnerable_still_high",
            "n_flagged", "flagged_adv_baseline", "flagged_adv_defended", "n_safe_to_high", "n_new_high",
            "n_high_to_lower", "epsilon", "dp_matched"]
    cols = [c for c in cols if c in frontier]
    rows: list[list[Cell]] = []
    for _, r in frontier.iterrows():
        row: list[Cell] = []
        for c in cols:
            v = r[c]
            if c == "label" and r["oracle"]:
                v = f"ORACLE {v}"
            num = v if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) else None
            row.append((fmt(v, 4) if num is not None else ("" if v is None else str(v)),
                        None if num is None or not math.isfinite(float(num)) else float(num)))
        rows.append(row)
    return Panel("def-table", "Every point", html=sortable_table(cols, rows), wide=True,
                 caption="defence_frontier.parquet holds these and more columns (the best DP-SGD value among the "
                         "DP points at least as accurate as each point, the flagged samples' AUC and share high, "
                         "where the newly exposed samples sat on the baseline plane).")


def static_frontier(frontier: pd.DataFrame, out: Path) -> list[figures.Written]:
    """The frontier as one PNG/PDF row of three panels."""
    if not len(frontier):
        return []
    marker = {"baseline": "*", "intervention": "o", "random": "x", "oracle": "D", "dp": "s"}
    with matplotlib.rc_context(figures.STYLE):
        fig, axes = subplots(1, len(FRONTIER), figsize=(7.0, 2.4), squeeze=False)
        for ax, (col, title) in zip(axes[0], FRONTIER, strict=True):
            for dp in dp_curves(frontier):
                ax.plot(dp["test_accuracy"], dp[col], ":", color=COLOURS["dp"], lw=1)
            for _, r in frontier.iterrows():
                size = 40 if r["dp_matched"] else 18
                if r["kind"] == "oracle":  # hollow
                    ax.scatter([r["test_accuracy"]], [r[col]], marker="D", s=size, facecolors="none",
                               edgecolors=_colour(r), linewidths=0.8)
                else:
                    ax.scatter([r["test_accuracy"]], [r[col]], marker=marker[r["kind"]], s=size, color=_colour(r),
                               linewidths=0.8)
            ax.set_title(title, fontsize="small")
            ax.set(xlabel="test accuracy")
        from matplotlib.lines import Line2D

        kinds = [k for k in ("baseline", "intervention", "random", "oracle", "dp") if (frontier["kind"] == k).any()]
        shapes = [Line2D([], [], ls="", marker=marker[k], color="#555", mfc="none" if k == "oracle" else "#555",
                         label={"oracle": "ORACLE", "dp": "DP-SGD", "intervention": "proxy rule"}.get(k, k))
                  for k in kinds]
        actions = [a for a in ("remove", "clip", "weight") if (frontier["action"] == a).any()]
        colours = [Line2D([], [], ls="", marker="o", color=COLOURS[a], label=a) for a in actions]
        fig.legend(handles=shapes + colours, loc="lower center", ncol=len(shapes) + len(colours), frameon=False,
                   bbox_to_anchor=(0.5, -0.02))
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        return [figures.save(fig, out, "defence_frontier", "TPR at 0.1% and 1% FPR and the own top-1% advantage "
                             "against test accuracy (hollow diamonds: ORACLE; dotted: DP-SGD).")]


def build_defence_report(out: Path, frontier: pd.DataFrame, flagged: pd.DataFrame, onion: pd.DataFrame,
                         summary: dict[str, Any], run_dirs: dict[str, Path], max_points: int = 4000) -> Path:
    """Write the defence comparison page ``out/index.html`` (see the module docstring)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    m = summary.get("dp_matched") or {}
    intro = (f"Attack {summary.get('attack')} at {summary.get('rule')}. Judged on {summary.get('judged_on')}. "
             + (f"DP-SGD at matched accuracy: {m.get('label')} ({m.get('rule')}). " if m else "No DP-SGD point. ")
             + str(summary.get("oracle_note", "")))
    shown = [lb for lb in chosen_planes(frontier) if lb in run_dirs]

    def planes() -> Panel:
        data = [load_run_data(run_dirs[lb]) for lb in shown]
        labels = [f"ORACLE {lb}" if bool(frontier.loc[frontier["label"] == lb, "oracle"].iloc[0]) else lb
                  for lb in shown]
        return planes_panel(data, labels, max_points)

    body = section("Frontier", "frontier", [build("def-frontier", "Privacy-utility frontier",
                                                  functools.partial(frontier_panel, frontier))], intro)
    body += section("Flagged samples", "flagged", [build("def-flagged", "The flagged samples' own risk",
                                                         functools.partial(flagged_panel, frontier))])
    body += section("Onion effect", "onion", [
        build("def-onion", "Onion effect", functools.partial(onion_panel, frontier)),
        build("def-onion-plane", "Where they came from", functools.partial(onion_plane_panel, onion, frontier))])
    body += section("Planes", "planes", [build("cmp-planes", "Final vulnerability planes", planes)])
    body += section("Points", "points", [point_table(frontier)])
    body += '<h2 id="figures">Figures for papers</h2>' + figure_gallery(static_frontier(frontier, out))
    nav = [("frontier", "Frontier"), ("flagged", "Flagged"), ("onion", "Onion"), ("planes", "Planes"),
           ("points", "Points"), ("figures", "Paper figures")]
    index = out / "index.html"
    atomic.write_text(index, document(f"privdyn defence study: {summary.get('name')}",
                                      f"{len(frontier)} points; {int(len(flagged))} flagged (point, sample) pairs.",
                                      nav, body))
    return index
