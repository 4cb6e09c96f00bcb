"""The unit a report is made of: a titled panel (a plotly figure or HTML), or a note on why not.

A panel builder raises :class:`Missing` when its inputs are absent (e.g. the analysis did not
write the column it plots); the page then shows the reason in the panel's place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


class Missing(Exception):
    """A panel's inputs are not in the run; the message says which and why."""


@dataclass
class Panel:
    """One piece of a report: a plotly figure or ready HTML under a title and caption, or, when ``skipped``
    is set, the reason it is not shown."""

    key: str
    title: str
    caption: str = ""
    figure: Any = None       # a plotly Figure
    html: str = ""           # or ready HTML
    wide: bool = False       # spans the page width instead of half of it
    skipped: str = ""        # when set, the reason the panel is not shown
    client: dict[str, Any] | None = None  # extra figure JSON that assets/report.js acts on (e.g. plane_xy)


def require(df: pd.DataFrame | None, columns: Iterable[str], where: str) -> pd.DataFrame:
    """``df`` when it has every column; otherwise raise :class:`Missing` naming what is absent."""
    cols = list(columns)
    if df is None:
        raise Missing(f"the analysis did not write {where}")
    absent = [c for c in cols if c not in df.columns]
    if absent:
        raise Missing(f"{where} has no column {', '.join(absent)}")
    return df


def present(df: pd.DataFrame, names: Iterable[str]) -> list[str]:
    """The names that are columns of ``df`` with at least one finite value."""
    return [c for c in names if c in df.columns and np.isfinite(pd.to_numeric(df[c], errors="coerce")).any()]


def build(key: str, title: str, fn: Callable[[], Panel]) -> Panel:
    """Run a panel builder; a :class:`Missing` becomes a skipped panel carrying the reason."""
    try:
        return fn()
    except Missing as e:
        return Panel(key=key, title=title, skipped=str(e))
