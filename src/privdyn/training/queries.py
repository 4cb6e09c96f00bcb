"""Deterministic query augmentations used when scoring: identity, horizontal flip, shifts.

A query is named ``KIND`` or ``KIND:ARGS`` (``shift:2,-1``); each kind is a :class:`Query` in the
``QUERIES`` registry, so plugins can add their own. Checking a query name needs no torch (a
config is validated by every command, also those that only analyse and report).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from privdyn.config import USER_QUERY
from privdyn.registry import QUERIES

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Query:
    """One kind of query: ``check(args)`` raises ValueError for arguments it does not accept;
    ``apply(x, args)`` transforms a batch ``[B, ...]``."""

    check: Callable[[str], None]
    apply: Callable[[torch.Tensor, str], torch.Tensor]
    forms: str


def split_query(name: str) -> tuple[str, str]:
    """``KIND:ARGS`` -> (KIND, ARGS); ARGS is empty for a bare ``KIND``."""
    kind, _, args = name.partition(":")
    return kind, args


def apply_query(name: str, x: torch.Tensor) -> torch.Tensor:
    """Apply a query (validated with the config: ``config.check_query``) to a batch ``[B, C, L]``
    or ``[B, C, H, W]`` (tabular data: identity, or a function given to ``privdyn.audit``)."""
    kind, args = split_query(name)
    if kind != "identity" and not kind.startswith(USER_QUERY) and x.ndim < 3:
        raise ValueError(f"query {name!r} needs sequence or image inputs; tabular data takes identity only")
    return QUERIES[kind].apply(x, args)


def _no_args(kind: str) -> Callable[[str], None]:
    def check(args: str) -> None:
        if args:
            raise ValueError(f"query {kind!r} takes no arguments, got {kind}:{args}")
    return check


_SHIFT = re.compile(r"^(-?\d+)(?:,(-?\d+))?$")


def _check_shift(args: str) -> None:
    if not _SHIFT.match(args):
        raise ValueError(f"query 'shift:{args}' is not shift:DX or shift:DX,DY (integers)")


def _shift(x: torch.Tensor, d: int, dim: int) -> torch.Tensor:
    """Shift along ``dim`` by d positions, filling with zeros (no wrap-around)."""
    import torch

    if d == 0:
        return x
    out = torch.zeros_like(x)
    n = x.shape[dim]
    if abs(d) >= n:
        return out
    src = x.narrow(dim, max(0, -d), n - abs(d))
    out.narrow(dim, max(0, d), n - abs(d)).copy_(src)
    return out


def _apply_shift(x: torch.Tensor, args: str) -> torch.Tensor:
    m = _SHIFT.match(args)
    assert m is not None  # checked with the config
    dx, dy = int(m.group(1)), int(m.group(2) or 0)
    out = _shift(x, dx, x.ndim - 1)
    return _shift(out, dy, 2) if x.ndim == 4 else out


QUERIES.register("identity", Query(_no_args("identity"), lambda x, a: x, "identity"))
QUERIES.register("hflip", Query(_no_args("hflip"), lambda x, a: x.flip(dims=(-1,)), "hflip"))
QUERIES.register("shift", Query(_check_shift, _apply_shift, "shift:DX or shift:DX,DY"))
