"""Deterministic query augmentations used when scoring: identity, horizontal flip, shifts."""

from __future__ import annotations

import re

import torch

_SHIFT = re.compile(r"^shift:(-?\d+)(?:,(-?\d+))?$")


def check_query(name: str) -> None:
    """Raise ValueError with the accepted forms when a query name is not understood."""
    if name in ("identity", "hflip") or _SHIFT.match(name):
        return
    raise ValueError(f"query {name!r} is not one of identity, hflip, shift:DX or shift:DX,DY")


def _shift(x: torch.Tensor, d: int, dim: int) -> torch.Tensor:
    """Shift along ``dim`` by d positions, filling with zeros (no wrap-around)."""
    if d == 0:
        return x
    out = torch.zeros_like(x)
    n = x.shape[dim]
    if abs(d) >= n:
        return out
    src = x.narrow(dim, max(0, -d), n - abs(d))
    out.narrow(dim, max(0, d), n - abs(d)).copy_(src)
    return out


def apply_query(name: str, x: torch.Tensor) -> torch.Tensor:
    """Apply a query to a batch ``[B, C, L]`` or ``[B, C, H, W]`` (tabular data: identity only)."""
    if name == "identity":
        return x
    if x.ndim < 3:
        raise ValueError(f"query {name!r} needs sequence or image inputs; tabular data takes identity only")
    if name == "hflip":
        return torch.flip(x, dims=(-1,))
    m = _SHIFT.match(name)
    if m is None:
        check_query(name)
    dx = int(m.group(1))
    dy = int(m.group(2) or 0)
    out = _shift(x, dx, x.ndim - 1)
    if x.ndim == 4:
        out = _shift(out, dy, 2)
    return out
