"""The comparison report of several runs (a sweep, or runs picked by hand).

``build_comparison(runs, out)`` writes ``out/index.html``: the metric table of every run, the
final planes side by side, and the key curves of all runs overlaid (epoch on the x axis), plus
the same as PNG and PDF figures. Each run is read at its own default attack and rule; a curve a
run lacks is left out for that run and named in the caption. Runs may come in groups (the seeds
of one sweep configuration): a group shares one colour and one legend entry.

``out`` must be a new or empty folder, or one an earlier comparison wrote: each comparison first
writes ``out/privdyn-comparison.json`` (:data:`MARKER`), the mark that it owns the folder, and
any other folder is refused before a file is written, so no file of the user's is overwritten.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from privdyn.analysis.population import STATE_NAMES
from privdyn.errors import PrivdynError
from privdyn.report import figures
from privdyn.report.common import STATE_COLOURS, display_subset, plane_jitter, subplots
from privdyn.report.data import RunData, load_run_data
from privdyn.report.html import key_metrics
from privdyn.report.interactive import F4, histogram
from privdyn.report.page import (
    Cell,
    document,
    figure_gallery,
    fmt,
    section,
    sortable_table,
)
from privdyn.report.panels import Missing, Panel, build
from privdyn.store import atomic, folders
from privdyn.store.rundir import versions

#: The file a comparison writes first in its folder: its mark that the folder is a comparison's own.
MARKER = "privdyn-comparison.json"
#: The marker's ``format``.
FORMAT = "privdyn-comparison"

#: A curve per run: (x, y) arrays, or None when the run lacks it.
Curve = Callable[[RunData], tuple[np.ndarray, np.ndarray] | None]


def run_labels(data: list[RunData]) -> list[str]:
    """A distinct label per run: its config name, with the folder name added where names repeat."""
    names = [d.name for d in data]
    labels = [n if names.count(n) == 1 else f"{n} ({d.run.path.name})" for n, d in zip(names, data, strict=True)]
    return [lb if labels.count(lb) == 1 else f"{lb} #{k + 1}" for k, lb in enumerate(labels)]


def _column(col: str, scale: float = 1.0) -> Curve:
    def get(d: RunData) -> tuple[np.ndarray, np.ndarray] | None:
        if col not in d.epoch.columns:
            return None
        return d.epoch["epoch"].to_numpy(), d.epoch[col].to_numpy(np.float64) * scale
    return get


def _high_share(d: RunData) -> tuple[np.ndarray, np.ndarray]:
    return d.epochs, (d.states == len(STATE_NAMES) - 1).mean(axis=1)


def _com(d: RunData) -> tuple[np.ndarray, np.ndarray] | None:
    e = d.epoch
    if not {"com_fpr", "com_tpr"} <= set(e.columns):
        return None
    return e["com_fpr"].to_numpy() * 100, e["com_tpr"].to_numpy() * 100


def _fpr_is_fixed(d: RunData) -> bool:
    """Whether the CoM's FPR never moves: an ``fpr:`` rule sets a global threshold whose overall
    FPR, the mean of the FPR_i, is the target at every checkpoint, so the CoM moves only in TPR."""
    xy = _com(d)
    return xy is None or np.ptp(xy[0]) < 1e-9


def _speed(d: RunData) -> tuple[np.ndarray, np.ndarray] | None:
    if "encoding_speed" not in d.sample.columns:
        return None
    centres, counts, _ = histogram(d.sample["encoding_speed"].to_numpy(np.float64), bins=40)
    return centres, counts / max(counts.sum(), 1)


#: Overlaid curves: key, title, x label, y label, how to get a run's curve.
CURVES: tuple[tuple[str, str, str, str, Curve], ...] = (
    ("tpr", "TPR at 1% FPR", "epoch", "TPR", _column("tpr_at_fpr_0.01")),
    ("tpr-low", "TPR at 0.1% FPR", "epoch", "TPR", _column("tpr_at_fpr_0.001")),
    ("test-accuracy", "Test accuracy", "epoch", "accuracy", _column("test_accuracy")),
    ("high-share", "Share of samples in the high state", "epoch", "share", _high_share),
    ("com", "Centre-of-mass path", "mean FPR_i (%)", "mean TPR_i (%)", _com),
    ("entropy", "Spatial entropy", "epoch", "H (bits)", _column("entropy_bits")),
    ("p-to-high", "P(non-high -> high)", "epoch", "probability", _column("p_to_high")),
    ("recall", "Recall of the final vulnerable set", "epoch", "recall", _column("recall")),
    ("speed", "Encoding speed", "path speed v_i", "share of samples", _speed),
)

#: The CoM curve when every run's rule pins the mean FPR_i: the path would be a vertical line.
COM_BY_EPOCH = ("com", "Centre of mass: mean TPR_i (mean FPR_i fixed by the rule)", "epoch", "mean TPR_i (%)",
                _column("com_tpr", 100.0))


def curves_for(data: list[RunData]) -> tuple[tuple[str, str, str, str, Curve], ...]:
    """The curves to draw: the CoM path, or the CoM's TPR by epoch when no run's FPR_i can move."""
    if all(_fpr_is_fixed(d) for d in data):
        return tuple(COM_BY_EPOCH if c[0] == "com" else c for c in CURVES)
    return CURVES


def group_colours(groups: list[str]) -> dict[str, str]:
    """One colour per group, in order of first appearance (tab10, or tab20 beyond ten groups)."""
    names = list(dict.fromkeys(groups))
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {g: matplotlib.colors.to_hex(cmap(i % cmap.N)) for i, g in enumerate(names)}


def curve_panel(data: list[RunData], labels: list[str], groups: list[str], key: str, title: str, xlabel: str,
                ylabel: str, get: Curve) -> Panel:
    """One curve per run; the runs of a group share a colour and a legend entry (hover names the run)."""
    fig = go.Figure()
    lacking, shown = [], set()
    colours = group_colours(groups)
    for d, label, group in zip(data, labels, groups, strict=True):
        xy = get(d)
        if xy is None:
            lacking.append(label)
            continue
        fig.add_trace(go.Scatter(x=xy[0], y=xy[1].astype(F4), mode="lines+markers", name=group, legendgroup=group,
                                 showlegend=group not in shown, line=dict(color=colours[group], width=1.5),
                                 marker=dict(size=4), hovertemplate=f"{label}<br>%{{x}}, %{{y}}<extra></extra>"))
        shown.add(group)
    if not fig.data:
        raise Missing("no run has this analysis")
    fig.update_layout(height=400, margin=dict(l=60, r=20, t=30, b=40), xaxis_title=xlabel,
                      yaxis_title=ylabel, legend=dict(orientation="h", y=-0.2))
    caption = f"Not available for: {', '.join(lacking)}." if lacking else ""
    return Panel(f"cmp-{key}", title, caption, figure=fig)


def planes_panel(data: list[RunData], labels: list[str], max_points: int) -> Panel:
    """The final plane of every run side by side (rows of up to four), coloured by state."""
    n = len(data)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"{lb} (epoch {int(d.epochs[-1])})" for lb, d in
                                                              zip(labels, data, strict=True)],
                        horizontal_spacing=0.05, vertical_spacing=0.12)
    per_run = max(200, max_points // n)
    for j, d in enumerate(data):
        idx = display_subset(d.n_samples, per_run, d.config.seed)
        jx, jy = plane_jitter(d, idx, d.config.seed)
        st = d.states[-1, idx]
        r, c = divmod(j, cols)
        for k, name in enumerate(STATE_NAMES):
            m = st == k
            fig.add_trace(go.Scatter(x=(d.plane.fpr[-1, idx[m]] + jx[m]).astype(F4),
                                     y=(d.plane.tpr[-1, idx[m]] + jy[m]).astype(F4), mode="markers", name=name,
                                     legendgroup=name, showlegend=j == 0, hoverinfo="skip",
                                     marker=dict(size=3, opacity=0.6, color=STATE_COLOURS[k], line=dict(width=0))),
                          row=r + 1, col=c + 1)
    fig.update_xaxes(range=[-0.06, 1.06], title_text="FPR_i")
    fig.update_yaxes(range=[-0.06, 1.06], title_text="TPR_i")
    fig.update_layout(height=330 * rows + 60, margin=dict(l=50, r=20, t=40, b=40),
                      legend=dict(itemsizing="constant"))
    shown = " Each shows a random subset of at most " + f"{per_run:,} samples." if any(
        d.n_samples > per_run for d in data) else ""
    return Panel("cmp-planes", "Final vulnerability planes", figure=fig, wide=True,
                 caption="Every run's plane at its last checkpoint, coloured by state (jittered within the "
                         "plane's resolution)." + shown)


def metric_table(data: list[RunData], labels: list[str]) -> Panel:
    """The "Headline numbers" panel: one sortable row per run (named by ``labels``), its setup and
    :func:`key_metrics`."""
    metrics = [key_metrics(d) for d in data]
    keys = list(dict.fromkeys(k for m in metrics for k in m))
    cols = ["run", "dataset", "model", "optimizer", "M", "epochs", "attack", "rule", *keys]
    rows: list[list[Cell]] = []
    for d, label, m in zip(data, labels, metrics, strict=True):
        c = d.config
        row: list[Cell] = [(label, None), (c.dataset.name, None),
                           (c.model_label(), None), (c.optimizer_label(lr=True), None),
                           (str(d.n_models), d.n_models), (str(c.training.epochs), c.training.epochs),
                           (d.attack, None), (d.rule, None)]
        for k in keys:
            v = m.get(k)
            row.append((fmt(v), v if isinstance(v, int | float) else None) if v is not None else ("\u2013", ""))
        rows.append(row)
    return Panel("cmp-metrics", "Headline numbers", html=sortable_table(cols, rows), wide=True,
                 caption="The headline numbers of every run at its last checkpoint (click a header to sort).")


def static_curves(data: list[RunData], groups: list[str], out: Path) -> list[figures.Written]:
    """The overlaid curves as one PNG/PDF grid (three per row), one colour and legend entry per group."""
    avail = [(title, xl, yl, get) for _, title, xl, yl, get in curves_for(data)
             if any(get(d) is not None for d in data)]
    if not avail:
        return []
    cols = 3
    rows = int(np.ceil(len(avail) / cols))
    with matplotlib.rc_context(figures.STYLE):
        fig, axes = subplots(rows, cols, figsize=(7.0, 2.1 * rows), squeeze=False)
        for ax in axes.ravel()[len(avail):]:
            ax.axis("off")
        colours = group_colours(groups)
        for ax, (title, xl, yl, get) in zip(axes.ravel(), avail, strict=False):
            shown: set[str] = set()
            for d, group in zip(data, groups, strict=True):
                xy = get(d)
                if xy is not None:
                    ax.plot(xy[0], xy[1], "-", lw=1, color=colours[group], label="_" if group in shown else group)
                    shown.add(group)
            ax.set_title(title, fontsize="medium" if len(title) < 40 else "small")
            ax.set(xlabel=xl, ylabel=yl)
            if xl == "epoch":
                ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        handles, names = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=min(len(names), 4), frameon=False,
                   bbox_to_anchor=(0.5, -0.02 - 0.02 * (len(names) // 4)))
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        return [figures.save(fig, out, "compare_curves", "The key curves of every run overlaid.")]


def is_comparison_folder(out: Path) -> bool:
    """True when ``out`` holds the marker (:data:`MARKER`) that an earlier comparison wrote."""
    try:
        data = json.loads((out / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT


def build_comparison(runs: list[Path], out: Path, max_points: int = 8000,
                     groups: list[str] | None = None, check_out: bool = True) -> Path:
    """Write the comparison report of ``runs`` to ``out/index.html`` (with PNG/PDF figures).

    ``groups`` names each run's group (e.g. its sweep configuration, seeds apart); by default
    every run is its own group. ``out`` must be new, empty or an earlier comparison's folder
    (:func:`privdyn.store.folders.claim`); ``check_out=False`` skips that check for a caller that owns ``out``
    (a sweep writing the ``report/`` of its own folder).
    """
    if not runs:
        raise PrivdynError("Nothing to compare: pass at least one analysed run directory")
    if groups is not None and len(groups) != len(runs):
        raise PrivdynError(f"Got {len(groups)} group names for {len(runs)} runs: give one per run, or none")
    data = [load_run_data(r) for r in runs]
    labels = run_labels(data)
    groups = labels if groups is None else list(groups)
    out = Path(out)
    folders.claim(out, not check_out or is_comparison_folder(out), "The comparison folder",
                  "its index.html and figures", f"a folder that privdyn compare wrote (it has no {MARKER})",
                  "Choose a new or empty folder for --out (or the folder of an earlier `privdyn compare`, "
                  "which it rewrites). Nothing was written.")
    atomic.write_json(out / MARKER, {"format": FORMAT, "runs": [str(r) for r in runs], "created": time.time(),
                                     "versions": versions()})  # first: the folder is now this comparison's own
    curves = [build(f"cmp-{k}", t, functools.partial(curve_panel, data, labels, groups, k, t, xl, yl, g))
              for k, t, xl, yl, g in curves_for(data)]
    body = section("Metrics", "metrics", [metric_table(data, labels)])
    body += section("Planes", "planes", [planes_panel(data, labels, max_points)])
    body += section("Curves", "curves", curves)
    body += ('<h2 id="figures">Figures for papers</h2>'
             + figure_gallery(static_curves(data, groups, out)))
    nav = [("metrics", "Metrics"), ("planes", "Planes"), ("curves", "Curves"), ("figures", "Paper figures")]
    links = ", ".join(f"{lb} ({d.run.path})" for lb, d in zip(labels, data, strict=True))
    index = out / "index.html"
    atomic.write_text(index, document(f"privdyn comparison of {len(data)} runs", f"Runs: {links}.", nav, body))
    return index
