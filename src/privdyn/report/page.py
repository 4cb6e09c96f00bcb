"""HTML building blocks shared by the run report and the comparison report.

A page is one self-contained file: plotly.js (from the plotly package) is inlined once, gzipped
and unpacked by the browser's DecompressionStream (a third of the size), each
figure is embedded as JSON and drawn by ``assets/report.js``, images are data URIs, and there
is no reference to any other host. The plotly template (:data:`TEMPLATE`) is embedded once per
page and applied by the script, not carried by every figure: validating it into each figure was a
quarter of the panels' build time.
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import plotly.io as pio
from plotly.offline import get_plotlyjs

from privdyn import __version__
from privdyn.report.panels import Panel

#: A table cell: shown text and the value it sorts by (None: sort by the text).
Cell = tuple[str, float | str | None]

#: The plotly template every figure of a page is drawn with.
TEMPLATE = "plotly_white"


def asset(name: str) -> str:
    """The text of ``assets/NAME``, a style sheet or script shipped with the package."""
    return resources.files("privdyn.report").joinpath("assets", name).read_text()


def esc(x: Any) -> str:
    """``x`` as text, escaped for HTML (quotes included)."""
    return html.escape(str(x))


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a table: whole numbers with thousands separators, other floats with fixed
    digits, a dash for missing values."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "\u2013"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if isinstance(v, int) or float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:.{digits}f}"


def typed_array(a: np.ndarray) -> dict[str, str]:
    """A numpy array as plotly's base64 typed-array spec (``{"dtype": "f4", "bdata": ...}``), for
    figure JSON that plotly does not encode itself (a :attr:`Panel.client` entry)."""
    a = np.ascontiguousarray(a)
    return {"dtype": f"{a.dtype.kind}{a.dtype.itemsize}", "bdata": base64.b64encode(a.tobytes()).decode()}


def figure_json(fig: Any, client: dict[str, Any] | None = None) -> str:
    """A figure (with the ``privdyn`` entries that ``assets/report.js`` reads) as JSON that is safe
    inside a ``<script>`` element, without a template: the page applies :data:`TEMPLATE`."""
    spec = fig.to_plotly_json()
    spec["layout"] = {k: v for k, v in spec.get("layout", {}).items() if k != "template"}
    text = pio.to_json(spec, validate=False, remove_uids=True)
    if client:
        text = text[:-1] + ', "privdyn": ' + json.dumps(client) + "}"
    return text.replace("</", "<\\/")


@functools.lru_cache(maxsize=1)
def template_json() -> str:
    """:data:`TEMPLATE` as JSON that is safe inside a ``<script>`` element, for ``assets/report.js``."""
    return json.dumps(pio.templates[TEMPLATE].to_plotly_json()).replace("</", "<\\/")


@functools.lru_cache(maxsize=1)
def plotlyjs_gzip_base64() -> str:
    """plotly.js, gzipped and base64-encoded: a third of its size, decompressed by the page itself."""
    return base64.b64encode(gzip.compress(get_plotlyjs().encode(), compresslevel=9, mtime=0)).decode()


def panel_html(p: Panel) -> str:
    """A panel as a ``<section>``: its figure (JSON that ``assets/report.js`` draws) or HTML and caption,
    or the reason it is skipped."""
    cls = "panel wide" if p.wide else "panel"
    if p.skipped:
        return (f'<section class="{cls} skipped" id="{esc(p.key)}"><h3>{esc(p.title)}</h3>'
                f"<p>Not shown: {esc(p.skipped)}.</p></section>")
    body = p.html
    if p.figure is not None:
        target = f"plot-{p.key}"
        body += (f'<div class="plot" id="{esc(target)}"></div>'
                 f'<script type="application/json" class="plot-spec" data-target="{esc(target)}">'
                 f"{figure_json(p.figure, p.client)}</script>")
    cap = f'<p class="caption">{esc(p.caption)}</p>' if p.caption else ""
    return f'<section class="{cls}" id="{esc(p.key)}"><h3>{esc(p.title)}</h3>{body}{cap}</section>'


def section(title: str, anchor: str, panels: Sequence[Panel], intro: str = "") -> str:
    """A titled, anchored section of the page: an optional intro above its panels in a grid."""
    text = f'<p class="caption">{esc(intro)}</p>' if intro else ""
    return (f'<h2 id="{esc(anchor)}">{esc(title)}</h2>{text}<div class="grid">'
            + "".join(panel_html(p) for p in panels) + "</div>")


def kv_table(rows: Sequence[tuple[str, Any]]) -> str:
    """A two-column key/value table, every cell escaped."""
    body = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def sortable_table(columns: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    """A table whose columns sort on a click (``assets/report.js``), by each cell's sort value."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)

    def td(cell: Cell) -> str:
        text, key = cell
        attr = "" if key is None else f' data-v="{esc(key)}"'
        return f"<td{attr}>{esc(text)}</td>"

    body = "".join("<tr>" + "".join(td(c) for c in row) + "</tr>" for row in rows)
    return (f'<div class="tablewrap"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def figure_gallery(written: Sequence[tuple[Path, str, bytes]]) -> str:
    """Previews of the static figures (embedded), each linking to its full-size PNG beside the page,
    with the names of its PNG and PDF files."""
    items = []
    for png, caption, preview in written:
        data = base64.b64encode(preview).decode()
        items.append(f'<figure><a href="{esc(png.name)}">'
                     f'<img alt="{esc(png.stem)}" src="data:image/png;base64,{data}"></a>'
                     f"<figcaption><code>{esc(png.name)}</code>, <code>{esc(png.with_suffix('.pdf').name)}</code>: "
                     f"{esc(caption)}</figcaption></figure>")
    return f'<div class="figs">{"".join(items)}</div>'


def document(title: str, subtitle: str, nav: Sequence[tuple[str, str]], body: str) -> str:
    """The whole page: styles, plotly.js and the report script inline."""
    links = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in nav)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{esc(title)}</title><style>{asset("report.css")}</style>
<script type="application/octet-stream" id="plotly-gzip">{plotlyjs_gzip_base64()}</script>
<script type="application/json" id="plotly-template">{template_json()}</script>
<script>{asset("report.js")}</script></head>
<body><main><h1>{esc(title)}</h1><p class="sub">{esc(subtitle)}</p><nav>{links}</nav>
{body}
<footer>Made by privdyn {esc(__version__)}. Self-contained: opens offline, loads nothing from any host.</footer>
</main></body></html>
"""
