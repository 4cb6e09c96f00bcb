"""The report stage's tasks for worker processes (:mod:`privdyn.pipeline.workers`): shares of the
static figures, the page around them, and the figures' previews for it.

Each task reads the run's analysis once per worker and stage (by the stage's token). The page is
made while the figures are drawn, with a mark where their previews go; the calling process puts
them there and writes ``index.html``: the page :func:`~privdyn.report.html.build_report` writes in
one process, byte for byte.
"""

from __future__ import annotations

from pathlib import Path

from privdyn.pipeline import workers
from privdyn.report import figures
from privdyn.report.data import RunData, load_run_data
from privdyn.report.html import page_html
from privdyn.report.page import figure_gallery

#: Where the figure gallery goes in a page made before its figures are drawn: the page's last
#: occurrence (only the footer follows the gallery).
GALLERY_MARK = "<!--privdyn:figure-gallery-->"


def _data(run_dir: Path, attack: str, rule: str, token: str) -> RunData:
    return workers.stage_value(token, "report data", lambda: load_run_data(run_dir, attack, rule))


def figure_share(run_dir: Path, attack: str, rule: str, token: str, share: int,
                 shares: int) -> list[tuple[int, figures.Written]]:
    """Draw every ``shares``-th figure from number ``share`` into the run's report folder; returns
    each with its position in :data:`~privdyn.report.figures.FIGURES`."""
    d = _data(run_dir, attack, rule, token)
    return figures.write_some(d, d.run.report_dir, range(share, len(figures.FIGURES), shares))


def page_parts(run_dir: Path, attack: str, rule: str, token: str) -> tuple[str, str]:
    """The page without its figure gallery: the text before and after where it goes."""
    head, _, tail = page_html(_data(run_dir, attack, rule, token), GALLERY_MARK).rpartition(GALLERY_MARK)
    return head, tail


def gallery(drawn: list[tuple[int, figures.Written]]) -> str:
    """The previews of the figures ``drawn``, in :data:`~privdyn.report.figures.FIGURES`' order."""
    return figure_gallery([w for _, w in sorted(drawn, key=lambda x: x[0])])
