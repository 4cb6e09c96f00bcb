"""Plotly figures of one analysed run, for the interactive report.

Every builder takes a :class:`RunData` and returns a :class:`Panel`, raising :class:`Missing`
when the analysis did not produce its inputs. Arrays go into the figures as float32 (plotly
serialises numpy arrays as base64 typed arrays), and the plane shows a seeded random subset of
at most ``max_points`` samples so the page stays small for large pools.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from privdyn.analysis.population import STATE_NAMES
from privdyn.report.common import (
    DIFFICULTY,
    SPEED,
    STATE_COLOURS,
    TIMING,
    display_subset,
    frame_indices,
    plane_jitter,
    top_samples,
)
from privdyn.report.data import RunData
from privdyn.report.page import typed_array
from privdyn.report.panels import Missing, Panel, present, require

F4 = np.float32


def _plane_layout(fig: go.Figure, d: RunData) -> None:
    bands = d.config.analysis.states
    fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line=dict(color="#444", dash="dot", width=1))
    for a in (bands.low, bands.medium, bands.high):
        fig.add_shape(type="line", x0=0, y0=a, x1=1 - a, y1=1, line=dict(color="#bbb", dash="dash", width=1))
        fig.add_annotation(x=1 - a, y=1, text=f"A={a:g}", showarrow=False, xanchor="center", yanchor="bottom",
                           font=dict(size=9, color="#888"))
    fig.update_layout(height=620, margin=dict(l=60, r=20, t=60, b=40),
                      xaxis=dict(title="per-sample FPR_i", range=[-0.06, 1.06], constrain="domain"),
                      yaxis=dict(title="per-sample TPR_i", range=[-0.06, 1.06], scaleanchor="x"),
                      legend=dict(x=1.0, xanchor="right", y=0.02, bgcolor="rgba(255,255,255,0.8)"))


def _animate(fig: go.Figure, d: RunData, frames: np.ndarray, frame_data, frame_title) -> None:
    """Frames (one per shown checkpoint, each with its data and title), a slider over the epochs
    and play/pause buttons; the figure opens at the last checkpoint. Frames change data and the
    title only, so they need no full redraw (three times faster with thousands of points)."""
    names = [str(int(d.epochs[t])) for t in frames]
    fig.frames = [go.Frame(data=frame_data(t), layout=dict(title=dict(text=frame_title(t))), name=nm)
                  for t, nm in zip(frames, names, strict=True)]
    fig.update_layout(title=dict(text=frame_title(int(frames[-1]))))
    still = dict(mode="immediate", frame=dict(duration=0, redraw=False), transition=dict(duration=0))
    fig.update_layout(
        sliders=[dict(active=len(names) - 1, currentvalue=dict(prefix="epoch "), pad=dict(t=40),
                      steps=[dict(label=nm, method="animate", args=[[nm], still]) for nm in names])],
        updatemenus=[dict(type="buttons", direction="left", x=0, y=-0.06, xanchor="left", yanchor="top",
                          pad=dict(t=40, r=10), showactive=False, buttons=[
                              dict(label="play", method="animate",
                                   args=[None, dict(mode="immediate", fromcurrent=False, transition=dict(duration=0),
                                                    frame=dict(duration=300, redraw=False))]),
                              dict(label="pause", method="animate", args=[[None], still])])])


def _subset_note(d: RunData, idx: np.ndarray, frames: np.ndarray, counts_in_title: bool = False) -> str:
    notes = []
    if len(idx) < d.n_samples:
        notes.append(f"Showing a random {len(idx):,} of {d.n_samples:,} samples"
                     + (" (the state counts in the title are over all samples)." if counts_in_title else "."))
    if len(frames) < len(d.epochs):
        notes.append(f"The animation steps through {len(frames)} of the {len(d.epochs)} checkpoints.")
    return " ".join(notes)


def _plane_points(d: RunData, idx: np.ndarray, seed: int):
    """Per-checkpoint point data of the shown samples: the exact flag counts (k_out, k_in) behind
    FPR_i = k_out / n_out and TPR_i = k_in / n_in (for the hover and the positions), and the
    ``plane_xy`` spec with which ``assets/report.js`` derives every frame's jittered positions
    x = k_out / n_out + jx, y = k_in / n_in + jy from those counts. Frames then carry one or two
    bytes per sample instead of eight, which keeps the page small."""
    jx, jy = plane_jitter(d, idx, seed)
    half = d.n_models // 2
    kind = np.uint8 if half <= 255 else np.uint16

    def at(t: int) -> dict:
        f, r = d.plane.fpr[t, idx], d.plane.tpr[t, idx]
        return dict(customdata=np.rint(np.stack([f, r], axis=1) * half).astype(kind))
    return at, {"plane_xy": {"trace": 0, "half": half, "jx": typed_array(jx), "jy": typed_array(jy)}}


def _point_hover(d: RunData, extra: str = "") -> str:
    half = d.n_models // 2
    return (f"%{{text}}<br>FPR_i %{{customdata[0]}}/{half}, TPR_i %{{customdata[1]}}/{half}{extra}<extra></extra>")


def plane_by_state(d: RunData, max_points: int, max_frames: int, seed: int) -> Panel:
    """The plane over the epochs, points coloured by state, animated with a slider.

    One trace holds the shown samples in a fixed order (so labels are stored once); each frame
    carries positions, flag counts and state codes, and a title with each state's count over all
    samples at that checkpoint. Four empty traces make the legend.
    """
    idx = display_subset(d.n_samples, max_points, seed)
    frames = frame_indices(len(d.epochs), max_frames)
    points, client = _plane_points(d, idx, seed)
    counts = np.stack([(d.states == k).sum(axis=1) for k in range(len(STATE_NAMES))], axis=1)
    n_states = len(STATE_NAMES)
    scale = [[v, STATE_COLOURS[k]] for k in range(n_states) for v in (k / n_states, (k + 1) / n_states)]

    def traces(t: int) -> list[go.Scatter]:
        return [go.Scatter(**points(t), marker=dict(color=d.states[t, idx].astype(np.uint8)))]

    def title(t: int) -> str:
        return f"epoch {int(d.epochs[t])}: " + ", ".join(f"{n} {counts[t, k]:,}" for k, n in enumerate(STATE_NAMES))

    fig = go.Figure(traces(int(frames[-1])))
    fig.data[0].update(mode="markers", text=[f"sample {i}" for i in idx], showlegend=False,
                       marker=dict(colorscale=scale, cmin=-0.5, cmax=n_states - 0.5, size=5, opacity=0.6,
                                   line=dict(width=0)),
                       hovertemplate=_point_hover(d))
    for k, name in enumerate(STATE_NAMES):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name, hoverinfo="skip",
                                 marker=dict(color=STATE_COLOURS[k], size=8)))
    _plane_layout(fig, d)
    _animate(fig, d, frames, traces, title)
    b = d.config.analysis.states
    return Panel("plane", "The vulnerability plane over training", figure=fig, wide=True, client=client, caption=(
        f"Each dot is a sample at (FPR_i, TPR_i): the share of its OUT and IN models that the attack flags at "
        f"the global threshold of rule {d.rule}. Dots above the diagonal leak membership; dashed lines are the "
        f"state bands on the advantage A_i = TPR_i - FPR_i (safe < {b.low:g} <= low < {b.medium:g} <= medium < "
        f"{b.high:g} <= high); the title counts the samples per state. Drag the slider or press play to watch "
        f"the cloud move. Dots are jittered by less than a third of the plane's resolution (1/{d.n_models // 2}) "
        "so that samples on the same position show as a cloud; the hover gives the exact counts. "
        + _subset_note(d, idx, frames, counts_in_title=True)))


def plane_by_difficulty(d: RunData, max_points: int, max_frames: int, seed: int) -> Panel:
    """The same animated plane with points coloured by a difficulty measure (a menu switches it)."""
    measures = present(d.sample, DIFFICULTY)
    if not measures:
        raise Missing("sample.parquet has no difficulty measure (" + ", ".join(DIFFICULTY) + ")")
    idx = display_subset(d.n_samples, max_points, seed)
    frames = frame_indices(len(d.epochs), max_frames)
    points, client = _plane_points(d, idx, seed)
    values = {m: d.sample[m].to_numpy(np.float64)[idx].astype(F4) for m in measures}

    def traces(t: int) -> list[go.Scatter]:
        return [go.Scatter(**points(t))]

    def colour(m: str) -> dict:
        return {"marker.color": [values[m]], "marker.colorbar.title.text": m.replace("_", " "),
                "hovertemplate": _point_hover(d, "<br>" + m.replace("_", " ") + " %{marker.color:.3g}")}

    fig = go.Figure(traces(int(frames[-1])))
    fig.data[0].update(mode="markers", text=[f"sample {i}" for i in idx], showlegend=False,
                       marker=dict(colorscale="Viridis", size=5, opacity=0.7, line=dict(width=0),
                                   colorbar=dict(title=dict(side="right"))))
    first = colour(measures[0])
    fig.data[0].marker.color = values[measures[0]]
    fig.data[0].marker.colorbar.title.text = first["marker.colorbar.title.text"]
    fig.data[0].hovertemplate = first["hovertemplate"]
    _plane_layout(fig, d)
    _animate(fig, d, frames, traces, lambda t: f"epoch {int(d.epochs[t])}")
    fig.update_layout(updatemenus=[*fig.layout.updatemenus, dict(
        x=0.72, xanchor="right", y=1.0, yanchor="bottom", pad=dict(b=8),
        buttons=[dict(label=m.replace("_", " "), method="restyle", args=[colour(m), [0]]) for m in measures])])
    caption = ("The same plane, each sample coloured by how hard it was to learn (pick the measure in the menu): "
               + "; ".join(DIFFICULTY[m] for m in measures) + ". " + _subset_note(d, idx, frames))
    return Panel("plane-difficulty", "The plane by learning difficulty", figure=fig, wide=True, client=client,
                 caption=caption)


def trajectories(d: RunData, k: int = 12) -> Panel:
    """Paths on the plane and advantage over epochs of the k most vulnerable samples."""
    top = top_samples(d, k)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.5, 0.5], horizontal_spacing=0.1,
                        subplot_titles=("path on the plane (first to last checkpoint)", "advantage A_i over training"))
    colours = [f"hsl({int(h)},65%,45%)" for h in np.linspace(0, 330, len(top))]
    for c, i in zip(colours, top, strict=True):
        fpr, tpr, adv = d.plane.fpr[:, i], d.plane.tpr[:, i], d.plane.adv[:, i]
        sizes = np.linspace(3, 9, len(d.epochs))
        hover = f"sample {i}<br>epoch %{{customdata}}<br>FPR_i %{{x:.3f}}, TPR_i %{{y:.3f}}<extra></extra>"
        fig.add_trace(go.Scatter(x=fpr.astype(F4), y=tpr.astype(F4), mode="lines+markers", name=f"sample {i}",
                                 legendgroup=str(i), line=dict(color=c, width=1.2), marker=dict(size=sizes, color=c),
                                 customdata=d.epochs, hovertemplate=hover), row=1, col=1)
        fig.add_trace(go.Scatter(x=d.epochs, y=adv.astype(F4), mode="lines", name=f"sample {i}", legendgroup=str(i),
                                 showlegend=False, line=dict(color=c, width=1.5),
                                 hovertemplate=f"sample {i}<br>epoch %{{x}}: A_i %{{y:.3f}}<extra></extra>"),
                      row=1, col=2)
    fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line=dict(color="#444", dash="dot", width=1), row=1, col=1)
    fig.add_hline(y=d.config.analysis.states.high, line=dict(color=STATE_COLOURS[3], dash="dash", width=1),
                  row=1, col=2)
    fig.update_xaxes(title_text="FPR_i", range=[-0.03, 1.03], row=1, col=1)
    fig.update_yaxes(title_text="TPR_i", range=[-0.03, 1.03], row=1, col=1)
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    fig.update_yaxes(title_text="A_i", range=[-0.5, 1.03], row=1, col=2)
    fig.update_layout(height=480, margin=dict(l=60, r=20, t=50, b=40))
    return Panel("trajectories", f"Trajectories of the {len(top)} most vulnerable samples", figure=fig, wide=True,
                 caption="The samples with the largest advantage at the last checkpoint (ties: larger AUC_i). "
                         "Markers grow with the epoch; the dashed line on the right is the high-state band.")


def com_path(d: RunData) -> Panel:
    """The centre-of-mass path, mean (FPR_i, TPR_i) in % per checkpoint, with its displacement and length."""
    e = require(d.epoch, ["epoch", "com_fpr", "com_tpr"], "epoch.parquet")
    x, y = e["com_fpr"].to_numpy() * 100, e["com_tpr"].to_numpy() * 100
    fig = go.Figure(go.Scatter(
        x=x, y=y, mode="lines+markers", line=dict(color="#888", width=1.5),
        marker=dict(color=e["epoch"], colorscale="Viridis", size=8, colorbar=dict(title="epoch")),
        customdata=e["epoch"],
        hovertemplate="epoch %{customdata}<br>mean FPR_i %{x:.2f}%<br>mean TPR_i %{y:.2f}%<extra></extra>"))
    fig.update_layout(height=420, margin=dict(l=60, r=20, t=30, b=40),
                      xaxis_title="mean FPR_i (%)", yaxis_title="mean TPR_i (%)")
    caption = "The centre of mass c(t) = mean_i (FPR_i, TPR_i) over the checkpoints."
    if {"com_displacement_pp", "com_path_pp"} <= d.summary.keys():
        caption += (f" Displacement {d.summary['com_displacement_pp']:.2f} pp, path length "
                    f"{d.summary['com_path_pp']:.2f} pp.")
    return Panel("com", "Centre-of-mass path", caption, figure=fig)


def state_shares(d: RunData) -> Panel:
    """The share of samples in each state per checkpoint, as stacked areas."""
    cols = [f"n_{s}" for s in STATE_NAMES]
    e = require(d.epoch, ["epoch", *cols], "epoch.parquet")
    counts = e[cols].to_numpy(np.float64)
    shares = counts / counts.sum(axis=1, keepdims=True)
    fig = go.Figure([go.Scatter(x=e["epoch"], y=shares[:, k], name=s, stackgroup="states", mode="lines",
                                line=dict(width=0.5, color=STATE_COLOURS[k]),
                                hovertemplate=f"epoch %{{x}}: %{{y:.1%}} {s}<extra></extra>")
                     for k, s in enumerate(STATE_NAMES)])
    fig.update_layout(height=420, margin=dict(l=60, r=20, t=30, b=40),
                      xaxis_title="epoch", yaxis=dict(title="share of samples", range=[0, 1], tickformat=".0%"))
    return Panel("states", "Samples per state", "Share of samples in each state (bands on A_i) per checkpoint.",
                 figure=fig)


def entropy(d: RunData) -> Panel:
    """The plane's spatial entropy (bits) over the G x G grid per checkpoint, with Delta H from the summary."""
    e = require(d.epoch, ["epoch", "entropy_bits"], "epoch.parquet")
    fig = go.Figure(go.Scatter(x=e["epoch"], y=e["entropy_bits"], mode="lines+markers", line=dict(color="#6a3d9a"),
                               hovertemplate="epoch %{x}: H = %{y:.3f} bits<extra></extra>"))
    g = d.config.grid_size()
    fig.update_layout(height=420, margin=dict(l=60, r=20, t=30, b=40), xaxis_title="epoch",
                      yaxis=dict(title="H (bits)", range=[0, max(float(e["entropy_bits"].max()) * 1.1, 0.1)]))
    caption = f"Spatial entropy of the cloud over a {g}x{g} grid of the plane (maximum {2 * np.log2(g):.2f} bits)."
    if "delta_entropy_bits" in d.summary:
        caption += f" Delta H = {d.summary['delta_entropy_bits']:+.3f} bits."
    return Panel("entropy", "Entropy over time", caption, figure=fig)


def transitions(d: RunData) -> Panel:
    """Transition matrices P_ab(t) with a slider over the steps."""
    tr = require(d.table("transitions"), ["epoch_from", "state_from", "state_to", "probability"], "transitions.parquet")
    if tr.empty:
        raise Missing("a run with one checkpoint has no transitions")
    names = list(STATE_NAMES)
    code = {n: k for k, n in enumerate(names)}
    steps = np.unique(tr["epoch_from"].to_numpy())
    mats = np.full((len(steps), len(names), len(names)), np.nan)
    mats[np.searchsorted(steps, tr["epoch_from"].to_numpy()), tr["state_from"].astype(str).map(code).to_numpy(),
         tr["state_to"].astype(str).map(code).to_numpy()] = tr["probability"].to_numpy(np.float64)
    fig = go.Figure(go.Heatmap(z=mats[-1], x=names, y=names, zmin=0, zmax=1, colorscale="Blues",
                               texttemplate="%{z:.2f}", hovertemplate="%{y} -> %{x}: %{z:.3f}<extra></extra>",
                               colorbar=dict(title="P")))
    names_of_steps = [f"{e:g}" for e in steps]
    fig.frames = [go.Frame(data=[go.Heatmap(z=m)], name=e) for e, m in zip(names_of_steps, mats, strict=True)]
    still = dict(mode="immediate", frame=dict(duration=0, redraw=True), transition=dict(duration=0))
    fig.update_layout(height=460, margin=dict(l=70, r=20, t=30, b=40),
                      xaxis=dict(title="state at the next checkpoint"),
                      yaxis=dict(title="state at epoch", autorange="reversed"),
                      sliders=[dict(active=len(steps) - 1, currentvalue=dict(prefix="from epoch "), pad=dict(t=40),
                                    steps=[dict(label=e, method="animate", args=[[e], still])
                                           for e in names_of_steps])])
    caption = ("P_ab(t): the share of samples in state a at a checkpoint (rows) that are in state b at the next "
               "one (columns); the slider picks the step. Empty rows: no sample was in that state.")
    return Panel("transitions", "Transition matrices", caption, figure=fig)


def p_to_high(d: RunData) -> Panel:
    """The rate P(non-high -> high) per step, with its peak from the summary."""
    e = require(d.epoch, ["epoch", "p_to_high"], "epoch.parquet")
    fig = go.Figure(go.Scatter(x=e["epoch"], y=e["p_to_high"], mode="lines+markers", line=dict(color=STATE_COLOURS[3]),
                               hovertemplate="from epoch %{x}: %{y:.3%}<extra></extra>"))
    fig.update_layout(height=420, margin=dict(l=60, r=20, t=30, b=40), xaxis_title="epoch",
                      yaxis=dict(title="P(non-high -> high)", tickformat=".1%", rangemode="tozero"))
    caption = "The share of samples not in the high state at a checkpoint that are high at the next one."
    if d.summary.get("peak_p_to_high") is not None:
        at = d.summary.get("peak_p_to_high_epoch")
        caption += f" Peak {d.summary['peak_p_to_high']:.2%}" + (f" (from epoch {at})." if at is not None else ".")
    return Panel("p-to-high", "Rate of becoming vulnerable", caption, figure=fig)


def tpr_and_accuracy(d: RunData) -> Panel:
    """Per checkpoint: global TPR at 0.1%, 1% (and 10%) FPR, the attack's AUC, mean train and test accuracy."""
    e = require(d.epoch, ["epoch", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001", "train_accuracy", "test_accuracy"],
                "epoch.parquet")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("attack success (global, all models)", "model accuracy"))
    for col, name, colour, dash in (("tpr_at_fpr_0.001", "TPR at 0.1% FPR", "#9467bd", "dash"),
                                     ("tpr_at_fpr_0.01", "TPR at 1% FPR", "#d62728", "solid"),
                                     ("tpr_at_fpr_0.1", "TPR at 10% FPR", "#ff9896", "dot")):
        if col in e.columns:
            fig.add_trace(go.Scatter(x=e["epoch"], y=e[col], name=name, mode="lines+markers",
                                     line=dict(color=colour, dash=dash), marker=dict(size=4)), row=1, col=1)
    for col, name, colour in (("train_accuracy", "train accuracy", "#2ca02c"),
                              ("test_accuracy", "test accuracy", "#1f77b4")):
        fig.add_trace(go.Scatter(x=e["epoch"], y=e[col], name=name, mode="lines", line=dict(color=colour)),
                      row=2, col=1)
    if "auc" in e.columns:
        fig.add_trace(go.Scatter(x=e["epoch"], y=e["auc"], name="attack AUC", mode="lines",
                                 line=dict(color="#555", dash="dot")), row=2, col=1)
    fig.update_yaxes(title_text="TPR", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="accuracy / AUC", range=[0, 1.02], row=2, col=1)
    fig.update_xaxes(title_text="epoch", row=2, col=1)
    fig.update_layout(height=560, margin=dict(l=60, r=20, t=40, b=40))
    return Panel("tpr-accuracy", "Attack success at low FPR and accuracy", figure=fig, wide=True,
                 caption="Global TPR at fixed FPR over all (model, sample) pairs, the attack's ROC AUC and the "
                         "models' mean train and test accuracy per checkpoint.")


def histogram(v: np.ndarray, bins: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin centres, counts and widths of the finite values of ``v``: one bin per integer when the
    values are integers over a short range (epochs), else ``bins`` equal bins. Binning here keeps
    the page small however many samples there are."""
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.empty(0), np.empty(0, dtype=np.int64), np.empty(0)
    lo, hi = float(v.min()), float(v.max())
    if np.all(v == np.round(v)) and hi - lo <= 4 * bins:
        edges = np.arange(lo - 0.5, hi + 1.5)
    else:
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    counts, edges = np.histogram(v, bins=edges)
    return (edges[:-1] + edges[1:]) / 2, counts, np.diff(edges)


def _histogram_panel(d: RunData, key: str, title: str, columns: dict[str, str], caption: str) -> Panel:
    cols = present(d.sample, columns)
    if not cols:
        if any(c in d.sample.columns for c in columns):
            raise Missing(f"no sample has a value of {' or '.join(columns)}")
        raise Missing(f"sample.parquet has no {' or '.join(columns)} column")
    fig = make_subplots(rows=1, cols=len(cols), subplot_titles=[columns[c] for c in cols], horizontal_spacing=0.12)
    for j, c in enumerate(cols, start=1):
        v = pd.to_numeric(d.sample[c], errors="coerce").to_numpy(np.float64)
        v = v[np.isfinite(v)]
        centres, counts, widths = histogram(v)
        fig.add_trace(go.Bar(x=centres, y=counts, width=widths, marker_color="#4c72b0", showlegend=False,
                             hovertemplate="%{x:.3g}: %{y} samples<extra></extra>"), row=1, col=j)
        for stat, dash, where in (("mean", "solid", "top right"), ("median", "dash", "top left")):
            x = float(np.mean(v) if stat == "mean" else np.median(v)) if v.size else np.nan
            if np.isfinite(x):
                fig.add_vline(x=x, line=dict(color="#d62728", dash=dash, width=1.5), row=1, col=j,
                              annotation=dict(text=f"{stat} {x:.3g}", font_size=10, bgcolor="rgba(255,255,255,0.8)"),
                              annotation_position=where)
        fig.update_yaxes(title_text="samples", row=1, col=j)
    fig.update_layout(height=380, margin=dict(l=60, r=20, t=50, b=40), bargap=0)
    return Panel(key, title, caption, figure=fig, wide=True)


def encoding_speed(d: RunData) -> Panel:
    """Histograms of the samples' membership encoding speeds (path speed and net rate of A_i per epoch)."""
    caption = ("Membership encoding speed per sample: the length of its path on the plane per epoch, and the net "
               "change of its advantage per epoch.")
    if all(d.summary.get(k) is not None for k in ("encoding_speed_mean", "encoding_speed_median")):
        caption += (f" Population mean {d.summary['encoding_speed_mean']:.4g}, median "
                    f"{d.summary['encoding_speed_median']:.4g} plane units per epoch.")
    return _histogram_panel(d, "speed", "Membership encoding speed", SPEED, caption)


def time_to_vulnerability(d: RunData) -> Panel:
    """Histograms of when samples first reach, and settle in, the high state (:class:`Missing` if none does)."""
    if "time_to_high" in d.sample.columns and d.sample["time_to_high"].isna().all():
        raise Missing("no sample reached the high state")
    never = int(pd.to_numeric(d.sample.get("time_to_high", pd.Series(dtype=float)), errors="coerce").isna().sum())
    return _histogram_panel(d, "time-to-high", "Time to vulnerability", TIMING,
                            f"For samples that reach the high state: when they first do, and when they settle "
                            f"there for good. {never:,} samples are never high (left out).")


def difficulty_scatter(d: RunData, max_points: int, seed: int) -> Panel:
    """Each sample's difficulty measure (picked from a menu) against its final advantage, for a seeded
    subset of at most ``max_points`` samples."""
    measures = present(d.sample, DIFFICULTY)
    if not measures:
        raise Missing("sample.parquet has no difficulty measure (" + ", ".join(DIFFICULTY) + ")")
    idx = display_subset(d.n_samples, max_points, seed)
    adv = d.plane.adv[-1, idx].astype(F4)
    rng = np.random.default_rng(seed + 2)
    jy = rng.uniform(-0.01, 0.01, len(idx)).astype(F4)
    fig = go.Figure()
    for j, m in enumerate(measures):
        x = d.sample[m].to_numpy(np.float64)[idx].astype(F4)
        fig.add_trace(go.Scatter(x=x, y=adv + jy, mode="markers", name=m, visible=j == 0, showlegend=False,
                                 marker=dict(size=4, opacity=0.45, color="#4c72b0", line=dict(width=0)),
                                 customdata=idx.astype(np.int32),
                                 hovertemplate="sample %{customdata}<br>%{x:.3g}, A_i %{y:.2f}<extra></extra>"))
    fig.update_layout(height=440, margin=dict(l=60, r=20, t=60, b=40),
                      xaxis_title=measures[0].replace("_", " "), yaxis_title="final advantage A_i",
                      updatemenus=[dict(x=0, xanchor="left", y=1.12, yanchor="bottom", buttons=[
                          dict(label=m.replace("_", " "), method="update",
                               args=[{"visible": [k == j for k in range(len(measures))]},
                                     {"xaxis.title.text": m.replace("_", " ")}]) for j, m in enumerate(measures)])])
    note = f" A random {len(idx):,} of {d.n_samples:,} samples is shown." if len(idx) < d.n_samples else ""
    return Panel("difficulty-scatter", "Difficulty against vulnerability", figure=fig,
                 caption="Each sample's difficulty measure (menu) against its final advantage." + note)


def difficulty_deciles(d: RunData) -> Panel:
    """The mean final advantage of the samples in each decile of each difficulty measure."""
    dec = require(d.table("difficulty_deciles"), ["measure", "decile", "mean_final_advantage"],
                  "difficulty_deciles.parquet")
    fig = go.Figure()
    for m, g in dec.groupby("measure", sort=False):
        fig.add_trace(go.Scatter(x=g["decile"], y=g["mean_final_advantage"], mode="lines+markers",
                                 name=str(m).replace("_", " "),
                                 hovertemplate=f"{m}<br>decile %{{x}}: mean A_i %{{y:.3f}}<extra></extra>"))
    fig.update_layout(height=440, margin=dict(l=60, r=20, t=30, b=40),
                      xaxis=dict(title="difficulty decile (1 = lowest value of the measure)", dtick=1),
                      yaxis_title="mean final advantage A_i")
    return Panel("difficulty-deciles", "Vulnerability by difficulty decile", figure=fig,
                 caption="Mean final advantage of the samples in each decile of each difficulty measure.")


def early_determination(d: RunData) -> Panel:
    """recall(t) of the finally-vulnerable set and Spearman to the final advantage per checkpoint,
    marking the epoch each recall level is reached."""
    e = require(d.epoch, ["epoch", "recall"], "epoch.parquet")
    fig = go.Figure(go.Scatter(x=e["epoch"], y=e["recall"], mode="lines+markers", name="recall(t) of the final set",
                               line=dict(color="#d62728")))
    if "spearman_to_final" in e.columns:
        fig.add_trace(go.Scatter(x=e["epoch"], y=e["spearman_to_final"], mode="lines", name="Spearman(A(t), A(e_T))",
                                 line=dict(color="#1f77b4", dash="dash")))
    marks = []
    for lv in d.config.analysis.recall_levels:
        key = f"epoch_recall_{lv:g}"
        fig.add_hline(y=lv, line=dict(color="#bbb", dash="dot", width=1))
        if key in d.summary and d.summary[key] is not None and np.isfinite(d.summary[key]):
            fig.add_vline(x=d.summary[key], line=dict(color="#999", width=1))
            marks.append(f"{lv:.0%} by epoch {d.summary[key]:g}")
    fig.update_layout(height=420, margin=dict(l=60, r=20, t=30, b=40), xaxis_title="epoch",
                      yaxis=dict(title="recall / rho", range=[-0.05, 1.05]), legend=dict(x=1, xanchor="right", y=0.05))
    return Panel("early", "Early determination", figure=fig, caption=(
        "recall(t): the share of the finally-vulnerable samples already among the top samples by advantage at "
        "epoch t. " + ("Recall reaches " + ", ".join(marks) + "." if marks else "")))


def clusters(d: RunData) -> Panel:
    """The mean advantage and interquartile band of each k-means trajectory cluster, per checkpoint."""
    s = require(d.sample, ["cluster"], "sample.parquet")
    labels = s["cluster_name"].astype(str) if "cluster_name" in s.columns else s["cluster"].astype(str)
    codes = s["cluster"].to_numpy()
    fig = go.Figure()
    adv = d.plane.adv
    palette = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")
    for j, c in enumerate(np.unique(codes)):
        m = codes == c
        mean = adv[:, m].mean(axis=1)
        q1, q3 = np.percentile(adv[:, m], [25, 75], axis=1)
        name = f"{labels[m].iloc[0]} ({int(m.sum()):,})"
        colour = palette[j % len(palette)]
        fig.add_trace(go.Scatter(x=np.r_[d.epochs, d.epochs[::-1]], y=np.r_[q3, q1[::-1]].astype(F4), fill="toself",
                                 fillcolor=colour, opacity=0.15, line=dict(width=0), hoverinfo="skip", showlegend=False,
                                 legendgroup=name))
        fig.add_trace(go.Scatter(x=d.epochs, y=mean.astype(F4), mode="lines", name=name, legendgroup=name,
                                 line=dict(color=colour, width=2)))
    fig.update_layout(height=420, margin=dict(l=60, r=20, t=30, b=40), xaxis_title="epoch",
                      yaxis_title="advantage A_i")
    caption = "k-means clusters of the per-sample trajectories A_i(t): mean and interquartile band of each."
    if d.summary.get("silhouette") is not None:  # None: one cluster, no silhouette defined
        caption += f" Silhouette {d.summary['silhouette']:.3f}."
    return Panel("clusters", "Trajectory clusters", caption, figure=fig)


def spearman_table(d: RunData) -> Panel:
    """A table of each difficulty measure's Spearman rho with the final advantage and AUC_i, with
    bootstrap 95% CIs."""
    sp = d.table("difficulty_spearman")
    sp = require(sp, ["measure", "target", "rho", "ci_low", "ci_high"], "difficulty_spearman.parquet")
    rows = "".join(f"<tr><td>{html.escape(str(r.measure))}</td><td>{html.escape(str(r.target))}</td>"
                   f"<td>{r.rho:+.3f}</td><td>[{r.ci_low:+.3f}, {r.ci_high:+.3f}]</td></tr>" for r in sp.itertuples())
    body = ("<table class='kv'><tr><th>measure</th><th>with</th><th>Spearman rho</th><th>95% CI</th></tr>"
            f"{rows}</table>")
    return Panel("spearman", "Difficulty and vulnerability: Spearman correlations", html=body,
                 caption="Rank correlation of each difficulty measure with the final advantage and AUC_i, with "
                         "bootstrap 95% confidence intervals.")
