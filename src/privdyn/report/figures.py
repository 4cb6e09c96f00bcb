"""Matplotlib figures of one analysed run, as PNG (300 dpi) and PDF, sized for a paper column.

Each figure function writes ``STEM.png`` and ``STEM.pdf`` and returns the PNG path with a
caption, or raises :class:`Missing` when the analysis did not produce its data. Dense scatters
are rasterised inside the PDF so the files stay small.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox
from matplotlib.typing import RcKeyType

from privdyn.analysis.population import STATE_NAMES
from privdyn.report.common import (
    DIFFICULTY,
    SPEED,
    STATE_COLOURS,
    display_subset,
    plane_jitter,
    subplots,
    top_samples,
)
from privdyn.report.data import RunData
from privdyn.report.gallery import draw_input, stored_inputs
from privdyn.report.panels import Missing, present, require
from privdyn.store import atomic

#: A written figure: its PNG path, a caption and a small PNG preview (bytes) for the HTML page.
Written = tuple[Path, str, bytes]
STYLE: dict[RcKeyType, Any] = {
    "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False, "savefig.dpi": 300}
PREVIEW_DPI = 90


def tight_bbox(canvas: FigureCanvasAgg) -> Bbox:
    """The tight bounding box in inches of the figure on ``canvas``, padded like ``bbox_inches="tight"``.

    Computed once from text extents (no rendering), so the PNG and the PDF are each drawn once;
    ``bbox_inches="tight"`` would draw every file twice.
    """
    box = canvas.figure.get_tightbbox(canvas.get_renderer())
    pad = matplotlib.rcParams["savefig.pad_inches"]
    return box.padded(pad)


def save(fig: Figure, out: Path, stem: str, caption: str) -> Written:
    """Write ``stem``.png and ``stem``.pdf atomically; the preview is the PNG scaled down, from
    the pixels just drawn (cheaper than drawing a third time or decoding the file)."""
    from PIL import Image  # pillow comes with matplotlib

    canvas = FigureCanvasAgg(fig)  # the figure's canvas from now on: the PNG is drawn on it
    box = tight_bbox(canvas)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches=box)
    image = Image.fromarray(np.array(canvas.buffer_rgba()))  # the PNG's pixels
    png = out / f"{stem}.png"
    atomic.write_bytes(png, buf.getvalue())
    with atomic.atomic_path(out / f"{stem}.pdf") as tmp:
        fig.savefig(tmp, format="pdf", bbox_inches=box)
    if image.getchannel("A").getextrema() == (255, 255):
        image = image.convert("RGB")  # opaque: the same pixels in three quarters of the bytes
    scale = PREVIEW_DPI / STYLE["savefig.dpi"]
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    small = image.resize(size, Image.Resampling.LANCZOS)
    preview = io.BytesIO()
    small.save(preview, format="PNG")  # zlib level 6: 2% more bytes than level 9 in a fifth of the time
    return png, caption, preview.getvalue()


def pick_epochs(epochs: np.ndarray, k: int = 4) -> list[int]:
    """Indices of up to k checkpoints spread over training (first, last and evenly between)."""
    return np.unique(np.round(np.linspace(0, len(epochs) - 1, min(k, len(epochs)))).astype(int)).tolist()


def _plane_axes(ax: Axes, d: RunData) -> None:
    ax.plot([0, 1], [0, 1], ls=":", color="k", lw=0.7)
    ax.set(xlim=(-0.05, 1.05), ylim=(-0.05, 1.05), xlabel="FPR$_i$", aspect="equal")


def plane(d: RunData, out: Path, max_points: int = 20000) -> Written:
    """``plane.{png,pdf}``: the plane at up to four checkpoints, coloured by state (at most ``max_points`` samples)."""
    idx = pick_epochs(d.epochs)
    sel = display_subset(d.n_samples, max_points, d.config.seed)
    jx, jy = plane_jitter(d, sel, d.config.seed)
    fig, axes = subplots(1, len(idx), figsize=(1.75 * len(idx) + 0.3, 2.1), sharey=True, squeeze=False)
    for ax, t in zip(axes[0], idx, strict=True):
        st = d.states[t, sel]
        for k, name in enumerate(STATE_NAMES):
            m = st == k
            ax.scatter(d.plane.fpr[t, sel][m] + jx[m], d.plane.tpr[t, sel][m] + jy[m], s=1.5, alpha=0.5, lw=0,
                       color=STATE_COLOURS[k], label=name, rasterized=True)
        _plane_axes(ax, d)
        ax.set_title(f"epoch {int(d.epochs[t])}")
    axes[0, 0].set_ylabel("TPR$_i$")
    axes[0, -1].legend(loc="lower right", markerscale=4, frameon=False, handletextpad=0.1)
    note = f" ({len(sel):,} of {d.n_samples:,} samples shown)" if len(sel) < d.n_samples else ""
    return save(fig, out, "plane", "The vulnerability plane at four checkpoints, coloured by state" + note + ".")


def plane_difficulty(d: RunData, out: Path, max_points: int = 20000) -> Written:
    """``plane_difficulty.{png,pdf}``: the final plane coloured by a difficulty measure (consistency when present)."""
    measures = present(d.sample, DIFFICULTY)
    if not measures:
        raise Missing("no difficulty measure in sample.parquet")
    m = "consistency" if "consistency" in measures else measures[0]
    sel = display_subset(d.n_samples, max_points, d.config.seed)
    jx, jy = plane_jitter(d, sel, d.config.seed)
    fig, ax = subplots(figsize=(2.9, 2.5))
    sc = ax.scatter(d.plane.fpr[-1, sel] + jx, d.plane.tpr[-1, sel] + jy, c=d.sample[m].to_numpy()[sel], s=1.5,
                    lw=0, cmap="viridis", rasterized=True)
    fig.colorbar(sc, ax=ax, label=m.replace("_", " "))
    _plane_axes(ax, d)
    ax.set(ylabel="TPR$_i$", title=f"epoch {int(d.epochs[-1])}")
    return save(fig, out, "plane_difficulty", f"The final plane coloured by {DIFFICULTY[m]}.")


def trajectories(d: RunData, out: Path, k: int = 10) -> Written:
    """``trajectories.{png,pdf}``: the plane paths and the advantage per epoch of the ``k`` most vulnerable samples."""
    top = top_samples(d, k)
    fig, (a, b) = subplots(1, 2, figsize=(6.2, 2.6), gridspec_kw=dict(width_ratios=[1, 1.3]))
    colours = matplotlib.colormaps["tab10"](np.arange(len(top)) % 10)
    for c, i in zip(colours, top, strict=True):
        a.plot(d.plane.fpr[:, i], d.plane.tpr[:, i], "-", color=c, lw=0.8, alpha=0.8)
        a.scatter(d.plane.fpr[-1, i], d.plane.tpr[-1, i], color=c, s=10, zorder=3)
        b.plot(d.epochs, d.plane.adv[:, i], color=c, lw=1, label=str(i))
    _plane_axes(a, d)
    a.set_ylabel("TPR$_i$")
    b.axhline(d.config.analysis.states.high, color=STATE_COLOURS[3], ls="--", lw=0.8)
    b.set(xlabel="epoch", ylabel="A$_i$ = TPR$_i$ - FPR$_i$")
    b.legend(title="sample", ncol=2, frameon=False, loc="upper left", bbox_to_anchor=(1, 1))
    return save(fig, out, "trajectories",
                f"Paths (dot: last checkpoint) and advantage of the {len(top)} most vulnerable samples.")


def com_path(d: RunData, out: Path) -> Written:
    """``com_path.{png,pdf}``: the path of the plane's centre of mass (mean FPR_i and TPR_i, in %) over the epochs."""
    e = require(d.epoch, ["epoch", "com_fpr", "com_tpr"], "epoch.parquet")
    fig, ax = subplots(figsize=(2.9, 2.5))
    x, y = e["com_fpr"] * 100, e["com_tpr"] * 100
    ax.plot(x, y, "-", color="#888", lw=0.8)
    sc = ax.scatter(x, y, c=e["epoch"], cmap="viridis", s=12, zorder=3)
    fig.colorbar(sc, ax=ax, label="epoch")
    ax.set(xlabel="mean FPR$_i$ (%)", ylabel="mean TPR$_i$ (%)")
    return save(fig, out, "com_path", "The path of the plane's centre of mass.")


def states_and_entropy(d: RunData, out: Path) -> Written:
    """``states_entropy.{png,pdf}``: the share of samples per state and the plane's spatial entropy (bits) per epoch."""
    cols = [f"n_{s}" for s in STATE_NAMES]
    e = require(d.epoch, ["epoch", "entropy_bits", *cols], "epoch.parquet")
    counts = e[cols].to_numpy(np.float64)
    fig, (a, b) = subplots(1, 2, figsize=(6.2, 2.3))
    a.stackplot(e["epoch"], (counts / counts.sum(axis=1, keepdims=True)).T, labels=STATE_NAMES, colors=STATE_COLOURS)
    a.set(xlabel="epoch", ylabel="share of samples", ylim=(0, 1))
    if e["epoch"].max() > e["epoch"].min():
        a.set_xlim(e["epoch"].min(), e["epoch"].max())
    a.legend(loc="lower left", frameon=True, fontsize=6)
    b.plot(e["epoch"], e["entropy_bits"], "o-", ms=2.5, color="#6a3d9a")
    b.set(xlabel="epoch", ylabel="spatial entropy H (bits)")
    return save(fig, out, "states_entropy", "Share of samples per state, and the spatial entropy of the plane.")


def transitions(d: RunData, out: Path) -> Written:
    """``transitions.{png,pdf}``: the state-transition probabilities pooled over all steps, and the rate of becoming
    high per step; :class:`Missing` for a run with one checkpoint."""
    tr = require(d.table("transitions"), ["state_from", "state_to", "count"], "transitions.parquet")
    e = require(d.epoch, ["epoch", "p_to_high"], "epoch.parquet")
    if tr.empty:
        raise Missing("a run with one checkpoint has no transitions")
    code = {n: k for k, n in enumerate(STATE_NAMES)}
    S = len(STATE_NAMES)
    counts = np.zeros((S, S))
    np.add.at(counts,
              (tr["state_from"].astype(str).map(code).to_numpy(), tr["state_to"].astype(str).map(code).to_numpy()),
              tr["count"].to_numpy(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        p = counts / counts.sum(axis=1, keepdims=True)
    fig, (a, b) = subplots(1, 2, figsize=(6.2, 2.5), gridspec_kw=dict(width_ratios=[1, 1.4]))
    a.imshow(p, cmap="Blues", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(p):
        if np.isfinite(v):
            a.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v > 0.6 else "k")
    a.set(xticks=range(S), yticks=range(S), xticklabels=STATE_NAMES, yticklabels=STATE_NAMES,
          xlabel="to", ylabel="from")
    a.tick_params(axis="x", labelrotation=45)
    b.plot(e["epoch"], e["p_to_high"] * 100, "o-", ms=2.5, color=STATE_COLOURS[3])
    b.set(xlabel="epoch", ylabel="P(non-high $\\to$ high) (%)")
    return save(fig, out, "transitions",
                "State transitions pooled over all steps, and the rate of becoming high per step.")


def speed(d: RunData, out: Path) -> Written:
    """``encoding_speed.{png,pdf}``: a histogram (log counts) of each membership encoding speed over the samples."""
    cols = present(d.sample, SPEED)
    if not cols:
        raise Missing("no encoding speed in sample.parquet")
    fig, axes = subplots(1, len(cols), figsize=(3.1 * len(cols), 2.3), squeeze=False)
    for ax, c in zip(axes[0], cols, strict=True):
        v = d.sample[c].to_numpy(np.float64)
        v = v[np.isfinite(v)]
        counts, edges = np.histogram(v, bins=50)
        ax.stairs(counts, edges, fill=True, color="#4c72b0")  # one artist, where ax.hist draws 50 bars
        ax.axvline(np.mean(v), color="#d62728", lw=1, label=f"mean {np.mean(v):.3g}")
        ax.axvline(np.median(v), color="#d62728", ls="--", lw=1, label=f"median {np.median(v):.3g}")
        ax.set(xlabel=SPEED[c], ylabel="samples", yscale="log")
        ax.legend(frameon=False)
    return save(fig, out, "encoding_speed", "Distribution of the membership encoding speed over samples (log counts).")


def tpr_accuracy(d: RunData, out: Path) -> Written:
    """``tpr_accuracy.{png,pdf}``: the attack's TPR at 1% and 0.1% FPR, and train and test accuracy, per epoch."""
    e = require(d.epoch, ["epoch", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001", "train_accuracy", "test_accuracy"],
                "epoch.parquet")
    fig, (a, b) = subplots(1, 2, figsize=(6.2, 2.3))
    a.plot(e["epoch"], e["tpr_at_fpr_0.01"], "o-", ms=2.5, color="#d62728", label="1% FPR")
    a.plot(e["epoch"], e["tpr_at_fpr_0.001"], "s--", ms=2.5, color="#9467bd", label="0.1% FPR")
    a.set(xlabel="epoch", ylabel="TPR", ylim=(0, None))
    a.legend(frameon=False)
    b.plot(e["epoch"], e["train_accuracy"], color="#2ca02c", label="train")
    b.plot(e["epoch"], e["test_accuracy"], color="#1f77b4", label="test")
    b.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
    b.legend(frameon=False)
    return save(fig, out, "tpr_accuracy", "Attack TPR at low FPR and model accuracy over training.")


def difficulty(d: RunData, out: Path, max_points: int = 20000) -> Written:
    """``difficulty.{png,pdf}``: final advantage against a difficulty measure, and its mean per decile of each."""
    dec = require(d.table("difficulty_deciles"), ["measure", "decile", "mean_final_advantage"],
                  "difficulty_deciles.parquet")
    measures = present(d.sample, DIFFICULTY)
    if not measures or dec.empty:
        raise Missing("no difficulty measure in sample.parquet")
    m = "consistency" if "consistency" in measures else measures[0]
    sel = display_subset(d.n_samples, max_points, d.config.seed)
    fig, (a, b) = subplots(1, 2, figsize=(6.2, 2.5))
    a.scatter(d.sample[m].to_numpy()[sel], d.plane.adv[-1, sel], s=1.5, alpha=0.3, lw=0, color="#4c72b0",
              rasterized=True)
    a.set(xlabel=m.replace("_", " "), ylabel="final A$_i$")
    for name, g in dec.groupby("measure", sort=False):
        b.plot(g["decile"], g["mean_final_advantage"], "o-", ms=2.5, label=str(name).replace("_", " "))
    b.set(xlabel="difficulty decile", ylabel="mean final A$_i$", xticks=range(1, 11))
    b.legend(frameon=False, fontsize=6)
    return save(fig, out, "difficulty",
                f"Final advantage against {m.replace('_', ' ')}, and its mean per difficulty decile.")


def early(d: RunData, out: Path) -> Written:
    """``early_determination.{png,pdf}``: the recall of the finally-vulnerable set (and Spearman to the final ranking)
    per epoch, against the configured recall levels."""
    e = require(d.epoch, ["epoch", "recall"], "epoch.parquet")
    fig, ax = subplots(figsize=(3.1, 2.3))
    ax.plot(e["epoch"], e["recall"], "o-", ms=2.5, color="#d62728", label="recall of final set")
    if "spearman_to_final" in e.columns:
        ax.plot(e["epoch"], e["spearman_to_final"], "--", color="#1f77b4", label="Spearman to final")
    for lv in d.config.analysis.recall_levels:
        ax.axhline(lv, color="#bbb", lw=0.6, ls=":")
    ax.set(xlabel="epoch", ylabel="recall / $\\rho$", ylim=(-0.05, 1.05))
    ax.legend(frameon=False)
    return save(fig, out, "early_determination", "How early the finally-vulnerable samples are visible.")


def clusters(d: RunData, out: Path) -> Written:
    """``clusters.{png,pdf}``: the mean advantage and interquartile band of each trajectory cluster over the epochs."""
    s = require(d.sample, ["cluster", "cluster_name"], "sample.parquet")
    codes, names = s["cluster"].to_numpy(), s["cluster_name"].astype(str).to_numpy()
    fig, ax = subplots(figsize=(3.1, 2.3))
    for c in np.unique(codes):
        m = codes == c
        q1, mid, q3 = np.percentile(d.plane.adv[:, m], [25, 50, 75], axis=1)
        line, = ax.plot(d.epochs, d.plane.adv[:, m].mean(axis=1), lw=1.2, label=f"{names[m][0]} ({int(m.sum()):,})")
        ax.fill_between(d.epochs, q1, q3, color=line.get_color(), alpha=0.15, lw=0)
    ax.set(xlabel="epoch", ylabel="A$_i$")
    ax.legend(frameon=False)
    return save(fig, out, "clusters", "Trajectory clusters: mean advantage and interquartile band.")


def gallery(d: RunData, out: Path, k: int = 12) -> Written:
    """``gallery.{png,pdf}``: the inputs of the ``k`` most vulnerable samples above their advantage curves;
    :class:`Missing` when the run stored none (see :func:`stored_inputs`)."""
    top, x, kind = stored_inputs(d)
    top, x = top[:k], x[:k]
    cols = 6
    rows = int(np.ceil(len(top) / cols))
    fig, axes = subplots(2 * rows, cols, figsize=(1.1 * cols, 1.9 * rows), squeeze=False,
                             gridspec_kw=dict(height_ratios=[1.2, 0.7] * rows))
    for ax in axes.ravel():
        ax.axis("off")
    labels = d.labels
    assert labels is not None  # stored_inputs refuses runs without labels
    for n, i in enumerate(top):
        r, c = divmod(n, cols)
        img, tr = axes[2 * r, c], axes[2 * r + 1, c]
        img.axis("on")
        draw_input(img, x[n], kind)
        img.set_title(f"#{i} y={int(labels[i])}", fontsize=6)
        tr.axis("on")
        tr.plot(d.epochs, d.plane.adv[:, i], color="k", lw=0.8)
        tr.axhline(d.config.analysis.states.high, color=STATE_COLOURS[3], ls="--", lw=0.5)
        tr.set(ylim=(-0.2, 1.05), xticks=[], yticks=[])
    return save(fig, out, "gallery", f"The {len(top)} most vulnerable samples and their advantage over training.")


FIGURES: tuple[Callable[[RunData, Path], Written], ...] = (
    plane, plane_difficulty, trajectories, gallery, com_path, states_and_entropy, transitions, speed, tpr_accuracy,
    difficulty, early, clusters)


def write_all(d: RunData, out: Path) -> list[Written]:
    """Every figure whose data the run has; the rest are left out (the HTML says why)."""
    return [w for _, w in write_some(d, out, range(len(FIGURES)))]


def write_some(d: RunData, out: Path, which: range) -> list[tuple[int, Written]]:
    """The figures ``which`` (positions in :data:`FIGURES`), each with its position, leaving out
    those whose data the run lacks."""
    written = []
    with matplotlib.rc_context(STYLE):
        for i in which:
            try:
                written.append((i, FIGURES[i](d, out)))
            except Missing:
                continue
    return written
