"""The gallery of the most vulnerable samples: what they look like and how their risk grew.

The inputs are not stored in a run, so they are re-made by loading the dataset with the run's
config (cheap for built-in data); the run's ``labels.npy`` must match the reloaded labels, so
a changed dataset or loader can never put the wrong picture next to a sample.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from matplotlib.axes import Axes

from privdyn.errors import PrivdynError
from privdyn.report.common import subplots
from privdyn.report.data import RunData
from privdyn.report.panels import Missing, Panel


def pool_inputs(d: RunData) -> tuple[np.ndarray, str]:
    """The run's pool inputs ``[N, ...]`` and the dataset kind, reloaded from its config.

    Raises Missing for tabular data, when the dataset cannot be loaded here, or when the
    reloaded labels differ from the run's.
    """
    from privdyn.data import load_dataset

    if "inputs" in d.cache:
        return d.cache["inputs"]
    c = d.config.dataset
    if d.config.source.kind != "train":
        raise Missing(f"the inputs of a run whose data came from outside privdyn ({d.config.source.kind}) "
                      "are not stored in it")
    if d.labels is None:
        raise Missing("the run has no labels.npy to check the reloaded dataset against")
    try:
        ds = load_dataset(c.name, c.n_pool, c.n_test, d.config.seed, c.options, root=c.root)
    except PrivdynError as e:
        raise Missing(f"the dataset could not be reloaded: {e}") from None
    if ds.kind not in ("image", "sequence"):
        raise Missing(f"{c.name} is {ds.kind} data, which has no picture")
    if ds.y_pool.shape != d.labels.shape or not np.array_equal(ds.y_pool, d.labels):
        raise Missing("reloading the dataset gave other labels than the run's labels.npy (the dataset or its "
                      "loader changed since the run), so its pictures would not match the samples")
    d.cache["inputs"] = ds.x_pool, ds.kind
    return d.cache["inputs"]


def to_display(x: np.ndarray) -> np.ndarray:
    """One image ``[C, H, W]`` scaled to [0, 1] per image, as ``[H, W]`` (grey) or ``[H, W, 3]``."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = x.min(), x.max()
    x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return x[0] if x.shape[0] == 1 else np.moveaxis(x[:3], 0, -1)


def draw_input(ax: Axes, x: np.ndarray, kind: str) -> None:
    """Draw one input: an image, or each channel of a 1-D signal as a line."""
    if kind == "image":
        ax.imshow(to_display(x), cmap="gray", interpolation="nearest")
    else:
        for ch in np.asarray(x).reshape(-1, np.asarray(x).shape[-1]):
            ax.plot(ch, lw=1.2, color="#333")
    ax.set_xticks([])
    ax.set_yticks([])


def thumbnail(x: np.ndarray, kind: str) -> str:
    """A small PNG of one input, as a data URI."""
    fig, ax = subplots(figsize=(1.3, 1.3) if kind == "image" else (1.6, 0.9), dpi=80)
    draw_input(ax, x, kind)
    fig.subplots_adjust(0.02, 0.02, 0.98, 0.98)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def sparkline(adv: np.ndarray, high: float, width: int = 150, height: int = 44) -> str:
    """An inline SVG of a trajectory A_i(t) on [-0.2, 1], with the high band as a dashed line."""
    lo, hi = -0.2, 1.0
    xs = np.linspace(2, width - 2, len(adv)) if len(adv) > 1 else np.array([width / 2])
    ys = height - 2 - (np.clip(adv, lo, hi) - lo) / (hi - lo) * (height - 4)
    yh = height - 2 - (high - lo) / (hi - lo) * (height - 4)
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            f'<line x1="0" x2="{width}" y1="{yh:.1f}" y2="{yh:.1f}" stroke="#d62728" stroke-dasharray="3,2"'
            ' stroke-width="1"/>'
            f'<polyline fill="none" stroke="#333" stroke-width="1.5" points="{pts}"/></svg>')


def gallery(d: RunData, top: np.ndarray) -> Panel:
    """Cards for the samples ``top``: input, label, final advantage and trajectory."""
    x, kind = pool_inputs(d)
    high = d.config.analysis.states.high
    first = d.sample["time_to_high"].to_numpy() if "time_to_high" in d.sample.columns else None
    cards = []
    labels = d.labels
    assert labels is not None  # pool_inputs refuses runs without labels
    for i in top:
        when = f"high from epoch {first[i]:g}" if first is not None and np.isfinite(first[i]) else ""
        cards.append(
            f'<div class="card"><img class="thumb {kind}" alt="sample {i}" src="{thumbnail(x[i], kind)}">'
            f'<div class="cap">sample {i} &middot; label {int(labels[i])}<br>A_i = {d.plane.adv[-1, i]:.2f}'
            f'{" &middot; " + html.escape(when) if when else ""}</div>{sparkline(d.plane.adv[:, i], high)}</div>')
    what = "images" if kind == "image" else "1-D signals"
    return Panel("gallery", f"The {len(top)} most vulnerable samples", wide=True,
                 html=f'<div class="gallery">{"".join(cards)}</div>',
                 caption=f"Their {what} (rescaled per sample), label and final advantage; below each, A_i over the "
                         f"epochs on [-0.2, 1] with the high band (A = {high:g}) dashed.")
