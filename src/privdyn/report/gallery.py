"""The gallery of the most vulnerable samples: what they look like and how their risk grew.

The analysis stores the inputs of the most vulnerable samples (``gallery.npz``, checked against
the run's labels when it reloaded the dataset), so the report never reloads the dataset.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
from matplotlib.axes import Axes

from privdyn.report.data import RunData
from privdyn.report.panels import Missing, Panel


def stored_inputs(d: RunData) -> tuple[np.ndarray, np.ndarray, str]:
    """The most vulnerable samples' ids, their inputs and the dataset kind, as the analysis stored
    them (``gallery.npz``); raises Missing with the stored reason when the run has none."""
    g = d.gallery
    if g is None:
        raise Missing("the analysis stored no gallery inputs (gallery.npz; analysed by an older privdyn: "
                      "rerun `privdyn analyze`)")
    if g["sample"].size == 0 or "x" not in g:
        raise Missing(str(g["reason"]) or "the run has no inputs to show")
    if d.labels is None:
        raise Missing("the run has no labels.npy")
    return g["sample"], g["x"], str(g["kind"])


def to_display(x: np.ndarray) -> np.ndarray:
    """One image ``[C, H, W]`` scaled to [0, 1] per image, as ``[H, W]`` (grey) or ``[H, W, 3]``."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = x.min(), x.max()
    x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    return x[0] if x.shape[0] == 1 else np.moveaxis(x[:3], 0, -1)


def channel_lines(x: np.ndarray) -> np.ndarray:
    """A 1-D signal ``[..., L]`` as one line per channel ``[C, L]``."""
    x = np.asarray(x)
    return x.reshape(-1, x.shape[-1])


def draw_input(ax: Axes, x: np.ndarray, kind: str) -> None:
    """Draw one input: an image, or each channel of a 1-D signal as a line."""
    if kind == "image":
        ax.imshow(to_display(x), cmap="gray", interpolation="nearest")
    else:
        for ch in channel_lines(x):
            ax.plot(ch, lw=1.2, color="#333")
    ax.set_xticks([])
    ax.set_yticks([])


def _points(values: np.ndarray, lo: float, hi: float, width: int, height: int, pad: float = 2.0) -> str:
    """SVG polyline points of ``values`` over the width, ``lo`` at the bottom and ``hi`` at the top
    (values outside are clipped), ``pad`` pixels inside the edges."""
    n = len(values)
    xs = np.linspace(pad, width - pad, n) if n > 1 else np.array([width / 2])
    ys = height - pad - (np.clip(values, lo, hi) - lo) / (hi - lo) * (height - 2 * pad)
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def thumbnail(x: np.ndarray, kind: str) -> str:
    """A small picture of one input, as a data URI: an image's own pixels as a PNG (the page
    scales it up, pixelated), or each channel of a 1-D signal as a line in an SVG, scaled to the
    signal's range. Neither needs a matplotlib figure (24 of them cost most of the gallery)."""
    if kind == "image":
        from PIL import Image  # pillow comes with matplotlib

        pixels = np.round(to_display(x) * 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels, "L" if pixels.ndim == 2 else "RGB").save(buf, format="PNG")
        return _data_uri("image/png", buf.getvalue())
    width, height = 150, 84
    lines = channel_lines(x).astype(np.float64)
    lo, hi = float(lines.min()), float(lines.max())
    margin = 0.05 * (hi - lo) if hi > lo else 1.0
    polylines = "".join(f'<polyline fill="none" stroke="#333" stroke-width="1.2" '
                        f'points="{_points(ch, lo - margin, hi + margin, width, height)}"/>' for ch in lines)
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}">{polylines}</svg>')
    return _data_uri("image/svg+xml", svg.encode())


def sparkline(adv: np.ndarray, high: float, width: int = 150, height: int = 44) -> str:
    """An inline SVG of a trajectory A_i(t) on [-0.2, 1], with the high band as a dashed line."""
    lo, hi = -0.2, 1.0
    yh = height - 2 - (high - lo) / (hi - lo) * (height - 4)
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            f'<line x1="0" x2="{width}" y1="{yh:.1f}" y2="{yh:.1f}" stroke="#d62728" stroke-dasharray="3,2"'
            ' stroke-width="1"/>'
            f'<polyline fill="none" stroke="#333" stroke-width="1.5" points="{_points(adv, lo, hi, width, height)}"/>'
            '</svg>')


def gallery(d: RunData) -> Panel:
    """Cards for the stored most vulnerable samples: input, label, final advantage and trajectory."""
    top, x, kind = stored_inputs(d)
    high = d.config.analysis.states.high
    first = d.sample["time_to_high"].to_numpy() if "time_to_high" in d.sample.columns else None
    cards = []
    labels = d.labels
    assert labels is not None  # stored_inputs refuses runs without labels
    for n, i in enumerate(top):
        when = f"high from epoch {first[i]:g}" if first is not None and np.isfinite(first[i]) else ""
        cards.append(
            f'<div class="card"><img class="thumb {kind}" alt="sample {i}" src="{thumbnail(x[n], kind)}">'
            f'<div class="cap">sample {i} &middot; label {int(labels[i])}<br>A_i = {d.plane.adv[-1, i]:.2f}'
            f'{" &middot; " + html.escape(when) if when else ""}</div>{sparkline(d.plane.adv[:, i], high)}</div>')
    what = "images" if kind == "image" else "1-D signals"
    return Panel("gallery", f"The {len(top)} most vulnerable samples", wide=True,
                 html=f'<div class="gallery">{"".join(cards)}</div>',
                 caption=f"Their {what} (rescaled per sample), label and final advantage; below each, A_i over the "
                         f"epochs on [-0.2, 1] with the high band (A = {high:g}) dashed.")
