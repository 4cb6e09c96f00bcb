"""Numpy's linear quantile, bit for bit, from its two order statistics.

Every FPR threshold in privdyn is numpy's ``method="linear"`` quantile of OUT scores. Computed by
``np.quantile`` it costs a boolean-mask copy of the OUT scores and an introselect over all of
them, at every checkpoint and for every sweep. A threshold at FPR alpha only needs the two order
statistics around rank ``(n - 1)(1 - alpha)``, which lie in the top ~alpha share:
:func:`linear_quantiles` finds a lower bound for that share on a strided subsample, keeps the
OUT scores above it (one comparison pass) and selects among those few. The bound is checked by
counting, never trusted, so the result is always numpy's; only the speed depends on the sample.
:func:`sorted_quantile` is the same quantile along an axis of lines already sorted (the proxies'
traces and the early warning's rows); :func:`neighbours` (numpy's virtual index) and :func:`lerp`
(its interpolation) are shared by all, and by the model-level bootstrap.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: subsample size for the lower bound of the top share
_SAMPLE = 1 << 14
#: standard deviations of the subsample's rank error the bound keeps below the target rank
_SLACK_SD = 5.0
#: the fast path is taken when every target lies in the top share no larger than this
_TOP_SHARE = 0.25


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Numpy's quantile interpolation between neighbours, bit for bit: a + (b - a) t, computed
    from b's side when t >= 1/2 (so that equal traces give equal quantiles on every path)."""
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def neighbours(n: np.ndarray | int, q: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Numpy's virtual index ``(n - 1) q`` of the linear method, broadcast over ``n`` and ``q``:
    the positions of its two neighbours in ascending order (the upper one clipped to the last)
    and the weight between them, for :func:`lerp`. At q = 1 numpy measures the weight from index
    -1 instead; both neighbours are then the last value, so the result is the same."""
    top = np.maximum(np.asarray(n) - 1, 0)
    h = top * np.asarray(q, dtype=np.float64)
    lo = np.floor(h).astype(np.intp)
    return lo, np.minimum(lo + 1, top), h - lo


def sorted_quantile(s: np.ndarray, n: np.ndarray, q: float, axis: int) -> np.ndarray:
    """Numpy's linear q-quantile of every line along ``axis`` of ``s``, sorted along it with its
    ``n`` valid entries first (NaN sorts last), in float64; NaN where a line has none."""
    lo, hi, gamma = neighbours(n, q)
    a, b = (np.take_along_axis(s, np.expand_dims(k, axis), axis=axis).squeeze(axis).astype(np.float64)
            for k in (lo, hi))
    return np.where(n > 0, lerp(a, b, gamma), np.nan)


def linear_quantiles(values: np.ndarray, qs: np.ndarray | list[float], where: np.ndarray | None = None,
                     presorted: bool = False) -> np.ndarray:
    """``np.quantile(values[where].astype(float64), qs)`` (linear method), ``[len(qs)]``, without
    copying ``values[where]``. ``presorted`` says ``values`` is 1-D ascending, so the order
    statistics are read, not selected. NaN among the selected values gives numpy's NaN; an empty
    selection or a level outside [0, 1] raises like ``np.quantile``."""
    q = np.atleast_1d(np.asarray(qs, dtype=np.float64))
    if not ((q >= 0) & (q <= 1)).all():
        raise ValueError("Quantiles must be in the range [0, 1]")
    v = np.asarray(values)
    if presorted:  # NaN sorts last
        return np.full(q.shape, np.nan) if v.size and np.isnan(v[-1]) else _interpolate(v.size, q, lambda ks: v[ks])
    flat = v.reshape(-1)
    mask = None if where is None else np.broadcast_to(np.asarray(where, dtype=bool), v.shape).reshape(-1)
    n = flat.size if mask is None else int(np.count_nonzero(mask))
    if n and np.isnan(flat.min()) and np.isnan(flat if mask is None else flat[mask]).any():
        return np.full(q.shape, np.nan)  # numpy's answer for any level when a value is NaN
    return _interpolate(n, q, lambda ks: _order_statistics(flat, mask, n, ks))


def _interpolate(n: int, q: np.ndarray, pick: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """:func:`lerp` between the :func:`neighbours` of each level among n values; ``pick(ks)``
    gives the ascending order statistics at the positions ``ks``."""
    if n == 0 or q.size == 0:
        return np.quantile(np.empty(n), q)  # numpy's error for no values, or an empty result
    lo, hi, gamma = neighbours(n, q)
    ks, where_ks = np.unique(np.concatenate([lo, hi]), return_inverse=True)
    got = np.asarray(pick(ks), dtype=np.float64)[where_ks]
    return lerp(got[: q.size], got[q.size:], gamma)


def _order_statistics(flat: np.ndarray, mask: np.ndarray | None, n: int, ks: np.ndarray) -> np.ndarray:
    """The ascending order statistics at positions ``ks`` of ``flat[mask]`` (n values, no NaN).

    When every target lies in the top share, a strided subsample gives a bound a few standard
    deviations below the lowest target; if at least the needed count of selected values is at
    or above it (checked), the targets are the same ranks counted from the top of those values.
    """
    need = n - int(ks.min())  # values at or above the lowest target
    if need <= _TOP_SHARE * n and n > 4 * _SAMPLE:
        stride = max(1, flat.size // _SAMPLE)
        sample = flat[::stride] if mask is None else flat[::stride][mask[::stride]]
        m = sample.size
        share = need / n
        keep = int(np.ceil(m * share + _SLACK_SD * np.sqrt(m * share * (1 - share)) + 8))
        if 0 < keep < m:
            bound = np.partition(sample, m - keep)[m - keep]
            above = flat >= bound
            if mask is not None:
                above &= mask
            k_top = int(np.count_nonzero(above))
            if k_top >= need:
                kk = ks - (n - k_top)
                return np.partition(flat[above], kk)[kk]
    rest = flat if mask is None else flat[mask]
    return np.partition(rest, ks)[ks]
